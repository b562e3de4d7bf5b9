"""The two ways a loss computes a batch of class targets: its fused path (the formula's passes with the
gradient written out, what training runs) and the formula itself (what ``torch.func`` transforms and
second derivatives run), against the plain loop oracles of ``test_losses``: edge layouts, ``-inf``
logits, targets far below the best logit, input forms.
"""

from __future__ import annotations

import math
import re

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _trees import random_taxonomies, seed_taxonomy
from hypothesis import given, settings
from hypothesis import strategies as st
from test_losses import TreeView, hxe_oracle, run_oracle, soft_label_oracle, weighted_tax

import taxosmooth as ts
from taxosmooth.losses import expected_cost, hxe, pairwise, set_checks, soft_labels, wasserstein


def chain_tax():
    """Unary chains (x, g), unequal depths, classes far from DFS order; the last subtree of the root
    ends the leaf order, so its classes' rings end in empty segments."""
    g = nx.DiGraph()
    g.add_edges_from([("r", "x"), ("x", "a"), ("r", "b"), ("b", "c"), ("c", "d"), ("c", "e"),
                      ("r", "f"), ("f", "g"), ("g", "h"), ("h", "i"), ("h", "j"), ("f", "k")])
    return ts.Taxonomy.from_networkx(g, classes=["k", "a", "j", "d", "i", "e"])


def single_class_tax():
    return ts.Taxonomy.from_edges([("r", "a")])


def comb_tax(depth: int = 70):
    """A spine with a class beside every spine node: paths of ``depth + 1`` rings, past the length where HXE's
    gradient sums over the path by an ``(S, R)`` product (``TRIANGLE_RINGS``) and goes to log space."""
    return ts.Taxonomy.from_edges([(f"s{i}", f"s{i + 1}") for i in range(depth)]
                                  + [(f"s{i}", f"x{i}") for i in range(depth + 1)])


TREES = {"seed": seed_taxonomy, "weighted": weighted_tax, "chain": chain_tax, "one": single_class_tax,
         "comb": comb_tax}


def loss_cases(tax, view):
    """(name, factory(**kw), per-sample oracle) for the two ring losses with CPU fast paths."""
    return [
        ("hxe_depth", lambda **kw: ts.HXELoss(tax, 0.6, **kw), hxe_oracle(view, 0.6, "depth", False)),
        ("hxe_height_norm", lambda **kw: ts.HXELoss(tax, 0.4, "height", True, **kw),
         hxe_oracle(view, 0.4, "height", True)),
        ("soft_labels", lambda **kw: ts.HierarchicalSoftLabelLoss(tax, 1.7, **kw),
         soft_label_oracle(view, 1.7, "lca_height", "max", None)),
        ("soft_labels_eps", lambda **kw: ts.HierarchicalSoftLabelLoss(tax, 3.0, "lca_depth_complement", None, 0.8, **kw),
         soft_label_oracle(view, 3.0, "lca_depth_complement", None, 0.8)),
    ]


def value_and_grad(mod, z, t):
    z = z.detach().clone().requires_grad_(True)
    out = mod(z, t)
    out.sum().backward()
    return out.detach(), z.grad


_LOSS_MODULES = (hxe, soft_labels, expected_cost, wasserstein, pairwise)


def use_fused(monkeypatch, flag: bool) -> None:
    """Let the losses take their fused paths (the default) or make them run the formula."""
    for module in _LOSS_MODULES:
        monkeypatch.setattr(module, "fused", (lambda z: True) if flag else (lambda z: False))


def both_paths(monkeypatch, mod, z, t):
    """(value, grad) on the fused path and on the formula."""
    use_fused(monkeypatch, True)
    fast = value_and_grad(mod, z, t)
    use_fused(monkeypatch, False)
    formula = value_and_grad(mod, z, t)
    use_fused(monkeypatch, True)
    return fast, formula


def oracle_value_and_grad(oracle, z, t, weight=None, ignore_index=-100, reduction="mean"):
    z = z.detach().clone().requires_grad_(True)
    out = run_oracle(oracle, z, t, weight, ignore_index, reduction)
    out.sum().backward()
    return out.detach(), z.grad


def last_leaf_class(tax):
    """The class at the last DFS leaf position (its rings' last segments are empty)."""
    return int(tax.compiled.position_class[-1])


