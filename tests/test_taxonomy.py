"""Taxonomy construction, queries, validation errors, DAG/forest policies, contraction, pickling."""

from __future__ import annotations

import math
import pickle

import networkx as nx
import numpy as np
import pytest
from _oracles import brute_force_distances
from _trees import SEED_NESTED, random_graphs, random_taxonomies, seed_taxonomy
from hypothesis import given
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth.errors import (
    CycleError,
    MultipleParentsError,
    MultipleRootsError,
    TaxonomyError,
    UnknownClassError,
)

T = ts.Taxonomy

# ---------------------------------------------------------------------------- the seed


def test_seed_constructors_agree():
    edges = [("animal", "mammal"), ("animal", "sea"), ("mammal", "horse"), ("mammal", "zebra"),
             ("sea", "whale"), ("sea", "shark")]
    g = nx.DiGraph(edges)
    paths = ["animal/mammal/horse", "animal/mammal/zebra", "animal/sea/whale", "animal/sea/shark"]
    built = [
        seed_taxonomy(),
        T.from_nested(SEED_NESTED),
        T.from_edges(edges),
        T.from_networkx(g),
        T.from_paths(paths),
        T.from_paths("\n".join(p.replace("/", " > ") for p in paths), sep=">"),
    ]
    for tax in built:
        assert tax == built[0]
        assert tax.classes == ("horse", "zebra", "whale", "shark")
        assert tax.root == "animal"
        assert tax.num_classes == 4 and len(tax) == 4 and tax.num_nodes == 7
        assert tax.max_depth == 2
        assert not tax.has_virtual_root and tax.report == ()


def test_seed_queries():
    tax = seed_taxonomy()
    assert tax.parent("horse") == "mammal" and tax.parent("animal") is None
    assert tax.children("animal") == ("mammal", "sea")
    assert tax.children("horse") == ()
    assert tax.depth("animal") == 0 and tax.depth("zebra") == 2
    assert tax.height("animal") == 2 and tax.height("sea") == 1 and tax.height("whale") == 0
    assert tax.ancestors("shark") == ("sea", "animal")
    assert tax.ancestors("shark", include_self=True) == ("shark", "sea", "animal")
    assert tax.lca("horse", "zebra") == "mammal"
    assert tax.lca("horse", "shark") == "animal"
    assert tax.lca("horse", "mammal") == "mammal"
    assert tax.leaves_under("sea") == ("whale", "shark")
    assert tax.leaves_under("horse") == ("horse",)
    assert tax.descendants("mammal") == ("horse", "zebra")
    assert tax.is_leaf("horse") and not tax.is_leaf("sea")
    assert tax.nodes == ("animal", "mammal", "horse", "zebra", "sea", "whale", "shark")
    assert tax.class_index("whale") == 2 and tax.node_index("sea") == 4
    assert "sea" in tax and "cat" not in tax and [1] not in tax
    with pytest.raises(UnknownClassError, match="internal node"):
        tax.class_index("sea")
    with pytest.raises(UnknownClassError, match="'cat'"):
        tax.depth("cat")
    with pytest.raises(KeyError):  # UnknownClassError is also a KeyError
        tax.parent("cat")
    for query in (tax.class_index, tax.node_index, tax.depth):
        with pytest.raises(UnknownClassError, match=r"\[1\] is not a"):
            query([1])  # unhashable: the same error, not a TypeError


def test_summary_and_repr():
    tax = T.from_edges([("a", "x"), ("b", "y"), ("b", "z")])
    text = tax.describe()
    assert str(tax) == text
    assert "3 classes" in text and "6 nodes" in text and "virtual" in text
    assert "joined 2 roots" in text
    assert repr(tax) == "<Taxonomy: 3 classes, 6 nodes, depth 2, root '<root>'>"


def test_constructor_is_not_public():
    with pytest.raises(TypeError, match="from_networkx"):
        T()


def test_immutable_arrays_and_input_not_modified():
    g = nx.DiGraph([("r", "a"), ("r", "b"), ("x", "c")])
    before = (list(g.nodes), list(g.edges))
    tax = T.from_networkx(g)
    assert (list(g.nodes), list(g.edges)) == before
    with pytest.raises(ValueError):
        tax.compiled.depth[0] = 5
    with pytest.raises(AttributeError):
        tax.foo = 1


# ---------------------------------------------------------------------------- queries vs networkx


