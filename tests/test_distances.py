"""Tree distances: hand-computed values, a brute-force networkx oracle on random trees, properties."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
from _oracles import brute_force_distances
from _trees import random_graphs, seed_taxonomy
from hypothesis import given
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth.distances import DISTANCE_KINDS, LCA_KINDS, class_distances, lca_matrix, node_distance

# ---------------------------------------------------------------------------- hand-computed


def test_seed_distances_by_hand():
    tax = seed_taxonomy()  # animal -> mammal{horse, zebra}, sea{whale, shark}
    assert tax.classes == ("horse", "zebra", "whale", "shark")
    lca_height = np.array([[0, 1, 2, 2], [1, 0, 2, 2], [2, 2, 0, 1], [2, 2, 1, 0]], float)
    path = np.array([[0, 2, 4, 4], [2, 0, 4, 4], [4, 4, 0, 2], [4, 4, 2, 0]], float)
    np.testing.assert_array_equal(ts.class_distances(tax, "lca_height"), lca_height)
    # every class sits at depth D = 2, so the complement equals the height
    np.testing.assert_array_equal(ts.class_distances(tax, "lca_depth_complement"), lca_height)
    np.testing.assert_array_equal(ts.class_distances(tax, "path_length"), path)
    for kind in DISTANCE_KINDS:
        d = ts.class_distances(tax, kind)
        h, z, w = (tax.class_index(n) for n in ("horse", "zebra", "whale"))
        assert d[h, z] < d[h, w]  # horse -> zebra is the smaller mistake


# r -> {a -> {x, y}, b -> {c -> {u, v}, w}}: leaves at depths 2 and 3, so the kinds differ
UNEVEN = [("r", "a"), ("r", "b"), ("a", "x"), ("a", "y"), ("b", "c"), ("b", "w"), ("c", "u"), ("c", "v")]


def test_uneven_tree_by_hand():
    tax = ts.Taxonomy.from_edges(UNEVEN, classes=["u", "x", "w", "y", "v"])
    i = {c: k for k, c in enumerate(tax.classes)}
    h = ts.class_distances(tax, "lca_height")
    dc = ts.class_distances(tax, "lca_depth_complement")
    pl = ts.class_distances(tax, "path_length")
    # (pair, lca_height, D - depth(LCA) with D = 3, path length)
    expected = [
        (("x", "y"), 1, 2, 2),  # LCA a: height 1, depth 1
        (("u", "v"), 1, 1, 2),  # LCA c: height 1, depth 2
        (("u", "w"), 2, 2, 3),  # LCA b: height 2, depth 1
        (("x", "u"), 3, 3, 5),  # LCA r
        (("y", "w"), 3, 3, 4),
    ]
    for (a, b), eh, edc, epl in expected:
        for p, q in ((a, b), (b, a)):
            assert h[i[p], i[q]] == eh
            assert dc[i[p], i[q]] == edc
            assert pl[i[p], i[q]] == epl


def test_weighted_path_length_by_hand():
    edges = [("r", "a", 2.0), ("r", "b", 0.5), ("a", "x", 1.5), ("a", "y", 3.0), ("b", "z", 4.0)]
    tax = ts.Taxonomy.from_edges(edges)
    assert tax.classes == ("x", "y", "z")
    expected = np.array([[0, 4.5, 8.0], [4.5, 0, 9.5], [8.0, 9.5, 0]])
    np.testing.assert_allclose(ts.class_distances(tax, "path_length"), expected)
    # weights do not change the LCA kinds, which count edges
    np.testing.assert_array_equal(ts.class_distances(tax, "lca_height"), [[0, 1, 2], [1, 0, 2], [2, 2, 0]])


def test_single_class_and_star():
    one = ts.Taxonomy.from_edges([("r", "x")])
    for kind in DISTANCE_KINDS:
        np.testing.assert_array_equal(ts.class_distances(one, kind), [[0.0]])
    star = ts.Taxonomy.from_edges([("r", c) for c in "abcd"])
    for kind, off in (("lca_height", 1), ("lca_depth_complement", 1), ("path_length", 2)):
        np.testing.assert_array_equal(ts.class_distances(star, kind), off * (1 - np.eye(4)))


def test_unknown_kind_and_dtype():
    tax = seed_taxonomy()
    with pytest.raises(ValueError, match="'hops'"):
        ts.class_distances(tax, "hops")
    with pytest.raises(ValueError, match="path_length"):
        node_distance(tax, "path_length")
    d32 = class_distances(tax, "lca_height", dtype=np.float32)
    assert d32.dtype == np.float32
    np.testing.assert_array_equal(d32, ts.class_distances(tax, "lca_height"))


# ---------------------------------------------------------------------------- oracle on random trees


@given(random_graphs(max_nodes=25, weighted=True), st.sampled_from(DISTANCE_KINDS))
def test_distances_match_brute_force(graph_classes, kind):
    g, classes = graph_classes
    tax = ts.Taxonomy.from_networkx(g, classes=classes)
    assert tax.classes == tuple(classes)
    np.testing.assert_allclose(ts.class_distances(tax, kind), brute_force_distances(g, classes, kind), rtol=0, atol=1e-12)


@given(random_graphs(max_nodes=25))
def test_lca_matrix_matches_networkx(graph_classes):
    g, classes = graph_classes
    tax = ts.Taxonomy.from_networkx(g, classes=classes)
    lca = lca_matrix(tax)
    assert lca.shape == (len(classes),) * 2
    names = tax.nodes
    for i, j in itertools.product(range(len(classes)), repeat=2):
        assert names[lca[i, j]] == nx.lowest_common_ancestor(g, classes[i], classes[j])


@given(random_graphs(max_nodes=25))
def test_lca_rows_subset_matches_full(graph_classes):
    g, classes = graph_classes
    tax = ts.Taxonomy.from_networkx(g, classes=classes)
    full = lca_matrix(tax)
    rows = np.arange(len(classes))[::-2]
    np.testing.assert_array_equal(tax.compiled.lca_rows(rows), full[rows])


@given(random_graphs(max_nodes=25), st.sampled_from(LCA_KINDS))
def test_node_distance_agrees_with_dense(graph_classes, kind):
    g, classes = graph_classes
    tax = ts.Taxonomy.from_networkx(g, classes=classes)
    table = node_distance(tax, kind)
    assert table.shape == (tax.num_nodes,)
    np.testing.assert_array_equal(table[tax.compiled.is_leaf], 0.0)
    dense = ts.class_distances(tax, kind)
    via_lca = table[lca_matrix(tax)]
    np.testing.assert_array_equal(via_lca, dense)
    np.testing.assert_array_equal(ts.node_distance(tax, kind), table)


# ---------------------------------------------------------------------------- metric properties


@given(random_graphs(max_nodes=30, weighted=True), st.sampled_from(DISTANCE_KINDS))
def test_symmetric_zero_diagonal_nonnegative(graph_classes, kind):
    g, classes = graph_classes
    d = ts.class_distances(ts.Taxonomy.from_networkx(g, classes=classes), kind)
    np.testing.assert_array_equal(d, d.T)
    np.testing.assert_array_equal(np.diag(d), 0.0)
    off = ~np.eye(len(classes), dtype=bool)
    assert np.all(d[off] > 0)  # distinct classes are never at distance 0


@given(random_graphs(max_nodes=30), st.sampled_from(LCA_KINDS))
def test_lca_kinds_are_ultrametrics(graph_classes, kind):
    g, classes = graph_classes
    d = ts.class_distances(ts.Taxonomy.from_networkx(g, classes=classes), kind)
    # d(i, k) <= max(d(i, j), d(j, k)) for all i, j, k
    bound = np.maximum(d[:, :, None], d[None, :, :])  # [i, j, k]
    assert np.all(d[:, None, :] <= bound)


@given(random_graphs(max_nodes=30, weighted=True))
def test_path_length_triangle_inequality(graph_classes):
    g, classes = graph_classes
    d = ts.class_distances(ts.Taxonomy.from_networkx(g, classes=classes), "path_length")
    assert np.all(d[:, None, :] <= d[:, :, None] + d[None, :, :] + 1e-9)


@given(random_graphs(max_nodes=30))
def test_complement_equals_height_when_leaves_level(graph_classes):
    g, _ = graph_classes
    # pad every leaf with a unary chain down to a common depth
    depth = nx.shortest_path_length(g, 0)
    leaves = [v for v in g.nodes if g.out_degree(v) == 0]
    D = max(depth[v] for v in leaves)
    h = g.copy()
    classes = []
    for v in leaves:
        prev = v
        for k in range(D - depth[v]):
            nxt = (v, k)
            h.add_edge(prev, nxt)
            prev = nxt
        classes.append(prev)
    tax = ts.Taxonomy.from_networkx(h, classes=classes)
    np.testing.assert_array_equal(ts.class_distances(tax, "lca_height"), ts.class_distances(tax, "lca_depth_complement"))


def test_large_tree_sampled_pairs():
    """Past the row-block size of class_distances (~4M LCAs): sampled pairs vs networkx."""
    rng = np.random.default_rng(0)
    g = nx.DiGraph()
    n = 3000
    for i in range(1, n):
        # mostly shallow fan-out, with some deep chains
        g.add_edge(int(rng.integers(max(0, i - 5), i)) if i % 7 == 0 else int(rng.integers(0, min(i, 60))), i,
                   weight=float(rng.choice([0.5, 1.0, 2.5])))
    classes = [v for v in g.nodes if g.out_degree(v) == 0]
    rng.shuffle(classes)
    tax = ts.Taxonomy.from_networkx(g, classes=classes)
    assert tax.num_classes > 2048  # more than one block of rows
    depth = nx.shortest_path_length(g, 0)
    wdepth = nx.shortest_path_length(g, 0, weight="weight")
    und = g.to_undirected()
    D = max(depth[c] for c in classes)
    dense = {k: ts.class_distances(tax, k) for k in DISTANCE_KINDS}
    for _ in range(150):
        i, j = (int(x) for x in rng.integers(0, len(classes), 2))
        a, b = classes[i], classes[j]
        if a == b:
            continue
        lca = nx.lowest_common_ancestor(g, a, b)
        assert dense["lca_depth_complement"][i, j] == D - depth[lca]
        below = nx.descendants(g, lca)
        assert dense["lca_height"][i, j] == max(depth[u] for u in below) - depth[lca]
        assert dense["path_length"][i, j] == pytest.approx(nx.shortest_path_length(und, a, b, weight="weight"))
        assert dense["path_length"][i, j] == pytest.approx(wdepth[a] + wdepth[b] - 2 * wdepth[lca])


@given(random_graphs(max_nodes=30), st.lists(st.floats(0.01, 100), min_size=29, max_size=29))
def test_path_length_is_the_depth_formula_exactly(graph_classes, weights):
    """Dense path_length == (wd(i) + wd(j)) - 2 wd(LCA(i, j)) bit for bit, the LCA from lca_matrix."""
    g, classes = graph_classes
    for (u, v), w in zip(g.edges, weights):
        g.edges[u, v]["weight"] = w
    tax = ts.Taxonomy.from_networkx(g, classes=classes)
    c = tax.compiled
    wd = c.weighted_depth
    leaf = wd[c.class_node]
    expected = leaf[:, None] + leaf[None, :] - 2.0 * wd[lca_matrix(tax)]
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_array_equal(ts.class_distances(tax, "path_length"), expected)
    np.testing.assert_array_equal(class_distances(tax, "path_length", dtype=np.float32), expected.astype(np.float32))
