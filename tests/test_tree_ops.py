"""TreeTensors against brute-force loops over the taxonomy's own queries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _trees import random_taxonomies
from hypothesis import given, settings
from hypothesis import strategies as st

from taxosmooth.tree_ops import TreeTensors, _reduceat_layout


def _leaves_under(tax):
    """Per node id: the class indices below it, from Taxonomy.leaves_under (independent of the arrays)."""
    return [[tax.class_index(c) for c in tax.leaves_under(name)] for name in tax.nodes]


def _ancestors(tax, cls):
    name = tax.classes[cls]
    return [tax.node_index(a) for a in (name,) + tuple(tax.ancestors(name))]


def _lca_node(tax, i, j):
    return tax.node_index(tax.lca(tax.classes[i], tax.classes[j]))


@given(random_taxonomies(max_nodes=25), st.integers(0, 2**31 - 1))
def test_subtree_sum_and_logsumexp_match_loops(tax, seed):
    tt = TreeTensors(tax).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, tax.num_classes, generator=g, dtype=torch.float64)
    under = _leaves_under(tax)
    want = torch.stack([x[:, idx].sum(1) for idx in under], dim=1)
    torch.testing.assert_close(tt.subtree_sum(x), want, rtol=0, atol=1e-12)
    want_lse = torch.stack([torch.logsumexp(x[:, idx], 1) for idx in under], dim=1)
    torch.testing.assert_close(tt.subtree_logsumexp(x), want_lse, rtol=1e-12, atol=1e-12)


def test_subtree_logsumexp_survives_underflow(seed_tax):
    tt = TreeTensors(seed_tax)
    # horse and zebra are 1000 nats below whale: P(mammal) underflows in float32, its log does not
    logp = torch.log_softmax(torch.tensor([[-1000.0, -1001.0, 0.0, -1.0]], requires_grad=True), 1)
    out = tt.subtree_logsumexp(logp)
    mammal = seed_tax.node_index("mammal")
    want = torch.logsumexp(logp[:, :2].double(), 1).float()
    torch.testing.assert_close(out[:, mammal], want)
    out.sum().backward()
    assert torch.isfinite(out).all()


@given(random_taxonomies(max_nodes=25), st.integers(0, 2**31 - 1))
def test_accumulate_down_matches_ancestor_loop(tax, seed):
    tt = TreeTensors(tax).double()
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(2, tax.num_nodes, generator=g, dtype=torch.float64)
    want = torch.zeros_like(v)
    for i, name in enumerate(tax.nodes):
        for a in (name,) + tuple(tax.ancestors(name)):
            want[:, i] += v[:, tax.node_index(a)]
    torch.testing.assert_close(tt.accumulate_down(v), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(tt.node_to_class(v), v[:, [tax.node_index(c) for c in tax.classes]])


def _target_ancestors(tax, tid):
    """Node ids from target id ``tid``'s node up to the root (Taxonomy queries only)."""
    name = tax.target_names[tid]
    return [tax.node_index(a) for a in (name,) + tuple(tax.ancestors(name))]


def _ring_of(tax, tid, j):
    """The ancestor of target ``tid`` at which class ``j`` joins it: ``LCA(node, j)`` (the node itself
    when ``j`` is under it)."""
    name = tax.target_names[tid]
    return tax.node_index(tax.lca(name, tax.classes[j]))


