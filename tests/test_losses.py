"""Losses against independent oracles: per-sample loops over a networkx view of the tree.

The oracles never touch the compiled arrays: ancestors, leaves, depths, heights
and distances come from ``Taxonomy.to_networkx()`` through networkx itself.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _trees import all_loss_modules, random_taxonomies, seed_taxonomy
from hypothesis import given, settings
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth import functional as TF

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ----------------------------------------------------------------------------- oracle view of the tree
class TreeView:
    """The tree as networkx sees it; everything an oracle needs, by class index."""

    def __init__(self, tax: ts.Taxonomy):
        g = tax.to_networkx()
        self.g = g
        self.root = next(v for v in g if g.in_degree(v) == 0)
        self.classes = list(tax.classes)
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.depth = nx.shortest_path_length(g, self.root)
        self.height = {}
        for v in reversed(list(nx.topological_sort(g))):
            kids = list(g.successors(v))
            self.height[v] = 0 if not kids else 1 + max(self.height[k] for k in kids)
        self.leaf_set = {v: [self.index[c] for c in nx.descendants(g, v) | {v} if c in self.index] for v in g}
        self.max_depth = max(self.depth[c] for c in self.classes)
        und = g.to_undirected()
        self.wdist = dict(nx.all_pairs_dijkstra_path_length(und, weight="weight"))
        self.edge_weight = {v: g.edges[next(iter(g.predecessors(v))), v]["weight"] for v in g if v != self.root}

    def path(self, cls: int) -> list:
        """``[t, parent(t), ..., root]``."""
        return nx.shortest_path(self.g, self.root, self.classes[cls])[::-1]

    def lca(self, i: int, j: int):
        return nx.lowest_common_ancestor(self.g, self.classes[i], self.classes[j])

    def distance(self, kind: str, i: int, j: int) -> float:
        if i == j:
            return 0.0
        a = self.lca(i, j)
        if kind == "lca_height":
            return float(self.height[a])
        if kind == "lca_depth_complement":
            return float(self.max_depth - self.depth[a])
        return float(self.wdist[self.classes[i]][self.classes[j]])


def reduce_oracle(per_sample: list, target: torch.Tensor, weight, ignore_index: int, reduction: str):
    """cross_entropy's reduction, as a loop."""
    ws, ls = [], []
    for loss, t in zip(per_sample, target.reshape(-1).tolist()):
        w = 0.0 if t == ignore_index else (1.0 if weight is None else float(weight[t]))
        ws.append(w)
        ls.append(loss * w if w != 0.0 else loss * 0.0)
    if reduction == "none":
        return torch.stack(ls).reshape(target.shape)
    if reduction == "sum":
        return torch.stack(ls).sum()
    return torch.stack(ls).sum() / sum(ws)


def flat_rows(z: torch.Tensor):
    return z.movedim(1, -1).reshape(-1, z.shape[1]) if z.dim() > 2 else z


# --- per-sample oracles (one sample: logits row z (C,), class t) -------------------------------
def soft_label_oracle(view: TreeView, beta, kind, scale, mix):
    C = len(view.classes)
    d = torch.tensor([[view.distance(kind, i, j) for j in range(C)] for i in range(C)], dtype=torch.float64)
    s = 1.0 if scale is None else (float(d.max()) or 1.0) if scale == "max" else scale

    def f(z, t):
        w = torch.exp(-beta * d[t] / s)
        q = w / w.sum()
        if mix is not None:
            q = mix * q + (1 - mix) * F.one_hot(torch.tensor(t), C).double()
        return -(q.to(z.dtype) * torch.log_softmax(z, 0)).sum()

    return f


def hxe_oracle(view: TreeView, alpha, weighting, normalize):
    level = view.depth if weighting == "depth" else view.height
    lam = {v: math.exp(-alpha * level[v]) for v in view.g}
    total = sum(lam.values()) if normalize else 1.0

    def f(z, t):
        p = torch.softmax(z, 0)
        path = view.path(t)
        loss = z.new_zeros(())
        for lo, hi in zip(path, path[1:]):
            ratio = p[view.leaf_set[lo]].sum() / p[view.leaf_set[hi]].sum()
            loss = loss - lam[lo] / total * torch.log(ratio)
        return loss

    return f