@given(random_graphs(max_nodes=30, weighted=True))
def test_queries_match_networkx(graph_classes):
    g, classes = graph_classes
    tax = T.from_networkx(g, classes=classes)
    assert tax.classes == tuple(classes)
    assert set(tax.nodes) == set(g.nodes)
    # children come in the order of their first class, so the pre-order is that of networkx's DFS
    # over the children sorted by the first class below them (ids follow from classes + parents)
    first = {v: min(classes.index(c) for c in classes if c == v or c in nx.descendants(g, v)) for v in g.nodes}
    ordered = nx.DiGraph()
    ordered.add_node(0)
    ordered.add_edges_from((u, v) for u in g.nodes for v in sorted(g.successors(u), key=first.get))
    assert list(tax.nodes) == list(nx.dfs_preorder_nodes(ordered, 0))
    depth = nx.shortest_path_length(g, 0)
    for v in g.nodes:
        preds = list(g.predecessors(v))
        assert tax.parent(v) == (preds[0] if preds else None)
        assert tax.children(v) == tuple(sorted(g.successors(v), key=first.get))
        assert tax.depth(v) == depth[v]
        below = nx.descendants(g, v)
        assert tax.height(v) == max((depth[u] - depth[v] for u in below), default=0)
        assert tax.ancestors(v) == tuple(reversed(nx.shortest_path(g, 0, v)[:-1]))
        assert set(tax.descendants(v)) == below
        assert tax.leaves_under(v) == tuple(c for c in classes if c == v or c in below)
        assert tax.is_leaf(v) == (g.out_degree(v) == 0)
    nodes = list(g.nodes)
    for a in nodes[:: max(1, len(nodes) // 6)]:
        for b in nodes:
            assert tax.lca(a, b) == nx.lowest_common_ancestor(g, a, b)
    assert tax.max_depth == max(depth[c] for c in classes)
    back = tax.to_networkx()
    assert set(back.edges) == set(g.edges)
    for u, v, w in g.edges(data="weight"):
        assert back.edges[u, v]["weight"] == w
    assert back.graph["classes"] == list(classes)
    assert T.from_networkx(back, classes=classes) == tax


@given(random_graphs(max_nodes=30, weighted=True))
def test_compiled_arrays_match_networkx(graph_classes):
    g, classes = graph_classes
    tax = T.from_networkx(g, classes=classes)
    c = tax.compiled
    names = tax.nodes
    idx = {n: i for i, n in enumerate(names)}
    depth = nx.shortest_path_length(g, 0)
    wdepth = nx.shortest_path_length(g, 0, weight="weight")
    assert c.num_nodes == len(names) and c.num_classes == len(classes)
    assert c.parent[0] == -1 and np.all(c.parent[1:] < np.arange(1, len(names)))
    for v, i in idx.items():
        assert c.depth[i] == depth[v]
        assert c.weighted_depth[i] == pytest.approx(wdepth[v])
        sub = {idx[u] for u in nx.descendants(g, v)} | {i}
        assert sub == set(range(i, c.subtree_end[i]))  # contiguous pre-order subtree
        leaf_pos = set(range(c.leaf_lo[i], c.leaf_hi[i]))
        assert {int(c.leaf_node[k]) for k in leaf_pos} == {u for u in sub if g.out_degree(names[u]) == 0}
        assert c.is_branching[i] == (g.out_degree(v) >= 2)
    for k, cls in enumerate(classes):
        node = idx[cls]
        assert c.class_node[k] == node
        assert c.leaf_node[c.class_position[k]] == node
        assert c.position_class[c.class_position[k]] == k
        path = [idx[u] for u in reversed(nx.shortest_path(g, 0, cls))]
        row = c.class_path[k]
        assert list(row[: len(path)]) == path and np.all(row[len(path):] == -1)
    assert c.class_path.shape[1] == max(depth[x] for x in classes) + 1
    for d, level in enumerate(c.levels):
        assert sorted((names[i] for i in level), key=str) == sorted((v for v in g.nodes if depth[v] == d), key=str)
    adj = c.adjacent_lca()
    for k in range(len(classes) - 1):
        a, b = names[c.leaf_node[k]], names[c.leaf_node[k + 1]]
        assert names[adj[k]] == nx.lowest_common_ancestor(g, a, b)


def test_default_class_order_is_first_appearance():
    g = nx.DiGraph()
    g.add_nodes_from(["r", "z", "m", "a"])
    g.add_edges_from([("r", "m"), ("r", "z"), ("m", "b"), ("m", "a")])
    # leaves in graph.nodes order: z, a (added as nodes first), then b
    assert T.from_networkx(g).classes == ("z", "a", "b")
    assert T.from_edges([("r", "q"), ("r", "c"), ("q", "b")]).classes == ("c", "b")


# ---------------------------------------------------------------------------- class subsets


def test_classes_subset_prunes_and_reports():
    g = nx.DiGraph([("r", "a"), ("r", "b"), ("a", "x"), ("a", "y"), ("b", "u"), ("b", "v"), ("r", "w")])
    tax = T.from_networkx(g, classes=["y", "u"])
    assert tax.classes == ("y", "u")
    assert set(tax.nodes) == {"r", "a", "b", "y", "u"}
    assert any("pruned 3 node(s)" in line for line in tax.report)
    # distances are those of the pruned tree: heights shrink with the dropped leaves' absence
    np.testing.assert_array_equal(ts.class_distances(tax, "lca_height"), [[0, 2], [2, 0]])
    np.testing.assert_array_equal(ts.class_distances(tax, "path_length"), [[0, 4], [4, 0]])


@given(random_graphs(min_nodes=3, max_nodes=30), st.data())
def test_classes_subset_matches_induced_tree(graph_classes, data):
    g, leaves = graph_classes
    k = data.draw(st.integers(1, len(leaves)))
    classes = data.draw(st.permutations(leaves))[:k]
    tax = T.from_networkx(g, classes=classes)
    keep = set(classes).union(*(nx.ancestors(g, c) for c in classes))
    assert set(tax.nodes) == keep
    sub = g.subgraph(keep)
    for v in keep:
        below = nx.descendants(sub, v)
        assert tax.height(v) == max((nx.shortest_path_length(sub, v, u) for u in below), default=0)


def test_an_internal_node_or_the_root_as_a_class_is_an_error():
    # issue 11 item 4: it used to be accepted and its subtree silently pruned
    with pytest.raises(TaxonomyError, match=r"class 'mammal' is an internal node .*'horse', 'zebra'.*must be leaves"
                                            r".*Taxonomy\.encode\(\['mammal'\]\)"):
        T.from_nested(SEED_NESTED, classes=["mammal", "whale", "shark"])
    with pytest.raises(TaxonomyError, match="class 'animal' is the root of the taxonomy"):
        T.from_nested(SEED_NESTED, classes=["animal"])
    # the coarse label the message points to
    tax = T.from_nested(SEED_NESTED)
    assert tax.decode(tax.encode(["mammal"])) == ["mammal"]


def test_an_internal_class_in_a_file_names_the_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("animal,mammal\nmammal,horse\nanimal,whale\n")
    with pytest.raises(TaxonomyError, match=r"t\.csv:1: class 'mammal' is an internal node"):
        T.load(path, classes=["mammal", "whale"])


@pytest.mark.parametrize(
    "classes",
    [
        {"horse", "zebra", "whale", "shark"},
        frozenset({"horse", "zebra"}),
        dict.fromkeys(["horse", "zebra"]),
        dict.fromkeys(["horse", "zebra"]).keys(),
        dict.fromkeys(["horse", "zebra"]).values(),
        {"horse": 0, "zebra": 1}.items(),
    ],
    ids=["set", "frozenset", "dict", "keys", "values", "items"],
)
def test_unordered_classes_are_refused(classes):
    # issue 11 item 3: a set's order follows PYTHONHASHSEED, so the logit order would change between runs
    with pytest.raises(TypeError, match="classes must be an ordered sequence.*PYTHONHASHSEED"):
        T.from_nested(SEED_NESTED, classes=classes)


def test_ordered_classes_of_every_kind_are_accepted():
    import numpy as np

    class Column:  # a pandas-like sequence: __len__ and __getitem__, no list subclass
        def __init__(self, values):
            self.values = values

        def __len__(self):
            return len(self.values)

        def __getitem__(self, i):
            return self.values[i]

    order = ["shark", "horse", "zebra"]
    for kind in (order, tuple(order), np.array(order), Column(order), iter(order), (c for c in order)):
        tax = T.from_nested(SEED_NESTED, classes=kind)
        assert list(tax.classes) == order, type(kind)


# ---------------------------------------------------------------------------- validation errors


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: T.from_networkx(nx.DiGraph()), TaxonomyError, "empty"),
        (lambda: T.from_networkx(nx.Graph([("a", "b")])), TaxonomyError, "undirected"),
        (lambda: T.from_networkx(nx.MultiDiGraph([("a", "b")])), TaxonomyError, "multigraph"),
        (lambda: T.from_networkx({"a": ["b"]}), TaxonomyError, "DiGraph"),
        (lambda: T.from_edges([("a", "b"), ("b", "b")]), CycleError, "self-loop on node 'b'"),
        (lambda: T.from_edges([("r", "a"), ("a", "b"), ("b", "c"), ("c", "a"), ("c", "x")]),
         CycleError, r"cycle: '\w' -> '\w' -> '\w' -> '\w'"),
        (lambda: T.from_edges([("a", "")]), TaxonomyError, "blank"),
        (lambda: T.from_edges([("a", "   ")]), TaxonomyError, "blank"),
        (lambda: T.from_edges([("a", None)]), TaxonomyError, "None"),
        (lambda: T.from_edges([("a", float("nan"))]), TaxonomyError, "NaN"),
        (lambda: T.from_edges([("a", ["x"])]), TaxonomyError, r"\['x'\] is not hashable"),
        (lambda: T.from_edges([("a", "b", 2, 3)]), TaxonomyError, "item 0"),
        (lambda: T.from_edges(["ab"]), TaxonomyError, "item 0"),
        (lambda: T.from_edges([("a", "b"), 5]), TaxonomyError, "item 1"),
        (lambda: T.from_edges([("a", "b"), ("a", "b")]), TaxonomyError, "'a' -> 'b' is given twice"),
        (lambda: T.from_edges([("a", "b", 0.0), ("a", "c")]), TaxonomyError, "'a' -> 'b' has weight 0.0"),
        (lambda: T.from_edges([("a", "b", -1), ("a", "c")]), TaxonomyError, "'a' -> 'b' has weight -1"),
        (lambda: T.from_edges([("a", "b", math.inf), ("a", "c")]), TaxonomyError, "'a' -> 'b' has weight inf"),
        (lambda: T.from_edges([("a", "b", "heavy"), ("a", "c")]), TaxonomyError, "'a' -> 'b' has a non-numeric weight"),
        (lambda: T.from_edges([("a", "b", "2"), ("a", "c")]), TaxonomyError, "'a' -> 'b'"),
        (lambda: T.from_edges([("a", "b", True), ("a", "c")]), TaxonomyError, "'a' -> 'b'"),
        (lambda: T.from_nested(SEED_NESTED, classes=["horse", "zebra", "horse"]), TaxonomyError,
         "class 'horse' is given twice"),
        (lambda: T.from_nested(SEED_NESTED, classes=["horse", "zebar"]), UnknownClassError,
         "'zebar' is not a node.*did you mean 'zebra'"),
        (lambda: T.from_nested(SEED_NESTED, classes=["horse", "mammal"]), TaxonomyError,
         "class 'mammal' is an internal node"),
        (lambda: T.from_nested(SEED_NESTED, classes=["animal", "whale"]), TaxonomyError,
         "class 'animal' is the root"),
        (lambda: T.from_nested(SEED_NESTED, classes=[]), TaxonomyError, "classes is empty"),
        (lambda: T.from_nested(SEED_NESTED, classes="horse"), TaxonomyError, "not a single string"),
        (lambda: T.from_nested(SEED_NESTED, classes=["horse", ""]), TaxonomyError, "blank"),
        (lambda: T.from_nested(SEED_NESTED, classes=["horse", None]), TaxonomyError, "None"),
        (lambda: T.from_nested(SEED_NESTED, classes=["horse", {}]), TaxonomyError, "not hashable"),
        (lambda: T.from_edges([("a", "x"), ("b", "y")], multiple_roots="error"), MultipleRootsError,
         r"2 roots \('a', 'b'\)"),
        (lambda: T.from_edges([("a", "x"), ("<root>", "y")]), TaxonomyError, "root_name '<root>' is already a node"),
        (lambda: T.from_edges([("a", "x"), ("b", "y")], root_name="x"), TaxonomyError, "root_name 'x'"),
        (lambda: T.from_edges([("a", "x"), ("b", "y")], root_name=""), TaxonomyError, "blank"),
        (lambda: T.from_edges([("a", "x"), ("b", "x"), ("a", "y")]), MultipleParentsError,
         r"node 'x' has 2 parents \('a', 'b'\)"),
        (lambda: T.from_edges([("a", "x")], multiple_parents="random"), ValueError, "multiple_parents"),
        (lambda: T.from_edges([("a", "x")], multiple_roots="merge"), ValueError, "multiple_roots"),
        (lambda: T.from_paths(["a/b", "a//c"]), TaxonomyError, "paths:2: empty name"),
        (lambda: T.from_paths(["a/b/a"]), TaxonomyError, "paths:1: name 'a' appears twice"),
        (lambda: T.from_paths(["a/b", 3]), TaxonomyError, "line 2"),
        (lambda: T.from_paths([]), TaxonomyError, "no paths"),
        (lambda: T.from_paths(["a/b"], sep=""), ValueError, "sep"),
        (lambda: T.from_nested({}), TaxonomyError, "no nodes"),
        (lambda: T.from_nested("animal"), TaxonomyError, "expected a dict or a list"),
        (lambda: T.from_nested({"a": [["b"]]}), TaxonomyError, "list inside a list"),
        (lambda: T.from_nested({"a": {"": None}}), TaxonomyError, "blank"),
        (lambda: T.from_nested({"a": 2.5}), TaxonomyError, "got float"),
    ],
)
def test_malformed_input_names_the_culprit(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_cycle_message_lists_the_cycle():
    with pytest.raises(CycleError) as info:
        T.from_edges([("r", "a"), ("a", "b"), ("b", "c"), ("c", "a")])
    msg = str(info.value)
    cycle = msg.split(": ", 1)[1].split(" -> ")
    assert cycle[0] == cycle[-1] and set(cycle) == {"'a'", "'b'", "'c'"} and len(cycle) == 4


def test_unknown_class_suggestions_and_keyerror():
    with pytest.raises(KeyError):
        T.from_nested(SEED_NESTED, classes=["hrose"])
    with pytest.raises(UnknownClassError) as info:
        T.from_nested(SEED_NESTED, classes=["hrose"])
    assert "'horse'" in str(info.value)
    with pytest.raises(UnknownClassError) as info:  # non-string names: no suggestion, still named
        T.from_edges([(0, 1), (0, 2)], classes=[1, 7])
    assert "7" in str(info.value)


def test_errors_are_valueerrors():
    for e in (ts.TaxonomyError, CycleError, MultipleParentsError, MultipleRootsError, UnknownClassError,
              ts.TaxonomyFileError):
        assert issubclass(e, ValueError)


# ---------------------------------------------------------------------------- forests


def test_multiple_roots_joined_under_virtual_root():
    tax = T.from_edges([("a", "x"), ("a", "y"), ("b", "z")], root_name="life")
    assert tax.root == "life" and tax.has_virtual_root
    assert tax.children("life") == ("a", "b")
    assert tax.report == ("joined 2 roots ('a', 'b') under a virtual root 'life'",)
    np.testing.assert_array_equal(ts.class_distances(tax, "path_length"), [[0, 2, 4], [2, 0, 4], [4, 4, 0]])
    # a lone node is a root of its own
    g = nx.DiGraph([("a", "x")])
    g.add_node("solo")
    tax = T.from_networkx(g)
    assert tax.classes == ("x", "solo") and tax.parent("solo") == "<root>"


def test_contracted_virtual_root_is_not_reported_as_root():
    # b loses x to a and is pruned: the virtual root has one child and contraction removes it
    tax = T.from_edges([("a", "x"), ("b", "x"), ("a", "y")], multiple_parents="first", contract_unary=True)
    assert tax.root == "a" and not tax.has_virtual_root
    assert "virtual" not in tax.describe().splitlines()[1]
    assert "contracted 1 single-child node(s): '<root>'" in tax.report[-1]
    kept = T.from_edges([("a", "x"), ("b", "x"), ("a", "y")], multiple_parents="first")
    assert kept.root == "<root>" and kept.has_virtual_root


def test_single_root_never_gets_a_virtual_root():
    tax = T.from_edges([("a", "x")], multiple_roots="error")
    assert tax.root == "a" and not tax.has_virtual_root


# ---------------------------------------------------------------------------- DAG policies


@st.composite
def random_dags(draw, max_nodes=14):
    """A random DAG (node i's parents come from 0..i-1), edges inserted in a random order.

    Returns the graph and, for each node, its parents in insertion order ("first listed").
    Some nodes have no parent (several roots), some several.
    """
    n = draw(st.integers(2, max_nodes))
    parents = {0: []}
    for i in range(1, n):
        k = draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3])) if i > 1 else 1
        k = min(k, i)
        parents[i] = draw(st.lists(st.integers(0, i - 1), min_size=k, max_size=k, unique=True))
    edges = [(p, c) for c, ps in parents.items() for p in ps]
    order = draw(st.permutations(range(len(edges))))
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    first = {c: [] for c in range(n)}
    for e in order:
        p, c = edges[e]
        g.add_edge(p, c)
        first[c].append(p)
    return g, first