@given(random_taxonomies(max_nodes=25), st.data())
def test_rings_match_lca_loop(tax, data):
    """Ring nodes, sizes and segments of class and coarse targets, host and torch, against Taxonomy.lca."""
    tt = TreeTensors(tax)
    C, N, R = tax.num_classes, tax.num_nodes, tt.num_rings
    target = torch.tensor(data.draw(st.lists(st.integers(0, N - 1), min_size=1, max_size=6)))
    B = len(target)
    x = np.random.default_rng(B).normal(size=(B, C))
    x_leaf = x[:, tax.compiled.position_class]
    vals = np.random.default_rng(B + 1).normal(size=(B, R))
    for host in (True, False):
        rings = tt.rings(target, host=host)
        nodes = np.asarray(rings.nodes)
        size = np.asarray(rings.size)
        lengths = np.asarray(rings.lengths)
        assert lengths.sum(1).tolist() == [C] * B
        expanded = np.asarray(rings.expand_rings(vals if host else torch.from_numpy(vals)))
        for b in range(B):
            tid = int(target[b])
            anc = _target_ancestors(tax, tid)
            joins = [_ring_of(tax, tid, j) for j in range(C)]
            # ring nodes: the target's node, then the ancestors at which some class joins; then the root
            want_nodes = [anc[0]] + [a for a in anc[1:] if a in joins]
            assert nodes[b, : len(want_nodes)].tolist() == want_nodes
            assert (nodes[b, len(want_nodes) :] == 0).all()
            for k, a in enumerate(want_nodes):
                assert size[b, k] == joins.count(a)
                for j in range(C):
                    if joins[j] == a:
                        assert expanded[b, tax.compiled.class_position[j]] == vals[b, k]
            assert (size[b, len(want_nodes) :] == 0).all()
        if host:
            seg = rings.sum(x_leaf)
            mx = rings.max(x_leaf)
            for b in range(B):
                pos = 0
                for s_, n in enumerate(lengths[b]):
                    part = x_leaf[b, pos : pos + n]
                    assert abs(seg[b, s_] - part.sum()) < 1e-12
                    assert mx[b, s_] == (part.max() if n else -np.inf)
                    pos += n
            # exact log-space ring masses, and ring 0's log-sum-exp
            e, m, ring_lse = rings.logsumexp(x_leaf)
            rs = rings.ring_sums(rings.sum(np.exp(x_leaf)))
            with np.errstate(divide="ignore"):
                np.testing.assert_allclose(ring_lse, np.log(rs), rtol=1e-12, atol=1e-12)
            r0 = rings.ring0_logsumexp(x_leaf)
            np.testing.assert_allclose(r0, np.log(rs[:, 0]), rtol=1e-12, atol=1e-12)


@settings(max_examples=60)
@given(st.data())
def test_reduceat_layout_on_random_segments(data):
    """The flat reduceat layout against a loop: empty segments anywhere, including at the end of the
    last row (where reduceat's index would be past the end), and a last non-empty segment of one element."""
    b = data.draw(st.integers(1, 4))
    c = data.draw(st.integers(1, 7))
    s = data.draw(st.integers(1, 5))
    rows = []
    for _ in range(b):
        cuts = sorted(data.draw(st.lists(st.integers(0, c), min_size=s - 1, max_size=s - 1)))
        rows.append(np.diff([0, *cuts, c]))
    lengths = np.array(rows)
    starts = np.cumsum(lengths, axis=1) - lengths
    x = np.random.default_rng(b * 100 + c).normal(size=(b, c))
    index, empty, fix = _reduceat_layout(starts, lengths, c)
    flat = x.reshape(-1)
    got = np.add.reduceat(flat, index)
    if fix >= 0:
        got[fix] += flat[-1]
    got[empty] = 0
    want = np.zeros((b, s))
    for i in range(b):
        pos = 0
        for k, n in enumerate(lengths[i]):
            want[i, k] = x[i, pos : pos + n].sum()
            pos += n
    np.testing.assert_allclose(got.reshape(b, s), want, rtol=1e-12, atol=1e-12)


@given(random_taxonomies(max_nodes=25), st.integers(0, 2**31 - 1))
def test_host_node_passes_match_torch(tax, seed):
    tt = TreeTensors(tax).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, tax.num_classes, generator=g, dtype=torch.float64)
    v = torch.randn(3, tax.num_nodes, generator=g, dtype=torch.float64)
    x_leaf = tt.leaf_cols(x.numpy())
    np.testing.assert_allclose(tt.host_subtree_sum(x_leaf), tt.subtree_sum(x).numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tt.host_accumulate_down(v.numpy()), tt.accumulate_down(v).numpy(), rtol=1e-12,
                               atol=1e-12)
    kids = np.zeros_like(v.numpy())
    for u in range(1, tax.num_nodes):
        kids[:, tax.compiled.parent[u]] += v.numpy()[:, u]
    np.testing.assert_allclose(tt.host_children_sum(v.numpy()), kids, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tt.children_sum(v).numpy(), kids, rtol=1e-12, atol=1e-12)
    mx = tt.host_subtree_max(x_leaf)
    for u, name in enumerate(tax.nodes):
        under = [tax.class_index(c) for c in tax.leaves_under(name)]
        np.testing.assert_allclose(mx[:, u], x.numpy()[:, under].max(1))
    anc = tt.ancestor_indicator(np.arange(tax.num_nodes), host=True)
    for v_ in range(tax.num_nodes):
        chain = {v_} | {tax.node_index(a) for a in tax.ancestors(tax.nodes[v_])}
        assert set(np.flatnonzero(anc[v_])) == chain