def expected_cost_oracle(cost, gamma):
    def f(z, t):
        risk = (torch.softmax(z, 0) * cost[t].to(z.dtype)).sum()
        return risk - gamma * torch.log_softmax(z, 0)[t]

    return f


def pairwise_oracle(cost):
    def f(z, t):
        loss = z.new_zeros(())
        for j in range(z.shape[0]):
            if j != t:
                loss = loss + float(cost[t, j]) * F.softplus(z[j] - z[t])
        return loss

    return f


def wasserstein_oracle(view: TreeView, gamma):
    """Σ_{v≠r} w(v)|P(v) - Q(v)|, node by node."""

    def f(z, t):
        p = torch.softmax(z, 0)
        loss = z.new_zeros(())
        for v, w in view.edge_weight.items():
            under = view.leaf_set[v]
            q = 1.0 if t in under else 0.0
            loss = loss + w * torch.abs(p[under].sum() - q)
        return loss - gamma * torch.log_softmax(z, 0)[t]

    return f


def run_oracle(f, z, target, weight=None, ignore_index=-100, reduction="mean"):
    rows = flat_rows(z)
    per = []
    for row, t in zip(rows, target.reshape(-1).tolist()):
        per.append(f(row, t if t != ignore_index else 0))
    return reduce_oracle(per, target, weight, ignore_index, reduction)


# ----------------------------------------------------------------------------- loss factories
def make_cases(tax: ts.Taxonomy, view: TreeView):
    """(name, module factory(**common), oracle per-sample fn) for every loss."""
    lca_cost = torch.from_numpy(ts.class_distances(tax, "lca_height"))
    return [
        ("soft_labels", lambda **kw: ts.HierarchicalSoftLabelLoss(tax, 1.7, **kw),
         soft_label_oracle(view, 1.7, "lca_height", "max", None)),
        ("soft_labels_dc_eps", lambda **kw: ts.HierarchicalSoftLabelLoss(tax, 3.0, "lca_depth_complement", None, 0.8, **kw),
         soft_label_oracle(view, 3.0, "lca_depth_complement", None, 0.8)),
        ("hxe_depth", lambda **kw: ts.HXELoss(tax, 0.6, **kw), hxe_oracle(view, 0.6, "depth", False)),
        ("hxe_height_norm", lambda **kw: ts.HXELoss(tax, 0.4, "height", True, **kw), hxe_oracle(view, 0.4, "height", True)),
        ("expected_cost", lambda **kw: ts.ExpectedCostLoss(tax, ce_weight=0.5, **kw), expected_cost_oracle(lca_cost, 0.5)),
        ("expected_cost_dense", lambda **kw: ts.ExpectedCostLoss(lca_cost * 2, ce_weight=0.0, **kw),
         expected_cost_oracle(lca_cost * 2, 0.0)),
        ("wasserstein", lambda **kw: ts.TreeWassersteinLoss(tax, ce_weight=0.25, **kw), wasserstein_oracle(view, 0.25)),
        ("wasserstein_ce", lambda **kw: ts.TreeWassersteinLoss(tax, **kw), wasserstein_oracle(view, 1.0)),
        ("pairwise", lambda **kw: ts.PairwiseCostLoss(tax, **kw), pairwise_oracle(lca_cost)),
        ("pairwise_dense", lambda **kw: ts.PairwiseCostLoss(lca_cost.T.contiguous() + 0, **kw), pairwise_oracle(lca_cost.T)),
    ]


def weighted_tax():
    g = nx.DiGraph()
    g.add_edge("r", "a", weight=2.0)
    g.add_edge("a", "x", weight=0.5)
    g.add_edge("a", "y", weight=1.0)
    g.add_edge("r", "b", weight=1.0)
    g.add_edge("b", "c", weight=1.0)  # unary chain b -> c -> z
    g.add_edge("c", "z", weight=3.0)
    g.add_edge("r", "w", weight=1.5)  # leaf right under the root
    return ts.Taxonomy.from_networkx(g, classes=["z", "x", "w", "y"])


TREES = {"seed": seed_taxonomy, "weighted_unbalanced": weighted_tax}


