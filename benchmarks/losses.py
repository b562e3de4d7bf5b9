"""Speed and memory of the structured losses against cross entropy and dense baselines.

Forward + backward, float32, batch 256, C = 1,000 and 10,000 on a synthetic
taxonomy (depth 7 by default, classes in the file's DFS order). Every method is
timed in the same run, methods taking turns round by round, and reported as the
median; ratios are against ``F.cross_entropy`` with hard labels measured
alongside. Two timings:

* steady (``ms``): each turn is a block of consecutive calls of one method
  (the first two dropped), as ``timeit`` measures;
* cold (``cold ms``): one call per method per turn, so each call follows
  another method's pass over memory (caches hold someone else's data), as a
  loss follows the model's forward in training. A loss made of several small
  steps (the structured ones) pays more for this than one fused kernel.

    python benchmarks/losses.py                   # CPU, text table
    python benchmarks/losses.py --markdown        # a table for the docs
    python benchmarks/losses.py --device cuda     # on a GPU
    python benchmarks/losses.py --shuffle-classes # class order != DFS order

Baselines written here:

* dense soft targets: ``SoftTargetCrossEntropy(soft_targets(tax, beta))`` — a
  ``(C, C)`` matrix and a ``(B, C)`` gather per step;
* dense HXE: the public reference implementation's approach — per class a
  ``(C, K)`` indicator of the leaves under each ancestor (numerators and
  denominators), gathered to ``(B, C, K)`` and multiplied with the
  probabilities (``bmm``); C = 1,000 only (it needs ``2 C² K`` floats).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import taxosmooth as ts


def synthetic_taxonomy(num_classes: int, depth: int, seed: int = 0, shuffle_classes: bool = False) -> ts.Taxonomy:
    """All classes at ``depth``; level ``d`` has about ``C^(d/depth)`` nodes with random fan-out."""
    rng = np.random.default_rng(seed)
    sizes = [max(1, round(num_classes ** (d / depth))) for d in range(depth + 1)]
    sizes[-1] = num_classes
    for d in range(1, depth + 1):
        sizes[d] = max(sizes[d], sizes[d - 1])
    parents = []
    for d in range(1, depth + 1):
        extra = rng.integers(0, sizes[d - 1], sizes[d] - sizes[d - 1])
        parents.append(np.sort(np.concatenate([np.arange(sizes[d - 1]), extra])))
    # root-to-leaf paths in DFS order
    lines = []
    for leaf in range(num_classes):
        names, i = [], leaf
        for d in range(depth, 0, -1):
            names.append(f"n{d}_{i}")
            i = parents[d - 1][i]
        lines.append("/".join(["root"] + names[::-1]))
    tax = ts.Taxonomy.from_paths(lines)
    if shuffle_classes:
        order = list(tax.classes)
        rng.shuffle(order)
        tax = ts.Taxonomy.from_paths(lines, classes=order)
    return tax


class DenseHXE(torch.nn.Module):
    """HXE with ``(C, C, K)`` indicator tensors, as in the public reference code (a baseline)."""

    def __init__(self, tax: ts.Taxonomy, alpha: float):
        super().__init__()
        c = tax.compiled
        C, K = c.num_classes, c.max_depth
        lam = np.exp(-alpha * c.depth.astype(np.float64))
        num = np.zeros((C, C, K), dtype=np.float32)
        den = np.zeros((C, C, K), dtype=np.float32)
        w = np.zeros((C, K), dtype=np.float32)
        for t in range(C):
            path = c.class_path[t]
            path = path[path >= 0]
            for lvl in range(len(path) - 1):
                v, u = path[lvl], path[lvl + 1]
                num[t, c.position_class[c.leaf_lo[v] : c.leaf_hi[v]], lvl] = 1
                den[t, c.position_class[c.leaf_lo[u] : c.leaf_hi[u]], lvl] = 1
                w[t, lvl] = lam[v]
        self.register_buffer("num", torch.from_numpy(num))
        self.register_buffer("den", torch.from_numpy(den))
        self.register_buffer("w", torch.from_numpy(w))

    def forward(self, logits, target):
        p = torch.softmax(logits, 1).unsqueeze(1)
        num = torch.bmm(p, self.num[target]).squeeze(1)
        den = torch.bmm(p, self.den[target]).squeeze(1)
        ratio = torch.where(den > 0, num / den.clamp_min(1e-30), torch.ones_like(num))
        return -(self.w[target] * torch.log(ratio.clamp_min(1e-30))).sum(1).mean()


def time_methods(methods: dict, logits: torch.Tensor, target: torch.Tensor, rounds: int, device: str,
                 block: int = 1) -> dict:
    """Median seconds per forward+backward: single-threaded CPU, the CPU time of the process (robust
    to other processes competing for the cores); otherwise wall time (after a synchronize on CUDA).

    Methods take turns, round by round, so slow drift of the machine hits all of them alike.
    ``block = 1`` (cold): one call per method per round, so every call follows another method's
    pass over memory, as a loss follows the model's forward in training. ``block > 1`` (steady):
    ``block`` consecutive calls per turn, the first two discarded, so a method is timed after
    itself, as ``timeit`` does.
    """
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # process CPU time only means "time of this computation" single-threaded (idle OpenMP workers spin)
    clock = time.process_time if not cuda and torch.get_num_threads() == 1 else time.perf_counter

    def step(fn):
        z = logits.detach().requires_grad_(True)
        fn(z, target).backward()

    for fn in methods.values():  # warm up
        step(fn)
        step(fn)
    skip = 0 if block == 1 else 2
    times = {k: [] for k in methods}
    for _ in range(rounds):
        for k, fn in methods.items():
            for i in range(block):
                sync()
                t0 = clock()
                step(fn)
                sync()
                if i >= skip:
                    times[k].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _no_backward(fn):
    """Wrap a forward-only callable so that time_methods' ``.backward()`` is a no-op for it."""

    class _Done:
        def backward(self):
            pass

    def run(z, t):
        out = fn(z, t)
        if out.requires_grad:
            return out
        _ = float(out)
        return _Done()

    return run


