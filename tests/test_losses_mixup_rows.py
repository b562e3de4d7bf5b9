"""Probability rows of a few classes on a uniform floor (Mixup, CutMix, with or without label smoothing) take the
class path once per class in the losses linear in their target; the numbers are those of the dense rows and of a
plain loop ``Σ_c p_c ℓ(z, c)``."""

from __future__ import annotations

import pytest
import torch
from _trees import random_taxonomies
from hypothesis import given, settings
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth.losses import _frame

LINEAR = {
    "soft": lambda tax, **k: ts.HierarchicalSoftLabelLoss(tax, 3.0, **k),
    "hxe": lambda tax, **k: ts.HXELoss(tax, 0.4, **k),
    "cost": lambda tax, **k: ts.ExpectedCostLoss(tax, ce_weight=0.3, **k),
    "cost_matrix": lambda tax, **k: ts.ExpectedCostLoss(ts.cost_matrix(tax), ce_weight=0.3, **k),
}


def _mixup(num_classes: int, rows: int, smoothing: float, g: torch.Generator, k: int = 2) -> torch.Tensor:
    """timm's Mixup rows: ``k`` classes with weights summing to 1 - smoothing, the rest ``smoothing / C`` each."""
    ids = torch.randint(0, num_classes, (rows, k), generator=g)
    w = torch.softmax(torch.randn(rows, k, generator=g, dtype=torch.float64), 1) * (1.0 - smoothing)
    p = torch.full((rows, num_classes), smoothing / num_classes, dtype=torch.float64)
    return p.scatter_add_(1, ids, w)


def _dense(loss, z, p):
    """The loss on the dense rows (the few-class split switched off)."""
    saved = _frame._few_classes
    _frame._few_classes = lambda z, t: None
    try:
        return loss(z, p)
    finally:
        _frame._few_classes = saved


def _loop(loss_cls, tax, z, p, **kw):
    """``Σ_c p_c w_c ℓ(z, c)`` per row with a plain loop over the classes (a loss of class ids, no smoothing)."""
    kw = dict(kw)
    w = kw.pop("weight", None)
    one = loss_cls(tax, reduction="none", **kw)
    out = torch.zeros(z.shape[0], dtype=torch.float64)
    for c in range(p.shape[1]):
        terms = one(z, torch.full((z.shape[0],), c))
        out = out + p[:, c] * (1.0 if w is None else w[c]) * terms
    return out


@pytest.fixture(scope="module")
def tax():
    return ts.Taxonomy.from_nested({"r": {"a": {"a1": ["x", "y"], "a2": ["z"]}, "b": ["u", "v", "w"], "c": None}})


@pytest.mark.parametrize("name", list(LINEAR))
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_few_classes_equal_the_dense_rows_and_a_loop(tax, name, smoothing, k):
    g = torch.Generator().manual_seed(3 + k)
    C = tax.num_classes
    z = 2 * torch.randn(7, C, dtype=torch.float64, generator=g)
    p = _mixup(C, 7, smoothing, g, k)
    w = torch.rand(C, dtype=torch.float64, generator=g) + 0.5
    for kw in ({}, {"weight": w}, {"reduction": "none"}, {"reduction": "sum", "weight": w}):
        loss = LINEAR[name](tax, **kw)
        zz, zd = z.clone().requires_grad_(), z.clone().requires_grad_()
        got, want = loss(zz, p), _dense(loss, zd, p)
        got.sum().backward()
        want.sum().backward()
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(zz.grad, zd.grad, rtol=1e-12, atol=1e-12)
    if name != "cost_matrix":
        make = {"soft": lambda t, **a: ts.HierarchicalSoftLabelLoss(t, 3.0, **a),
                "hxe": lambda t, **a: ts.HXELoss(t, 0.4, **a),
                "cost": lambda t, **a: ts.ExpectedCostLoss(t, ce_weight=0.3, **a)}[name]
        rows = LINEAR[name](tax, reduction="none", weight=w)(z, p)
        torch.testing.assert_close(rows, _loop(make, tax, z, p, weight=w), rtol=1e-10, atol=1e-10)