@pytest.mark.parametrize("tree", list(TREES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("device", DEVICES)
def test_losses_match_loop_oracles_values_and_gradients(tree, reduction, device):
    """On every available device; the oracles run on the CPU."""
    tax = TREES[tree]()
    view = TreeView(tax)
    C = tax.num_classes
    g = torch.Generator().manual_seed(1)
    weight = torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    # segmentation-shaped input with ignored positions
    z = torch.randn(3, C, 2, 2, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, C, (3, 2, 2), generator=g)
    target[0, 0, 1] = -1
    target[2, 1, 0] = -1
    for name, make, oracle in make_cases(tax, view):
        for w in (None, weight):
            mod = make(weight=w, ignore_index=-1, reduction=reduction).to(device)
            z1 = z.clone().to(device).requires_grad_(True)
            z2 = z.clone().requires_grad_(True)
            got = mod(z1, target.to(device))
            assert got.device.type == device, name
            want = run_oracle(oracle, z2, target, w, -1, reduction)
            torch.testing.assert_close(got.cpu(), want, rtol=1e-9, atol=1e-10, msg=f"{name} value")
            got.sum().backward()
            want.sum().backward()
            torch.testing.assert_close(z1.grad.cpu(), z2.grad, rtol=1e-8, atol=1e-10, msg=f"{name} gradient")


@pytest.mark.parametrize("tree", list(TREES))
def test_gradcheck_float64(tree):
    tax = TREES[tree]()
    view = TreeView(tax)
    C = tax.num_classes
    z = torch.randn(4, C, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, C - 1, 1, -100])
    weight = torch.linspace(0.5, 2.0, C, dtype=torch.float64)
    for name, make, _ in make_cases(tax, view):
        mod = make(weight=weight)
        assert torch.autograd.gradcheck(lambda a: mod(a, target), (z,)), name
        mod = make(reduction="none")
        assert torch.autograd.gradcheck(lambda a: mod(a, target), (z,)), name


@settings(max_examples=40)
@given(random_taxonomies(max_nodes=30), st.sampled_from(["lca_height", "lca_depth_complement"]),
       st.floats(0.0, 8.0), st.sampled_from(["max", None, 2.5]), st.sampled_from([None, 0.0, 0.3, 1.0]),
       st.integers(0, 2**31 - 1))
def test_structured_soft_labels_equal_dense(tax, kind, beta, scale, mix, seed):
    g = torch.Generator().manual_seed(seed)
    C = tax.num_classes
    z = torch.randn(6, C, generator=g, dtype=torch.float64) * 3
    t = torch.randint(0, C, (6,), generator=g)
    structured = ts.HierarchicalSoftLabelLoss(tax, beta, kind, scale, mix, reduction="none")
    dense = ts.SoftTargetCrossEntropy(ts.soft_targets(tax, beta, kind, scale, mix, dtype=torch.float64),
                                      reduction="none")
    torch.testing.assert_close(structured(z, t), dense(z, t), rtol=0, atol=1e-6)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    structured(z1, t).sum().backward()
    dense(z2, t).sum().backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=0, atol=1e-6)


