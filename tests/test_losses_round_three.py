"""Wrong numbers without an error, and errors that were wrong, found on the newest loss surfaces (round three).

Each test compares against an independent oracle: a plain loop over classes or nodes, a freshly built module, or
``F.cross_entropy``'s own convention.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import taxosmooth as ts
from taxosmooth import functional as TF

# one kingdom: the root has a single child (a rank table's top rank with one value), then a unary chain
ONE_KINGDOM = {"life": {"animalia": {"chordata": {"mammalia": ["horse", "zebra", "whale"],
                                                  "pisces": ["shark", "ray"]}}}}


def w1_loop(tax: ts.Taxonomy, p: np.ndarray, q: np.ndarray) -> float:
    """``Σ_{v ≠ root} w(v) |P(v) - Q(v)|`` by a loop over the nodes (the tree's earth mover's distance)."""
    c = tax.compiled
    total = 0.0
    for v in range(1, c.num_nodes):
        under = [j for j in range(tax.num_classes) if c.leaf_lo[v] <= c.class_position[j] < c.leaf_hi[v]]
        total += float(c.weight[v]) * abs(p[under].sum() - q[under].sum())
    return total


def mixup_rows(C: int, n: int, seed: int = 0, floor: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randint(0, C, (n,), generator=g), torch.randint(0, C, (n,), generator=g)
    lam = torch.rand(n, 1, generator=g, dtype=torch.float64)
    rows = torch.zeros(n, C, dtype=torch.float64)
    rows.scatter_add_(1, a[:, None], lam * (1 - floor * C))
    rows.scatter_add_(1, b[:, None], (1 - lam) * (1 - floor * C))
    return rows + floor


@pytest.mark.parametrize("floor", [0.0, 0.01])
def test_wasserstein_on_mixup_rows_with_a_single_child_root(floor):
    """Item 1: the top unary chain counts in W1 (it was left out of min(P, Q) on two-class rows)."""
    tax = ts.Taxonomy.from_nested(ONE_KINGDOM)
    C = tax.num_classes
    p_rows = mixup_rows(C, 6, floor=floor)
    z = torch.randn(6, C, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = ts.TreeWassersteinLoss(tax, ce_weight=0.0, reduction="none")(z, p_rows)
    soft = torch.softmax(z, 1).numpy()
    want = [w1_loop(tax, soft[i], p_rows[i].numpy()) for i in range(6)]
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("change", ["copy_", "assign", "load_state_dict"])
@pytest.mark.parametrize("make", [lambda tax, w: ts.HierarchicalSoftLabelLoss(tax, 2.0, weight=w, coarse_labels=True),
                                  lambda tax, w: ts.ExpectedCostLoss(tax, weight=w, coarse_labels=True),
                                  lambda tax, w: ts.HXELoss(tax, 0.5, weight=w, coarse_labels=True)])
def test_coarse_label_weights_follow_every_change(make, change):
    """Item 4: after the class weights change, every call uses the new ones (a fresh module is the oracle)."""
    tax = ts.Taxonomy.from_nested(ONE_KINGDOM)
    C = tax.num_classes
    w_old = torch.linspace(0.5, 1.5, C, dtype=torch.float32)
    w_new = torch.linspace(2.0, 0.25, C, dtype=torch.float32)
    mod = make(tax, w_old)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(12, C, generator=g)
    t = torch.randint(0, tax.num_nodes, (12,), generator=g)
    mod(z, t)
    if change == "copy_":
        mod.weight.copy_(w_new)
    elif change == "assign":
        mod.weight = w_new.clone()
    else:
        mod.load_state_dict(make(tax, w_new).state_dict())
    want = make(tax, w_new)(z, t)
    for _ in range(200):  # the stale entry hit about one call in a hundred
        torch.testing.assert_close(mod(z, t), want, rtol=0, atol=0)


def test_functional_wasserstein_with_smoothing_equals_the_module_and_a_loop():
    """Item 5: the functional twin smooths with its own label_smoothing."""
    tax = ts.Taxonomy.from_nested(ONE_KINGDOM)
    C = tax.num_classes
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, C, generator=g, dtype=torch.float64)
    t = torch.randint(0, C, (5,), generator=g)
    eps = 0.3
    got = TF.tree_wasserstein_loss(z, t, tax, ce_weight=0.0, label_smoothing=eps, reduction="none")
    module = ts.TreeWassersteinLoss(tax, ce_weight=0.0, label_smoothing=eps, reduction="none")(z, t)
    soft = torch.softmax(z, 1).numpy()
    want = []
    for i in range(5):
        q = np.full(C, eps / C)
        q[int(t[i])] += 1 - eps
        want.append(w1_loop(tax, soft[i], q))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(module.numpy(), want, rtol=1e-12)


def test_float32_probabilities_held_in_float64_are_accepted():
    """Item 6: the values' precision, not the holding dtype, sets the tolerance (F.cross_entropy accepts them)."""
    tax = ts.Taxonomy.from_nested(ONE_KINGDOM)
    C = tax.num_classes
    matrix = ts.soft_targets(tax, 4.0).double()  # float32 rows, held in float64
    loss = ts.SoftTargetCrossEntropy(matrix)
    z = torch.randn(4, C, dtype=torch.float64)
    loss(z, torch.tensor([0, 1, 2, 3]))
    rows = torch.softmax(torch.randn(4, C), 1).double()  # a teacher's float32 softmax cast to float64
    want = F.cross_entropy(z, rows)
    for mod in (ts.SoftTargetCrossEntropy(), ts.HierarchicalSoftLabelLoss(tax, 2.0), ts.HXELoss(tax, 0.5),
                ts.ExpectedCostLoss(tax), ts.TreeWassersteinLoss(tax), ts.PairwiseCostLoss(tax)):
        value = mod(z, rows)
        assert torch.isfinite(value)
    torch.testing.assert_close(ts.SoftTargetCrossEntropy()(z, rows), want)


