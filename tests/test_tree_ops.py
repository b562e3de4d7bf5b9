"""The tree engine against brute-force loops over the taxonomy's own queries: the segment primitives (both
kernels, every transform), the paths of target ids (table and binary search), the passes over all nodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _trees import random_taxonomies
from hypothesis import given, settings
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth.tree_ops import TreeTensors, expand, nodes, segment_max, segment_sum, segments, tables


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


def _branching(tax, name) -> bool:
    return len(tax.children(name)) >= 2


@given(random_taxonomies(max_nodes=25), st.booleans())
def test_paths_are_the_branching_ancestors_and_their_segments_the_rings(tax, search):
    """Path of v: its branching ancestors from the top, then v (padded with v); segment s of the leaf order
    holds exactly the classes j with LCA(v, j) = path[ring(s)] (or under v for the last ring)."""
    old = tables.PATH_TABLE_BYTES
    tables.PATH_TABLE_BYTES = 0 if search else old
    try:
        tt = TreeTensors(tax)
    finally:
        tables.PATH_TABLE_BYTES = old
    assert tt.uses_path_table is not search
    ids = torch.arange(tax.num_nodes)
    path, lengths = tt.paths(ids)
    R = tt.num_rings
    position_class = tax.compiled.position_class
    for tid in range(tax.num_nodes):
        name = tax.target_names[tid]
        node = tax.node_index(name)
        anc = [tax.node_index(a) for a in reversed(tax.ancestors(name)) if _branching(tax, a)]
        want = anc + [node] * (R - len(anc))
        assert path[tid].tolist() == want
        # the segments, in leaf order, against the LCA of every class with v
        row, at = lengths[tid].tolist(), 0
        for s, n in enumerate(row):
            ring = s if s < R else 2 * (R - 1) - s
            for k in range(at, at + n):
                j = int(position_class[k])
                lca = tax.node_index(tax.lca(name, tax.classes[j]))
                assert lca == (node if ring == R - 1 else want[ring]), (tid, s, j)
            at += n
        assert at == tax.num_classes


def _random_lengths(rng, rows: int, width: int, segs: int) -> torch.Tensor:
    out = np.zeros((rows, segs), dtype=np.int64)
    for b in range(rows):
        cuts = np.sort(rng.integers(0, width + 1, segs - 1))
        out[b] = np.diff(np.concatenate([[0], cuts, [width]]))
    return torch.from_numpy(out)


@settings(max_examples=60)
@given(st.integers(1, 5), st.integers(1, 12), st.integers(1, 7), st.booleans(), st.integers(0, 2**31 - 1))
def test_segment_primitives_against_torch_and_loops(rows, width, segs, shared, seed):
    """Empty segments anywhere (first, last, every one but one), one layout per row or one for all: the numpy
    kernels, the generic kernels (torch's segment_reduce) and plain loops agree."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((rows, width)))
    lengths = _random_lengths(rng, 1 if shared else rows, width, segs)
    if shared:
        lengths = lengths[0]
    per_row = lengths.expand(rows, -1) if shared else lengths
    want_sum = torch.zeros(rows, segs, dtype=torch.float64)
    want_max = torch.full((rows, segs), float("-inf"), dtype=torch.float64)
    v = torch.from_numpy(rng.standard_normal((rows, segs)))
    want_expand = torch.zeros(rows, width, dtype=torch.float64)
    for b in range(rows):
        at = 0
        for s, n in enumerate(per_row[b].tolist()):
            if n:
                want_sum[b, s] = x[b, at : at + n].sum()
                want_max[b, s] = x[b, at : at + n].max()
                want_expand[b, at : at + n] = v[b, s]
            at += n
    torch.testing.assert_close(segment_sum(x, lengths), want_sum, rtol=0, atol=1e-12)
    torch.testing.assert_close(segment_max(x, lengths), want_max, rtol=0, atol=0)
    torch.testing.assert_close(expand(v, lengths, width), want_expand, rtol=0, atol=0)
    # the generic kernels (what other devices run), called on the CPU
    torch.testing.assert_close(segments._generic_sum(x, lengths), want_sum, rtol=0, atol=1e-12)
    torch.testing.assert_close(segments._generic_max(x, lengths), want_max, rtol=0, atol=0)
    torch.testing.assert_close(segments._generic_expand(v, lengths, width), want_expand, rtol=0, atol=0)


def test_segment_primitives_are_operators_with_every_derivative():
    """opcheck (schema, fake tensors, autograd registration), gradcheck and gradgradcheck, vmap and jacrev,
    forward-over-reverse Hessians, and torch.compile(fullgraph=True)."""
    lengths = torch.tensor([[3, 0, 4], [0, 7, 0]])
    shared = torch.tensor([2, 0, 5])
    for lay in (lengths, shared):
        torch.library.opcheck(segments._segment_sum_op, (torch.randn(2, 7), lay))
        torch.library.opcheck(segments._segment_max_op, (torch.randn(2, 7), lay))
        torch.library.opcheck(segments._expand_op, (torch.randn(2, 3), lay, 7))
        x = torch.randn(2, 7, dtype=torch.float64, requires_grad=True)
        v = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a: segment_sum(a, lay), (x,))
        assert torch.autograd.gradgradcheck(lambda a: segment_sum(a.exp(), lay), (x,))
        assert torch.autograd.gradgradcheck(lambda a: expand(a, lay, 7).sin(), (v,))
        f = lambda a: expand(segment_sum(a.exp(), lay).log(), lay, 7).sum()  # noqa: E731
        h = torch.func.hessian(f)(x.detach())
        torch.testing.assert_close(h, torch.autograd.functional.hessian(f, x.detach()))
        batch = torch.randn(4, 2, 7, dtype=torch.float64)
        torch.testing.assert_close(torch.func.vmap(lambda a: segment_sum(a, lay))(batch),
                                   torch.stack([segment_sum(a, lay) for a in batch]))
        torch.testing.assert_close(torch.func.vmap(lambda a: segment_max(a, lay))(batch),
                                   torch.stack([segment_max(a, lay) for a in batch]))
        j = torch.func.jacrev(lambda a: segment_sum(a**2, lay))(x.detach())
        torch.testing.assert_close(j, torch.autograd.functional.jacobian(lambda a: segment_sum(a**2, lay), x.detach()))
    torch._dynamo.reset()
    g = torch.compile(lambda a: expand(segment_sum(a.exp(), lengths), lengths, 7) * segment_max(a, lengths).sum(),
                      fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 7, requires_grad=True)
    got = g(x)
    want = expand(segment_sum(x.exp(), lengths), lengths, 7) * segment_max(x, lengths).sum()
    torch.testing.assert_close(got, want)


