"""Speed and memory of the structured losses against cross entropy and dense baselines.

Forward + backward, float32, batch 256, C = 1,000 and 10,000 on a synthetic
taxonomy (depth 7 by default, classes in the file's DFS order). Every method is
timed in the same run, methods taking turns round by round, and reported as the
median; every ``× CE`` is a ratio to eager ``F.cross_entropy`` with hard labels,
measured alongside. The main table:

* ``ms``, ``× CE`` (steady): each turn is a block of consecutive calls of one
  method (the first two dropped), as ``timeit`` measures;
* ``cold ms``, ``cold × CE``: one call per method per turn, so each call follows
  another method's pass over memory (caches hold someone else's data), as a
  loss follows the model's forward in training;
* ``compiled ms``, ``compiled × CE``, ``× eager`` (unless ``--no-compile``):
  ``torch.compile(method, fullgraph=True, dynamic=False)`` (inductor), warmed
  up before timing (compile time is not counted; the total is printed below
  the tables), timed in the steady rounds with the eager methods; ``× eager``
  is compiled / eager of the same method. ``torch.compile(F.cross_entropy)``
  is its own row: the compiled baseline;
* ``launching ops``: the kernel-launching top-level ops of one eager
  forward+backward, counted by ``torch.profiler`` (``_util.launching_ops``;
  ``F.cross_entropy`` counts 4). On the CPU the eager segment kernels are numpy
  calls, which the profiler does not see: CPU counts are 1-4 lower than CUDA's.

``--target-kinds`` adds a table of every loss on four kinds of target: class
ids, probability rows (Mixup: two classes per row), label smoothing 0.1, coarse
labels (every target one level up); ``× classes`` is the ratio to the same
loss (eager or compiled) on class ids. ``--breakdown`` times the primitives
alone: the path layout of a batch (``TreeTensors.lengths_of``), and
``segment_sum`` / ``expand`` on that ``(B, 2R-1)`` layout. The memory table
lists the buffers each loss holds.

    python benchmarks/losses.py                   # CPU, text tables
    python benchmarks/losses.py --markdown        # tables for the docs
    python benchmarks/losses.py --device cuda     # on a GPU
    python benchmarks/losses.py --no-compile      # eager only (compiling takes a while on a CPU)
    python benchmarks/losses.py --shuffle-classes # class order != DFS order

Baselines written here (up to ``DENSE_MAX_CLASSES`` classes):

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
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import taxosmooth as ts
from _util import fmt_bytes, launching_ops, table
from taxosmooth.tree_ops import expand, segment_sum

DENSE_MAX_CLASSES = 20_000  # a (C, C) float32 matrix: 1.6 GB at 20,000 classes
DENSE_HXE_MAX_CLASSES = 1_000
CE = "F.cross_entropy"
COMPILED_CE = "torch.compile(F.cross_entropy)"
COMPILED_COLUMNS = ("compiled ms", "compiled × CE", "× eager", "compiled × classes")

#: the losses measured, built on a taxonomy with extra options (label_smoothing, coarse_labels)
LOSSES: dict[str, Callable[..., torch.nn.Module]] = {
    "HierarchicalSoftLabelLoss": lambda tax, **kw: ts.HierarchicalSoftLabelLoss(tax, beta=10.0, **kw),
    "HXELoss": lambda tax, **kw: ts.HXELoss(tax, alpha=0.5, **kw),
    "ExpectedCostLoss": lambda tax, **kw: ts.ExpectedCostLoss(tax, **kw),
    "TreeWassersteinLoss": lambda tax, **kw: ts.TreeWassersteinLoss(tax, ce_weight=0.0, **kw),
    "PairwiseCostLoss": lambda tax, **kw: ts.PairwiseCostLoss(tax, **kw),
}

Method = Callable[[torch.Tensor], Any]  # logits -> loss (anything with .backward())


# ------------------------------------------------------------------ problems
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


def problem(num_classes: int, batch: int, depth: int, device: str, shuffle_classes: bool = False):
    """``(taxonomy, logits (B, C), class ids (B,))``, the same for every run."""
    tax = synthetic_taxonomy(num_classes, depth, shuffle_classes=shuffle_classes)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, num_classes, generator=g).mul_(3).to(device)
    target = torch.randint(0, num_classes, (batch,), generator=g).to(device)
    return tax, logits, target


def build_losses(tax: ts.Taxonomy, device: str, **options) -> dict[str, torch.nn.Module]:
    return {k: make(tax, **options).to(device) for k, make in LOSSES.items()}


def mixup_rows(target: torch.Tensor, num_classes: int, seed: int = 1) -> torch.Tensor:
    """Probability rows as timm's Mixup makes them: ``λ`` on the row's class, ``1 - λ`` on another row's."""
    g = torch.Generator().manual_seed(seed)
    b = target.shape[0]
    lam = torch.rand(b, 1, generator=g)
    partner = target.cpu()[torch.randperm(b, generator=g)]
    rows = torch.zeros(b, num_classes)
    rows.scatter_(1, target.cpu()[:, None], lam)
    rows.scatter_add_(1, partner[:, None], 1 - lam)
    return rows.to(target.device)


