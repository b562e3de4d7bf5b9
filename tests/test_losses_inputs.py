"""Losses on awkward input: masked (-inf) and bad (NaN, +inf) logits, casts of the module,
class-weight validation, the functional cache, target dtypes, and eager == compiled."""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from _trees import all_loss_modules, seed_taxonomy

import taxosmooth as ts
from taxosmooth import functional as TF


# ----------------------------------------------------------------------------- class weights
def test_negative_or_non_finite_class_weights_are_named(seed_tax):
    with pytest.raises(ValueError, match=r"weight\[0\] = -1.0; class weights must be finite and >= 0"):
        ts.HXELoss(seed_tax, 1.0, weight=[-1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"weight\[2\] = nan"):
        ts.HierarchicalSoftLabelLoss(seed_tax, 1.0, weight=[1.0, 1.0, math.nan, 1.0])
    with pytest.raises(ValueError, match=r"weight\[3\] = inf"):
        TF.hxe_loss(torch.randn(2, 4), torch.tensor([0, 1]), seed_tax, 1.0, weight=torch.tensor([1.0, 1, 1, math.inf]))
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        ts.HXELoss(seed_tax, 1.0, weight=[1.0, 1.0])
    ts.HXELoss(seed_tax, 1.0, weight=[0.0, 1.0, 2.0, 1.0])  # zero is a valid weight


# ----------------------------------------------------------------------------- functional cache
def test_functional_options_unhashable_named_and_cache_releases_taxonomy():
    z, t = torch.randn(3, 4), torch.tensor([0, 1, 3])
    tax = seed_taxonomy()
    with pytest.raises(TypeError, match=r"scale must be a real number, got \[1\]"):
        TF.hierarchical_soft_label_loss(z, t, tax, 2.0, scale=[1])
    want = ts.HXELoss(tax, 0.5)(z, t)
    torch.testing.assert_close(TF.hxe_loss(z, t, tax, 0.5), want)
    torch.testing.assert_close(TF.hxe_loss(z, t, tax, 0.5), want)  # cached
    torch.testing.assert_close(TF.hxe_loss(z, t, seed_taxonomy(), 0.5), want)  # equal taxonomy, own entry
    ref = weakref.ref(tax)
    del tax
    gc.collect()
    assert ref() is None, "the functional cache keeps the taxonomy alive"


# ----------------------------------------------------------------------------- casts of the module
def test_half_and_bfloat16_casts_keep_the_loss_tables(seed_tax):
    z = torch.randn(5, 4)
    t = torch.tensor([0, 1, 2, 3, 1])
    w = torch.tensor([0.3, 1.0, 2.0, 0.7])
    for cast in (lambda m: m.half(), lambda m: m.to(torch.bfloat16), lambda m: m.double()):
        for mod in all_loss_modules(seed_tax, weight=w):
            want = mod(z, t)
            dtypes = {k: b.dtype for k, b in mod.named_buffers()}
            model = torch.nn.Sequential(torch.nn.Linear(2, 2), mod)
            cast(model)
            assert {k: b.dtype for k, b in mod.named_buffers()} == dtypes
            assert model[0].weight.dtype != torch.float32  # the rest of the model was cast
            torch.testing.assert_close(mod(z, t), want, rtol=0, atol=0)
    soft = ts.SoftTargetCrossEntropy(ts.soft_targets(seed_tax, 2.0)).half()
    torch.testing.assert_close(soft.matrix.sum(1), torch.ones(4))


# ----------------------------------------------------------------------------- soft-target dtype
def test_soft_target_matrix_keeps_its_dtype(seed_tax):
    q64 = ts.soft_targets(seed_tax, 1.0 / 3.0, dtype=torch.float64)  # entries not exact in float32
    mod = ts.SoftTargetCrossEntropy(q64, reduction="none")
    assert mod.matrix.dtype == torch.float64
    assert torch.equal(mod.matrix, q64)
    assert ts.SoftTargetCrossEntropy(q64.float()).matrix.dtype == torch.float32
    assert ts.SoftTargetCrossEntropy(q64.numpy()).matrix.dtype == torch.float64
    z = torch.randn(4, 4, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3])
    want = torch.stack([-(q64[int(t[i])] * torch.log_softmax(z[i], 0)).sum() for i in range(4)])
    torch.testing.assert_close(mod(z, t), want, rtol=1e-15, atol=0)
    assert mod(z.float(), t).dtype == torch.float32


# ----------------------------------------------------------------------------- masked logits
def test_masked_logits_with_zero_target_mass_stay_finite(seed_tax):
    """-inf logits on classes without target mass: 0·log 0 = 0, as cross entropy with hard labels."""
    z0 = torch.tensor([[2.0, -math.inf, 0.5, 0.1], [0.3, -0.2, -math.inf, -math.inf]])
    t = torch.tensor([0, 1])
    mods = [ts.HierarchicalSoftLabelLoss(seed_tax, 4.0, mix=0.0),
            ts.SoftTargetCrossEntropy(ts.soft_targets(seed_tax, 4.0, mix=0.0))]
    for reduction in ("mean", "none"):
        for mod in mods:
            mod.reduction = reduction
            z = z0.clone().requires_grad_()
            zr = z0.clone().requires_grad_()
            got, want = mod(z, t), F.cross_entropy(zr, t, reduction=reduction)
            torch.testing.assert_close(got, want)
            got.sum().backward()
            want.sum().backward()
            assert torch.isfinite(z.grad).all()
            torch.testing.assert_close(z.grad, zr.grad)
    # target mass on a masked class: the loss is +inf (the exact value), not nan
    soft = ts.HierarchicalSoftLabelLoss(seed_tax, 1.0, reduction="none")
    out = soft(z0, t)
    assert out[0].item() == math.inf and math.isinf(out[1].item())
    # compiled: the same values
    torch._dynamo.reset()
    for mod in mods:
        mod.reduction = "none"
        got = torch.compile(lambda z, t, mod=mod: mod(z, t), backend="aot_eager")(z0, t)
        torch.testing.assert_close(got, F.cross_entropy(z0, t, reduction="none"))


