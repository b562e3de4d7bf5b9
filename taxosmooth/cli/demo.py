"""``taxosmooth demo``: the whole idea on the bundled animal taxonomy, in a few seconds.

1. load and describe the bundled taxonomy (40 animals: horse, zebra, whale, shark, ...);
2. print the soft targets of a few classes: how much of horse's target mass goes to
   zebra, to whale, to shark;
3. train a linear classifier on synthetic features whose class means follow the tree
   (siblings share most of their mean) with plain cross entropy, with hierarchical soft
   labels, with hierarchical cross entropy (HXE), and with cross entropy plus conditional
   risk minimisation (CRM) at test time, and print the top-1 error and how bad the
   mistakes are (mistake severity, mean hierarchical distance @1 and @5) over a few seeds.

The synthetic data are :func:`taxosmooth.data.make_tree_blobs`.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from taxosmooth.cli._common import add_command, add_progress_option, nonnegative_float, positive_int, step

EPILOG = """
  taxosmooth demo
  taxosmooth demo --beta 10 --seed 1
  taxosmooth demo --quick          # one short training run per method

The training data are synthetic (taxosmooth.data.make_tree_blobs): each node of the tree
gets a random vector and a class's features are the sum of the vectors on its path plus
noise, so related classes look alike. The numbers show what the losses do on such data;
they are not a benchmark.
"""

#: the classes whose soft targets are printed (all in the bundled taxonomy)
SHOWN_CLASSES = ("horse", "zebra", "whale", "shark")
#: the noise of the synthetic features, in units of one edge (about the spread of the animals' class centres)
NOISE = 2.0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_command(
        subparsers, "demo",
        help="run the main example on the bundled animal taxonomy (soft targets and a tiny training run)",
        description="Load the bundled animal taxonomy, print the soft targets of horse, zebra, whale and "
                    "shark, then train a small classifier on synthetic data with cross entropy, with "
                    "hierarchical soft labels, with hierarchical cross entropy, and with cost-aware decisions (CRM), and compare their "
                    "top-1 error and the severity of their mistakes.",
        epilog=EPILOG,
    )
    p.add_argument("--beta", type=nonnegative_float, default=4.0,
                   help="inverse temperature of the soft targets (larger: closer to one-hot)")
    p.add_argument("--alpha", type=nonnegative_float, default=0.5,
                   help="HXE's alpha: weight exp(-alpha depth) of each level (larger: the coarse levels count more)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and of the first training run")
    p.add_argument("--seeds", type=positive_int, default=3, help="training runs per method (mean ± std)")
    p.add_argument("--quick", action="store_true", help="one short run per method (for a smoke test)")
    p.add_argument("--no-train", action="store_true", help="only describe the taxonomy and print the targets")
    add_progress_option(p)
    p.set_defaults(func=run)
    return p


# ---------------------------------------------------------------- printing
def target_table(q, tax, names) -> str:
    """The soft targets among ``names``: row t, column i is ``q_t(i)``."""
    idx = [tax.class_index(n) for n in names]
    sub = np.asarray(q)[np.ix_(idx, idx)]
    width = max(8, *(len(n) for n in names))
    lines = [" " * (width + 2) + "".join(f"{n:>{width}}" for n in names)]
    for n, row in zip(names, sub):
        lines.append(f"{n:>{width}}  " + "".join(f"{v:>{width}.3f}" for v in row))
    return "\n".join(lines)


def row_by_distance(q, distances, tax, name: str, max_names: int = 4) -> str:
    """One class's soft-target row, grouped by distance (every class at a distance gets the same mass)."""
    t = tax.class_index(name)
    q_row, d_row = np.asarray(q)[t], np.asarray(distances)[t]
    lines = [f"  {'d':>3}  {'classes':<42} {'each':>7} {'total':>7}"]
    for d in np.unique(d_row):
        members = np.flatnonzero(d_row == d)
        shown = ", ".join(str(tax.classes[i]) for i in members[:max_names])
        if len(members) > max_names:
            shown += f", ... ({len(members)} classes)"
        lines.append(f"  {d:>3g}  {shown:<42} {q_row[members[0]]:>7.4f} {q_row[members].sum():>7.4f}")
    return "\n".join(lines)


# ---------------------------------------------------------------- synthetic task
def train_linear(x, y, num_classes: int, loss_fn, steps: int, seed: int):
    """A linear classifier trained full-batch with Adam; returns the model."""
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return model


