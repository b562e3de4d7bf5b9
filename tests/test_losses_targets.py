"""Targets as real data has them: probability rows, label smoothing, coarse labels (target ids of
internal nodes), on every loss, against plain per-sample loops written here on a networkx view of the tree.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _trees import random_taxonomies, seed_taxonomy
from hypothesis import given, settings
from hypothesis import strategies as st
from test_losses import TreeView, weighted_tax

import taxosmooth as ts
from taxosmooth import functional as TF


def chain_tax():
    """Unary chains, unequal depths, classes far from DFS order."""
    g = nx.DiGraph()
    g.add_edges_from([("r", "x"), ("x", "a"), ("r", "b"), ("b", "c"), ("c", "d"), ("c", "e"),
                      ("r", "f"), ("f", "g"), ("g", "h"), ("h", "i"), ("h", "j"), ("f", "k")])
    return ts.Taxonomy.from_networkx(g, classes=["k", "a", "j", "d", "i", "e"])


TREES = {"seed": seed_taxonomy, "weighted": weighted_tax, "chain": chain_tax}


# ----------------------------------------------------------------------------- the oracle view of targets
class NodeView(TreeView):
    """TreeView plus what coarse-label oracles need: target ids → node names, subtrees, node distances."""

    def __init__(self, tax: ts.Taxonomy):
        super().__init__(tax)
        self.target_names = list(tax.target_names)
        self.und = self.g.to_undirected()

    def node(self, tid: int):
        return self.target_names[tid]

    def under(self, tid: int) -> list:
        """Class indices under target id ``tid``."""
        return self.leaf_set[self.node(tid)]

    def node_path(self, tid: int) -> list:
        return nx.shortest_path(self.g, self.root, self.node(tid))[::-1]

    def lca_node(self, tid: int, j: int):
        return nx.lowest_common_ancestor(self.g, self.node(tid), self.classes[j])

    def node_distance(self, kind: str, tid: int, j: int) -> float:
        """d(LCA(v, j)) for the LCA kinds (0 for j under v)."""
        if j in self.under(tid):
            return 0.0
        a = self.lca_node(tid, j)
        return float(self.height[a]) if kind == "lca_height" else float(self.max_depth - self.depth[a])

    def path_to(self, tid: int, j: int) -> float:
        """Weighted path length from node ``tid`` to class ``j``."""
        return float(nx.shortest_path_length(self.und, self.node(tid), self.classes[j], weight="weight"))


def log_mass(z, idx):
    return torch.logsumexp(torch.log_softmax(z, 0)[idx], 0)


# per-sample oracles for a *target id* v (a class is the special case v < C); z is one row (C,)
def soft_label_node_oracle(view: NodeView, beta, kind, scale, mix):
    C = len(view.classes)
    d_cls = [[view.distance(kind, i, j) for j in range(C)] for i in range(C)]
    dmax = max(max(r) for r in d_cls)
    s = 1.0 if scale is None else ((dmax or 1.0) if scale == "max" else scale)

    def f(z, v):
        under = view.under(v)
        others = [j for j in range(C) if j not in under]
        e = {j: math.exp(-beta * view.node_distance(kind, v, j) / s) for j in others}
        zsum = 1.0 + sum(e.values())  # the classes under v: one outcome at distance 0
        m = 1.0 if mix is None else mix
        q0 = (1 - m) + m / zsum
        log_p = torch.log_softmax(z, 0)
        loss = -q0 * log_mass(z, under)
        for j in others:
            loss = loss - m * e[j] / zsum * log_p[j]
        return loss

    return f


def hxe_node_oracle(view: NodeView, alpha, weighting, normalize):
    level = view.depth if weighting == "depth" else view.height
    lam = {v: math.exp(-alpha * level[v]) for v in view.g}
    total = sum(lam.values()) if normalize else 1.0

    def f(z, v):
        path = view.node_path(v)
        loss = z.new_zeros(())
        for lo, hi in zip(path, path[1:]):
            loss = loss - lam[lo] / total * (log_mass(z, view.leaf_set[lo]) - log_mass(z, view.leaf_set[hi]))
        return loss

    return f


def expected_cost_node_oracle(view: NodeView, kind, gamma):
    def f(z, v):
        p = torch.softmax(z, 0)
        under = view.under(v)
        loss = -gamma * log_mass(z, under)
        for j in range(len(view.classes)):
            if j not in under:
                loss = loss + p[j] * view.node_distance(kind, v, j)
        return loss

    return f


def wasserstein_node_oracle(view: NodeView, gamma):
    """Σ_{j ∉ v} p_j (d(v, j) + h_min(v)) - γ log P(v)."""

    def f(z, v):
        p = torch.softmax(z, 0)
        under = view.under(v)
        h = min(view.path_to(v, j) for j in under)
        loss = -gamma * log_mass(z, under)
        for j in range(len(view.classes)):
            if j not in under:
                loss = loss + p[j] * (view.path_to(v, j) + h)
        return loss

    return f


def pairwise_node_oracle(view: NodeView, kind):
    def f(z, v):
        under = view.under(v)
        zeta = torch.logsumexp(z[under], 0)
        loss = z.new_zeros(())
        for j in range(len(view.classes)):
            if j not in under:
                loss = loss + view.node_distance(kind, v, j) * F.softplus(z[j] - zeta)
        return loss

    return f


def pairwise_probability_oracle(view: NodeView, kind):
    """A probability target q: Σ_j c̄_q(j) softplus(z_j - ζ_q), c̄_q(j) = Σ_c q_c cost[c, j], ζ_q = Σ_c q_c z_c."""

    def f(z, q, qw=None):
        C = len(view.classes)
        qw = q if qw is None else qw
        zeta = sum(float(q[c]) * z[c] for c in range(C))
        loss = z.new_zeros(())
        for j in range(C):
            cost = sum(float(qw[c]) * view.node_distance(kind, c, j) for c in range(C))
            loss = loss + cost * F.softplus(z[j] - zeta)
        return loss

    return f


def w1_oracle(view: TreeView, z, q):
    """Σ_{u ≠ root} w(u)|P(u) - Q(u)|, node by node."""
    p = torch.softmax(z, 0)
    loss = z.new_zeros(())
    for u, w in view.edge_weight.items():
        under = view.leaf_set[u]
        loss = loss + w * torch.abs(p[under].sum() - float(sum(q[i] for i in under)))
    return loss


def cases(tax, view: NodeView):
    """(name, factory(**kw), per-sample oracle of a target id, linear in the target?)."""
    return [
        ("soft_labels", lambda **kw: ts.HierarchicalSoftLabelLoss(tax, 1.7, **kw),
         soft_label_node_oracle(view, 1.7, "lca_height", "max", None), True),
        ("soft_labels_dc_eps", lambda **kw: ts.HierarchicalSoftLabelLoss(tax, 3.0, "lca_depth_complement", None, 0.8,
                                                                          **kw),
         soft_label_node_oracle(view, 3.0, "lca_depth_complement", None, 0.8), True),
        ("hxe_depth", lambda **kw: ts.HXELoss(tax, 0.6, **kw), hxe_node_oracle(view, 0.6, "depth", False), True),
        ("hxe_height_norm", lambda **kw: ts.HXELoss(tax, 0.4, "height", True, **kw),
         hxe_node_oracle(view, 0.4, "height", True), True),
        ("expected_cost", lambda **kw: ts.ExpectedCostLoss(tax, ce_weight=0.5, **kw),
         expected_cost_node_oracle(view, "lca_height", 0.5), True),
        ("wasserstein", lambda **kw: ts.TreeWassersteinLoss(tax, ce_weight=0.25, **kw),
         wasserstein_node_oracle(view, 0.25), False),
        ("pairwise", lambda **kw: ts.PairwiseCostLoss(tax, "lca_depth_complement", **kw),
         pairwise_node_oracle(view, "lca_depth_complement"), "pairwise"),
    ]


def value_grad(mod, z, t):
    zz = z.detach().clone().requires_grad_(True)
    out = mod(zz, t)
    out.sum().backward()
    return out.detach(), zz.grad


def oracle_value_grad(fn, z):
    zz = z.detach().clone().requires_grad_(True)
    out = fn(zz)
    out.sum().backward()
    return out.detach(), zz.grad


TOL = dict(rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------- probability targets
@pytest.mark.parametrize("tree", list(TREES))
def test_one_hot_probabilities_equal_integer_targets(tree):
    tax = TREES[tree]()
    view = NodeView(tax)
    C = tax.num_classes
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, C, generator=g, dtype=torch.float64) * 2
    t = torch.randint(0, C, (5,), generator=g)
    w = torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    onehot = F.one_hot(t, C).double()
    for name, make, _, _ in cases(tax, view) + [("soft_target", lambda **kw: ts.SoftTargetCrossEntropy(**kw), None,
                                                  True)]:
        for reduction in ("sum", "none"):  # "mean" differs by design: Σ w_t (integer) vs N (probabilities)
            for weight in (None, w):
                mod = make(weight=weight, reduction=reduction)
                a, ga = value_grad(mod, z, t)
                b, gb = value_grad(mod, z, onehot)
                torch.testing.assert_close(b, a, **TOL, msg=name)
                torch.testing.assert_close(gb, ga, **TOL, msg=name)
        mod = make()
        a, _ = value_grad(mod, z, t)
        b, _ = value_grad(mod, z, onehot)
        torch.testing.assert_close(b, a, **TOL, msg=f"{name} mean")


@pytest.mark.parametrize("tree", list(TREES))
def test_probability_targets_against_the_loop(tree):
    """Linear losses: Σ_c p_c w_c ℓ(z, c). Tree-Wasserstein: (Σ_c w_c p_c) W1(p̂, p) + γ Σ_c w_c p_c CE_c."""
    tax = TREES[tree]()
    view = NodeView(tax)
    C = tax.num_classes
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, C, generator=g, dtype=torch.float64) * 2
    p = torch.softmax(torch.randn(4, C, generator=g, dtype=torch.float64) * 2, 1)
    p[0] = 0.0
    p[0, [0, C - 1]] = torch.tensor([0.3, 0.7], dtype=torch.float64)  # a Mixup row
    w = torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    for name, make, oracle, linear in cases(tax, view):
        for weight in (None, w):
            ww = torch.ones(C, dtype=torch.float64) if weight is None else weight

            def loop(zz):
                rows = []
                for i in range(4):
                    if linear == "pairwise":
                        rows.append(pairwise_probability_oracle(view, "lca_depth_complement")(zz[i], p[i], p[i] * ww))
                    elif linear:
                        rows.append(sum(p[i, c] * ww[c] * oracle(zz[i], c) for c in range(C)))
                    else:  # tree-Wasserstein (γ = 0.25)
                        factor = float((p[i] * ww).sum())
                        ce = -(p[i] * ww * torch.log_softmax(zz[i], 0)).sum()
                        rows.append(factor * w1_oracle(view, zz[i], p[i].tolist()) + 0.25 * ce)
                return torch.stack(rows)

            for reduction in ("none", "mean"):
                mod = make(weight=weight, reduction=reduction)
                got, g_got = value_grad(mod, z, p)
                want, g_want = oracle_value_grad(lambda zz: loop(zz) if reduction == "none" else loop(zz).mean(), z)
                torch.testing.assert_close(got, want, **TOL, msg=f"{name} {reduction}")
                torch.testing.assert_close(g_got, g_want, rtol=1e-8, atol=1e-10, msg=f"{name} {reduction} grad")


def _few_class_rows(C: int, n: int, floor: float, g: torch.Generator) -> torch.Tensor:
    """Rows of one to four classes (Mixup and CutMix make two), optionally on a uniform floor (their label
    smoothing)."""
    p = torch.zeros(n, C, dtype=torch.float64)
    for i in range(n):
        k = min(C, 1 + i % 4)
        idx = torch.randperm(C, generator=g)[:k]
        v = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
        p[i, idx] = v / v.sum()
    return p * (1 - floor) + floor / C


@pytest.mark.parametrize("tree", list(TREES))
@pytest.mark.parametrize("floor", [0.0, 0.1])
def test_few_class_probability_rows_against_the_loop(tree, floor):
    """Mixup-like rows (a few classes, on a floor or not): the same oracles as dense rows."""
    tax = TREES[tree]()
    view = NodeView(tax)
    C = tax.num_classes
    g = torch.Generator().manual_seed(5)
    z = torch.randn(6, C, generator=g, dtype=torch.float64) * 2
    p = _few_class_rows(C, 6, floor, g)
    w = torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    for name, make, oracle, linear in cases(tax, view):
        for weight in (None, w):
            ww = torch.ones(C, dtype=torch.float64) if weight is None else weight

            def loop(zz):
                rows = []
                for i in range(6):
                    if linear == "pairwise":
                        rows.append(pairwise_probability_oracle(view, "lca_depth_complement")(zz[i], p[i], p[i] * ww))
                    elif linear:
                        rows.append(sum(p[i, c] * ww[c] * oracle(zz[i], c) for c in range(C) if p[i, c] > 0))
                    else:
                        factor = float((p[i] * ww).sum())
                        ce = -(p[i] * ww * torch.log_softmax(zz[i], 0)).sum()
                        rows.append(factor * w1_oracle(view, zz[i], p[i].tolist()) + 0.25 * ce)
                return torch.stack(rows)

            mod = make(weight=weight, reduction="none")
            got, g_got = value_grad(mod, z, p)
            want, g_want = oracle_value_grad(loop, z)
            torch.testing.assert_close(got, want, **TOL, msg=name)
            torch.testing.assert_close(g_got, g_want, rtol=1e-8, atol=1e-10, msg=f"{name} grad")


def test_soft_target_cross_entropy_is_timms():
    """Without a matrix: -Σ p log softmax(z), mean over samples (timm's SoftTargetCrossEntropy)."""
    z = torch.randn(6, 5, dtype=torch.float64)
    p = torch.softmax(torch.randn(6, 5, dtype=torch.float64), 1)
    want = torch.sum(-p * F.log_softmax(z, dim=-1), dim=-1).mean()
    torch.testing.assert_close(ts.SoftTargetCrossEntropy()(z, p), want)
    torch.testing.assert_close(TF.soft_target_cross_entropy(z, p), want)
    torch.testing.assert_close(ts.SoftTargetCrossEntropy()(z, p), F.cross_entropy(z, p))
    # with a matrix, probability targets mix its rows
    q = ts.soft_targets(seed_taxonomy(), 2.0, dtype=torch.float64)
    z4 = torch.randn(3, 4, dtype=torch.float64)
    p4 = torch.softmax(torch.randn(3, 4, dtype=torch.float64), 1)
    torch.testing.assert_close(ts.SoftTargetCrossEntropy(q)(z4, p4), F.cross_entropy(z4, p4 @ q))


def test_wasserstein_of_probability_targets_equals_linear_program():
    linprog = pytest.importorskip("scipy.optimize").linprog
    for tax in (seed_taxonomy(), weighted_tax(), chain_tax()):
        C = tax.num_classes
        d = ts.class_distances(tax, "path_length")
        g = torch.Generator().manual_seed(2)
        z = torch.randn(4, C, generator=g, dtype=torch.float64)
        q = torch.softmax(torch.randn(4, C, generator=g, dtype=torch.float64) * 2, 1)
        got = ts.TreeWassersteinLoss(tax, ce_weight=0.0, reduction="none")(z, q)
        for i in range(4):
            p = torch.softmax(z[i], 0).numpy()
            a_eq = np.vstack([np.kron(np.eye(C), np.ones(C)), np.kron(np.ones(C), np.eye(C))])
            res = linprog(d.reshape(-1), A_eq=a_eq, b_eq=np.concatenate([p, q[i].numpy()]), bounds=(0, None),
                          method="highs")
            assert res.status == 0
            assert abs(res.fun - float(got[i])) < 1e-7


# ----------------------------------------------------------------------------- label smoothing
@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0])
def test_label_smoothing_of_plain_cross_entropy_is_torchs(eps):
    """HXE(alpha=0), soft labels with a huge beta, and SoftTargetCrossEntropy() are cross entropy:
    with label_smoothing they equal F.cross_entropy(label_smoothing=ε), weights and ignore_index included."""
    tax = weighted_tax()
    C = tax.num_classes
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, C, 3, generator=g, dtype=torch.float64) * 3
    t = torch.randint(0, C, (5, 3), generator=g)
    t[1, 2] = -100
    w = torch.rand(C, generator=g, dtype=torch.float64) + 0.2
    p = torch.softmax(torch.randn(5, C, 3, generator=g, dtype=torch.float64), 1)
    for reduction in ("mean", "sum", "none"):
        for weight in (None, w):
            for target in (t, p):
                want = F.cross_entropy(z, target, weight=weight, reduction=reduction, label_smoothing=eps)
                for mod in (ts.HXELoss(tax, 0.0, weight=weight, reduction=reduction, label_smoothing=eps),
                            ts.HierarchicalSoftLabelLoss(tax, 1e4, weight=weight, reduction=reduction,
                                                         label_smoothing=eps),
                            ts.SoftTargetCrossEntropy(weight=weight, reduction=reduction, label_smoothing=eps)):
                    got, g_got = value_grad(mod, z, target)
                    zz = z.clone().requires_grad_(True)
                    F.cross_entropy(zz, target, weight=weight, reduction=reduction, label_smoothing=eps).sum().backward()
                    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=type(mod).__name__)
                    torch.testing.assert_close(g_got, zz.grad, rtol=1e-9, atol=1e-12, msg=type(mod).__name__)