def _oracle_hops(g, roots, p, longest):
    """Edges from a root to p: shortest by BFS, longest via the longest path in p's ancestor subgraph."""
    if longest:
        return nx.dag_longest_path_length(g.subgraph(nx.ancestors(g, p) | {p}))
    return min(nx.shortest_path_length(g, r, p) for r in roots if nx.has_path(g, r, p))


@given(random_dags(), st.sampled_from(["first", "shortest", "longest"]))
def test_multiple_parent_policies_pick_the_documented_parent(dag, policy):
    g, first = dag
    roots = [v for v in g.nodes if g.in_degree(v) == 0]
    multi = [v for v in g.nodes if g.in_degree(v) > 1]
    if multi:
        with pytest.raises(MultipleParentsError):
            T.from_networkx(g)
    tax = T.from_networkx(g, multiple_parents=policy)
    offset = 1 if len(roots) > 1 else 0
    assert tax.has_virtual_root == (len(roots) > 1)
    for v in multi:
        ps = first[v]
        if policy == "first":
            expected = ps[0]
        else:
            hops = [_oracle_hops(g, roots, p, policy == "longest") for p in ps]
            best = (max if policy == "longest" else min)(hops)
            expected = ps[hops.index(best)]  # ties: first listed
        lines = [line for line in tax.report if line.startswith(f"multiple parents: {v!r} ")]
        assert len(lines) == 1
        assert f"keeps parent {expected!r}" in lines[0]
        for p in ps:
            if p != expected:
                assert repr(p) in lines[0].split("dropped", 1)[1]
        if v in tax:
            assert tax.parent(v) == expected
        if policy != "first" and v in tax:
            # the tree depth of v is its shortest / longest hop count in the DAG
            assert tax.depth(v) == _oracle_hops(g, roots, v, policy == "longest") + offset
    # the result is a tree on a subset of the nodes whose edges are edges of the DAG
    for v in tax.nodes:
        p = tax.parent(v)
        assert p is None or g.has_edge(p, v) or (p == "<root>" and v in roots)
    leaves = [v for v in g.nodes if g.out_degree(v) == 0]
    assert tax.classes == tuple(leaves)