def coarse_ids(tax: ts.Taxonomy, target: torch.Tensor) -> torch.Tensor:
    """Every class id replaced by its parent's node id (a coarse label one level up)."""
    parents = [tax.parent(tax.classes[int(t)]) for t in target.cpu()]
    return torch.from_numpy(tax.encode(parents)).to(target.device)


def loss_cases(tax: ts.Taxonomy, losses: dict, target: torch.Tensor, device: str) -> dict[str, tuple]:
    """``"Loss (kind)" -> (loss module, its target)`` for every loss on four kinds of target: class ids,
    probability rows (Mixup), label smoothing 0.1, coarse labels (every target one level up)."""
    kinds = {"classes": (losses, target),
             "probabilities": (losses, mixup_rows(target, tax.num_classes)),
             "label smoothing": (build_losses(tax, device, label_smoothing=0.1), target),
             "coarse labels": (build_losses(tax, device, coarse_labels=True), coarse_ids(tax, target))}
    return {f"{k} ({kind})": (modules[k], t) for k in losses for kind, (modules, t) in kinds.items()}


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


# ------------------------------------------------------------------ measuring
def bind(fn: Callable, target: torch.Tensor) -> Method:
    return lambda z: fn(z, target)


def compiled(fn: Callable) -> Callable:
    """``fn`` compiled whole (inductor), for the fixed shapes of a training step."""
    return torch.compile(fn, fullgraph=True, dynamic=False)


def compile_all(cases: Mapping[str, tuple[Callable, torch.Tensor]], logits: torch.Tensor, notes: list[str],
                where: str) -> dict[str, Method]:
    """``case -> compiled method`` (bound to its target), compiled and warmed up; a case whose compilation
    fails is left out (its cells read ``—``), with a note."""
    out: dict[str, Method] = {}
    t0 = time.perf_counter()
    for k, (fn, target) in cases.items():
        method = bind(compiled(fn), target)
        try:
            warm_up({k: method}, logits)
        except Exception as exc:  # an inductor bug in one case must not cost the whole table
            notes.append(f"{where}: torch.compile of {k} failed: {type(exc).__name__}: {first_line(exc)}")
            continue
        out[k] = method
    notes.append(f"{where}: compiling and warming up {len(cases)} functions took {time.perf_counter() - t0:.0f} s "
                 "(not timed)")
    return out


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def step(fn: Method, logits: torch.Tensor) -> None:
    """One forward+backward of ``fn`` on a fresh leaf view of ``logits``."""
    z = logits.detach().requires_grad_(True)
    fn(z).backward()


def warm_up(methods: Mapping[Any, Method], logits: torch.Tensor, calls: int = 3) -> None:
    """Call every method ``calls`` times (compiling the compiled ones)."""
    for fn in methods.values():
        for _ in range(calls):
            step(fn, logits)
    if logits.is_cuda:
        torch.cuda.synchronize()


def time_methods(methods: Mapping[Any, Method], logits: torch.Tensor, rounds: int, block: int = 1) -> dict:
    """Median seconds per forward+backward: single-threaded CPU, the CPU time of the process (robust
    to other processes competing for the cores); otherwise wall time (after a synchronize on CUDA).

    Methods take turns, round by round, so slow drift of the machine hits all of them alike.
    ``block = 1`` (cold): one call per method per round, so every call follows another method's
    pass over memory, as a loss follows the model's forward in training. ``block > 1`` (steady):
    ``block`` consecutive calls per turn, the first two discarded, so a method is timed after
    itself, as ``timeit`` does.
    """
    cuda = logits.is_cuda
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # process CPU time only means "time of this computation" single-threaded (idle OpenMP workers spin)
    clock = time.process_time if not cuda and torch.get_num_threads() == 1 else time.perf_counter
    warm_up(methods, logits, calls=2)
    skip = 0 if block == 1 else 2
    times: dict[Any, list[float]] = {k: [] for k in methods}
    for _ in range(rounds):
        for k, fn in methods.items():
            for i in range(block):
                sync()
                t0 = clock()
                step(fn, logits)
                sync()
                if i >= skip:
                    times[k].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def count_ops(methods: Mapping[Any, Method], logits: torch.Tensor) -> dict:
    """Launching ops of one forward+backward of every method (:func:`_util.launching_ops`)."""
    return {k: launching_ops(partial(step, fn, logits)) for k, fn in methods.items()}