def test_node_passes_are_operators_for_the_compiler():
    """The level passes as compiled code calls them (torch.library operators): opcheck (schema, fake tensors,
    autograd registration), the same numbers as the eager passes, gradcheck against the formulas, and
    torch.compile(fullgraph=True) of each pass equal to eager."""
    tax = ts.Taxonomy.from_nested({"r": {"a": {"a1": ["x", "y"], "a2": ["z"]}, "b": ["u", "v", "w"], "c": None}})
    tt = TreeTensors(tax).double()
    off = list(tt.level_offsets)
    par = tt.level_parent_local
    x = torch.randn(3, tax.num_classes, dtype=torch.float64)
    lev = nodes.place(tt, x)
    torch.library.opcheck(nodes._up_op, (lev, par, off))
    torch.library.opcheck(nodes._down_op, (lev, par, off))
    torch.library.opcheck(nodes._place_op, (x, tt.class_level_pos, tt.num_nodes, 0.0))
    torch.library.opcheck(nodes._classes_op, (lev, tt.class_level_pos))
    torch.library.opcheck(nodes._lse_op, (x, tt.class_level_pos, par, tt.level_is_leaf, off, list(tt.level_inner)))
    torch.testing.assert_close(nodes._up_op(lev, par, off), nodes._formula_up(tt, lev))
    torch.testing.assert_close(nodes._down_op(lev, par, off), nodes._formula_down(tt, lev))
    torch.testing.assert_close(nodes._lse_op(x, tt.class_level_pos, par, tt.level_is_leaf, off, list(tt.level_inner)),
                               nodes._formula_lse(tt, x))
    torch.testing.assert_close(nodes._classes_op(lev, tt.class_level_pos), x)
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: nodes._classes_op(nodes._down_op(nodes._up_op(
        nodes._place_op(a, tt.class_level_pos, tt.num_nodes, 0.0), par, off), par, off), tt.class_level_pos), (xg,))
    assert torch.autograd.gradcheck(lambda a: nodes._lse_op(a, tt.class_level_pos, par, tt.level_is_leaf, off,
                                                            list(tt.level_inner)), (xg,))
    torch._dynamo.reset()
    for f in (lambda a: tt.subtree_sum(a), lambda a: tt.subtree_logsumexp(a),
              lambda a: tt.lca_expectation(a, torch.rand(tax.num_nodes, dtype=torch.float64))):
        torch.manual_seed(0)
        want = f(xg)
        (gw,) = torch.autograd.grad(want.sin().sum(), xg)
        torch.manual_seed(0)
        got = torch.compile(f, fullgraph=True, backend="aot_eager")(xg)
        (gg,) = torch.autograd.grad(got.sin().sum(), xg)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(gg, gw)