def hxe_log_oracle(view: TreeView, alpha, weighting, normalize):
    """``hxe_oracle`` in log space (``log P(v)`` a logsumexp of log-softmax entries): exact where ``P`` underflows."""
    level = view.depth if weighting == "depth" else view.height
    lam = {v: math.exp(-alpha * level[v]) for v in view.g}
    total = sum(lam.values()) if normalize else 1.0

    def f(z, t):
        log_p = torch.log_softmax(z, 0)
        path = view.path(t)
        loss = z.new_zeros(())
        for lo, hi in zip(path, path[1:]):
            log_ratio = torch.logsumexp(log_p[view.leaf_set[lo]], 0) - torch.logsumexp(log_p[view.leaf_set[hi]], 0)
            loss = loss - lam[lo] / total * log_ratio
        return loss

    return f


# ----------------------------------------------------------------------------- losses: paths and oracles
@pytest.mark.parametrize("tree", list(TREES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fused_and_formula_match_oracle(tree, reduction, monkeypatch):
    """Batch of one, last-leaf targets, ignore_index inside [0, C), class weights: both paths, the oracle."""
    tax = TREES[tree]()
    view = TreeView(tax)
    C = tax.num_classes
    g = torch.Generator().manual_seed(3)
    last = last_leaf_class(tax)
    weight = torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    z = torch.randn(5, C, generator=g, dtype=torch.float64) * 2
    batches = [
        torch.tensor([last]),  # batch of one, its last segments empty
        torch.full((5,), last),  # every target the last class in leaf order
        torch.randint(0, C, (5,), generator=g),
    ]
    for name, make, oracle in loss_cases(tax, view):
        for t in batches:
            zz = z[: len(t)]
            for w in (None, weight):
                # ignore_index outside (fast path) and inside [0, C) (present: masked; C == 1: everything ignored)
                for ii in (-100, C - 1 if C > 1 else -100):
                    mod = make(weight=w, ignore_index=ii, reduction=reduction)
                    (hv, hg), (dv, dg) = both_paths(monkeypatch, mod, zz, t)
                    ov, og = oracle_value_and_grad(oracle, zz, t, w, ii, reduction)
                    msg = f"{name} t={t.tolist()} w={w is not None} ii={ii}"
                    torch.testing.assert_close(hv, ov, rtol=1e-9, atol=1e-10, msg=msg, equal_nan=True)
                    torch.testing.assert_close(dv, ov, rtol=1e-9, atol=1e-10, msg=msg, equal_nan=True)
                    if bool((t == ii).all()):
                        og = torch.zeros_like(og)  # cross_entropy's gradient; the loop oracle's 0/0 is nan
                    torch.testing.assert_close(hg, og, rtol=1e-8, atol=1e-10, msg=msg)
                    torch.testing.assert_close(dg, og, rtol=1e-8, atol=1e-10, msg=msg)


@settings(max_examples=25)
@given(random_taxonomies(max_nodes=20), st.integers(1, 4), st.sampled_from(["mean", "sum", "none"]),
       st.booleans(), st.integers(0, 2**31 - 1))
def test_random_trees_fused_and_formula_match_oracle(tax, n, reduction, last_row_last_leaf, seed):
    view = TreeView(tax)
    C = tax.num_classes
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, C, generator=g, dtype=torch.float64) * 2
    t = torch.randint(0, C, (n,), generator=g)
    if last_row_last_leaf:
        t[-1] = last_leaf_class(tax)
    mp = pytest.MonkeyPatch()
    try:
        for name, make, oracle in loss_cases(tax, view)[::2]:
            mod = make(reduction=reduction)
            (hv, hg), (dv, dg) = both_paths(mp, mod, z, t)
            ov, og = oracle_value_and_grad(oracle, z, t, reduction=reduction)
            torch.testing.assert_close(hv, ov, rtol=1e-9, atol=1e-10, msg=name)
            torch.testing.assert_close(dv, ov, rtol=1e-9, atol=1e-10, msg=name)
            torch.testing.assert_close(hg, og, rtol=1e-8, atol=1e-10, msg=name)
            torch.testing.assert_close(dg, og, rtol=1e-8, atol=1e-10, msg=name)
    finally:
        mp.undo()


# ----------------------------------------------------------------------------- input forms
def _every_loss(tax, **kw):
    return [ts.HXELoss(tax, 0.5, **kw), ts.HXELoss(tax, 0.3, "height", True, **kw),
            ts.HierarchicalSoftLabelLoss(tax, 2.0, **kw), ts.HierarchicalSoftLabelLoss(tax, 1.0, mix=0.5, **kw)]


@pytest.mark.parametrize("tree", ["seed", "chain"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_target_dtypes_and_layouts_agree(tree, reduction):
    tax = TREES[tree]()
    C = tax.num_classes
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, C, generator=g)
    t = torch.randint(0, C, (6,), generator=g)
    wide = torch.randint(0, C, (12,), generator=g)
    wide[::2] = t
    forms = [t.int(), t.to(torch.uint8), t.short(), wide[::2], t.clone().unsqueeze(1).expand(6, 3)[:, 1]]
    for mod in _every_loss(tax, reduction=reduction):
        want, want_g = value_and_grad(mod, z, t)
        for form in forms:
            got, got_g = value_and_grad(mod, z, form)
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=str(form.dtype))
            torch.testing.assert_close(got_g, want_g, rtol=0, atol=0)
    # one repeated target as an expanded (stride 0) tensor
    same = torch.tensor(C - 1).expand(6)
    for mod in _every_loss(tax, reduction=reduction):
        torch.testing.assert_close(mod(z, same), mod(z, same.contiguous()), rtol=0, atol=0)


@pytest.mark.parametrize("tree", ["seed", "chain", "weighted"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_contiguous_logits_agree_with_contiguous(tree, reduction, dtype, monkeypatch):
    """Views straight into the loss (the seed tree's classes are in DFS order: the kernel sees them as
    they are): a transposed (C, N) tensor, a slice with strides in both dimensions, an expanded row."""
    tax = TREES[tree]()
    C = tax.num_classes
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, C, (5,), generator=g)
    views = [
        (torch.randn(C, 5, generator=g, dtype=dtype) * 3, lambda a: a.t()),
        (torch.randn(10, 2 * C, generator=g, dtype=dtype) * 3, lambda a: a[::2, 1::2]),
        (torch.randn(1, C, generator=g, dtype=dtype) * 3, lambda a: a.expand(5, C)),
    ]
    for mod in _every_loss(tax, reduction=reduction):
        for fused_path in (True, False):
            use_fused(monkeypatch, fused_path)
            for base, view in views:
                leaf = base.clone().requires_grad_(True)
                form = view(leaf)
                assert not form.is_contiguous()
                got = mod(form, t)
                got.sum().backward()
                ref = view(base).contiguous().requires_grad_(True)
                want = mod(ref, t)
                want.sum().backward()
                torch.testing.assert_close(got, want, msg=f"{fused_path} {form.stride()}")
                # the gradient of the view is the contiguous one, carried back through the view
                expect = torch.zeros_like(base)
                if form.stride()[0] == 0:  # expanded: the rows' gradients add up
                    expect += ref.grad.sum(0, keepdim=True)
                else:
                    view(expect).copy_(ref.grad)
                torch.testing.assert_close(leaf.grad, expect)
                with torch.no_grad():
                    torch.testing.assert_close(mod(view(base), t), want.detach())


@pytest.mark.parametrize("tree", ["seed", "chain"])
def test_float32_close_to_float64(tree):
    tax = TREES[tree]()
    C = tax.num_classes
    g = torch.Generator().manual_seed(2)
    z = torch.randn(7, C, generator=g, dtype=torch.float64) * 3
    t = torch.randint(0, C, (7,), generator=g)
    for reduction in ("mean", "sum", "none"):
        for mod in _every_loss(tax, reduction=reduction):
            v32, g32 = value_and_grad(mod, z.float(), t)
            v64, g64 = value_and_grad(mod, z, t)
            assert v32.dtype == torch.float32 and v64.dtype == torch.float64
            torch.testing.assert_close(v32.double(), v64, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(g32.double(), g64, rtol=1e-5, atol=1e-6)


def test_ignore_index_inside_range_masks_only_when_present(seed_tax, monkeypatch):
    """ignore_index = 2 is a class: samples with target 2 are ignored, as in cross_entropy (alpha = 0)."""
    z = torch.randn(6, 4, dtype=torch.float64)
    for t in (torch.tensor([0, 2, 1, 2, 3, 0]), torch.tensor([0, 1, 1, 3, 3, 0]), torch.tensor([2])):
        zz = z[: len(t)]
        for reduction in ("mean", "sum", "none"):
            for fused_path in (True, False):
                use_fused(monkeypatch, fused_path)
                got = ts.HXELoss(seed_tax, 0.0, ignore_index=2, reduction=reduction)(zz, t)
                want = F.cross_entropy(zz, t, ignore_index=2, reduction=reduction)
                torch.testing.assert_close(got, want, equal_nan=True)
                got = ts.HierarchicalSoftLabelLoss(seed_tax, 1e4, ignore_index=2, reduction=reduction)(zz, t)
                torch.testing.assert_close(got, want, equal_nan=True)


# ----------------------------------------------------------------------------- -inf and far-below targets
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_minus_inf_logits_match_oracle_on_both_paths(reduction, monkeypatch):
    tax = chain_tax()
    view = TreeView(tax)
    C = tax.num_classes
    g = torch.Generator().manual_seed(4)
    z = torch.randn(4, C, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, last_leaf_class(tax)])
    for i in range(4):
        z[i, (int(t[i]) + 1 + i) % C] = -math.inf
    z[3, [j for j in range(C) if j != int(t[3])]] = -math.inf  # only the target left
    for name, make, oracle in loss_cases(tax, view):
        mod = make(reduction=reduction)
        (hv, hg), (dv, dg) = both_paths(monkeypatch, mod, z, t)
        ov = run_oracle(oracle, z, t, reduction=reduction)
        torch.testing.assert_close(hv, ov, msg=name)
        torch.testing.assert_close(dv, ov, msg=name)
        torch.testing.assert_close(hg, dg, msg=name)
        assert torch.isfinite(hg).all(), name
        # target mass on a -inf class: +inf, not nan (class 1 sits under a unary chain: in log space the
        # "height" weights of the chain telescope, so no -inf + inf arises)
        z2 = z.clone()
        z2[1, 1] = -math.inf
        out = mod(z2, t)
        assert (out[1] if reduction == "none" else out).item() == math.inf


@pytest.mark.parametrize("dtype,gap", [(torch.float32, 250.0), (torch.float32, 1000.0), (torch.float64, 800.0)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_far_below_targets_fused_and_unfused(dtype, gap, reduction, monkeypatch):
    """Targets (and their whole subtrees) far below the best logit, next to ordinary rows, on both paths."""
    tax = chain_tax()
    view = TreeView(tax)
    C = tax.num_classes
    g = torch.Generator().manual_seed(5)
    z = torch.randn(5, C, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, last_leaf_class(tax), 3, 4])
    far_rows = [0, 2, 4]
    for i in far_rows:
        z[i] -= gap
        z[i, (int(t[i]) + 1) % C] += 2 * gap  # one other class far above
    oracle = hxe_log_oracle(view, 0.6, "depth", False)
    ov, og = oracle_value_and_grad(oracle, z, t, reduction=reduction)
    for weight in (None, torch.linspace(0.5, 2.0, C, dtype=torch.float64)):
        mod = ts.HXELoss(tax, 0.6, weight=weight, reduction=reduction)
        ow, owg = oracle_value_and_grad(oracle, z, t, weight, reduction=reduction) if weight is not None else (ov, og)
        (hv, hg), (dv, dg) = both_paths(monkeypatch, mod, z.to(dtype), t)
        tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
        for v, gr in ((hv, hg), (dv, dg)):
            torch.testing.assert_close(v.double(), ow, **tol)
            assert torch.isfinite(gr).all()
            torch.testing.assert_close(gr.double(), owg, **tol)


@pytest.mark.parametrize("dtype,gap", [(torch.float32, 250.0), (torch.float64, 800.0)])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_far_below_subtrees_with_label_smoothing(dtype, gap, reduction, monkeypatch):
    """Label smoothing puts mass on every class, also on subtrees far below the best logit: the uniform
    part must be exact there too, on both paths, against the log-space loop (1 - ε) ℓ(t) + ε/C Σ_c ℓ(c)."""
    tax = chain_tax()
    view = TreeView(tax)
    C = tax.num_classes
    eps = 0.2
    g = torch.Generator().manual_seed(6)
    z = torch.randn(4, C, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3])
    z[0, :3] -= gap  # a far subtree in an otherwise ordinary row
    z[2] -= gap
    z[2, 5] += 2 * gap
    oracle = hxe_log_oracle(view, 0.6, "depth", False)

    def want_fn(zz):
        rows = torch.stack([(1 - eps) * oracle(zz[i], int(t[i])) + eps / C * sum(oracle(zz[i], c) for c in range(C))
                            for i in range(4)])
        return rows if reduction == "none" else rows.mean()

    zz = z.clone().requires_grad_(True)
    want = want_fn(zz)
    want.sum().backward()
    mod = ts.HXELoss(tax, 0.6, label_smoothing=eps, reduction=reduction)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for v, gr in both_paths(monkeypatch, mod, z.to(dtype), t):
        torch.testing.assert_close(v.double(), want.detach(), **tol)
        assert torch.isfinite(gr).all()
        torch.testing.assert_close(gr.double(), zz.grad, **tol)


@pytest.mark.parametrize("dtype,gap", [(torch.float32, 250.0), (torch.float32, 1000.0), (torch.float64, 800.0)])
def test_far_below_coarse_labels_fused_and_unfused(dtype, gap, monkeypatch):
    """A coarse label whose whole subtree lies far below the best logit: its cross entropy ``-log P(v)`` (the
    pairwise loss's pivot ``ζ_v``) is a log-mass in log space on the fused path (soft labels, expected cost,
    pairwise) as on the formula, against a float64 loop of log-sum-exps."""
    tax = chain_tax()
    C = tax.num_classes
    g = torch.Generator().manual_seed(8)
    z = torch.randn(3, C, generator=g, dtype=torch.float64)
    v = tax.encode(["h"])[0]  # an internal node: the classes i and j under it
    under = [tax.class_index(n) for n in ("i", "j")]
    t = torch.tensor([v, v, 0])
    z[0, under] -= gap
    z[1] -= gap
    z[1, 0] += 2 * gap
    for make in (lambda: ts.ExpectedCostLoss(tax, coarse_labels=True, reduction="none"),
                 lambda: ts.HierarchicalSoftLabelLoss(tax, 2.0, coarse_labels=True, reduction="none"),
                 lambda: ts.PairwiseCostLoss(tax, coarse_labels=True, reduction="none")):
        mod = make()
        (fv, fg), (dv, dg) = both_paths(monkeypatch, mod, z.to(dtype), t)
        tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
        assert torch.isfinite(fv).all() and torch.isfinite(fg).all()
        torch.testing.assert_close(fv, dv, **tol)
        torch.testing.assert_close(fg, dg, **tol)
        # a second derivative differentiates the formula: no other segment may overflow there either
        zz = z.to(dtype).requires_grad_(True)
        (g1,) = torch.autograd.grad(mod(zz, t).sum(), zz, create_graph=True)
        torch.testing.assert_close(g1, fg, **tol)
        (g2,) = torch.autograd.grad(g1.pow(2).sum(), zz)
        assert torch.isfinite(g2).all()
        # the cross entropy of each row's label grows with the gap: log P(v) in log space, not log of an underflow
        lp = torch.log_softmax(z, 1)
        log_pv = torch.logsumexp(lp[:2][:, under], 1)
        assert bool((log_pv < -gap / 2).all()) and bool((fv[:2].double() > -log_pv.min() / 4).all())


# ----------------------------------------------------------------------------- checks, errors, compile
def test_checks_off_gives_the_same_values(monkeypatch):
    tax = chain_tax()
    C = tax.num_classes
    z = torch.randn(5, C)
    t = torch.tensor([0, C - 1, 2, C - 1, last_leaf_class(tax)])
    for ii in (-100, C - 1):
        for reduction in ("mean", "sum", "none"):
            for mod in _every_loss(tax, ignore_index=ii, reduction=reduction):
                want, want_g = value_and_grad(mod, z, t)
                previous = set_checks(False)
                try:
                    got, got_g = value_and_grad(mod, z, t)
                finally:
                    set_checks(previous)
                torch.testing.assert_close(got, want)
                torch.testing.assert_close(got_g, want_g)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_out_of_range_targets_are_named(seed_tax, dtype):
    z = torch.randn(4, 4)
    for mod in _every_loss(seed_tax) + _every_loss(seed_tax, ignore_index=1):
        name = type(mod).__name__
        bad = [(torch.tensor([0, 4, 1, 2]), "target 4 at position (1,)"),
               (torch.tensor([0, 1, 2, 200]), "target 200 at position (3,)")]
        if dtype != torch.uint8:
            bad.append((torch.tensor([-1, 1, 2, 3]), "target -1 at position (0,)"))
            bad.append((torch.tensor([1, 1, 2, -100]), None if mod.ignore_index == -100 else "target -100"))
        for t, msg in bad:
            t = t.to(dtype)
            if msg is None:
                mod(z, t)  # ignored
                continue
            with pytest.raises(IndexError, match=rf"{name}: {re.escape(msg)}"):
                mod(z, t)
    # a 2-D segmentation target names its full position
    z4 = torch.randn(2, 4, 3)
    t4 = torch.zeros(2, 3, dtype=torch.int64)
    t4[1, 2] = 9
    with pytest.raises(IndexError, match=r"target 9 at position \(1, 2\)"):
        ts.HXELoss(seed_tax, 0.5)(z4, t4)


def test_nan_logit_is_named_on_the_direct_path(seed_tax):
    for reduction in ("mean", "sum", "none"):
        for mod in _every_loss(seed_tax, reduction=reduction):
            z = torch.randn(3, 4)
            z[2, 1] = math.nan
            with pytest.raises(ValueError, match=r"input\[2, 1\] is nan"):
                mod(z, torch.tensor([0, 1, 3]))
            z[2, 1] = math.inf
            with pytest.raises(ValueError, match=r"input\[2, 1\] is inf"):
                mod(z, torch.tensor([0, 1, 3]))


def test_wrong_shapes_still_named_on_the_direct_path(seed_tax):
    mod = ts.HXELoss(seed_tax, 0.5)
    with pytest.raises(ValueError, match="expected 4 classes"):
        mod(torch.randn(3, 5), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"expected target of shape \(3,\)"):
        mod(torch.randn(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="a floating-point target holds class probabilities"):
        mod(torch.randn(3, 4), torch.tensor([0.0, 1.0, 2.0]))


def test_compile_matches_eager():
    """Compiled code runs the same formulation: same values and gradients, far-below rows and classes out of
    DFS order included."""
    torch._dynamo.reset()
    tax = chain_tax()
    C = tax.num_classes
    z = torch.randn(4, C, dtype=torch.float64)
    k, a, d, e = (tax.class_index(n) for n in "kade")
    t = torch.tensor([0, k, 2, 3])
    z[1] -= 300.0
    z[1, a] += 600.0  # target k far below a
    z[1, [d, e]] = -math.inf  # the whole subtree under c masked
    z[2, [d, e]] = -math.inf
    for reduction in ("mean", "none"):
        for mod in (ts.HXELoss(tax, 0.5, reduction=reduction), ts.HierarchicalSoftLabelLoss(tax, 2.0, reduction=reduction)):
            want, want_g = value_and_grad(mod, z.float(), t)
            compiled = torch.compile(lambda a, b, mod=mod: mod(a, b), backend="aot_eager")
            got, got_g = value_and_grad(compiled, z.float(), t)
            torch.testing.assert_close(got, want)
            torch.testing.assert_close(got_g, want_g)
            assert torch.isfinite(got_g).all()



@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_incoming_gradients_other_than_one(reduction, monkeypatch):
    """The backward scales the gradient written in the forward (fused: a scalar; per sample: a vector)."""
    tax = chain_tax()
    view = TreeView(tax)
    C = tax.num_classes
    g = torch.Generator().manual_seed(6)
    z = torch.randn(4, C, generator=g, dtype=torch.float64)
    t = torch.tensor([0, last_leaf_class(tax), 2, 5])
    up = torch.tensor(2.5, dtype=torch.float64) if reduction != "none" else torch.randn(4, generator=g,
                                                                                       dtype=torch.float64)
    for name, make, oracle in loss_cases(tax, view):
        zo = z.clone().requires_grad_()
        (run_oracle(oracle, zo, t, reduction=reduction) * up).sum().backward()
        for fused_path in (True, False):
            use_fused(monkeypatch, fused_path)
            zz = z.clone().requires_grad_()
            (make(reduction=reduction)(zz, t) * up).sum().backward()
            torch.testing.assert_close(zz.grad, zo.grad, rtol=1e-9, atol=1e-11, msg=f"{name} {fused_path}")


@pytest.mark.parametrize("fused_path", [True, False])
def test_unbatched_and_segmentation_shapes_match_oracle(fused_path, monkeypatch):
    use_fused(monkeypatch, fused_path)
    tax = chain_tax()
    view = TreeView(tax)
    C = tax.num_classes
    g = torch.Generator().manual_seed(7)
    z = torch.randn(2, C, 3, generator=g, dtype=torch.float64)
    t = torch.randint(0, C, (2, 3), generator=g)
    t[1, 2] = last_leaf_class(tax)
    for name, make, oracle in loss_cases(tax, view):
        for reduction in ("mean", "none"):
            mod = make(reduction=reduction)
            got, got_g = value_and_grad(mod, z, t)
            want, want_g = oracle_value_and_grad(oracle, z, t, reduction=reduction)
            torch.testing.assert_close(got, want, msg=name)
            torch.testing.assert_close(got_g, want_g, msg=name)
            one, one_g = value_and_grad(mod, z[1, :, 2], t[1, 2])
            want, want_g = oracle_value_and_grad(oracle, z[1, :, 2].unsqueeze(0), t[1, 2].reshape(1),
                                                 reduction=reduction)
            torch.testing.assert_close(one, want.reshape(()), msg=name)
            torch.testing.assert_close(one_g, want_g[0], msg=name)
    with pytest.raises(IndexError, match=r"target 6 at position \(\)"):
        ts.HXELoss(tax, 0.5)(z[0, :, 0], torch.tensor(6))


@pytest.mark.parametrize("dtype,gap", [(torch.float32, 200.0), (torch.float64, 800.0)])
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("fused_path", [True, False])
def test_far_below_target_next_to_a_masked_subtree_has_finite_gradient(dtype, gap, reduction, fused_path,
                                                                       monkeypatch):
    """Regression: a far-below row goes through subtree_logsumexp, whose gradient was nan wherever a whole
    subtree was masked (every leaf -inf: log of an empty sum)."""
    use_fused(monkeypatch, fused_path)
    tax = seed_taxonomy()
    view = TreeView(tax)
    rows = [[-math.inf, -math.inf, -gap, 0.0], [-math.inf, -math.inf, 1.0, 0.0]]  # mammal masked; whale far below
    t = torch.tensor([2, 2])
    z = torch.tensor(rows, dtype=dtype, requires_grad=True)
    loss = ts.HXELoss(tax, 0.5, reduction=reduction)(z, t)
    loss.sum().backward()
    want, want_g = oracle_value_and_grad(hxe_log_oracle(view, 0.5, "depth", False),
                                         torch.tensor(rows, dtype=torch.float64), t, reduction=reduction)
    want_g = torch.nan_to_num(want_g, nan=0.0)  # the oracle's logsumexp over all -inf entries (0 there)
    assert torch.isfinite(z.grad).all()
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(loss.detach().double(), want, **tol)
    torch.testing.assert_close(z.grad.double(), want_g, **tol)


def test_subtree_logsumexp_of_a_masked_subtree_is_minus_inf_with_zero_gradient(seed_tax):
    tt = ts.TreeTensors(seed_tax)
    x = torch.tensor([[-math.inf, -math.inf, -1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    out = tt.subtree_logsumexp(x)
    assert out[0, seed_tax.node_index("mammal")].item() == -math.inf
    out[0, [seed_tax.node_index("sea"), 0]].sum().backward()
    p = torch.softmax(torch.tensor([-1.0, 0.0], dtype=torch.float64), 0)
    torch.testing.assert_close(x.grad, torch.cat([torch.zeros(2, dtype=torch.float64), 2 * p]).unsqueeze(0))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_masked_classes_without_target_mass_on_both_paths(reduction, monkeypatch):
    """Soft labels with beta large enough that far rings get exactly 0 mass: -inf logits there count
    0·log 0 = 0 on both paths, as cross entropy does."""
    tax = chain_tax()
    C = tax.num_classes
    g = torch.Generator().manual_seed(8)
    z = torch.randn(3, C, generator=g, dtype=torch.float64)
    t = torch.tensor([0, last_leaf_class(tax), 3])
    z[0, 3] = z[1, 1] = z[2, 0] = -math.inf  # never the target's ring-0 class
    mod = ts.HierarchicalSoftLabelLoss(tax, 1e4, reduction=reduction)
    (hv, hg), (dv, dg) = both_paths(monkeypatch, mod, z, t)
    want = F.cross_entropy(z, t, reduction=reduction)
    zc = z.clone().requires_grad_()
    F.cross_entropy(zc, t, reduction=reduction).sum().backward()
    for v, gr in ((hv, hg), (dv, dg)):
        torch.testing.assert_close(v, want)
        torch.testing.assert_close(gr, zc.grad)