class _Done:
    def backward(self):
        pass


def forward_only(fn: Callable[[torch.Tensor], object]) -> Method:
    """``fn`` run for its forward alone (:func:`step`'s ``.backward()`` does nothing)."""

    def run(z):
        fn(z)
        return _Done()

    return run


# ------------------------------------------------------------------ tables
def ms(s: float | None) -> str:
    return "—" if s is None else f"{s * 1e3:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None else f"{a / b:.2f}"


def eager_only(rows: list[dict]) -> list[dict]:
    """``rows`` without the compiled columns (``--no-compile``)."""
    return [{k: v for k, v in r.items() if k not in COMPILED_COLUMNS} for r in rows]


def speed_table(C, tax, logits, target, losses, dense, args, notes) -> list[dict]:
    """The main table's rows for ``C`` classes: every loss and baseline, eager and compiled."""
    eager = {CE: bind(F.cross_entropy, target), **{k: bind(m, target) for k, m in losses.items()}}
    if dense is not None:
        eager["dense soft targets"] = bind(dense, target)
    if C <= DENSE_HXE_MAX_CLASSES:
        eager["dense HXE (C,C,K)"] = bind(DenseHXE(tax, alpha=0.5).to(args.device), target)
    comp = {}
    if args.compile:
        comp = compile_all({COMPILED_CE: (F.cross_entropy, target), **{k: (m, target) for k, m in losses.items()}},
                           logits, notes, f"C = {C}")
    steady = time_methods({**eager, **{("compiled", k): f for k, f in comp.items()}}, logits,
                          max(2, args.rounds // 5), block=args.block)
    cold = time_methods(eager, logits, args.rounds)
    ops = count_ops(eager, logits)
    ce, cold_ce = steady[CE], cold[CE]
    baselines = {"HierarchicalSoftLabelLoss": "dense soft targets", "HXELoss": "dense HXE (C,C,K)"}
    rows = []
    for k in eager:
        c = steady.get(("compiled", k))
        b = baselines.get(k)
        rows.append({"C": C, "loss": k, "ms": ms(steady[k]), "× CE": ratio(steady[k], ce),
                     "cold ms": ms(cold[k]), "cold × CE": ratio(cold[k], cold_ce),
                     "compiled ms": ms(c), "compiled × CE": ratio(c, ce), "× eager": ratio(c, steady[k]),
                     "launching ops": ops[k],
                     "vs baseline": f"{steady[b] / steady[k]:.1f}× (cold {cold[b] / cold[k]:.1f}×) faster than {b}"
                     if b in eager else ""})
        if k == CE and args.compile:
            c = steady.get(("compiled", COMPILED_CE))
            rows.append({"C": C, "loss": COMPILED_CE, "ms": "—", "× CE": "—", "cold ms": "—", "cold × CE": "—",
                         "compiled ms": ms(c), "compiled × CE": ratio(c, ce), "× eager": ratio(c, ce),
                         "launching ops": "—", "vs baseline": "the compiled baseline"})
    return rows if args.compile else eager_only(rows)


def kind_table(C, tax, logits, target, losses, dense, args, notes) -> list[dict]:
    """Every loss on every kind of target (steady timing), eager and compiled, with launching ops; the dense
    baseline of probability rows is ``F.cross_entropy(z, p @ Q)``."""
    cases = loss_cases(tax, losses, target, args.device)
    ce_cases: dict[str, tuple[Callable, torch.Tensor]] = {f"{CE} (classes)": (F.cross_entropy, target)}
    if dense is not None:
        ce_cases[f"{CE} (probabilities, dense p @ Q)"] = (lambda z, p: F.cross_entropy(z, p @ dense.matrix),
                                                          mixup_rows(target, C))
    cases = ce_cases | cases
    eager = {k: bind(fn, t) for k, (fn, t) in cases.items()}
    comp = compile_all(cases, logits, notes, f"C = {C}, target kinds") if args.compile else {}
    steady = time_methods({**eager, **{("compiled", k): f for k, f in comp.items()}}, logits,
                          max(2, args.rounds // 5), block=args.block)
    ops = count_ops(eager, logits)
    ce = steady[f"{CE} (classes)"]
    rows = []
    for k in eager:
        own = f"{k.rsplit(' (', 1)[0]} (classes)"
        c, c_own = steady.get(("compiled", k)), steady.get(("compiled", own))
        rows.append({"C": C, "loss (target)": k, "ms": ms(steady[k]), "× CE": ratio(steady[k], ce),
                     "× classes": ratio(steady[k], steady[own]),
                     "compiled ms": ms(c), "compiled × CE": ratio(c, ce), "compiled × classes": ratio(c, c_own),
                     "launching ops": ops[k]})
    return rows if args.compile else eager_only(rows)


def breakdown_table(C, losses, logits, target, args) -> list[dict]:
    """The primitives alone, forward only: the path layout of the batch and the two segment operations."""
    tree = losses["HXELoss"].tree
    lengths = tree.lengths_of(target)
    values = torch.rand(lengths.shape, generator=torch.Generator().manual_seed(2)).to(logits.device)
    kernels = {
        f"{CE} (forward+backward)": bind(F.cross_entropy, target),
        "log_softmax": forward_only(lambda z: torch.log_softmax(z.detach(), 1)),
        "path layout: lengths_of(ids) (B, 2R-1)": forward_only(lambda z: tree.lengths_of(target)),
        "segment_sum (B, C) -> (B, 2R-1)": forward_only(lambda z: segment_sum(z.detach(), lengths)),
        "expand (B, 2R-1) -> (B, C)": forward_only(lambda z: expand(values, lengths, C)),
    }
    steady = time_methods(kernels, logits, max(2, args.rounds // 5), block=args.block)
    cold = time_methods(kernels, logits, args.rounds)
    ce, cold_ce = steady[f"{CE} (forward+backward)"], cold[f"{CE} (forward+backward)"]
    return [{"C": C, "R": tree.num_rings, "kernel (forward only)": k, "ms": ms(steady[k]), "× CE": ratio(steady[k], ce),
             "cold ms": ms(cold[k]), "cold × CE": ratio(cold[k], cold_ce)} for k in kernels]


def memory_table(C, tax, losses) -> list[dict]:
    rows = [{"C": C, "nodes": tax.num_nodes, "loss": k, "buffers": fmt_bytes(m.buffer_bytes()),
             "bytes / node": f"{m.buffer_bytes() / tax.num_nodes:.0f}"} for k, m in losses.items()]
    dense = C * C * 4
    rows.append({"C": C, "nodes": tax.num_nodes, "loss": "dense soft targets (C, C)", "buffers": fmt_bytes(dense),
                 "bytes / node": f"{dense / tax.num_nodes:.0f}"})
    return rows


# ------------------------------------------------------------------ main
def header(args) -> str:
    dev = args.device
    name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "cpu"
    clock = "process CPU time" if not dev.startswith("cuda") and args.threads == 1 else "wall time"
    return (f"# device {dev} ({name}), threads {torch.get_num_threads()}, batch {args.batch}, depth {args.depth}, "
            f"float32, forward+backward; steady: median over {max(2, args.rounds // 5)} rounds of {args.block} "
            f"consecutive calls per method; cold: median over {args.rounds} rounds of one call per method ({clock})"
            + ("; compiled: torch.compile(fullgraph=True, dynamic=False), inductor" if args.compile else "")
            + (", shuffled class order" if args.shuffle_classes else ""))


def parse(argv=None) -> argparse.Namespace:
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
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="skip the compiled timings (compiling takes a while on a CPU)")
    ap.add_argument("--target-kinds", action="store_true",
                    help="also time every loss on probability (Mixup) rows, smoothed and coarse targets")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time the primitives alone (path layout, segment sum, expansion)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    if args.compile:
        torch._dynamo.config.recompile_limit = 64  # one entry per loss and kind of target
        torch._dynamo.config.fail_on_recompile_limit_hit = True  # never time eager code as compiled
    print(header(args))
    tables: dict[str, list[dict]] = {"speed": [], "kinds": [], "breakdown": [], "memory": []}
    notes: list[str] = []
    for C in args.classes:
        torch._dynamo.reset()
        tax, logits, target = problem(C, args.batch, args.depth, args.device, args.shuffle_classes)
        losses = build_losses(tax, args.device)
        dense = None
        if C <= DENSE_MAX_CLASSES:
            dense = ts.SoftTargetCrossEntropy(ts.soft_targets(tax, beta=10.0)).to(args.device)
        tables["speed"] += speed_table(C, tax, logits, target, losses, dense, args, notes)
        if args.target_kinds:
            tables["kinds"] += kind_table(C, tax, logits, target, losses, dense, args, notes)
        if args.breakdown:
            tables["breakdown"] += breakdown_table(C, losses, logits, target, args)
        tables["memory"] += memory_table(C, tax, losses)
        if C > DENSE_MAX_CLASSES:
            notes.append(f"C = {C}: no dense baselines (a (C, C) matrix takes {fmt_bytes(C * C * 4)})")
    for rows in tables.values():
        if rows:
            print()
            print(table(rows, args.markdown))
    if notes:
        print()
        print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
