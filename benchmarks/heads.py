"""Speed of the heads against a flat ``nn.Linear`` + ``F.cross_entropy`` head of the same width.

Forward + backward (through the head's parameters and its input), float32,
batch 256, C = 1,000 and 10,000 on the synthetic depth-7 taxonomy of
``benchmarks/losses.py``. Every method is timed in the same run, methods
taking turns round by round (``time_methods`` of ``benchmarks/losses.py``:
steady and cold timings, medians); ratios are against the flat head measured
alongside.

* ``HierarchicalSoftmax`` as a user writes it, ``F.cross_entropy(head(x), t)``,
  and through ``head.loss(x, t)`` (the same value, without the ``(N, C)``
  output);
* ``LevelwiseHead.loss``, ``EmbeddingHead.loss`` and ``FixedClassifier.loss``
  (the last two build a ``(C, C)`` eigendecomposition once: C <= 2,000 only);
* the ``hierarchicalsoftmax`` package (if installed): its
  ``HierarchicalSoftmaxLinear``-sized ``nn.Linear`` and
  ``HierarchicalSoftmaxLoss``, which loops over the samples and the path in
  Python; C <= 1,000 only. Also both losses alone, from fixed scores (the
  linear layer, the same work for both, left out):
  ``HierarchicalSoftmax.loss_from_scores`` against ``HierarchicalSoftmaxLoss``.

    python benchmarks/heads.py                    # CPU, text table
    python benchmarks/heads.py --markdown         # a table for the docs
    python benchmarks/heads.py --features 512 2048
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from losses import fmt_ms, render, synthetic_taxonomy, time_methods  # noqa: E402

from taxosmooth.embeddings import haframe_weights  # noqa: E402
from taxosmooth.heads import EmbeddingHead, FixedClassifier, HierarchicalSoftmax, LevelwiseHead  # noqa: E402


def package_methods(tax, in_features: int, batch: int, device: str):
    """The hierarchicalsoftmax package's layer + loss, and its loss alone on fixed scores (None if not installed)."""
    try:
        from hierarchicalsoftmax import HierarchicalSoftmaxLoss, SoftmaxNode
    except ImportError:
        return None
    nodes = {}
    for name in tax.nodes:
        parent = tax.parent(name)
        nodes[name] = SoftmaxNode(str(name), parent=None if parent is None else nodes[parent])
    root = nodes[tax.root]
    root.set_indexes()
    layer = torch.nn.Linear(in_features, root.layer_size).to(device)
    loss = HierarchicalSoftmaxLoss(root)
    to_package = torch.tensor([root.node_to_id[nodes[c]] for c in tax.classes], device=device)
    scores = torch.randn(batch, root.layer_size, generator=torch.Generator().manual_seed(1)).to(device)
    return (lambda x, t: loss(layer(x), to_package[t]),
            lambda x, t: loss(scores.detach().requires_grad_(True), to_package[t]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--classes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--features", type=int, nargs="+", default=[512], help="in_features of every head")
    ap.add_argument("--depth", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=30, help="rounds of the cold timing (one call per method per round)")
    ap.add_argument("--block", type=int, default=12, help="consecutive calls per turn in the steady timing")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: CPU time is then robust to other load; with more, wall time)")
    ap.add_argument("--no-package", action="store_true", help="skip the hierarchicalsoftmax package")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = args.device
    print(f"# torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"depth {args.depth}, float32, forward+backward; steady: median over {max(2, args.rounds // 5)} rounds "
          f"of {args.block} consecutive calls per method; cold: median over {args.rounds} rounds of one call per "
          f"method ({'process CPU time' if not dev.startswith('cuda') and args.threads == 1 else 'wall time'})")
    rows = []
    for C in args.classes:
        tax = synthetic_taxonomy(C, args.depth)
        for width in args.features:
            g = torch.Generator().manual_seed(0)
            x = torch.randn(args.batch, width, generator=g).to(dev)
            target = torch.randint(0, C, (args.batch,), generator=g).to(dev)
            flat = torch.nn.Linear(width, C).to(dev)
            hs = HierarchicalSoftmax(width, tax).to(dev)
            levels = LevelwiseHead(width, tax).to(dev)
            methods = {
                "flat nn.Linear + F.cross_entropy": lambda x, t: F.cross_entropy(flat(x), t),
                "HierarchicalSoftmax + F.cross_entropy": lambda x, t: F.cross_entropy(hs(x), t),
                "HierarchicalSoftmax.loss": hs.loss,
                "LevelwiseHead.loss": levels.loss,
            }
            if C <= 2000:
                emb = EmbeddingHead(width, tax).to(dev)
                frame = FixedClassifier(width, haframe_weights(tax)).to(dev)
                methods["EmbeddingHead.loss"] = emb.loss
                methods["FixedClassifier.loss (HAFrame)"] = frame.loss
            package = None if args.no_package or C > 1000 else package_methods(tax, width, args.batch, dev)
            if package is not None:
                scores = torch.randn(args.batch, hs.num_scores, generator=g).to(dev)
                methods["hierarchicalsoftmax package"] = package[0]
                methods["HierarchicalSoftmax.loss_from_scores (no layer)"] = (
                    lambda x, t: hs.loss_from_scores(scores.detach().requires_grad_(True), t))
                methods["package HierarchicalSoftmaxLoss (no layer)"] = package[1]
            steady = time_methods(methods, x, target, max(2, args.rounds // 5), dev, block=args.block)
            cold = time_methods(methods, x, target, args.rounds, dev)
            base = "flat nn.Linear + F.cross_entropy"
            for k in methods:
                s, c = steady[k], cold[k]
                row = {"C": C, "in_features": width, "nodes": tax.num_nodes, "method": k, "ms": fmt_ms(s),
                       "× flat": f"{s / steady[base]:.2f}", "cold ms": fmt_ms(c), "cold × flat": f"{c / cold[base]:.2f}",
                       "vs package": ""}
                if package is not None and k.startswith("HierarchicalSoftmax"):
                    ref = ("package HierarchicalSoftmaxLoss (no layer)" if "no layer" in k
                           else "hierarchicalsoftmax package")
                    row["vs package"] = f"{steady[ref] / s:.0f}× (cold {cold[ref] / c:.0f}×) faster"
                rows.append(row)
            print(f"  C={C}, in_features={width}: done", file=sys.stderr, flush=True)
    print()
    print(render(rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