@settings(max_examples=25)
@given(random_taxonomies(max_nodes=20, weighted=True), st.integers(0, 2**31 - 1))
def test_random_trees_against_oracles(tax, seed):
    """HXE, tree-Wasserstein and expected cost on random (weighted, unbalanced, unary-chain) trees."""
    view = TreeView(tax)
    g = torch.Generator().manual_seed(seed)
    C = tax.num_classes
    z = torch.randn(3, C, generator=g, dtype=torch.float64) * 2
    t = torch.randint(0, C, (3,), generator=g)
    cost = torch.from_numpy(ts.class_distances(tax, "lca_depth_complement"))
    cases = [
        (ts.HXELoss(tax, 0.8, reduction="none"), hxe_oracle(view, 0.8, "depth", False)),
        (ts.HXELoss(tax, 0.3, "height", True, reduction="none"), hxe_oracle(view, 0.3, "height", True)),
        (ts.TreeWassersteinLoss(tax, ce_weight=0.0, reduction="none"), wasserstein_oracle(view, 0.0)),
        (ts.ExpectedCostLoss(tax, 0.0, "lca_depth_complement", reduction="none"), expected_cost_oracle(cost, 0.0)),
        (ts.PairwiseCostLoss(tax, "lca_depth_complement", reduction="none"), pairwise_oracle(cost)),
    ]
    for mod, oracle in cases:
        want = torch.stack([oracle(z[i], int(t[i])) for i in range(3)])
        torch.testing.assert_close(mod(z, t), want, rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------- special cases
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weighting", ["depth", "height"])
def test_hxe_alpha_zero_is_cross_entropy(seed_tax, dtype, weighting):
    tax = weighted_tax()
    z = torch.randn(5, tax.num_classes, 3, dtype=dtype) * 4
    t = torch.randint(0, tax.num_classes, (5, 3))
    t[1, 2] = 7
    w = torch.rand(tax.num_classes, dtype=dtype) + 0.1
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-13, atol=1e-13)
    for reduction in ("mean", "sum", "none"):
        for weight in (None, w):
            got = ts.HXELoss(tax, 0.0, weighting, weight=weight, ignore_index=7, reduction=reduction)(z, t)
            want = F.cross_entropy(z, t, weight=weight, ignore_index=7, reduction=reduction)
            torch.testing.assert_close(got, want, **tol)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    ts.HXELoss(tax, 0.0, weighting, ignore_index=7)(z1, t).backward()
    F.cross_entropy(z2, t, ignore_index=7).backward()
    torch.testing.assert_close(z1.grad, z2.grad, **tol)


def test_hxe_normalized_depth_matches_reference_weights(seed_tax):
    """Reference code: λ(v) = exp(-α·depth(v)) / Σ_all nodes exp(-α·depth(u)), edge weighted by its lower node."""
    alpha = 0.5
    z = torch.tensor([[2.0, 0.5, -1.0, 0.0]], dtype=torch.float64)
    p = torch.softmax(z[0], 0)
    total = 1 + 2 * math.exp(-alpha) + 4 * math.exp(-2 * alpha)  # root, mammal/sea, four leaves
    # horse: edges horse->mammal (depth 2) and mammal->animal (depth 1)
    want = -(math.exp(-2 * alpha) * torch.log(p[0] / (p[0] + p[1])) + math.exp(-alpha) * torch.log(p[0] + p[1])) / total
    got = ts.HXELoss(seed_tax, alpha, "depth", normalize=True)(z, torch.tensor([0]))
    torch.testing.assert_close(got, want)


def test_hxe_far_logits_stay_exact(seed_tax):
    """Target and its sibling 500 nats below the best class: log P(mammal) must not underflow."""
    oracle = hxe_oracle(TreeView(seed_tax), 0.5, "depth", False)
    rows = [[-500.0, -501.0, 0.0, -2.0], [1.0, 0.5, -0.5, 0.0]]  # one far row, one ordinary row
    t = torch.tensor([0, 2])
    z = torch.tensor(rows, requires_grad=True)
    loss = ts.HXELoss(seed_tax, 0.5, reduction="none")(z, t)
    want = torch.stack([oracle(torch.tensor(r, dtype=torch.float64), int(c)) for r, c in zip(rows, t)])
    torch.testing.assert_close(loss.double(), want, rtol=1e-6, atol=1e-4)
    loss.sum().backward()
    assert torch.isfinite(z.grad).all()
    # float64: values and gradients against the oracle
    z64 = torch.tensor(rows, dtype=torch.float64, requires_grad=True)
    zo = torch.tensor(rows, dtype=torch.float64, requires_grad=True)
    ts.HXELoss(seed_tax, 0.5, reduction="sum")(z64, t).backward()
    sum(oracle(zo[i], int(t[i])) for i in range(2)).backward()
    torch.testing.assert_close(z64.grad, zo.grad)