@pytest.mark.parametrize("tree", list(TREES))
@pytest.mark.parametrize("ignore", [True, False])
def test_label_smoothing_against_the_loop(tree, ignore):
    """Integer targets: (1 - ε) w_t ℓ(t) + ε/C Σ_c w_c ℓ(c), mean over Σ w_t (F.cross_entropy's rule);
    tree-Wasserstein: the exact W1 to (1 - ε) onehot + ε/C, weighted by the target's expected weight.
    With and without an ignored target (a weighted mean of a batch where every target counts once
    crashed the torch formulation)."""
    tax = TREES[tree]()
    view = NodeView(tax)
    C = tax.num_classes
    eps = 0.3
    g = torch.Generator().manual_seed(4)
    z = torch.randn(4, C, generator=g, dtype=torch.float64) * 2
    t = torch.randint(0, C, (4,), generator=g)
    if ignore:
        t[2] = -100
    w = torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    for name, make, oracle, linear in cases(tax, view):
        for weight in (None, w):
            ww = torch.ones(C, dtype=torch.float64) if weight is None else weight

            def loop(zz):
                rows, counted = [], []
                for i in range(4):
                    ti = int(t[i])
                    if ti == -100:
                        rows.append(zz.new_zeros(()))
                        counted.append(0.0)
                        continue
                    counted.append(float(ww[ti]))
                    if linear == "pairwise":  # the smoothed target as a probability target
                        q = [eps / C + (1 - eps) * (c == ti) for c in range(C)]
                        qw = [eps / C * float(ww[c]) + (1 - eps) * float(ww[ti]) * (c == ti) for c in range(C)]
                        rows.append(pairwise_probability_oracle(view, "lca_depth_complement")(zz[i], q, qw))
                    elif linear:
                        rows.append((1 - eps) * ww[ti] * oracle(zz[i], ti)
                                    + eps / C * sum(ww[c] * oracle(zz[i], c) for c in range(C)))
                    else:
                        q = [eps / C + (1 - eps) * (c == ti) for c in range(C)]
                        factor = (1 - eps) * float(ww[ti]) + eps * float(ww.mean())
                        ce = (1 - eps) * ww[ti] * -torch.log_softmax(zz[i], 0)[ti] \
                            - eps / C * (ww * torch.log_softmax(zz[i], 0)).sum()
                        rows.append(factor * w1_oracle(view, zz[i], q) + 0.25 * ce)
                return torch.stack(rows), sum(counted)

            for reduction in ("none", "mean"):
                mod = make(weight=weight, reduction=reduction, label_smoothing=eps)
                got, g_got = value_grad(mod, z, t)

                def want_fn(zz):
                    rows, total = loop(zz)
                    return rows if reduction == "none" else rows.sum() / total

                want, g_want = oracle_value_grad(want_fn, z)
                torch.testing.assert_close(got, want, **TOL, msg=f"{name} {reduction}")
                torch.testing.assert_close(g_got, g_want, rtol=1e-8, atol=1e-10, msg=f"{name} {reduction} grad")