def test_first_policy_uses_edge_order_not_node_order():
    # x's parents in edge order: b, then a; a comes first in node order
    edges = [("a", "y"), ("b", "x"), ("a", "x")]
    g = nx.DiGraph(edges)
    assert list(g.predecessors("x")) == ["b", "a"]
    tax = T.from_edges(edges, multiple_parents="first")  # two roots: a virtual root joins a and b
    assert tax.parent("x") == "b"
    g = nx.DiGraph([("r", "a"), ("r", "b")] + edges)  # the same with a real root
    assert T.from_networkx(g, multiple_parents="first").parent("x") == "b"


def test_dag_policies_by_hand_and_pruning_report():
    # r -> a -> b -> x and r -> x: x's parents are b (3 edges deep) and r
    edges = [("r", "a"), ("a", "b"), ("b", "x"), ("r", "x"), ("r", "y")]
    longest = T.from_edges(edges, multiple_parents="longest")
    assert longest.parent("x") == "b" and longest.depth("x") == 3
    assert "'x' keeps parent 'b' (longest path to the root, 3 edges); dropped 'r'" in longest.report[0]
    shortest = T.from_edges(edges, multiple_parents="shortest")
    assert shortest.parent("x") == "r" and shortest.depth("x") == 1
    assert "'x' keeps parent 'r' (shortest path to the root, 1 edges); dropped 'b'" in shortest.report[0]
    # a and b lost their only child: pruned, and said so
    assert set(shortest.nodes) == {"r", "x", "y"}
    assert "pruned 2 node(s) left without classes" in shortest.report[1]
    first = T.from_edges(edges, multiple_parents="first")
    assert first.parent("x") == "b" and "first listed" in first.report[0]
    assert "2 parents" in first.describe() or "decisions (1)" in first.describe()