def test_large_beta_approaches_cross_entropy(seed_tax):
    tax = weighted_tax()
    z = torch.randn(8, tax.num_classes, dtype=torch.float64)
    t = torch.randint(0, tax.num_classes, (8,))
    got = ts.HierarchicalSoftLabelLoss(tax, beta=200.0)(z, t)
    torch.testing.assert_close(got, F.cross_entropy(z, t), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(ts.HierarchicalSoftLabelLoss(tax, beta=2.0)(z, t), F.cross_entropy(z, t))


def test_soft_target_identity_is_cross_entropy():
    z = torch.randn(4, 5, 3)
    t = torch.randint(0, 5, (4, 3))
    w = torch.rand(5)
    got = ts.SoftTargetCrossEntropy(torch.eye(5), weight=w, reduction="sum")(z, t)
    torch.testing.assert_close(got, F.cross_entropy(z, t, weight=w, reduction="sum"))


def test_expected_cost_structured_equals_dense():
    tax = weighted_tax()
    z = torch.randn(6, tax.num_classes, dtype=torch.float64)
    t = torch.randint(0, tax.num_classes, (6,))
    for kind in ("lca_height", "lca_depth_complement"):
        for transform, power in (("identity", 1.0), ("normalize", 2.0)):
            dense = ts.cost_matrix(tax, kind, transform, power, dtype=torch.float64)
            for cls in (ts.ExpectedCostLoss, ts.PairwiseCostLoss):
                a = cls(tax, distance=kind, transform=transform, power=power, reduction="none")
                b = cls(dense, reduction="none")
                torch.testing.assert_close(a(z, t), b(z, t), rtol=1e-6, atol=1e-7)


def test_wasserstein_equals_linear_program():
    """W1 between softmax(z) and the label, solved as a transport LP on the path metric."""
    linprog = pytest.importorskip("scipy.optimize").linprog
    for tax in (seed_taxonomy(), weighted_tax()):
        C = tax.num_classes
        d = ts.class_distances(tax, "path_length")
        z = torch.randn(5, C, dtype=torch.float64)
        t = torch.randint(0, C, (5,))
        got = ts.TreeWassersteinLoss(tax, ce_weight=0.0, reduction="none")(z, t)
        for i in range(5):
            p = torch.softmax(z[i], 0).numpy()
            q = np.eye(C)[int(t[i])]
            a_eq = np.vstack([np.kron(np.eye(C), np.ones(C)), np.kron(np.ones(C), np.eye(C))])
            res = linprog(d.reshape(-1), A_eq=a_eq, b_eq=np.concatenate([p, q]), bounds=(0, None), method="highs")
            assert res.status == 0
            assert abs(res.fun - float(got[i])) < 1e-7


def test_tree_wasserstein_formula_equals_lp_for_any_two_distributions():
    """The closed form Σ w(v)|P(v) - Q(v)| (with exact subtree sums) is the LP optimum for general p, q."""
    linprog = pytest.importorskip("scipy.optimize").linprog
    tax = weighted_tax()
    C = tax.num_classes
    d = ts.class_distances(tax, "path_length")
    tt = ts.TreeTensors(tax).double()
    w = torch.from_numpy(tax.compiled.weight.copy())
    rng = np.random.default_rng(0)
    for _ in range(5):
        p, q = rng.dirichlet(np.ones(C)), rng.dirichlet(np.ones(C))
        diff = tt.subtree_sum(torch.from_numpy(p - q))
        closed = float((w * diff.abs()).sum())
        a_eq = np.vstack([np.kron(np.eye(C), np.ones(C)), np.kron(np.ones(C), np.eye(C))])
        res = linprog(d.reshape(-1), A_eq=a_eq, b_eq=np.concatenate([p, q]), bounds=(0, None), method="highs")
        assert abs(res.fun - closed) < 1e-7


def test_path_length_soft_labels_point_to_dense(seed_tax):
    with pytest.raises(ValueError, match=r"SoftTargetCrossEntropy\(soft_targets"):
        ts.HierarchicalSoftLabelLoss(seed_tax, 1.0, distance="path_length")
    # cost losses resolve path_length to the dense matrix, as cost_matrix and crm_predict do
    z, t = torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 2, 3])
    for cls in (ts.ExpectedCostLoss, ts.PairwiseCostLoss):
        dense = cls(ts.cost_matrix(seed_tax, "path_length", dtype=torch.float64))
        torch.testing.assert_close(cls(seed_tax, distance="path_length")(z, t), dense(z, t))
    with pytest.raises(ValueError, match="coarse labels need costs that are a function of the LCA node"):
        ts.ExpectedCostLoss(seed_tax, distance="path_length", coarse_labels=True)