def evaluate(scores, y, tax) -> dict:
    """Top-1 error, mistake severity, mean hierarchical distance @1 and @5 (``lca_height``) of a ranking."""
    from taxosmooth.metrics import mean_hierarchical_distance_at_k, mistake_severity, topk_error

    return {
        "top-1 error": topk_error(scores, y).item(),
        "mistake severity": mistake_severity(scores, y, tax).item(),
        "mean h. dist @1": mean_hierarchical_distance_at_k(scores, y, tax, 1).item(),
        "mean h. dist @5": mean_hierarchical_distance_at_k(scores, y, tax, 5).item(),
    }


def results_table(results: dict[str, list[dict]]) -> str:
    metrics = list(next(iter(results.values()))[0])
    width = max(len(m) for m in results) + 2
    lines = [f"{'method':<{width}}" + "".join(f"{m:>20}" for m in metrics)]
    for method, runs in results.items():
        cells = []
        for m in metrics:
            v = np.array([r[m] for r in runs])
            cells.append(f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v[0]:.3f}")
        lines.append(f"{method:<{width}}" + "".join(f"{c:>20}" for c in cells))
    return "\n".join(lines)


def methods(tax, beta: float, alpha: float):
    """(name, training loss, test-time scores from logits) for each compared method."""
    import torch

    from taxosmooth.decision import conditional_risk
    from taxosmooth.losses import HierarchicalSoftLabelLoss, HXELoss

    def logits(z):
        return z

    def crm_scores(z):  # rank by expected cost, lowest first (Karthik et al., ICLR 2021)
        return -conditional_risk(z, tax, from_logits=True)

    ce = torch.nn.CrossEntropyLoss()
    return [
        ("cross entropy", ce, logits),
        (f"soft labels (beta={beta:g})", HierarchicalSoftLabelLoss(tax, beta), logits),
        (f"HXE (alpha={alpha:g})", HXELoss(tax, alpha), logits),
        ("cross entropy + CRM", ce, crm_scores),
    ]


def run(args: argparse.Namespace) -> int:
    import torch

    from taxosmooth import class_distances, soft_targets
    from taxosmooth.data import class_means, example_path, load_animals, make_tree_blobs

    path = example_path("animals.csv")
    tax = load_animals()
    print(f"taxosmooth demo: the bundled taxonomy {path}")
    print(f"(see it whole: taxosmooth info {path}; plot it: taxosmooth plot {path} -o animals.png)\n")
    print(tax.describe())

    d = class_distances(tax, "lca_height")
    q = soft_targets(tax, args.beta).numpy()
    print(f"\nSoft targets q_t(i) = softmax_i(-beta d(t, i) / max d), beta = {args.beta:g}, d = height of the lowest")
    print(f"common ancestor (max d = {d.max():g}). Row t is what a model is trained towards when the truth is t:\n")
    print(target_table(q, tax, SHOWN_CLASSES))
    print("\nThe whole row of 'horse', grouped by distance (horse -> zebra is a small mistake, horse -> shark a big one):")
    print(row_by_distance(q, d, tax, "horse"))
    if args.no_train:
        return 0

    seeds = 1 if args.quick else args.seeds
    steps = 100 if args.quick else 300
    per_class_train, per_class_test = (10, 25) if args.quick else (15, 100)
    # one task (the class centres); each seed draws its own training and test samples and initialisation
    means = class_means(tax, seed=args.seed)
    samples = []
    for s in range(seeds):
        g = torch.Generator().manual_seed(10_000 * (args.seed + 1) + s)
        samples.append((*make_tree_blobs(tax, per_class_train, means=means, noise=NOISE, seed=g),
                        *make_tree_blobs(tax, per_class_test, means=means, noise=NOISE, seed=g)))
    print(f"\nA linear classifier on synthetic features ({tax.num_classes} classes, {len(samples[0][1])} training and "
          f"{len(samples[0][3])} test samples, {steps} full-batch Adam steps, {seeds} seed{'s' if seeds > 1 else ''}):\n")
    # a model this small trains fastest on one thread (and does not fight other processes for cores)
    torch.set_num_threads(1)
    results: dict[str, list[dict]] = {}
    for name, loss_fn, decide in methods(tax, args.beta, args.alpha):
        with step(args, f"training: {name}"):
            for s, (x_train, y_train, x_test, y_test) in enumerate(samples):
                model = train_linear(x_train, y_train, tax.num_classes, loss_fn, steps, args.seed + s)
                with torch.no_grad():
                    scores = decide(model(x_test))
                results.setdefault(name, []).append(evaluate(scores, y_test, tax))
    print(results_table(results))
    print("\nLower is better everywhere. Mistake severity: mean distance of the wrong top-1 predictions;"
          "\nmean h. dist @k: mean hierarchical distance of the k best predictions (a correct one counts 0).")
    sys.stdout.flush()
    return 0