# ---------------------------------------------------------------------------- unary chains


def test_contract_unary_by_hand():
    # r -> a -> b -> {x, c -> y}; r and a are unary, c is unary
    edges = [("r", "a", 1.0), ("a", "b", 2.0), ("b", "x", 1.0), ("b", "c", 0.5), ("c", "y", 3.0)]
    kept = T.from_edges(edges)
    assert kept.nodes == ("r", "a", "b", "x", "c", "y")
    tax = T.from_edges(edges, contract_unary=True)
    assert set(tax.nodes) == {"b", "x", "y"} and tax.root == "b"
    assert tax.parent("y") == "b"
    assert dict(((u, v), w) for u, v, w in tax.edges()) == {("b", "x"): 1.0, ("b", "y"): 3.5}
    assert any("contracted 3 single-child node(s)" in r for r in tax.report)
    np.testing.assert_array_equal(ts.class_distances(tax, "path_length"), ts.class_distances(kept, "path_length"))
    # heights count edges of the contracted tree: b is now 1 above its deepest leaf, not 2
    assert kept.height("b") == 2 and tax.height("b") == 1
    np.testing.assert_array_equal(ts.class_distances(kept, "lca_height"), [[0, 2], [2, 0]])
    np.testing.assert_array_equal(ts.class_distances(tax, "lca_height"), [[0, 1], [1, 0]])