def test_hand_computed_values(seed_tax):
    z = torch.zeros(1, 4)
    t = torch.tensor([0])
    # uniform prediction: E[cost] = (0 + 1 + 2 + 2) / 4; W1 = (0 + 2 + 4 + 4) / 4; pairwise = 5 log 2
    assert ts.ExpectedCostLoss(seed_tax, ce_weight=0.0)(z, t).item() == pytest.approx(1.25)
    assert ts.TreeWassersteinLoss(seed_tax, ce_weight=0.0)(z, t).item() == pytest.approx(2.5)
    # the cost losses add cross entropy by default: + log 4 for a uniform prediction
    assert ts.TreeWassersteinLoss(seed_tax)(z, t).item() == pytest.approx(2.5 + math.log(4))
    assert ts.PairwiseCostLoss(seed_tax)(z, t).item() == pytest.approx(5 * math.log(2))
    # soft labels, beta = log 2 · 2 (scale max = 2): weights 1, 1/2, 1/4, 1/4 -> q = (0.5, 0.25, 0.125, 0.125)
    q = torch.tensor([0.5, 0.25, 0.125, 0.125])
    zz = torch.tensor([[1.0, 0.0, -1.0, 2.0]])
    want = -(q * torch.log_softmax(zz[0], 0)).sum()
    torch.testing.assert_close(ts.HierarchicalSoftLabelLoss(seed_tax, 2 * math.log(2))(zz, t), want)


# ----------------------------------------------------------------------------- conventions
def test_shapes_unbatched_and_segmentation(seed_tax):
    z = torch.randn(2, 4, 3, 5)
    t = torch.randint(0, 4, (2, 3, 5))
    for mod in all_loss_modules(seed_tax, reduction="none"):
        out = mod(z, t)
        assert out.shape == (2, 3, 5)
        flat = mod(z.movedim(1, -1).reshape(-1, 4), t.reshape(-1))
        torch.testing.assert_close(out.reshape(-1), flat)
        single = mod(z[0, :, 0, 0], t[0, 0, 0])
        assert single.shape == ()
        torch.testing.assert_close(single, out[0, 0, 0])


def test_all_ignored_mean_is_nan_like_cross_entropy(seed_tax):
    z = torch.randn(3, 4)
    t = torch.full((3,), -100)
    assert torch.isnan(F.cross_entropy(z, t))
    for mod in all_loss_modules(seed_tax):
        assert torch.isnan(mod(z, t))
    for mod in all_loss_modules(seed_tax, reduction="sum"):
        assert mod(z, t).item() == 0.0