# ----------------------------------------------------------------------------- coarse labels
@pytest.mark.parametrize("tree", list(TREES))
def test_coarse_labels_against_the_loop(tree):
    tax = TREES[tree]()
    view = NodeView(tax)
    N = tax.num_nodes
    g = torch.Generator().manual_seed(5)
    ids = torch.arange(N)  # every target id: the classes and every internal node, the root included
    z = torch.randn(N, tax.num_classes, generator=g, dtype=torch.float64) * 2
    for name, make, oracle, _ in cases(tax, view):
        mod = make(coarse_labels=True, reduction="none")
        got, g_got = value_grad(mod, z, ids)
        want, g_want = oracle_value_grad(lambda zz: torch.stack([oracle(zz[i], i) for i in range(N)]), z)
        torch.testing.assert_close(got, want, **TOL, msg=name)
        torch.testing.assert_close(g_got, g_want, rtol=1e-8, atol=1e-10, msg=f"{name} grad")


@settings(max_examples=30)
@given(random_taxonomies(max_nodes=20), st.integers(0, 2**31 - 1))
def test_coarse_labels_do_not_depend_on_the_split_under_the_label(tax, seed):
    """Redistribute the logits under v keeping their log-sum-exp: the loss, and the gradient outside
    v, do not change. At a leaf the coarse loss is the hard-label loss; HXE(alpha=0) is -log P(v)."""
    view = NodeView(tax)
    C, N = tax.num_classes, tax.num_nodes
    g = torch.Generator().manual_seed(seed)
    ids = torch.arange(N)
    z = torch.randn(N, C, generator=g, dtype=torch.float64) * 2
    z2 = z.clone()
    for v in range(N):
        under = view.under(v)
        lse = torch.logsumexp(z[v, under], 0)
        new = torch.randn(len(under), generator=g, dtype=torch.float64) * 3
        z2[v, under] = new - torch.logsumexp(new, 0) + lse
    for name, make, _, _ in cases(tax, view):
        mod = make(coarse_labels=True, reduction="none")
        a, ga = value_grad(mod, z, ids)
        b, gb = value_grad(mod, z2, ids)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=name)
        for v in range(N):
            outside = [j for j in range(C) if j not in view.under(v)]
            torch.testing.assert_close(ga[v, outside], gb[v, outside], rtol=1e-8, atol=1e-9, msg=name)
        hard, ghard = value_grad(make(reduction="none"), z[:C], ids[:C])
        torch.testing.assert_close(a[:C], hard, rtol=1e-12, atol=1e-12, msg=name)
        torch.testing.assert_close(ga[:C], ghard, rtol=1e-12, atol=1e-12, msg=name)
    hxe, _ = value_grad(ts.HXELoss(tax, 0.0, coarse_labels=True, reduction="none"), z, ids)
    want = torch.stack([-log_mass(z[v], view.under(v)) for v in range(N)])
    torch.testing.assert_close(hxe, want, rtol=1e-10, atol=1e-12)


