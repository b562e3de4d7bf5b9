"""Every loss × every target kind under ``torch.compile(fullgraph=True)``: one graph, the eager values and gradients.

``fullgraph=True`` makes a graph break an error, so these tests also pin that no loss reads tensor values
on the host (no ``.item()``, ``nonzero``, data-dependent branch) while compiling. The default suite compiles
with the ``aot_eager`` backend (Dynamo and AOTAutograd, the parts that trace); the ``slow`` tests generate
code with the default backend (inductor), as a training script does.
"""

from __future__ import annotations

import shutil

import pytest
import torch

import taxosmooth as ts
from taxosmooth import functional as TF

UNBALANCED = {"r": {"a": {"a1": None, "a2": {"a3": None, "a4": None}}, "b": {"b1": {"b2": {"b3": None}}},
                    "c": ["c1", "c2", "c3"]}}


@pytest.fixture(scope="module")
def tax():
    # classes not in DFS order; a unary chain (b1 -> b2 -> b3); classes at depths 2-4
    return ts.Taxonomy.from_nested(UNBALANCED, classes=["c2", "a1", "b3", "a4", "c1", "a3", "c3"])


LOSSES = {
    "soft": lambda tax, **k: ts.HierarchicalSoftLabelLoss(tax, 2.0, **k),
    "hxe": lambda tax, **k: ts.HXELoss(tax, 0.5, **k),
    "cost": lambda tax, **k: ts.ExpectedCostLoss(tax, ce_weight=0.1, **k),
    "wasserstein": lambda tax, **k: ts.TreeWassersteinLoss(tax, **k),
    "pairwise": lambda tax, **k: ts.PairwiseCostLoss(tax, **k),
    "soft_target": lambda tax, **k: ts.SoftTargetCrossEntropy(ts.soft_targets(tax, 2.0), **k),
}
KINDS = ["ids", "weighted_ignored", "prob", "smooth", "coarse", "spatial_none"]


def target_for(tax, kind, n=8):
    g = torch.Generator().manual_seed(5)
    C = tax.num_classes
    if kind == "prob":
        return torch.softmax(torch.randn(n, C, generator=g, dtype=torch.float64), 1), {}
    if kind == "coarse":
        return torch.randint(0, tax.num_nodes, (n,), generator=g), {"coarse_labels": True, "label_smoothing": 0.1}
    t = torch.randint(0, C, (n,), generator=g)
    if kind == "weighted_ignored":
        t[2] = -100
        return t, {"weight": torch.linspace(0.5, 2.0, C, dtype=torch.float64)}
    if kind == "smooth":
        return t, {"label_smoothing": 0.2}
    if kind == "spatial_none":
        return torch.randint(0, C, (2, 3), generator=g), {"reduction": "none"}
    return t, {}


def logits_for(tax, kind, n=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(6)
    shape = (2, tax.num_classes, 3) if kind == "spatial_none" else (n, tax.num_classes)
    return (3 * torch.randn(shape, generator=g, dtype=dtype)).requires_grad_()


def check(fn, eager, z, t, atol=1e-10):
    z1 = z.detach().clone().requires_grad_()
    z2 = z.detach().clone().requires_grad_()
    a, b = fn(z1, t), eager(z2, t)
    torch.testing.assert_close(a, b, rtol=atol, atol=atol)
    a.sum().backward()
    b.sum().backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=atol, atol=atol)


def compiled(fn, backend):
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend=backend)


def _pairs(kinds):
    """Every (loss, target kind) but coarse labels on a dense matrix, which has none."""
    return [(n, k) for n in LOSSES for k in kinds if not (n == "soft_target" and k == "coarse")]


@pytest.mark.parametrize("name,kind", _pairs(KINDS))
def test_one_graph_every_target_kind(tax, name, kind):
    t, options = target_for(tax, kind)
    mod = LOSSES[name](tax, **options)
    z = logits_for(tax, kind)
    check(compiled(mod, "aot_eager"), mod, z, t)


@pytest.mark.parametrize("name", ["soft", "hxe", "wasserstein"])
def test_functional_twins_compile(tax, name):
    t, _ = target_for(tax, "ids")
    fns = {"soft": lambda z, t: TF.hierarchical_soft_label_loss(z, t, tax, 2.0, label_smoothing=0.1),
           "hxe": lambda z, t: TF.hxe_loss(z, t, tax, 0.5, label_smoothing=0.1),
           "wasserstein": lambda z, t: TF.tree_wasserstein_loss(z, t, tax, label_smoothing=0.1)}
    fn = fns[name]
    fn(logits_for(tax, "ids"), t)  # the tree's tables are built (and cached) outside the graph
    check(compiled(fn, "aot_eager"), fn, logits_for(tax, "ids"), t)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_compile(tax, dtype):
    t, _ = target_for(tax, "ids")
    mod = LOSSES["hxe"](tax)
    z = logits_for(tax, "ids", dtype=torch.float32).to(dtype)
    check(compiled(mod, "aot_eager"), mod, z, t, atol=1e-3)


needs_compiler = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                    reason="inductor needs a C compiler")


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize("name,kind", _pairs(["ids", "prob", "smooth", "coarse"]))
def test_inductor_every_target_kind(tax, name, kind):
    t, options = target_for(tax, kind)
    mod = LOSSES[name](tax, **options)
    z = logits_for(tax, kind, dtype=torch.float32)
    check(compiled(mod, "inductor"), mod, z, t if t.dtype != torch.float64 else t.float(), atol=1e-5)