def fmt_ms(s: float) -> str:
    return f"{s * 1e3:.2f}"


def fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def render(rows: list[dict], markdown: bool) -> str:
    keys = list(rows[0])
    cells = [[str(r[k]) for k in keys] for r in rows]
    if markdown:
        out = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
        return "\n".join(out + ["| " + " | ".join(c) + " |" for c in cells])
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    out = ["  ".join(k.ljust(w) for k, w in zip(keys, widths)), "  ".join("-" * w for w in widths)]
    return "\n".join(out + ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--classes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--depth", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=30, help="rounds of the cold timing (one call per method per round)")
    ap.add_argument("--block", type=int, default=12,
                    help="consecutive calls per turn in the steady timing (%(default)s; rounds: --rounds / 5)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: CPU time is then robust to other load; with more, wall time)")
    ap.add_argument("--shuffle-classes", action="store_true", help="class order differs from the DFS leaf order")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--target-kinds", action="store_true",
                    help="also time every loss on probability (Mixup) rows, smoothed and coarse targets")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time the two structured kernels (ring segment sum, ring expansion) alone")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = args.device
    print(f"# torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"depth {args.depth}, float32, forward+backward; steady: median over {max(2, args.rounds // 5)} "
          f"rounds of {args.block} consecutive calls per method; cold: median over {args.rounds} rounds of "
          f"one call per method ({'process CPU time' if not dev.startswith('cuda') and args.threads == 1 else 'wall time'})"
          + (", shuffled class order" if args.shuffle_classes else ""))
    speed_rows, mem_rows, kind_rows = [], [], []
    for C in args.classes:
        tax = synthetic_taxonomy(C, args.depth, shuffle_classes=args.shuffle_classes)
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(args.batch, C, generator=g).mul_(3).to(dev)
        target = torch.randint(0, C, (args.batch,), generator=g).to(dev)
        losses = {
            "HierarchicalSoftLabelLoss": ts.HierarchicalSoftLabelLoss(tax, beta=10.0),
            "HXELoss": ts.HXELoss(tax, alpha=0.5),
            "ExpectedCostLoss": ts.ExpectedCostLoss(tax),
            "TreeWassersteinLoss": ts.TreeWassersteinLoss(tax, ce_weight=0.0),
            "PairwiseCostLoss": ts.PairwiseCostLoss(tax),
        }
        losses = {k: m.to(dev) for k, m in losses.items()}
        methods = {"F.cross_entropy": F.cross_entropy, **losses}
        dense_soft = ts.SoftTargetCrossEntropy(ts.soft_targets(tax, beta=10.0)).to(dev)
        methods["dense soft targets"] = dense_soft
        if C <= 1000:
            methods["dense HXE (C,C,K)"] = DenseHXE(tax, alpha=0.5).to(dev)
        steady = time_methods(methods, logits, target, max(2, args.rounds // 5), dev, block=args.block)
        cold = time_methods(methods, logits, target, args.rounds, dev)
        base = {"HierarchicalSoftLabelLoss": ("dense soft targets", "dense soft targets"),
                "HXELoss": ("dense HXE (C,C,K)", "dense HXE")}
        for k in methods:
            s, c = steady[k], cold[k]
            row = {"C": C, "loss": k, "ms": fmt_ms(s), "× CE": f"{s / steady['F.cross_entropy']:.2f}",
                   "cold ms": fmt_ms(c), "cold × CE": f"{c / cold['F.cross_entropy']:.2f}", "vs baseline": ""}
            if k in base and base[k][0] in methods:
                b = base[k][0]
                row["vs baseline"] = (f"{steady[b] / s:.1f}× (cold {cold[b] / c:.1f}×) faster than {base[k][1]}")
            speed_rows.append(row)
        if args.target_kinds:
            kind_rows += target_kind_rows(tax, logits, target, losses, dense_soft, args, dev, C)
        if args.breakdown:
            tree = losses["HXELoss"].tree
            values = np.random.default_rng(0).random((args.batch, 2 * tree.num_rings - 1)).astype(np.float32)
            kernels = {
                "F.cross_entropy": lambda z, t: F.cross_entropy(z, t),
                "  log_softmax (forward only)": lambda z, t: torch.log_softmax(z.detach(), 1).sum(),
                "  ring layout (forward only)": lambda z, t: torch.tensor(float(tree.rings(t).lengths.sum())),
                "  ring segment sum (forward only)":
                    lambda z, t: torch.tensor(float(tree.rings(t).sum(z.detach().numpy()).sum())),
                "  ring expansion (forward only)":
                    lambda z, t: torch.tensor(float(tree.rings(t).expand(values).sum())),
            }
            fns = {k: _no_backward(f) for k, f in kernels.items()}
            ks = time_methods(fns, logits, target, max(2, args.rounds // 5), dev, block=args.block)
            kc = time_methods(fns, logits, target, args.rounds, dev)
            for k in kernels:
                speed_rows.append({"C": C, "loss": k, "ms": fmt_ms(ks[k]), "× CE": f"{ks[k] / ks['F.cross_entropy']:.2f}",
                                   "cold ms": fmt_ms(kc[k]), "cold × CE": f"{kc[k] / kc['F.cross_entropy']:.2f}",
                                   "vs baseline": "kernel alone" if k.startswith(" ") else "forward+backward"})
        for k, m in losses.items():
            mem_rows.append({"C": C, "nodes": tax.num_nodes, "loss": k, "buffers": fmt_bytes(m.buffer_bytes()),
                             "bytes / node": f"{m.buffer_bytes() / tax.num_nodes:.0f}"})
        mem_rows.append({"C": C, "nodes": tax.num_nodes, "loss": "dense soft targets (C, C)",
                         "buffers": fmt_bytes(dense_soft.matrix.numel() * 4),
                         "bytes / node": f"{dense_soft.matrix.numel() * 4 / tax.num_nodes:.0f}"})
    print()
    print(render(speed_rows, args.markdown))
    if kind_rows:
        print()
        print(render(kind_rows, args.markdown))
    print()
    print(render(mem_rows, args.markdown))
    return 0


def target_kind_rows(tax, logits, target, losses, dense_soft, args, dev, C):
    """Each loss on four kinds of target, timed side by side (steady): classes, Mixup rows (two classes
    per row, as timm's Mixup makes them), label smoothing 0.1, and coarse labels (every target one
    level up); the dense baseline of probability targets is F.cross_entropy(z, p @ Q)."""
    B = args.batch
    g = torch.Generator().manual_seed(1)
    lam = torch.rand(B, 1, generator=g)
    partner = target[torch.randperm(B, generator=g)]
    mixed = torch.zeros(B, C)
    mixed.scatter_(1, target.cpu()[:, None], lam)
    mixed.scatter_add_(1, partner.cpu()[:, None], 1 - lam)
    mixed = mixed.to(dev)
    coarse = torch.from_numpy(tax.encode([tax.parent(tax.classes[int(t)]) for t in target.cpu()])).to(dev)
    smoothed = {k: type(m)(**_options(tax, m, label_smoothing=0.1)).to(dev) for k, m in losses.items()}
    coarse_mods = {k: type(m)(**_options(tax, m, coarse_labels=True)).to(dev) for k, m in losses.items()}
    q = dense_soft.matrix
    methods = {"F.cross_entropy (classes)": lambda z, t: F.cross_entropy(z, target),
               "F.cross_entropy (probabilities, dense p @ Q)": lambda z, t: F.cross_entropy(z, mixed @ q)}
    skipped = []
    for k, m in losses.items():
        methods[f"{k} (classes)"] = lambda z, t, m=m: m(z, target)
        methods[f"{k} (probabilities)"] = lambda z, t, m=m: m(z, mixed)
        if k == "PairwiseCostLoss" and C > 2000:  # its uniform part is every pair of classes: O(B·C²)
            skipped.append(f"{k} (label smoothing)")
        else:
            methods[f"{k} (label smoothing)"] = lambda z, t, m=smoothed[k]: m(z, target)
        methods[f"{k} (coarse labels)"] = lambda z, t, m=coarse_mods[k]: m(z, coarse)
    steady = time_methods(methods, logits, target, max(2, args.rounds // 5), dev, block=args.block)
    rows = [{"C": C, "loss (target)": k, "ms": "not timed", "× CE": "O(B·C²)", "× classes": ""} for k in skipped]
    for k, s in steady.items():
        base = k.rsplit(" (", 1)[0]
        classes = steady.get(f"{base} (classes)", steady["F.cross_entropy (classes)"])
        rows.append({"C": C, "loss (target)": k, "ms": fmt_ms(s), "× CE": f"{s / steady['F.cross_entropy (classes)']:.2f}",
                     "× classes": f"{s / classes:.2f}"})
    return rows


def _options(tax, mod, **extra):
    """Constructor arguments that rebuild ``mod`` with ``extra`` options (the benchmark's own losses)."""
    kind = type(mod).__name__
    base = {"HierarchicalSoftLabelLoss": lambda: dict(taxonomy=tax, beta=mod.beta),
            "HXELoss": lambda: dict(taxonomy=tax, alpha=mod.alpha),
            "ExpectedCostLoss": lambda: dict(source=tax),
            "TreeWassersteinLoss": lambda: dict(taxonomy=tax, ce_weight=mod.ce_weight),
            "PairwiseCostLoss": lambda: dict(source=tax)}[kind]()
    return base | extra


if __name__ == "__main__":
    sys.exit(main())