def test_coarse_labels_are_opt_in_and_named(seed_tax):
    z = torch.randn(2, 4)
    sea = int(seed_tax.encode("sea"))
    for mod in (ts.HXELoss(seed_tax, 0.5), ts.TreeWassersteinLoss(seed_tax), ts.ExpectedCostLoss(seed_tax)):
        with pytest.raises(IndexError, match=r"target 6 at position \(1,\) is out of range.*coarse_labels=True"):
            mod(z, torch.tensor([0, sea]))
    with pytest.raises(IndexError, match=r"target 7 .* expected target ids in \[0, 7\)"):
        ts.HXELoss(seed_tax, 0.5, coarse_labels=True)(z, torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="coarse labels need a taxonomy"):
        ts.ExpectedCostLoss(ts.cost_matrix(seed_tax), coarse_labels=True)
    with pytest.raises(TypeError, match="coarse_labels must be a bool"):
        ts.HXELoss(seed_tax, 0.5, coarse_labels=1)


def test_coarse_weights_are_the_mean_of_their_classes():
    """A class weight vector gives a coarse label the mean weight of its classes; a num_nodes vector
    weighs each target id directly."""
    tax = chain_tax()
    C, N = tax.num_classes, tax.num_nodes
    w = torch.rand(C, dtype=torch.float64) + 0.5
    ids = torch.arange(N)
    z = torch.randn(N, C, dtype=torch.float64)
    view = NodeView(tax)
    mean_w = torch.tensor([float(w[view.under(v)].mean()) for v in range(N)], dtype=torch.float64)
    for make in (lambda **kw: ts.HXELoss(tax, 0.5, coarse_labels=True, **kw),
                 lambda **kw: ts.HierarchicalSoftLabelLoss(tax, 2.0, coarse_labels=True, **kw),
                 lambda **kw: ts.TreeWassersteinLoss(tax, coarse_labels=True, **kw)):
        plain, _ = value_grad(make(reduction="none"), z, ids)
        got, _ = value_grad(make(weight=w, reduction="sum"), z, ids)
        torch.testing.assert_close(got, (plain * mean_w).sum())
        per_id = torch.rand(N, dtype=torch.float64)
        got, _ = value_grad(make(weight=per_id, reduction="mean"), z, ids)
        torch.testing.assert_close(got, (plain * per_id).sum() / per_id.sum())