def test_float32_segment_sums_add_pairwise():
    """10⁵ float32 values in one segment: within 1e-6 of the float64 sum (a sequential sum is off by ~3e-5)."""
    g = torch.Generator().manual_seed(0)
    x = torch.exp(torch.rand(4, 100_000, generator=g) * 60 - 60)
    got = segment_sum(x, torch.tensor([100_000]))[:, 0].double()
    want = x.double().sum(1)
    assert ((got - want).abs() / want).max() < 1e-6


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
    assert tt2.target_path.dtype == torch.int64


def test_single_class_and_flat_tree():
    flat = ts.Taxonomy.from_edges([("r", "a"), ("r", "b"), ("r", "c")])
    tt = TreeTensors(flat)
    x = torch.tensor([[1.0, 2.0, 3.0]])
    assert tt.subtree_sum(x)[0].tolist() == [6.0, 1.0, 2.0, 3.0]
    path, lengths = tt.paths(torch.tensor([1]))
    assert path.tolist() == [[0, 2]] and lengths.tolist() == [[1, 1, 1]]
    one = TreeTensors(ts.Taxonomy.from_edges([("r", "a")]))
    assert one.num_rings == 1 and one.paths(torch.tensor([0])).lengths.tolist() == [[1]]


@given(random_taxonomies(max_nodes=25), st.sampled_from(["lca_height", "lca_depth_complement"]),
       st.integers(0, 2**31 - 1))
def test_accumulate_down_gives_conditional_risk(tax, kind, seed):
    """The documented CRM recipe equals p @ cost with the dense cost matrix."""
    tt = TreeTensors(tax).double()
    table = torch.from_numpy(ts.node_distance(tax, kind))
    parent = torch.from_numpy(tax.compiled.parent.copy())
    g = table - torch.where(parent >= 0, table[parent.clamp_min(0)], torch.zeros_like(table))
    p = torch.softmax(torch.randn(3, tax.num_classes, generator=torch.Generator().manual_seed(seed),
                                  dtype=torch.float64), 1)
    risk = tt.node_to_class(tt.accumulate_down(tt.subtree_sum(p) * g))
    want = p @ torch.from_numpy(ts.class_distances(tax, kind))
    torch.testing.assert_close(risk, want, rtol=1e-10, atol=1e-12)