def test_a_row_that_does_not_sum_to_one_says_by_how_much():
    """Item 6: the refusal prints the sum with enough digits that it is not "sum to 1, not 1"."""
    z = torch.zeros(1, 4, dtype=torch.float64)
    p = torch.tensor([[0.25, 0.25, 0.25, 0.2499]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"sum to 0\.9999, not 1"):
        ts.SoftTargetCrossEntropy()(z, p)


@pytest.mark.parametrize("make", [lambda tax: ts.PairwiseCostLoss(tax), lambda tax: ts.HXELoss(tax, 0.5),
                                  lambda tax: ts.HierarchicalSoftLabelLoss(tax, 2.0),
                                  lambda tax: ts.ExpectedCostLoss(tax, ce_weight=1.0),
                                  lambda tax: ts.TreeWassersteinLoss(tax, ce_weight=1.0)])
@pytest.mark.parametrize("target_kind", ["class", "mixup", "dense"])
def test_target_mass_on_a_masked_class_is_plus_infinity(make, target_kind):
    """Item 7: as F.cross_entropy gives +inf when the target class's logit is -inf, so does every loss."""
    tax = ts.Taxonomy.from_nested(ONE_KINGDOM)
    C = tax.num_classes
    z = torch.randn(2, C, dtype=torch.float64)
    z[:, 1] = -math.inf
    if target_kind == "class":
        t = torch.tensor([1, 1])
    elif target_kind == "mixup":
        t = torch.zeros(2, C, dtype=torch.float64)
        t[:, 1], t[:, 3] = 0.4, 0.6
    else:
        t = torch.softmax(torch.randn(2, C, dtype=torch.float64), 1)
    assert F.cross_entropy(z, t).item() == math.inf
    assert make(tax)(z, t).item() == math.inf


def _every_loss(tax, **kw):
    return [ts.HierarchicalSoftLabelLoss(tax, 2.0, **kw), ts.HXELoss(tax, 0.5, **kw), ts.ExpectedCostLoss(tax, **kw),
            ts.TreeWassersteinLoss(tax, **kw), ts.PairwiseCostLoss(tax, **kw),
            ts.SoftTargetCrossEntropy(ts.soft_targets(tax, 2.0), **kw)]


@pytest.mark.parametrize("kind", ["mixup", "smooth", "ids"])
def test_vmap_of_every_loss_and_target_kind(kind):
    """Item 8: vmap over a batch of batches equals a loop over them."""
    from torch.func import vmap

    tax = ts.Taxonomy.from_nested(ONE_KINGDOM)
    C = tax.num_classes
    g = torch.Generator().manual_seed(4)
    z = torch.randn(3, 5, C, generator=g, dtype=torch.float64)
    if kind == "mixup":
        t = torch.stack([mixup_rows(C, 5, seed=s) for s in range(3)])
    else:
        t = torch.randint(0, C, (3, 5), generator=g)
    for mod in _every_loss(tax, label_smoothing=0.1 if kind == "smooth" else 0.0):
        got = vmap(mod)(z, t)
        want = torch.stack([mod(z[i], t[i]) for i in range(3)])
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=type(mod).__name__)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("kind", ["mixup", "smooth"])
def test_jit_trace_of_every_loss_and_target_kind(kind):
    """Item 8: a traced loss replays the eager values on new inputs (reduction="mean")."""
    tax = ts.Taxonomy.from_nested(ONE_KINGDOM)
    C = tax.num_classes
    g = torch.Generator().manual_seed(5)
    z1, z2 = (torch.randn(5, C, generator=g, dtype=torch.float64) for _ in range(2))
    if kind == "mixup":
        t1, t2 = mixup_rows(C, 5, seed=1), mixup_rows(C, 5, seed=2)
    else:
        t1, t2 = (torch.randint(0, C, (5,), generator=g) for _ in range(2))
    for mod in _every_loss(tax, label_smoothing=0.1 if kind == "smooth" else 0.0):
        traced = torch.jit.trace(mod, (z1, t1), check_trace=False)
        torch.testing.assert_close(traced(z2, t2), mod(z2, t2), rtol=1e-12, atol=1e-12, msg=type(mod).__name__)