def test_coarse_labels_with_label_smoothing_and_mixed_batches():
    """Smoothing of a coarse label: (1 - ε) ℓ(v) + ε Σ_c ℓ(c) / C for the linear losses; a batch mixing
    class and coarse targets gives every row its own value."""
    tax = chain_tax()
    view = NodeView(tax)
    C, N = tax.num_classes, tax.num_nodes
    eps = 0.2
    ids = torch.arange(N)
    z = torch.randn(N, C, dtype=torch.float64)
    for name, make, oracle, linear in cases(tax, view):
        mod = make(coarse_labels=True, reduction="none", label_smoothing=eps)
        got, _ = value_grad(mod, z, ids)
        if linear == "pairwise":  # classes: the smoothed distribution; coarse labels: (1 - ε) ℓ(v) + ε ℓ(uniform)
            prob = pairwise_probability_oracle(view, "lca_depth_complement")
            uniform = [1 / C] * C
            want = torch.stack([prob(z[v], [eps / C + (1 - eps) * (c == v) for c in range(C)]) if v < C else
                                (1 - eps) * oracle(z[v], v) + eps * prob(z[v], uniform) for v in range(N)])
            torch.testing.assert_close(got, want, **TOL, msg=name)
        elif linear:
            want = torch.stack([(1 - eps) * oracle(z[v], v) + eps / C * sum(oracle(z[v], c) for c in range(C))
                                for v in range(N)])
            torch.testing.assert_close(got, want, **TOL, msg=name)
        # each row alone equals its row in the mixed batch
        for v in (0, C - 1, C, N - 1):
            alone, _ = value_grad(mod, z[v : v + 1], ids[v : v + 1])
            torch.testing.assert_close(alone[0], got[v], **TOL, msg=name)


