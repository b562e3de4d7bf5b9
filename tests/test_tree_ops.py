"""TreeTensors against brute-force loops over the taxonomy's own queries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _trees import random_taxonomies
from hypothesis import given, settings
from hypothesis import strategies as st

from taxosmooth.tree_ops import TreeTensors, segment_sum_leaf_order


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


@given(random_taxonomies(max_nodes=25), st.data())
def test_paths_rings_match_lca_loop(tax, data):
    tt = TreeTensors(tax).double()
    C, K = tax.num_classes, tt.max_depth
    lengths = tt.ring_lengths.long()
    assert torch.equal(tt.ring_starts.long(), torch.cumsum(lengths, 1) - lengths)
    assert torch.equal(tt.ring_starts[:, K].long(), tt.class_position)  # segment K is the class itself
    target = torch.tensor(data.draw(st.lists(st.integers(0, C - 1), min_size=1, max_size=5)))
    B = len(target)
    x = torch.randn(B, C, dtype=torch.float64)
    mask = tt.path_mask(target)
    path = tt.path_of(target)
    nodes = torch.randn(B, tax.num_nodes, dtype=torch.float64)
    gathered = tt.gather_path(nodes, target)
    rings = tt.ring_sum(x, target)
    vals = torch.randn(B, K + 1, dtype=torch.float64)
    expanded = tt.ring_expand(vals, target)
    for b in range(B):
        t = int(target[b])
        anc = _ancestors(tax, t)
        assert path[b, : len(anc)].tolist() == anc
        assert path[b, len(anc) :].eq(0).all()  # padded with the root
        assert mask[b].tolist() == [k < len(anc) for k in range(K + 1)]
        assert gathered[b].tolist() == nodes[b, path[b]].tolist()
        want_r = torch.zeros(K + 1, dtype=torch.float64)
        for j in range(C):
            k = anc.index(_lca_node(tax, t, j))
            want_r[k] += x[b, j]
            assert expanded[b, j] == vals[b, k]
        torch.testing.assert_close(rings[b], want_r, rtol=0, atol=1e-12)


def test_ring_sum_and_expand_are_adjoint_and_differentiable(seed_tax):
    tt = TreeTensors(seed_tax).double()
    target = torch.tensor([0, 3, 2])
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, tt.max_depth + 1, dtype=torch.float64, requires_grad=True)
    lhs = (tt.ring_sum(x, target) * v).sum()
    rhs = (x * tt.ring_expand(v, target)).sum()
    torch.testing.assert_close(lhs, rhs)
    assert torch.autograd.gradcheck(lambda a: tt.ring_sum(a, target), (x,))
    assert torch.autograd.gradcheck(lambda a: tt.ring_expand(a, target), (v,))
    assert torch.autograd.gradcheck(tt.subtree_sum, (x,))
    assert torch.autograd.gradcheck(tt.subtree_logsumexp, (x,))
    n = torch.randn(2, seed_tax.num_nodes, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(tt.accumulate_down, (n,))


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
    assert tt2.path.dtype == torch.int64


def test_single_class_and_flat_tree():
    import taxosmooth as ts

    flat = ts.Taxonomy.from_edges([("r", "a"), ("r", "b"), ("r", "c")])
    tt = TreeTensors(flat)
    x = torch.tensor([[1.0, 2.0, 3.0]])
    assert tt.subtree_sum(x)[0].tolist() == [6.0, 1.0, 2.0, 3.0]
    assert tt.ring_sum(x, torch.tensor([1]))[0].tolist() == [2.0, 4.0]
    assert np.allclose(tt.ring_expand(torch.tensor([[5.0, 7.0]]), torch.tensor([2]))[0].numpy(), [7, 7, 5])


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("host", [True, False])
def test_segment_kernels_match_loops(dtype, host, monkeypatch):
    """Both code paths (numpy on the CPU, torch elsewhere) of the segment kernels, empty segments included."""
    import taxosmooth.tree_ops as tree_ops

    if not host:
        monkeypatch.setattr(tree_ops, "_host_kernel", lambda x: False)
    rng = np.random.default_rng(0)
    lengths = np.array([[0, 3, 0, 1, 2, 0], [6, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 3], [1, 1, 1, 1, 1, 1]])
    x = rng.normal(size=(4, 6))
    vals = rng.normal(size=(4, 6))
    want_sum = np.zeros((4, 6))
    want_expand = np.zeros((4, 6))
    for b in range(4):
        pos = 0
        for s, n in enumerate(lengths[b]):
            want_sum[b, s] = x[b, pos : pos + n].sum()
            want_expand[b, pos : pos + n] = vals[b, s]
            pos += n
    L = torch.as_tensor(lengths, dtype=torch.int32)
    got_sum = tree_ops.segment_sum_leaf_order(torch.as_tensor(x, dtype=dtype), L)
    got_expand = tree_ops.segment_expand_leaf_order(torch.as_tensor(vals, dtype=dtype), L, 6)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_sum, torch.as_tensor(want_sum, dtype=dtype), **tol)
    torch.testing.assert_close(got_expand, torch.as_tensor(want_expand, dtype=dtype), **tol)
    assert tree_ops.segment_sum_leaf_order(torch.zeros(0, 6, dtype=dtype), L[:0]).shape == (0, 6)
    assert tree_ops.segment_expand_leaf_order(torch.zeros(0, 6, dtype=dtype), L[:0], 6).shape == (0, 6)


@settings(max_examples=60)
@given(st.data())
def test_host_segment_sum_on_random_layouts(data):
    """The numpy kernel against a loop, on random segment layouts: empty segments anywhere, including
    at the end of the last row (where reduceat's start index would be past the end), and a last
    non-empty segment of one element."""
    from taxosmooth.tree_ops import host_segment_sum

    b = data.draw(st.integers(1, 4))
    c = data.draw(st.integers(1, 7))
    s = data.draw(st.integers(1, 5))
    rows = []
    for _ in range(b):
        cuts = sorted(data.draw(st.lists(st.integers(0, c), min_size=s - 1, max_size=s - 1)))
        rows.append(np.diff([0, *cuts, c]))
    lengths = np.array(rows, dtype=np.int32)
    x = np.random.default_rng(b * 100 + c).normal(size=(b, c))
    want = np.zeros((b, s))
    for i in range(b):
        pos = 0
        for k, n in enumerate(lengths[i]):
            want[i, k] = x[i, pos : pos + n].sum()
            pos += n
    starts = np.cumsum(lengths, axis=1) - lengths
    np.testing.assert_allclose(host_segment_sum(x, starts, lengths), want, rtol=1e-12, atol=1e-12)
    got = segment_sum_leaf_order(torch.from_numpy(x), torch.from_numpy(lengths), torch.from_numpy(starts))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