# ----------------------------------------------------------------------------- bad logits
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_inf_logits_are_named(seed_tax, bad):
    z = torch.randn(3, 4)
    z[1, 2] = bad
    t = torch.tensor([0, 1, 3])
    word = "nan" if math.isnan(bad) else "inf"
    for mod in all_loss_modules(seed_tax) + all_loss_modules(seed_tax, reduction="none", weight=torch.rand(4)):
        with pytest.raises(ValueError, match=rf"{type(mod).__name__}: input\[1, 2\] is {word}"):
            mod(z, t)
    seg = torch.randn(2, 4, 3, 2)
    seg[1, 3, 2, 0] = bad
    ts_ = torch.randint(0, 4, (2, 3, 2))
    with pytest.raises(ValueError, match=rf"input\[1, 3, 2, 0\] is {word}"):
        ts.HXELoss(seed_tax, 0.5)(seg, ts_)
    with pytest.raises(ValueError, match=rf"input\[2\] is {word}"):
        ts.HierarchicalSoftLabelLoss(seed_tax, 1.0)(z[1], torch.tensor(0))
    # a bad logit in an ignored sample does not count
    t_ign = torch.tensor([0, -100, 3])
    for mod in all_loss_modules(seed_tax):
        assert torch.isfinite(mod(z, t_ign))


def test_checks_can_be_turned_off(seed_tax):
    z = torch.randn(3, 4)
    z[0, 1] = math.nan
    t = torch.tensor([0, 1, 3])
    previous = ts.losses.set_checks(False)
    try:
        assert previous == "auto"
        for mod in all_loss_modules(seed_tax):
            assert torch.isnan(mod(z, t))
    finally:
        ts.losses.set_checks(previous)
    with pytest.raises(ValueError, match=r"input\[0, 1\] is nan"):
        ts.HXELoss(seed_tax, 0.5)(z, t)
    with pytest.raises(ValueError, match="set_checks expects one of auto, full, device, off"):
        ts.losses.set_checks(0)


def test_minus_inf_logits_elsewhere_stay_allowed(seed_tax):
    z = torch.tensor([[1.0, 0.5, -math.inf, 0.0]])
    t = torch.tensor([0])
    for mod in all_loss_modules(seed_tax):
        if isinstance(mod, ts.SoftTargetCrossEntropy | ts.HierarchicalSoftLabelLoss):
            continue  # beta = 2 puts mass on every class: +inf, tested above
        assert torch.isfinite(mod(z, t)), type(mod).__name__


# ----------------------------------------------------------------------------- compile
def test_compiled_out_of_range_target_names_the_range(seed_tax):
    torch._dynamo.reset()
    for mod in (ts.HXELoss(seed_tax, 0.5), ts.HierarchicalSoftLabelLoss(seed_tax, 2.0)):
        f = torch.compile(lambda z, t, mod=mod: mod(z, t), backend="aot_eager")
        f(torch.randn(2, 4), torch.tensor([0, 3]))
        with pytest.raises(RuntimeError, match=r"out of range; expected class indices in \[0, 4\)"):
            f(torch.randn(2, 4), torch.tensor([0, 4]))


def test_float64_cost_matrices_stay_float64(seed_tax):
    # a float32 copy would limit the dense forms to ~1e-7 against the float64 structured ones
    costs = ts.cost_matrix(seed_tax, dtype=torch.float64) / 3.0
    z = torch.randn(5, 4, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3, 0])
    for cls in (ts.ExpectedCostLoss, ts.PairwiseCostLoss):
        dense = cls(costs)
        assert dense.costs.matrix.dtype == torch.float64
        structured = cls(seed_tax, transform=lambda d: d / 3.0)
        torch.testing.assert_close(dense(z, t), structured(z, t), rtol=1e-13, atol=1e-13)


def test_the_coarse_label_hint_only_where_there_are_internal_nodes(seed_tax):
    """An id >= C suggests coarse_labels=True only for a loss built on a taxonomy, and only for a node's id."""
    z, n = torch.randn(2, 4), seed_tax.num_nodes
    with pytest.raises(IndexError, match=r"HXELoss: target 5 .*pass coarse_labels=True"):
        ts.HXELoss(seed_tax, 0.5)(z, torch.tensor([0, 5]))
    for mod, bad in ((ts.HXELoss(seed_tax, 0.5), n), (ts.SoftTargetCrossEntropy(ts.soft_targets(seed_tax, 2.0)), 5),
                     (ts.ExpectedCostLoss(ts.cost_matrix(seed_tax)), 5), (ts.PairwiseCostLoss(ts.cost_matrix(seed_tax)), 5)):
        with pytest.raises(IndexError, match=rf"target {bad} at position \(1,\) is out of range") as info:
            mod(z, torch.tensor([0, bad]))
        assert "coarse_labels" not in str(info.value), type(mod).__name__