# ----------------------------------------------------------------------------- bad input
def test_bad_probability_targets_are_named(seed_tax):
    z = torch.randn(3, 4)
    good = torch.softmax(torch.randn(3, 4), 1)
    for mod in (ts.HXELoss(seed_tax, 0.5), ts.SoftTargetCrossEntropy(), ts.TreeWassersteinLoss(seed_tax),
                ts.PairwiseCostLoss(seed_tax)):
        bad = good.clone()
        bad[1] *= 0.9
        with pytest.raises(ValueError, match=r"row \(1, :\) sum to 0.9"):
            mod(z, bad)
        bad = good.clone()
        bad[2, 3] = -0.1
        with pytest.raises(ValueError, match=r"-0.1 in row \(2, :\) \(class 3\) is negative"):
            mod(z, bad)
        bad = good.clone()
        bad[0, 1] = math.nan
        with pytest.raises(ValueError, match=r"row \(0, :\) \(class 1\) is not finite"):
            mod(z, bad)
        with pytest.raises(ValueError, match="must have the input's shape"):
            mod(z, good[:, :3])
    seg = torch.softmax(torch.randn(2, 4, 3), 1)
    seg[1, :, 2] *= 2
    with pytest.raises(ValueError, match=r"row \(1, :, 2\) sum to 2"):
        ts.HXELoss(seed_tax, 0.5)(torch.randn(2, 4, 3), seg)
    # a float16 row from soft_targets sums to 1 within float16's precision: accepted
    half = ts.soft_targets(seed_tax, 3.0, dtype=torch.float16)
    ts.HXELoss(seed_tax, 0.5)(torch.randn(4, 4), half)