@given(random_graphs(max_nodes=30, weighted=True))
def test_contract_unary_matches_oracle(graph_classes):
    g, classes = graph_classes
    kept = T.from_networkx(g, classes=classes)
    tax = T.from_networkx(g, classes=classes, contract_unary=True)
    assert tax.classes == kept.classes
    # no unary node is left, and the nodes kept are exactly the classes and branching nodes
    branching = {v for v in g.nodes if g.out_degree(v) >= 2}
    assert set(tax.nodes) == set(classes) | branching or (len(classes) == 1 and tax.nodes == tuple(classes))
    for v in tax.nodes:
        assert len(tax.children(v)) != 1
    # path lengths with summed weights are those of the original tree
    np.testing.assert_allclose(ts.class_distances(tax, "path_length"), ts.class_distances(kept, "path_length"), atol=1e-12)
    # each surviving edge weighs the sum of the original chain it replaces
    und = g.to_undirected()
    for u, v, w in tax.edges():
        assert w == pytest.approx(nx.shortest_path_length(und, u, v, weight="weight"))
    # lca_height is the height in the contracted tree (oracle: its own networkx graph)
    cg = tax.to_networkx()
    for v in tax.nodes:
        below = nx.descendants(cg, v)
        assert tax.height(v) == max((nx.shortest_path_length(cg, v, u) for u in below), default=0)
    # the LCAs are unchanged
    lk, lt = ts.lca_matrix(kept), ts.lca_matrix(tax)
    assert [[kept.nodes[x] for x in row] for row in lk] == [[tax.nodes[x] for x in row] for row in lt]


