"""The losses on every available device (CPU always, CUDA where present) against CPU oracles.

Each test runs the loss on ``device`` and compares with an oracle computed on
the CPU: the dense soft-target path, or the same loss in float64 (the
per-sample loop oracles run on every device in ``test_losses``). On a CPU-only machine they check the CPU kernels
(numpy-backed level walks); on a GPU they check the torch kernels that run
there, at sizes where the level walks have real work (C = 1,000 and more).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _trees import all_loss_modules, seed_taxonomy

import taxosmooth as ts
from taxosmooth import functional as TF

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def level_taxonomy(num_classes: int, depth: int, seed: int = 0, shuffle: bool = True) -> ts.Taxonomy:
    """All classes at ``depth``, random fan-out, classes in a random (non-DFS) order."""
    rng = np.random.default_rng(seed)
    sizes = [max(1, round(num_classes ** (d / depth))) for d in range(depth + 1)]
    sizes[-1] = num_classes
    edges = []
    for d in range(1, depth + 1):
        extra = rng.integers(0, sizes[d - 1], sizes[d] - sizes[d - 1])
        parents = np.sort(np.concatenate([np.arange(sizes[d - 1]), extra]))
        edges += [(f"{d - 1}_{p}", f"{d}_{i}") for i, p in enumerate(parents)]
    classes = [f"{depth}_{i}" for i in range(num_classes)]
    if shuffle:
        classes = list(np.asarray(classes)[rng.permutation(num_classes)])
    return ts.Taxonomy.from_edges(edges, classes=classes)


def big_cases(tax: ts.Taxonomy):
    """Every loss with non-default options, taxonomy and matrix forms."""
    cost = ts.cost_matrix(tax, dtype=torch.float64)
    return {
        "soft_labels": lambda **kw: ts.HierarchicalSoftLabelLoss(tax, 4.0, **kw),
        "soft_labels_dc_eps": lambda **kw: ts.HierarchicalSoftLabelLoss(tax, 2.0, "lca_depth_complement", None, 0.9, **kw),
        "soft_targets_dense": lambda **kw: ts.SoftTargetCrossEntropy(ts.soft_targets(tax, 4.0, dtype=torch.float64), **kw),
        "hxe_depth": lambda **kw: ts.HXELoss(tax, 0.5, **kw),
        "hxe_height_norm": lambda **kw: ts.HXELoss(tax, 0.2, "height", True, **kw),
        "expected_cost": lambda **kw: ts.ExpectedCostLoss(tax, ce_weight=0.5, **kw),
        "expected_cost_dense": lambda **kw: ts.ExpectedCostLoss(cost, ce_weight=0.5, **kw),
        "wasserstein": lambda **kw: ts.TreeWassersteinLoss(tax, ce_weight=0.1, **kw),
        "pairwise": lambda **kw: ts.PairwiseCostLoss(tax, **kw),
        "pairwise_dense": lambda **kw: ts.PairwiseCostLoss(cost, **kw),
    }


@pytest.mark.parametrize("device", DEVICES)
def test_float32_on_device_matches_float64_cpu_at_1000_classes(device):
    """Float32 kernels on ``device`` against the same losses in float64 on the CPU, C = 1,000."""
    tax = level_taxonomy(1000, 5, seed=1)
    C = tax.num_classes
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, C, generator=g, dtype=torch.float64) * 3
    target = torch.randint(0, C, (64,), generator=g)
    target[5] = -100
    weight = torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    for name, make in big_cases(tax).items():
        ref_mod = make(weight=weight)
        zc = z.clone().requires_grad_(True)
        want = ref_mod(zc, target)
        want.backward()
        mod = make(weight=weight.float()).to(device)
        zd = z.float().to(device).requires_grad_(True)
        got = mod(zd, target.to(device))
        got.backward()
        assert got.dtype == torch.float32 and got.device.type == device, name
        torch.testing.assert_close(got.double().cpu(), want.detach(), rtol=2e-5, atol=1e-5, msg=f"{name} value")
        torch.testing.assert_close(zd.grad.double().cpu(), zc.grad, rtol=1e-3, atol=1e-6, msg=f"{name} gradient")


@pytest.mark.parametrize("device", DEVICES)
def test_structured_soft_labels_equal_dense_on_device(device):
    """No (C, C) matrix on the structured side, the dense matrix on the other, both on ``device``."""
    for seed, (C, depth) in enumerate([(300, 3), (2000, 6)]):
        tax = level_taxonomy(C, depth, seed=seed)
        g = torch.Generator().manual_seed(seed)
        z = (torch.randn(32, C, generator=g, dtype=torch.float64) * 2).to(device)
        t = torch.randint(0, C, (32,), generator=g).to(device)
        for kind in ("lca_height", "lca_depth_complement"):
            structured = ts.HierarchicalSoftLabelLoss(tax, 3.0, kind, reduction="none").to(device)
            dense = ts.SoftTargetCrossEntropy(ts.soft_targets(tax, 3.0, kind, dtype=torch.float64),
                                              reduction="none").to(device)
            torch.testing.assert_close(structured(z, t), dense(z, t), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_on_device(device, dtype):
    """Huge half-precision logits: computed in float32 on ``device``, finite, same as float32 input."""
    tax = level_taxonomy(200, 3, seed=2)
    C = tax.num_classes
    z = (torch.randn(16, C) * 2e4).clamp(-6e4, 6e4).to(dtype).to(device)
    t = torch.randint(0, C, (16,)).to(device)
    for mod in all_loss_modules(tax):
        mod = mod.to(device)
        out = mod(z, t)
        assert out.dtype == torch.float32 and out.device.type == device
        assert torch.isfinite(out), type(mod).__name__
        torch.testing.assert_close(out, mod(z.float(), t), msg=type(mod).__name__)
        zz = z.clone().requires_grad_()
        mod(zz, t).backward()
        assert zz.grad.dtype == dtype and torch.isfinite(zz.grad.float()).all(), type(mod).__name__


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_on_device(device):
    """Under autocast (float16 on CUDA, bfloat16 on the CPU) every loss returns a finite float32."""
    tax = level_taxonomy(200, 3, seed=3)
    C = tax.num_classes
    half = torch.float16 if device == "cuda" else torch.bfloat16
    model = torch.nn.Linear(8, C).to(device)
    x = torch.randn(16, 8, device=device) * 50
    t = torch.randint(0, C, (16,), device=device)
    for mod in all_loss_modules(tax):
        mod = mod.to(device)
        with torch.autocast(device, dtype=half):
            logits = model(x)
            out = mod(logits, t)
        assert logits.dtype == half
        assert out.dtype == torch.float32 and torch.isfinite(out), type(mod).__name__
        torch.testing.assert_close(out, mod(logits.float(), t), msg=type(mod).__name__)
        out.backward()
        assert torch.isfinite(model.weight.grad).all()
        model.zero_grad()


@pytest.mark.parametrize("device", DEVICES)
def test_errors_on_device_name_the_item(device):
    tax = seed_taxonomy()
    for mod in all_loss_modules(tax):
        mod = mod.to(device)
        z = torch.randn(3, 4, device=device)
        name = type(mod).__name__
        with pytest.raises(IndexError, match=rf"{name}: target 7 at position \(1,\) is out of range"):
            mod(z, torch.tensor([0, 7, 1], device=device))
        with pytest.raises(ValueError, match=r"expected 4 classes .* got 5"):
            mod(torch.randn(3, 5, device=device), torch.tensor([0, 1, 2], device=device))
        bad = z.clone()
        bad[1, 2] = float("nan")
        with pytest.raises(ValueError, match=rf"{name}: input\[1, 2\] is nan"):
            mod(bad, torch.tensor([0, 1, 2], device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_on_device_matches_eager(device):
    """A compiled model + loss step on ``device`` gives the eager values and gradients."""
    torch._dynamo.reset()
    tax = level_taxonomy(500, 4, seed=4)
    C = tax.num_classes
    losses = torch.nn.ModuleList([ts.HierarchicalSoftLabelLoss(tax, 2.0), ts.HXELoss(tax, 0.5),
                                  ts.TreeWassersteinLoss(tax), ts.ExpectedCostLoss(tax)]).to(device)
    model = torch.nn.Linear(16, C).to(device)
    x = torch.randn(32, 16, device=device)
    t = torch.randint(0, C, (32,), device=device)

    def step(x, t):
        out = model(x)
        return torch.stack([loss(out, t) for loss in losses])

    eager = step(x, t)
    g_eager = torch.autograd.grad(eager.sum(), model.weight)[0]
    got = torch.compile(step)(x, t)
    g_got = torch.autograd.grad(got.sum(), model.weight)[0]
    torch.testing.assert_close(got, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g_got, g_eager, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_functional_cache_per_device(device):
    """The functional forms cache their tables per device: CPU then ``device`` both answer."""
    tax = level_taxonomy(100, 3, seed=5)
    z = torch.randn(8, tax.num_classes, dtype=torch.float64)
    t = torch.randint(0, tax.num_classes, (8,))
    for fn in (lambda z, t: TF.hierarchical_soft_label_loss(z, t, tax, 2.0),
               lambda z, t: TF.hxe_loss(z, t, tax, 0.5),
               lambda z, t: TF.tree_wasserstein_loss(z, t, tax)):
        torch.testing.assert_close(fn(z.to(device), t.to(device)).cpu(), fn(z, t))
    torch.testing.assert_close(TF.hxe_loss(z.to(device), t.to(device), tax, 0.0).cpu(), F.cross_entropy(z, t))


@pytest.mark.parametrize("device", DEVICES)
def test_crm_structured_equals_dense_on_device(device):
    tax = level_taxonomy(1000, 5, seed=6)
    C = tax.num_classes
    p = torch.softmax(torch.randn(64, C, dtype=torch.float64) * 2, 1).to(device)
    cost = ts.cost_matrix(tax, dtype=torch.float64).to(device)
    r_struct = ts.conditional_risk(p, tax)
    r_dense = ts.conditional_risk(p, cost)
    assert r_struct.device.type == device
    torch.testing.assert_close(r_struct, r_dense, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ts.crm_predict(p, tax, k=3), ts.crm_predict(p, cost, k=3))