def test_the_split_is_taken_for_few_classes_only(tax, monkeypatch):
    calls = []
    saved = _frame._few_classes

    def spy(z, t):
        out = saved(z, t)
        calls.append(None if out is None else len(out))
        return out

    monkeypatch.setattr(_frame, "_few_classes", spy)
    g = torch.Generator().manual_seed(1)
    C = tax.num_classes
    z = torch.randn(5, C, dtype=torch.float64, generator=g)
    loss = ts.HXELoss(tax, 0.4)
    loss(z, _mixup(C, 5, 0.1, g, 2))
    loss(z, torch.softmax(torch.randn(5, C, dtype=torch.float64, generator=g), 1))  # dense: every class
    z_inf = z.clone()
    z_inf[0, 3] = float("-inf")
    p = _mixup(C, 5, 0.0, g, 2)
    loss(z_inf, p)  # a -inf logit: the dense rows (their +inf where the target has mass there)
    ts.PairwiseCostLoss(tax)(z, p)  # not linear in its target: never split
    assert calls == [2, None, None]


def test_a_minus_inf_logit_under_target_mass_is_inf_as_dense(tax):
    C = tax.num_classes
    z = torch.zeros(1, C, dtype=torch.float64)
    z[0, 2] = float("-inf")
    p = torch.zeros(1, C, dtype=torch.float64)
    p[0, 2], p[0, 4] = 0.5, 0.5
    for name in ("soft", "hxe", "cost"):
        assert LINEAR[name](tax, reduction="none")(z, p).item() == float("inf")


def test_second_derivatives_through_the_split(tax):
    g = torch.Generator().manual_seed(4)
    C = tax.num_classes
    p = _mixup(C, 3, 0.1, g, 2)
    z = torch.randn(3, C, dtype=torch.float64, generator=g, requires_grad=True)
    for name in ("soft", "hxe", "cost"):
        loss = LINEAR[name](tax)
        assert torch.autograd.gradgradcheck(lambda x: loss(x, p), (z,))


@settings(max_examples=25, deadline=None)
@given(tax=random_taxonomies(min_nodes=3, max_nodes=25), seed=st.integers(0, 2**16), k=st.integers(1, 4),
       smoothing=st.sampled_from([0.0, 0.05]))
def test_random_trees(tax, seed, k, smoothing):
    g = torch.Generator().manual_seed(seed)
    C = tax.num_classes
    z = torch.randn(4, C, dtype=torch.float64, generator=g)
    p = _mixup(C, 4, smoothing, g, k)
    for name in ("soft", "hxe", "cost"):
        loss = LINEAR[name](tax, reduction="none")
        torch.testing.assert_close(loss(z, p), _dense(loss, z, p), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("name", ["soft", "hxe", "cost"])
def test_a_target_that_requires_grad_gets_the_dense_rows_gradient(tax, name):
    g = torch.Generator().manual_seed(8)
    C = tax.num_classes
    z = torch.randn(4, C, dtype=torch.float64, generator=g)
    base = _mixup(C, 4, 0.1, g, 2)
    grads = []
    for split in (True, False):
        p = base.clone().requires_grad_()
        loss = LINEAR[name](tax)
        try:
            (loss(z, p) if split else _dense(loss, z, p)).backward()
        except RuntimeError:  # a loss that does not differentiate its target refuses on both paths
            grads.append(None)
            continue
        grads.append(p.grad)
    if grads[1] is None:
        assert grads[0] is None
    else:
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)


def test_unchecked_rows_with_a_negative_floor_or_nan_give_the_dense_number(tax):
    C = tax.num_classes
    z = torch.randn(2, C, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    neg = torch.zeros(2, C, dtype=torch.float64)
    neg[0, 1] = 1.0
    neg[1] = -0.1
    neg[1, 0] = 1 + 0.1 * (C - 1)  # sums to 1, a negative floor
    nan = torch.zeros(2, C, dtype=torch.float64)
    nan[0, 1] = 1.0
    nan[1, 0] = float("nan")
    ts.set_checks("off")
    try:
        for name in ("soft", "hxe", "cost"):
            loss = LINEAR[name](tax, reduction="none")
            torch.testing.assert_close(loss(z, neg), _dense(loss, z, neg), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(loss(z, nan), _dense(loss, z, nan), rtol=1e-12, atol=1e-12, equal_nan=True)
    finally:
        ts.set_checks("auto")