# ---------------------------------------------------------------------------- equality, pickling


@given(random_taxonomies(max_nodes=30, weighted=True))
def test_pickle_round_trip(tax):
    back = pickle.loads(pickle.dumps(tax))
    assert back == tax and hash(back) == hash(tax)
    assert back.nodes == tax.nodes and back.report == tax.report
    for kind in ts.distances.DISTANCE_KINDS:
        np.testing.assert_array_equal(ts.class_distances(back, kind), ts.class_distances(tax, kind))


def test_pickle_keeps_virtual_root_and_report():
    tax = T.from_edges([("a", "x"), ("b", "x"), ("b", "y"), ("c", "z")], multiple_parents="first")
    back = pickle.loads(pickle.dumps(tax))
    assert back == tax and back.has_virtual_root and back.report == tax.report


def test_equality_sees_order_parents_and_weights():
    base = T.from_edges([("r", "a"), ("r", "b")])
    assert base == T.from_edges([("r", "a"), ("r", "b")])
    assert base != T.from_edges([("r", "b"), ("r", "a")])  # class order
    assert base != T.from_edges([("r", "a", 2.0), ("r", "b")])  # weight
    assert base != T.from_edges([("s", "a"), ("s", "b")])  # a parent
    assert base.__eq__("r") is NotImplemented


@given(random_dags(max_nodes=12), st.sampled_from(["first", "shortest", "longest"]), st.booleans(), st.data())
def test_any_options_give_a_consistent_tree(dag, policy, contract, data):
    """DAG policy x contraction x class subset: the result is a tree whose distances match the oracle."""
    g, _ = dag
    leaves = [v for v in g.nodes if g.out_degree(v) == 0]
    k = data.draw(st.integers(1, len(leaves)))
    classes = data.draw(st.permutations(leaves))[:k]
    tax = T.from_networkx(g, classes=classes, multiple_parents=policy, contract_unary=contract)
    assert tax.classes == tuple(classes)
    tree = tax.to_networkx()
    assert nx.is_arborescence(tree)
    assert {v for v in tree if tree.out_degree(v) == 0} == set(classes)
    for kind in ts.distances.DISTANCE_KINDS:
        np.testing.assert_allclose(ts.class_distances(tax, kind), brute_force_distances(tree, list(classes), kind))


def test_unknown_option_is_named_with_the_valid_ones():
    with pytest.raises(TypeError, match=r"'foo'.*multiple_parents, multiple_roots, root_name, contract_unary"):
        ts.Taxonomy.from_edges([("a", "b")], foo=1)
    with pytest.raises(TypeError, match="from_nested"):
        ts.Taxonomy.from_nested({"a": ["b"]}, multiple_parent="first")


# ---------------------------------------------------------------------------- classes="tree" (issue 19)
def _dfs_oracle(graph: nx.DiGraph, default_classes) -> list:
    """The leaves depth first, siblings in the order of their first leaf in ``default_classes``: plain recursion."""
    first = {c: i for i, c in enumerate(default_classes)}

    def key(v):
        return min(first[u] for u in nx.descendants(graph, v) | {v} if u in first)

    def walk(v):
        kids = sorted(graph.successors(v), key=key)
        return [v] if not kids else [leaf for k in kids for leaf in walk(k)]

    (root,) = [v for v in graph if graph.in_degree(v) == 0]
    return walk(root)