def test_bad_options_are_named(seed_tax):
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="label_smoothing must be in"):
            ts.HXELoss(seed_tax, 0.5, label_smoothing=bad)
        with pytest.raises(ValueError, match="label_smoothing must be in"):
            TF.hxe_loss(torch.randn(2, 4), torch.tensor([0, 1]), seed_tax, 0.5, label_smoothing=bad)
    with pytest.raises(TypeError, match="label_smoothing must be a float"):
        ts.HXELoss(seed_tax, 0.5, label_smoothing="0.1")
    for bad in (1.5, "3", True):
        with pytest.raises(TypeError, match="ignore_index must be an int"):
            ts.HXELoss(seed_tax, 0.5, ignore_index=bad)
        with pytest.raises(TypeError, match="ignore_index must be an int"):
            TF.hxe_loss(torch.randn(2, 4), torch.tensor([0, 1]), seed_tax, 0.5, ignore_index=bad)
    with pytest.raises(TypeError, match="input must be a torch.Tensor of logits, got ndarray"):
        ts.HXELoss(seed_tax, 0.5)(np.zeros((2, 4), dtype=np.float32), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="target must be a torch.Tensor"):
        ts.HXELoss(seed_tax, 0.5)(torch.zeros(2, 4), np.array([0, 1]))