def test_errors_name_expected_and_actual(seed_tax):
    for mod in all_loss_modules(seed_tax):
        name = type(mod).__name__
        with pytest.raises(ValueError, match=r"expected 4 classes .* got 5"):
            mod(torch.randn(2, 5), torch.tensor([0, 1]))
        with pytest.raises(IndexError, match=r"target 4 at position \(1,\) is out of range; expected class indices in \[0, 4\)"):
            mod(torch.randn(2, 4), torch.tensor([0, 4]))
        with pytest.raises(IndexError, match=r"target -3 at position \(0, 1\)"):
            mod(torch.randn(1, 4, 2), torch.tensor([[0, -3]]))
        with pytest.raises(ValueError, match=r"expected target of shape \(2,\) .* got \(3,\)"):
            mod(torch.randn(2, 4), torch.tensor([0, 1, 2]))
        with pytest.raises(ValueError, match="a floating-point target holds class probabilities and must have the input's shape"):
            mod(torch.randn(2, 4), torch.tensor([0.0, 1.0]))
        with pytest.raises(TypeError, match="integer class indices or floating-point probabilities"):
            mod(torch.randn(2, 4), torch.tensor([True, False]))
        assert name in str(pytest.raises(ValueError, mod, torch.randn(2, 5), torch.tensor([0, 1])).value)
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        ts.HXELoss(seed_tax, 1.0, weight=torch.ones(3))
    with pytest.raises(ValueError, match="reduction must be one of"):
        ts.HXELoss(seed_tax, 1.0, reduction="avg")
    with pytest.raises(ValueError, match="weighting must be one of"):
        ts.HXELoss(seed_tax, 1.0, weighting="width")
    with pytest.raises(ValueError, match="alpha must be finite and >= 0"):
        ts.HXELoss(seed_tax, -1.0)
    with pytest.raises(ValueError, match=r"row 1 of matrix sums to 0.5"):
        ts.SoftTargetCrossEntropy([[1.0, 0.0], [0.25, 0.25]])
    with pytest.raises(ValueError, match=r"cost matrix\[1, 1\]"):
        ts.PairwiseCostLoss([[0.0, 1.0], [1.0, 2.0]])
    with pytest.raises(TypeError, match="expected a Taxonomy"):
        ts.HXELoss(np.zeros((4, 4)), 1.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(seed_tax, dtype):
    z = (torch.randn(6, 4) * 2e4).clamp(-6e4, 6e4).to(dtype)  # huge logits: exp overflows in half precision
    t = torch.randint(0, 4, (6,))
    for mod in all_loss_modules(seed_tax):
        out = mod(z, t)
        assert out.dtype == torch.float32
        assert torch.isfinite(out)
        torch.testing.assert_close(out, mod(z.float(), t))
        zz = z.clone().requires_grad_()
        mod(zz, t).backward()
        assert zz.grad.dtype == dtype and torch.isfinite(zz.grad.float()).all()


def test_autocast_bfloat16_model(seed_tax):
    model = torch.nn.Linear(3, 4)
    x = torch.randn(5, 3)
    t = torch.randint(0, 4, (5,))
    for mod in all_loss_modules(seed_tax):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
            out = mod(logits, t)
        assert logits.dtype == torch.bfloat16
        assert out.dtype == torch.float32 and torch.isfinite(out)
        torch.testing.assert_close(out, mod(logits.float(), t))


@pytest.mark.parametrize("device", DEVICES)
def test_device_and_dtype_follow_input(seed_tax, device):
    z = torch.randn(3, 4, dtype=torch.float64, device=device, requires_grad=True)
    t = torch.tensor([0, 3, 1], device=device)
    for mod in all_loss_modules(seed_tax, weight=torch.ones(4)):
        mod = mod.to(device)
        assert all(b.device.type == device for b in mod.buffers())
        out = mod(z, t)
        assert out.device.type == device and out.dtype == torch.float64
        (g,) = torch.autograd.grad(out, z)
        assert g.device.type == device


def test_state_dict_round_trip(seed_tax):
    w = torch.tensor([1.0, 2.0, 0.5, 1.5])
    z = torch.randn(4, 4)
    t = torch.tensor([0, 1, 2, 3])
    for mod, fresh in zip(all_loss_modules(seed_tax, weight=w), all_loss_modules(seed_tax, weight=torch.ones(4))):
        sd = mod.state_dict()
        assert "weight" in sd
        assert set(sd) <= {"weight", "matrix", "costs", "_extra_state"}  # derived index tables stay out
        fresh.load_state_dict(sd)
        torch.testing.assert_close(fresh(z, t), mod(z, t))
    assert set(ts.HXELoss(seed_tax, 1.0).state_dict()) == {"_extra_state"}  # the taxonomy's fingerprint


def test_buffers_are_structured(seed_tax):
    for mod in all_loss_modules(seed_tax):
        assert mod.buffer_bytes() > 0
    big = seed_taxonomy()
    assert ts.HierarchicalSoftLabelLoss(big, 1.0).buffer_bytes() < 2000


def test_functional_twins_match_modules(seed_tax):
    z = torch.randn(5, 4, 2)
    t = torch.randint(0, 4, (5, 2))
    w = torch.rand(4)
    kw = dict(weight=w, ignore_index=2, reduction="sum")
    cost = ts.cost_matrix(seed_tax)
    pairs = [
        (TF.soft_target_cross_entropy(z, t, ts.soft_targets(seed_tax, 2.0), **kw),
         ts.SoftTargetCrossEntropy(ts.soft_targets(seed_tax, 2.0), **kw)(z, t)),
        (TF.hierarchical_soft_label_loss(z, t, seed_tax, 2.0, **kw), ts.HierarchicalSoftLabelLoss(seed_tax, 2.0, **kw)(z, t)),
        (TF.hxe_loss(z, t, seed_tax, 0.3, "height", True, **kw), ts.HXELoss(seed_tax, 0.3, "height", True, **kw)(z, t)),
        (TF.expected_cost_loss(z, t, seed_tax, 0.5, **kw), ts.ExpectedCostLoss(seed_tax, 0.5, **kw)(z, t)),
        (TF.expected_cost_loss(z, t, cost, 0.5, **kw), ts.ExpectedCostLoss(cost, 0.5, **kw)(z, t)),
        (TF.tree_wasserstein_loss(z, t, seed_tax, 0.1, **kw), ts.TreeWassersteinLoss(seed_tax, 0.1, **kw)(z, t)),
        (TF.pairwise_cost_loss(z, t, seed_tax, **kw), ts.PairwiseCostLoss(seed_tax, **kw)(z, t)),
    ]
    for a, b in pairs:
        torch.testing.assert_close(a, b)
    # a second call reuses the cached tables and still answers for other options
    torch.testing.assert_close(TF.hxe_loss(z, t, seed_tax, 0.0), F.cross_entropy(z, t))


def test_torch_compile_matches_eager(seed_tax):
    """A compiled model + loss step gives the eager values and gradients."""
    torch._dynamo.reset()
    tax = weighted_tax()
    C = tax.num_classes
    losses = torch.nn.ModuleList([ts.HierarchicalSoftLabelLoss(tax, 2.0), ts.HXELoss(tax, 0.5),
                                  ts.TreeWassersteinLoss(tax), ts.ExpectedCostLoss(tax)])
    model = torch.nn.Linear(3, C).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    t = torch.randint(0, C, (6,))

    def step(x, t):
        out = model(x)
        return torch.stack([loss(out, t) for loss in losses])

    eager = step(x, t)
    g_eager = torch.autograd.grad(eager.sum(), model.weight)[0]
    compiled = torch.compile(step, backend="inductor")
    got = compiled(x, t)
    g_got = torch.autograd.grad(got.sum(), model.weight)[0]
    torch.testing.assert_close(got, eager)
    torch.testing.assert_close(g_got, g_eager)
    # HXE with a target far below the best logit: eager recomputes that row in log space, so must compile
    rows = torch.tensor([[-500.0, -501.0, 0.0, -2.0], [1.0, 0.5, -0.5, 0.0]])
    far_t = torch.tensor([0, 2])
    for reduction in ("none", "mean"):
        hxe = ts.HXELoss(seed_tax, 0.5, reduction=reduction)
        want = hxe(rows, far_t)
        got = torch.compile(lambda z, t, hxe=hxe: hxe(z, t), backend="aot_eager")(rows, far_t)
        torch.testing.assert_close(got, want)


def test_empty_batch_and_single_class_tree():
    one = ts.Taxonomy.from_edges([("r", "a")])
    chain = ts.Taxonomy.from_edges([("r", "x"), ("x", "a"), ("r", "b")])  # a unary chain above "a"
    for tax in (one, chain):
        C = tax.num_classes
        mods = [ts.HierarchicalSoftLabelLoss(tax, 1.0), ts.HXELoss(tax, 1.0), ts.TreeWassersteinLoss(tax),
                ts.ExpectedCostLoss(tax), ts.PairwiseCostLoss(tax)]
        for mod in mods:
            empty = torch.zeros(0, C), torch.zeros(0, dtype=torch.long)
            assert torch.isnan(mod(*empty)) == torch.isnan(F.cross_entropy(*empty))
            assert mod(*empty).shape == ()
            z = torch.randn(3, C, requires_grad=True)
            t = torch.randint(0, C, (3,))
            mod(z, t).backward()
            assert torch.isfinite(z.grad).all()
        if C == 1:  # one class: nothing to get wrong
            z = torch.randn(2, 1)
            t = torch.zeros(2, dtype=torch.long)
            assert all(mod(z, t).item() == pytest.approx(0.0) for mod in mods)
