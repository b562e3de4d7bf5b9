"""Conditional risk minimisation: structured O(B·N) vs dense O(B·C²), measured side by side.

``crm_predict`` on probabilities ``(B, C)``, float32, B = 256, C = 1,000 and
10,000 on the synthetic taxonomy of ``benchmarks/losses.py`` (depth 7). Both
paths are prepared once (:class:`~taxosmooth.decision.CRMClassifier`: node
costs on the compiled tree, or the ``(C, C)`` cost matrix), then timed
interleaved round by round; the median is reported. The ratio is
dense time / structured time. The preparation (one-off) and the buffer memory
are reported too, and the two paths' decisions are compared.

    python benchmarks/decision.py                 # CPU, text table
    python benchmarks/decision.py --markdown      # a table for the docs
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


def time_methods(methods: dict, rounds: int, device: str) -> dict[str, float]:
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for fn in methods.values():  # warm up
        fn()
        fn()
    times = {k: [] for k in methods}
    for _ in range(rounds):
        for k, fn in methods.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


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
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