@given(random_graphs(min_nodes=2, max_nodes=40, weighted=True))
def test_tree_order_is_the_dfs_order_of_the_same_tree(graph_leaves):
    g, _ = graph_leaves
    default = T.from_networkx(g)
    tree = T.from_networkx(g, classes="tree")
    C = tree.num_classes
    assert list(tree.classes) == _dfs_oracle(g, default.classes)
    assert np.array_equal(tree.compiled.position_class, np.arange(C))
    assert np.array_equal(tree.compiled.class_position, np.arange(C))
    # the same tree: nodes, node ids, parents and weights; the distances are those of the default order, permuted
    assert tree.nodes == default.nodes and tree.edges() == default.edges()
    perm = [default.class_index(c) for c in tree.classes]
    assert np.array_equal(ts.class_distances(tree, "path_length"), ts.class_distances(default, "path_length")[np.ix_(perm, perm)])
    assert tree == T.from_networkx(g, classes=list(tree.classes))


def test_tree_order_from_every_constructor(tmp_path):
    # the leaves first appear as x, y, z; depth first they are x, z, y
    want = ("x", "z", "y")
    edges = [("r", "a"), ("r", "b"), ("a", "x"), ("b", "y"), ("a", "z")]
    (tmp_path / "t.csv").write_text("parent,child\n" + "".join(f"{u},{v}\n" for u, v in edges))
    (tmp_path / "t.txt").write_text("r/a/x\nr/b/y\nr/a/z\n")
    (tmp_path / "ranks.csv").write_text("kingdom,genus\na,x\nb,y\na,z\n")
    g = nx.DiGraph(edges)
    built = {
        "from_networkx": T.from_networkx(g, classes="tree"),
        "from_edges": T.from_edges(edges, classes="tree"),
        "from_paths": T.from_paths(["r/a/x", "r/b/y", "r/a/z"], classes="tree"),
        "from_nested": T.from_nested({"r": {"b": ["y"], "a": ["x", "z"]}}, classes="tree"),
        "from_rank_table": T.from_rank_table([["a", "x"], ["b", "y"], ["a", "z"]], ranks=["kingdom", "genus"], classes="tree"),
        "from_rank_table file": T.from_rank_table(tmp_path / "ranks.csv", classes="tree"),
        "load csv": T.load(tmp_path / "t.csv", classes="tree"),
        "load txt": T.load(tmp_path / "t.txt", classes="tree"),
        "load ranks": T.load(tmp_path / "ranks.csv", format="ranks", classes="tree"),
    }
    for how, tax in built.items():
        expected = ("y", "x", "z") if how == "from_nested" else want  # nested data lists b first
        assert tax.classes == expected, how
        assert np.array_equal(tax.compiled.position_class, np.arange(3)), how
    assert built["load ranks"].ranks == ("kingdom", "genus")
    # node-link JSON stores a class order: the tree order follows it (siblings by their first stored class)
    T.from_edges(edges, classes=["z", "y", "x"]).save(tmp_path / "t.json")
    assert T.load(tmp_path / "t.json").classes == ("z", "y", "x")
    assert T.load(tmp_path / "t.json", classes="tree").classes == ("z", "x", "y")
    # with the options: several parents, several roots, contraction
    dag = T.from_edges([("r", "a"), ("r", "b"), ("a", "m"), ("b", "y"), ("a", "z"), ("b", "m"), ("m", "x"), ("s", "w")],
                       classes="tree", multiple_parents="shortest", contract_unary=True)
    # (the leaves first appear as y, z, x, w: 'b' comes before 'a'; 'm' keeps parent 'a', then is contracted)
    assert dag.classes == ("y", "z", "x", "w") and np.array_equal(dag.compiled.position_class, np.arange(4))
    assert dag.has_virtual_root and dag.parent("x") == "a"


def test_tree_order_is_kept_by_save_and_pickle(tmp_path):
    tax = T.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "y"), ("a", "z")], classes="tree")
    for ext in ("csv", "tsv", "json", "txt"):
        tax.save(tmp_path / f"t.{ext}")
        back = T.load(tmp_path / f"t.{ext}")
        assert back == tax and back.classes == ("x", "z", "y"), ext
    assert pickle.loads(pickle.dumps(tax)).classes == ("x", "z", "y")


@pytest.mark.parametrize("bad", ["Tree", "dfs", "x"])
def test_a_string_other_than_tree_is_not_a_class_order(bad):
    with pytest.raises(TaxonomyError, match=rf"classes must be a sequence of class names \(or 'tree': every leaf in "
                                            rf"depth-first order\), not a single string: '{bad}'"):
        T.from_edges([("r", "x"), ("r", "y")], classes=bad)
    # a class named "tree" is given in a list, as every class list is
    assert T.from_edges([("r", "tree"), ("r", "y")], classes=["tree"]).classes == ("tree",)
