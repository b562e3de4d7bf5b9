"""A real experiment: classify WordNet noun glosses into hypernym classes.

Does a hierarchy-aware loss make a text classifier's mistakes milder, and what
does it cost in top-1 error? The data ship with WordNet:

* **Classes.** K noun synsets that do not contain one another, each with
  between ``--min-size`` and ``--max-size`` hyponyms (direct or not, instance
  hyponyms included). They are found top-down from ``entity.n.01``: a synset
  with more than ``--max-size`` hyponyms is split into its hyponyms, one within
  the range becomes a class, a smaller one is dropped. The defaults give about
  200 classes (``bird.n.01``, ``carnivore.n.01``, ``city.n.01``, ``writer.n.01``, ...).
* **Samples.** Every noun synset below exactly one class is a sample; its text
  is its gloss (``Synset.definition()``), its label the class. Synsets below
  two classes (WordNet is a DAG) are left out.
* **Taxonomy.** The WordNet tree above the classes:
  ``taxonomy_from_wordnet(classes)`` (each class keeps its longest hypernym
  path). Distances are ``lca_height``, the height of the lowest common ancestor
  (Bertinetto et al., CVPR 2020).
* **Model.** Bag of words: tf-idf weighted unigrams and bigrams (vocabulary
  from the training split), summed into a 128-d embedding, ReLU, dropout, a
  linear layer to the K classes. Sparse SGD for the embedding table (only the
  rows of a batch's words are touched), Adam for the output layer. The same
  hyper-parameters for every method (nothing tuned per method).
* **Methods.** Losses on the flat linear layer: cross entropy; hierarchical
  soft labels for several beta; HXE for several alpha; tree-Wasserstein (plus
  cross entropy); expected cost (plus cross entropy). Heads that replace the
  linear layer (``taxosmooth.heads``): hierarchical softmax; per-level heads
  (one linear head per depth, the sum of per-level cross entropies); class
  embeddings (Barz & Denzler, WACV 2019: cosine loss + 0.1 cross entropy,
  classified by the nearest class vector); HAFrame (Liang & Davis, ICCV 2023:
  a fixed frame with gamma 3 and cosine weight 0.5, their tieredImageNet-H
  setting). Each also decided by CRM at test time (the same models, decided
  by expected cost; Karthik et al., ICLR 2021), from the softmax of its
  logits (for the embeddings, of their cross-entropy branch); cross entropy
  also by CRM on temperature-scaled probabilities (Guo et al., ICML 2017; each
  half of the test split divided by the temperature fitted on the other half).
  ``--methods`` picks some (names or families, shell-style patterns);
  ``--list-methods`` lists them.
* **Metrics** on a fixed 20 % test split: top-1 error, mistake severity (mean
  distance of the wrong top-1 predictions), mean hierarchical distance @1
  and @5 (the mean distance of the k best predictions), as mean ± std over the seeds.

Outputs (in ``--out``): ``results.json`` (every seed), ``results.md`` (the
table) and ``tradeoff.png`` (top-1 error against mistake severity and against
mean hierarchical distance @5).

Run::

    python examples/wordnet_glosses.py                 # the full run (about 15 minutes on 2 cores)
    python examples/wordnet_glosses.py --quick         # a smoke run (seconds of training)
    python examples/wordnet_glosses.py --methods "cross entropy*" "HAFrame*"   # some methods only

Needs WordNet data (see the WordNet guide: ``nltk.download("wordnet")`` or the
Debian/Ubuntu packages ``wordnet-base wordnet-sense-index``) and, for the plot,
matplotlib.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

import taxosmooth as ts
from taxosmooth.embeddings import class_embeddings, haframe_weights
from taxosmooth.heads import EmbeddingHead, FixedClassifier, HierarchicalSoftmax, LevelwiseHead
from taxosmooth.metrics import mean_hierarchical_distance_at_k, mistake_severity, topk_error
from taxosmooth.wordnet import load_wordnet, wordnet_source

ROOT = "entity.n.01"


# ---------------------------------------------------------------------- data
def noun_ancestors(wn) -> dict:
    """Every noun synset -> the frozenset of its hypernyms, direct or not (instance hypernyms included)."""
    memo: dict = {}
    for s in wn.all_synsets("n"):
        stack = [s]
        while stack:  # iterative post-order: parents first, then the synset
            x = stack[-1]
            if x in memo:
                stack.pop()
                continue
            parents = x.hypernyms() + x.instance_hypernyms()
            todo = [p for p in parents if p not in memo]
            if todo:
                stack.extend(todo)
                continue
            out = set(parents)
            for p in parents:
                out |= memo[p]
            memo[x] = frozenset(out)
            stack.pop()
    return memo


def choose_classes(wn, ancestors: dict, min_size: int, max_size: int, min_samples: int):
    """The classes (sorted synset names) and the samples ``(gloss, class name)`` (see the module docstring)."""
    size = collections.Counter(a for anc in ancestors.values() for a in anc)
    chosen, seen, stack = set(), set(), [wn.synset(ROOT)]
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        if size[x] > max_size:
            stack.extend(x.hyponyms() + x.instance_hyponyms())
        elif size[x] >= min_size:
            chosen.add(x)
    # through multiple inheritance a candidate can sit below another one: keep the upper
    chosen = {c for c in chosen if not (ancestors[c] & chosen)}
    while True:  # a class that lost its samples to multiple inheritance is dropped, then relabel
        labelled = {}
        for s, anc in ancestors.items():
            if s in chosen:
                continue
            hit = anc & chosen
            if len(hit) == 1:
                labelled[s] = next(iter(hit))
        counts = collections.Counter(labelled.values())
        poor = {c for c in chosen if counts[c] < min_samples}
        if not poor:
            break
        chosen -= poor
    classes = sorted(c.name() for c in chosen)
    samples = sorted((s.name(), s.definition(), c.name()) for s, c in labelled.items())
    return classes, samples


def tokens(text: str) -> list[str]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return words + [a + " " + b for a, b in zip(words, words[1:])]


class BagOfWords:
    """tf-idf weighted unigrams + bigrams as (ids, offsets, weights) for ``nn.EmbeddingBag``."""

    def __init__(self, texts: list[str], train: np.ndarray, min_df: int = 2):
        toks = [tokens(t) for t in texts]
        df = collections.Counter(f for i in train for f in set(toks[i]))
        vocab = sorted(f for f, n in df.items() if n >= min_df)
        self.index = {f: j for j, f in enumerate(vocab)}
        idf = np.array([math.log(len(train) / df[f]) + 1.0 for f in vocab], dtype=np.float32)
        ids, weights, offsets = [], [], [0]
        for tk in toks:
            count = collections.Counter(self.index[f] for f in tk if f in self.index)
            k = np.fromiter(count.keys(), dtype=np.int64, count=len(count))
            w = np.fromiter(count.values(), dtype=np.float32, count=len(count)) * idf[k]
            w /= max(float(np.linalg.norm(w)), 1e-12)
            ids.append(k)
            weights.append(w)
            offsets.append(offsets[-1] + len(k))
        self.ids = torch.from_numpy(np.concatenate(ids))
        self.weights = torch.from_numpy(np.concatenate(weights))
        self.offsets = torch.tensor(offsets)
        self.vocab_size = len(vocab)

    def batch(self, idx: torch.Tensor):
        start, end = self.offsets[idx], self.offsets[idx + 1]
        length = end - start
        out_offsets = torch.cumsum(length, 0) - length
        flat = torch.repeat_interleave(start - out_offsets, length) + torch.arange(int(length.sum()))
        return self.ids[flat], out_offsets, self.weights[flat]


class GlossClassifier(nn.Module):
    """Bag of words -> 128-d embedding -> ReLU, dropout -> the method's head (built after the embedding, so that
    every method starts from the same embedding table for a seed)."""

    def __init__(self, vocab_size: int, make_head: Callable[[int], nn.Module], hidden: int = 128, dropout: float = 0.3):
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab_size, hidden, mode="sum", sparse=True)
        nn.init.normal_(self.embed.weight, 0.0, 0.1)
        self.trunk = nn.Sequential(nn.ReLU(), nn.Dropout(dropout))
        self.head = make_head(hidden)

    def features(self, ids, offsets, weights):
        return self.trunk(self.embed(ids, offsets, per_sample_weights=weights))


# ---------------------------------------------------------------------- methods
EMBEDDING_CE_WEIGHT = 0.1  # Barz & Denzler's weight of the cross-entropy term
HAFRAME_GAMMA, HAFRAME_COSINE_WEIGHT = 3.0, 0.5  # Liang & Davis's tieredImageNet-H (WordNet) setting


class Method:
    """How one method trains and decides.

    ``make_head(hidden)`` builds the head; ``loss(head, features, target)``;
    ``scores(head, features)``: the ``(N, C)`` scores an argmax decides on;
    ``logits(head, features)``: those whose softmax CRM uses; ``train_key``: the
    method whose trained models this one reuses (a CRM row).
    """

    def __init__(self, family: str, param: float | None, make_head: Callable[[int], nn.Module], loss: Callable,
                 scores: Callable, logits: Callable, decision: str = "argmax", train_key: str | None = None):
        self.family, self.param, self.make_head, self.loss = family, param, make_head, loss
        self.scores, self.logits, self.decision, self.train_key = scores, logits, decision, train_key


def lazy(factory: Callable) -> Callable:
    """``factory()`` on the first call, the same object after (so that listing the methods builds nothing)."""
    made: list = []

    def get():
        if not made:
            made.append(factory())
        return made[0]

    return get


def loss_on_logits(make_criterion: Callable) -> Callable:
    criterion = lazy(make_criterion)
    return lambda head, f, y: criterion()(head(f), y)


def head_loss(head, f, y):
    return head.loss(f, y)


def head_output(head, f):
    return head(f)


def methods(tax, betas, alphas, extra: bool) -> dict[str, Method]:
    """name -> Method; every method also comes decided by CRM (name + " + CRM"). ``tax`` is only used in training."""
    flat = dict(make_head=lambda hidden: nn.Linear(hidden, tax.num_classes), scores=head_output, logits=head_output)
    base = {"cross entropy": Method("cross entropy", None, loss=loss_on_logits(nn.CrossEntropyLoss), **flat)}
    for b in betas:
        base[f"soft labels β={b:g}"] = Method(
            "soft labels", b, loss=loss_on_logits(lambda b=b: ts.HierarchicalSoftLabelLoss(tax, beta=b)), **flat)
    for a in alphas:
        base[f"HXE α={a:g}"] = Method("HXE", a, loss=loss_on_logits(lambda a=a: ts.HXELoss(tax, alpha=a)), **flat)
    if extra:
        base["tree-Wasserstein + CE"] = Method(
            "tree-Wasserstein", None, loss=loss_on_logits(lambda: ts.TreeWassersteinLoss(tax, ce_weight=1.0)), **flat)
        base["expected cost + CE"] = Method(
            "expected cost", None,
            loss=loss_on_logits(lambda: ts.ExpectedCostLoss(tax, ce_weight=1.0, transform="normalize")), **flat)
    base["hierarchical softmax"] = Method(
        "hierarchical softmax", None, make_head=lambda hidden: HierarchicalSoftmax(hidden, tax), loss=head_loss,
        scores=head_output, logits=head_output)
    base["per-level heads"] = Method(
        "per-level heads", None, make_head=lambda hidden: LevelwiseHead(hidden, tax), loss=head_loss,
        scores=head_output, logits=head_output)
    phi = lazy(lambda: class_embeddings(tax, dtype=torch.float32))
    base["embeddings"] = Method(
        "embeddings", None, make_head=lambda hidden: EmbeddingHead(hidden, phi(), ce_weight=EMBEDDING_CE_WEIGHT),
        loss=head_loss, scores=head_output, logits=lambda head, f: head.classifier_logits(f))
    frame = lazy(lambda: haframe_weights(tax, gamma=HAFRAME_GAMMA))
    base["HAFrame"] = Method(
        "HAFrame", None,
        make_head=lambda hidden: FixedClassifier(hidden, frame(), cosine_weight=HAFRAME_COSINE_WEIGHT),
        loss=head_loss, scores=head_output, logits=head_output)
    out = {}
    for name, m in base.items():
        out[name] = m
        out[name + " + CRM"] = Method(m.family, m.param, m.make_head, m.loss, m.scores, m.logits, decision="crm",
                                      train_key=name)
        if name == "cross entropy":  # CRM on temperature-scaled probabilities (Guo et al., ICML 2017)
            out[name + " + calibrated CRM"] = Method("calibrated CRM", None, m.make_head, m.loss, m.scores, m.logits,
                                                     decision="crm_calibrated", train_key=name)
    return out


def select(setup: dict, patterns: list[str] | None) -> dict:
    """The methods whose name or family matches one of the shell-style patterns (case-insensitive)."""
    if not patterns:
        return setup
    keep = {n: m for n, m in setup.items()
            if any(fnmatch.fnmatch(n.lower(), p.lower()) or fnmatch.fnmatch(m.family.lower(), p.lower())
                   for p in patterns)}
    if not keep:
        raise SystemExit(f"--methods {' '.join(patterns)} matches none of: {', '.join(setup)}")
    return keep


def train(bow, y, train_idx, method: Method, seed, epochs, batch_size, lr_embed, lr_head):
    torch.manual_seed(seed)
    model = GlossClassifier(bow.vocab_size, method.make_head)
    sgd = torch.optim.SGD(model.embed.parameters(), lr=lr_embed)
    adam = torch.optim.Adam(model.head.parameters(), lr=lr_head)
    gen = torch.Generator().manual_seed(seed)
    n = len(train_idx)
    steps, step = epochs * math.ceil(n / batch_size), 0
    model.train()
    for _ in range(epochs):
        order = train_idx[torch.randperm(n, generator=gen)]
        for i in range(0, n, batch_size):
            b = order[i : i + batch_size]
            for group in sgd.param_groups:  # linear decay, as fastText does for sparse SGD
                group["lr"] = lr_embed * (1.0 - step / steps)
            step += 1
            loss = method.loss(model.head, model.features(*bow.batch(b)), y[b])
            sgd.zero_grad()
            adam.zero_grad()
            loss.backward()
            sgd.step()
            adam.step()
    model.eval()
    return model


def calibrated(logits, y) -> tuple[torch.Tensor, dict]:
    """Temperature-scaled logits by two-fold cross-fitting on the test split (Guo et al., ICML 2017).

    Each half is divided by the temperature fitted on the other half, so no sample is calibrated with its own
    label, and the trained models stay those of the other decisions.
    """
    from taxosmooth.calibration import fit_temperature

    half = torch.arange(len(y)) % 2 == 0
    out = logits.clone()
    temps = []
    for fit, apply in ((half, ~half), (~half, half)):
        t = fit_temperature(logits[fit], y[fit])
        out[apply] = logits[apply] / t
        temps.append(t)
    return out, {"temperature": float(np.mean(temps))}


def evaluate(scores, y, tax) -> dict:
    return {
        "top1_error": float(topk_error(scores, y, 1)),
        "mistake_severity": float(mistake_severity(scores, y, tax)),
        # hdist@k: the mean hierarchical distance of the k best predictions
        "hdist@1": float(mean_hierarchical_distance_at_k(scores, y, tax, 1)),
        "hdist@5": float(mean_hierarchical_distance_at_k(scores, y, tax, 5)),
    }


METRICS = ("top1_error", "mistake_severity", "hdist@1", "hdist@5")
HEADERS = ("top-1 error (%)", "mistake severity", "mean hier. dist. @1", "mean hier. dist. @5")


def summarise(runs: list[dict]) -> dict:
    out = {}
    for m in METRICS:
        v = np.array([r[m] for r in runs], dtype=np.float64)
        out[m] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
    return out


def markdown_table(results: dict) -> str:
    lines = ["| method | " + " | ".join(HEADERS) + " |", "|---|" + "---:|" * len(HEADERS)]
    for name, r in results.items():
        cells = []
        for m in METRICS:
            mean, std = r["summary"][m]["mean"], r["summary"][m]["std"]
            if m == "top1_error":
                mean, std = 100 * mean, 100 * std
                cells.append(f"{mean:.1f} ± {std:.1f}")
            else:
                cells.append(f"{mean:.3f} ± {std:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    style = {
        "cross entropy": ("k", "o"), "CRM": ("tab:purple", "D"), "calibrated CRM": ("tab:gray", "d"),
        "soft labels": ("tab:blue", "s"),
        "HXE": ("tab:orange", "^"), "tree-Wasserstein": ("tab:green", "v"), "expected cost": ("tab:red", "P"),
        "hierarchical softmax": ("tab:brown", "X"), "per-level heads": ("tab:pink", "h"),
        "embeddings": ("tab:olive", "*"), "HAFrame": ("tab:cyan", "d"),
    }
    for ax, metric, label in zip(axes, ("mistake_severity", "hdist@5"), ("mistake severity", "mean hierarchical distance @5")):
        families = collections.defaultdict(list)
        for name, r in results.items():
            families[(r["family"], r.get("decision", "argmax"))].append((r["param"], r["summary"]))
        for (family, decision), pts in families.items():
            color, marker = style.get(family, ("gray", "o"))
            crm = decision == "crm"
            label = f"{family} + CRM" if crm and family != "CRM" else family
            pts.sort(key=lambda p: (p[0] is None, p[0]))
            x = [100 * s["top1_error"]["mean"] for _, s in pts]
            xe = [100 * s["top1_error"]["std"] for _, s in pts]
            yv = [s[metric]["mean"] for _, s in pts]
            ye = [s[metric]["std"] for _, s in pts]
            ax.errorbar(x, yv, xerr=xe, yerr=ye, color=color, marker=marker,
                        linestyle=(":" if crm else "-") if len(pts) > 1 else "none", capsize=2, label=label,
                        markersize=6, markerfacecolor="white" if crm else color)
            for (param, _), xi, yi in zip(pts, x, yv):
                if param is not None:
                    sym = "β" if family == "soft labels" else "α"
                    ax.annotate(f"{sym}={param:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7,
                                color=color)
        ax.set_xlabel("top-1 error (%)")
        ax.set_ylabel(label + " (lower is better)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Full description: see the module docstring.")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 seed, 1 epoch, 30 samples per class, one beta and one alpha")
    p.add_argument("--seeds", type=int, default=3, help="training runs per method (default 3)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr-embed", type=float, default=40.0, help="SGD learning rate of the embedding table")
    p.add_argument("--lr-head", type=float, default=2e-3, help="Adam learning rate of the output layer")
    p.add_argument("--betas", type=float, nargs="+", default=[4.0, 10.0, 30.0])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.2, 0.4])
    p.add_argument("--no-extra", action="store_true", help="skip tree-Wasserstein and expected cost")
    p.add_argument("--methods", nargs="+", metavar="PATTERN",
                   help="run only the methods whose name or family matches a pattern (shell-style, case-insensitive), "
                        "e.g. 'cross entropy*' HAFrame 'soft labels*'; the CRM rows reuse their method's models")
    p.add_argument("--list-methods", action="store_true", help="print the method names and families, then exit")
    p.add_argument("--min-size", type=int, default=100, help="fewest hyponyms of a class")
    p.add_argument("--max-size", type=int, default=1000, help="most hyponyms of a class")
    p.add_argument("--max-per-class", type=int, default=None, help="cap the samples of each class")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the model is small; 1 is fastest)")
    p.add_argument("--out", type=Path, default=Path("wordnet_glosses_results"), help="output folder")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.max_per_class = 1, 1, args.max_per_class or 30
        args.betas, args.alphas = args.betas[1:2] or args.betas, args.alphas[1:2] or args.alphas
    if args.seeds < 1 or args.epochs < 1:
        p.error("--seeds and --epochs must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list_methods:
        for name, m in select(methods(None, args.betas, args.alphas, not args.no_extra), args.methods).items():
            print(f"{name}\t(family: {m.family}, decision: {m.decision})")
        return 0
    torch.set_num_threads(args.threads)
    t_start, cpu_start = time.perf_counter(), time.process_time()

    wn = load_wordnet()
    print(wordnet_source().describe(), flush=True)
    ancestors = noun_ancestors(wn)
    classes, samples = choose_classes(wn, ancestors, args.min_size, args.max_size, min_samples=20)
    rng = np.random.default_rng(0)  # data split: fixed, the same for every seed and method
    if args.max_per_class:
        by_class = collections.defaultdict(list)
        for i, s in enumerate(samples):
            by_class[s[2]].append(i)
        keep = sorted(i for c in classes for i in rng.permutation(by_class[c])[: args.max_per_class])
        samples = [samples[i] for i in keep]
    tax = ts.wordnet.taxonomy_from_wordnet(classes, wordnet=wn)
    class_index = {c: i for i, c in enumerate(tax.classes)}
    texts = [s[1] for s in samples]
    y = torch.tensor([class_index[s[2]] for s in samples])
    perm = rng.permutation(len(samples))
    n_test = int(round(args.test_fraction * len(samples)))
    test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    bow = BagOfWords(texts, train_idx)
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    test_batch = bow.batch(test_idx)
    y_test = y[test_idx]
    depth = tax.compiled.depth[tax.compiled.class_node]
    print(
        f"{tax.num_classes} classes, {len(samples)} glosses ({len(train_idx)} train / {len(test_idx)} test), "
        f"{bow.vocab_size} features; taxonomy: {tax.num_nodes} nodes, class depth {depth.min()}-{depth.max()}, "
        f"largest lca_height {ts.class_distances(tax, 'lca_height').max():g}",
        flush=True,
    )
    t_data = time.perf_counter() - t_start

    setup = select(methods(tax, args.betas, args.alphas, extra=not args.no_extra), args.methods)
    trained: dict = {}  # a method and its CRM row share the trained models: train them once
    results: dict = {}
    for name, m in setup.items():
        runs = []
        for seed in range(args.seeds):
            key = (m.train_key or name, seed)
            t0 = time.perf_counter()
            if key not in trained:
                trained[key] = train(bow, y, train_idx, m, seed, args.epochs, args.batch_size, args.lr_embed, args.lr_head)
            model = trained[key]
            with torch.no_grad():
                f = model.features(*test_batch)
                extra = {}
                if m.decision == "argmax":
                    scores = m.scores(model.head, f)
                elif m.decision == "crm":
                    scores = -ts.conditional_risk(m.logits(model.head, f), tax, from_logits=True)
                else:
                    logits, extra = calibrated(m.logits(model.head, f), y_test)
                    scores = -ts.conditional_risk(logits, tax, from_logits=True)
            runs.append({"seed": seed, **evaluate(scores, y_test, tax), **extra, "seconds": time.perf_counter() - t0})
        family = "CRM" if name == "cross entropy + CRM" else m.family
        results[name] = {"family": family, "param": m.param, "decision": m.decision, "runs": runs,
                         "summary": summarise(runs)}
        s = results[name]["summary"]
        print(f"  {name:<28} top-1 error {100 * s['top1_error']['mean']:5.1f}%  severity {s['mistake_severity']['mean']:.3f}  "
              f"hdist@1 {s['hdist@1']['mean']:.3f}  hdist@5 {s['hdist@5']['mean']:.3f}", flush=True)

    wall, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    table = markdown_table(results)
    print("\n" + table)
    print(f"\n{len(setup)} methods x {args.seeds} seeds in {wall:.0f} s wall ({cpu:.0f} s CPU; data {t_data:.0f} s), "
          f"torch threads {args.threads}, load average {os.getloadavg()[0]:.1f}")

    args.out.mkdir(parents=True, exist_ok=True)
    setting = {
        "classes": tax.num_classes, "samples": len(samples), "train": len(train_idx), "test": len(test_idx),
        "features": bow.vocab_size, "taxonomy_nodes": tax.num_nodes, "epochs": args.epochs, "seeds": args.seeds,
        "batch_size": args.batch_size, "lr_embed": args.lr_embed, "lr_head": args.lr_head,
        "min_size": args.min_size, "max_size": args.max_size, "max_per_class": args.max_per_class,
        "distance": "lca_height", "methods": list(setup), "embedding_ce_weight": EMBEDDING_CE_WEIGHT,
        "haframe_gamma": HAFRAME_GAMMA, "haframe_cosine_weight": HAFRAME_COSINE_WEIGHT, "wall_seconds": wall, "cpu_seconds": cpu, "torch_threads": args.threads,
        "torch": torch.__version__, "taxosmooth": ts.__version__,
    }
    (args.out / "results.json").write_text(json.dumps({"setting": setting, "results": results}, indent=1) + "\n")
    (args.out / "results.md").write_text(table + "\n")
    (args.out / "classes.txt").write_text("\n".join(tax.classes) + "\n")
    print(f"wrote {args.out / 'results.json'}, {args.out / 'results.md'}, {args.out / 'classes.txt'}")
    if not args.no_plot:
        try:
            plot(results, args.out / "tradeoff.png",
                 f"WordNet glosses: {tax.num_classes} classes, {len(samples)} samples, mean ± std over {args.seeds} seed(s)")
            print(f"wrote {args.out / 'tradeoff.png'}")
        except ImportError:
            print("matplotlib is not installed: no plot (pip install 'taxosmooth[plot]')", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