def test_node_passes_are_differentiable(seed_tax):
    tt = TreeTensors(seed_tax).double()
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(tt.subtree_sum, (x,))
    assert torch.autograd.gradcheck(tt.subtree_logsumexp, (x,))
    n = torch.randn(2, seed_tax.num_nodes, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(tt.accumulate_down, (n,))
    assert torch.autograd.gradcheck(tt.children_sum, (n,))


def test_leading_dims_and_errors(seed_tax):
    tt = TreeTensors(seed_tax)
    x = torch.rand(2, 5, 4)
    assert tt.subtree_sum(x).shape == (2, 5, seed_tax.num_nodes)
    torch.testing.assert_close(tt.subtree_sum(x)[..., 0], x.sum(-1))
    with pytest.raises(ValueError, match="size 4, got shape"):
        tt.subtree_sum(torch.rand(2, 3))


def test_buffers_move_and_stay_out_of_state_dict(seed_tax):
    tt = TreeTensors(seed_tax)
    assert tt.state_dict() == {}
    assert tt.buffer_bytes() > 0
    assert all(b.dtype in (torch.int64, torch.int32, torch.bool) for b in tt.buffers())
    tt2 = tt.to(torch.float64)  # index buffers are not floating point: unchanged
    assert tt2.ring_nodes.dtype == torch.int64


def test_single_class_and_flat_tree():
    import taxosmooth as ts

    flat = ts.Taxonomy.from_edges([("r", "a"), ("r", "b"), ("r", "c")])
    tt = TreeTensors(flat)
    x = torch.tensor([[1.0, 2.0, 3.0]])
    assert tt.subtree_sum(x)[0].tolist() == [6.0, 1.0, 2.0, 3.0]
    rings = tt.rings(torch.tensor([1]), host=True)
    assert rings.ring_sums(rings.sum(x.numpy()))[0].tolist() == [2.0, 4.0]
    assert rings.expand_rings(np.array([[5.0, 7.0]]))[0].tolist() == [7, 5, 7]


@given(random_taxonomies(max_nodes=25), st.sampled_from(["lca_height", "lca_depth_complement"]),
       st.integers(0, 2**31 - 1))
def test_accumulate_down_gives_conditional_risk(tax, kind, seed):
    """The documented CRM recipe equals p @ cost with the dense cost matrix."""
    import taxosmooth as ts

    tt = TreeTensors(tax).double()
    table = torch.from_numpy(ts.node_distance(tax, kind))
    parent = torch.from_numpy(tax.compiled.parent.copy())
    g = table - torch.where(parent >= 0, table[parent.clamp_min(0)], torch.zeros_like(table))
    p = torch.softmax(torch.randn(3, tax.num_classes, generator=torch.Generator().manual_seed(seed),
                                  dtype=torch.float64), 1)
    risk = tt.node_to_class(tt.accumulate_down(tt.subtree_sum(p) * g))
    want = p @ torch.from_numpy(ts.class_distances(tax, kind))
    torch.testing.assert_close(risk, want, rtol=1e-10, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(random_taxonomies(max_nodes=30), st.integers(1, 4), st.integers(0, 2**31 - 1), st.booleans())
def test_expand_sum_equals_the_sum_of_expansions(tax, k, seed, merged):
    """Several target columns written in one pass (merged segment breakpoints, or one expansion per
    column for small C) equal the columns expanded one by one and added."""
    from taxosmooth import tree_ops

    tree = TreeTensors(tax)
    rng = np.random.default_rng(seed)
    cols = []
    for _ in range(k):
        rings = tree.rings(torch.from_numpy(rng.integers(0, tax.num_classes, 7)), host=True)
        cols.append((rings, rng.standard_normal((7, tree.num_rings))))
    want = sum(r.expand_rings(v) for r, v in cols)
    old = tree_ops._EXPAND_SUM_MIN_CLASSES
    tree_ops._EXPAND_SUM_MIN_CLASSES = 0 if merged else 10**9
    try:
        got = tree_ops.Rings.expand_sum(cols)
    finally:
        tree_ops._EXPAND_SUM_MIN_CLASSES = old
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