# ----------------------------------------------------------------------------- a real client: timm's Mixup
def _timm_mixup():
    """timm's own Mixup, loaded from ``timm/data/mixup.py`` alone: importing the ``timm`` package would
    need torchvision, which CI does not install (it would replace the CPU build of torch)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        if os.environ.get("CI"):
            pytest.fail("timm is not installed (CI installs it with pip install --no-deps timm)", pytrace=False)
        pytest.skip("timm is not installed (pip install --no-deps timm)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "mixup.py")
    mod_spec = importlib.util.spec_from_file_location("timm_data_mixup", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.Mixup


def test_timm_mixup_feeds_every_loss():
    """A few training steps of a small model with timm's Mixup (mixup, cutmix, label smoothing) feeding
    every loss: the targets are accepted, and for the losses linear in the target the value is
    Σ_c p_c ℓ(z, c) of the targets timm made (tree-Wasserstein and pairwise are not linear in it)."""
    Mixup = _timm_mixup()
    tax = weighted_tax()
    C = tax.num_classes
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.1,
                  num_classes=C)
    factories = [lambda **kw: ts.SoftTargetCrossEntropy(**kw), lambda **kw: ts.HierarchicalSoftLabelLoss(tax, 4.0, **kw),
                 lambda **kw: ts.HXELoss(tax, 0.3, **kw), lambda **kw: ts.ExpectedCostLoss(tax, **kw),
                 lambda **kw: ts.TreeWassersteinLoss(tax, **kw), lambda **kw: ts.PairwiseCostLoss(tax, **kw)]
    g = torch.Generator().manual_seed(0)
    images = torch.randn(16, 3, 8, 8, generator=g)
    labels = torch.randint(0, C, (16,), generator=g)
    for make in factories:
        loss, per_row = make(), make(reduction="none")
        torch.manual_seed(0)
        np.random.seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, C))
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        for _ in range(6):
            x, soft = mixup(images.clone(), labels.clone())
            assert soft.shape == (16, C)
            out = loss(model(x), soft)
            opt.zero_grad()
            out.backward()
            assert all(torch.isfinite(p.grad).all() for p in model.parameters()), type(loss).__name__
            opt.step()
            if not isinstance(loss, (ts.TreeWassersteinLoss, ts.PairwiseCostLoss)):  # linear in the target
                with torch.no_grad():
                    logits = model(x)
                    by_class = torch.stack([per_row(logits, torch.full((16,), c)) for c in range(C)], 1)
                    torch.testing.assert_close(per_row(logits, soft), (soft * by_class).sum(1), rtol=1e-5,
                                               atol=1e-5)
