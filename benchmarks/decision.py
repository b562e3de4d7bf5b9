"""Decisions: conditional risk minimisation (structured O(B·N) vs dense O(B·C²)), decisions at any node,
and operating curves, measured side by side.

``crm_predict`` on probabilities ``(B, C)``, float32, B = 256, C = 1,000 and
10,000 on the synthetic taxonomy of ``benchmarks/losses.py`` (depth 7). Both
paths are prepared once (:class:`~taxosmooth.decision.CRMClassifier`: node
costs on the compiled tree, or the ``(C, C)`` cost matrix), then timed
interleaved round by round; the median is reported. The ratio is
dense time / structured time. The preparation (one-off) and the buffer memory
are reported too, and the two paths' decisions are compared.

Decisions at any node (``--only nodes``): ``node_probabilities`` and ``predict_node`` (each rule)
on B = 10,000 probabilities over C = 10,000 classes, against ``crm_predict`` on the same
probabilities (its costs prepared once), timed interleaved; the ratio is node / CRM time.
Operating curves (``--only curve``): ``operating_curve`` on B = 50,000 samples, C = 1,000 classes.
Each is timed over ``--rounds`` rounds; the median, min and max are reported (a shared machine
varies from run to run).

    python benchmarks/decision.py                 # CPU, text table: CRM, nodes, curve
    python benchmarks/decision.py --only nodes curve --threads 1
    python benchmarks/decision.py --markdown      # tables for the docs
    python benchmarks/decision.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from _util import fmt_bytes, table
from losses import synthetic_taxonomy

import taxosmooth as ts
from taxosmooth.decision import CRMClassifier


def time_rounds(methods: dict, rounds: int, device: str, warmup: int = 2) -> dict[str, list[float]]:
    """Every round times each method once, interleaved; the seconds of every round."""
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for fn in methods.values():  # warm up
        for _ in range(warmup):
            fn()
    times = {k: [] for k in methods}
    for _ in range(rounds):
        for k, fn in methods.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return times


def time_methods(methods: dict, rounds: int, device: str) -> dict[str, float]:
    return {k: statistics.median(v) for k, v in time_rounds(methods, rounds, device).items()}


def spread(v: list[float]) -> str:
    return f"{statistics.median(v):.2f} s ({min(v):.2f}-{max(v):.2f})"


def once(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def buffer_bytes(module: torch.nn.Module) -> int:
    return sum(b.numel() * b.element_size() for b in module.buffers())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--classes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--depth", type=int, default=7)
    ap.add_argument("--k", type=int, default=5, help="the k of the top-k decision row")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--only", nargs="+", choices=("crm", "nodes", "curve"), default=["crm", "nodes", "curve"])
    ap.add_argument("--node-batch", type=int, default=10000)
    ap.add_argument("--node-classes", type=int, default=10000)
    ap.add_argument("--curve-batch", type=int, default=50000)
    ap.add_argument("--curve-classes", type=int, default=1000)
    ap.add_argument("--slow-rounds", type=int, default=3, help="rounds of the node and curve benchmarks")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if "crm" in args.only:
        crm_tables(args)
    if "nodes" in args.only:
        node_table(args)
    if "curve" in args.only:
        curve_table(args)
    return 0


def node_table(args) -> None:
    from taxosmooth.decision import NODE_RULES, node_probabilities, predict_node

    dev, B, C = args.device, args.node_batch, args.node_classes
    tax = synthetic_taxonomy(C, args.depth)
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(B, C, generator=g), 1).to(dev)
    crm = CRMClassifier(torch.nn.Identity(), tax).to(dev)  # the costs, prepared once
    methods = {"crm_predict": lambda: ts.crm_predict(probs, crm.costs),
               "node_probabilities": lambda: node_probabilities(probs, tax)}
    methods |= {f"predict_node {r}": (lambda r=r: predict_node(probs, tax, r)) for r in NODE_RULES}
    times = time_rounds(methods, args.slow_rounds, dev, warmup=1)
    base = statistics.median(times["crm_predict"])
    rows = []
    for name, v in times.items():
        rows.append({"operation": name, "seconds (median, min-max)": spread(v),
                     "/ crm_predict": f"{statistics.median(v) / base:.2f}×"})
    print(f"\n# decisions at any node: B {B}, C {C} ({tax.num_nodes} nodes, depth {args.depth}), float32, device {dev}, "
          f"threads {torch.get_num_threads()}, {args.slow_rounds} interleaved rounds")
    print(table(rows, args.markdown))


def curve_table(args) -> None:
    from taxosmooth.metrics import operating_curve

    dev, B, C = args.device, args.curve_batch, args.curve_classes
    tax = synthetic_taxonomy(C, args.depth)
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(B, C, generator=g)
    target = torch.randint(0, C, (B,), generator=g)
    logits[torch.arange(B), target] += 4  # a model that is right about a third of the time
    probs = torch.softmax(logits, 1).to(dev)
    target = target.to(dev)
    times = time_rounds({"operating_curve": lambda: operating_curve(probs, target, tax)}, args.slow_rounds, dev, warmup=1)
    curve = operating_curve(probs, target, tax)
    print(f"\n# operating curve: B {B}, C {C} ({tax.num_nodes} nodes, depth {args.depth}), float32, device {dev}, "
          f"threads {torch.get_num_threads()}, {args.slow_rounds} rounds")
    print(table([{"operation": "operating_curve", "seconds (median, min-max)": spread(times["operating_curve"]),
                  "points": str(len(curve)), "AC(depth)": f"{curve.area('depth_recall', 'correct').item():.4f}"}],
                args.markdown))


def crm_tables(args) -> None:
    dev = args.device
    print(f"# torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"depth {args.depth}, float32, median of {args.rounds} interleaved rounds")
    speed, setup = [], []
    for C in args.classes:
        tax = synthetic_taxonomy(C, args.depth)
        g = torch.Generator().manual_seed(0)
        probs = torch.softmax(3 * torch.randn(args.batch, C, generator=g), 1).to(dev)
        structured, t_struct = once(lambda: CRMClassifier(torch.nn.Identity(), tax, k=args.k, from_logits=False).to(dev))
        dense, t_dense = once(lambda: CRMClassifier(torch.nn.Identity(), ts.cost_matrix(tax), k=args.k, from_logits=False).to(dev))
        setup.append({
            "C": C, "nodes": tax.num_nodes,
            "structured setup": f"{t_struct * 1e3:.1f} ms", "dense setup": f"{t_dense * 1e3:.1f} ms",
            "structured buffers": fmt_bytes(buffer_bytes(structured)), "dense buffers": fmt_bytes(buffer_bytes(dense)),
        })
        # m.costs: the costs the classifier prepared once; crm_predict accepts them as they are
        k1_s = lambda m: (lambda: ts.crm_predict(probs, m.costs))  # noqa: E731
        methods = {
            ("risk", "structured"): lambda: structured.risk(probs),
            ("risk", "dense"): lambda: dense.risk(probs),
            ("top-1", "structured"): k1_s(structured),
            ("top-1", "dense"): k1_s(dense),
            (f"top-{args.k}", "structured"): lambda: structured.predict(probs),
            (f"top-{args.k}", "dense"): lambda: dense.predict(probs),
        }
        t = time_methods(methods, args.rounds, dev)
        with torch.no_grad():
            agree = (ts.crm_predict(probs, structured.costs) == ts.crm_predict(probs, dense.costs)).float().mean().item()
        for op in ("risk", "top-1", f"top-{args.k}"):
            s, d = t[(op, "structured")], t[(op, "dense")]
            speed.append({
                "C": C, "operation": op if op != "risk" else "conditional_risk",
                "structured ms": f"{s * 1e3:.2f}", "dense ms": f"{d * 1e3:.2f}", "dense / structured": f"{d / s:.1f}×",
            })
        speed[-1]["top-1 agreement"] = f"{agree:.1%}"
        for row in speed[-3:-1]:
            row["top-1 agreement"] = ""
    print()
    print(table(speed, args.markdown))
    print()
    print(table(setup, args.markdown))


if __name__ == "__main__":
    sys.exit(main())
