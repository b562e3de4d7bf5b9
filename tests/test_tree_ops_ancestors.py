"""Ancestor queries of the tree engine (taxosmooth.tree_ops.ancestors) against plain walks up the parent links
of the Taxonomy's own queries, on random trees, chains and under torch.compile."""

from __future__ import annotations

import networkx as nx
import pytest
import torch
from _trees import random_taxonomies
from hypothesis import given
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth.tree_ops import TreeTensors, tree_tensors
from taxosmooth.tree_ops.ancestors import AncestorTable, ancestor_table, take

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _path_up(tax, v: int) -> list[int]:
    """Node ids from ``v`` up to the root, by Taxonomy.ancestors (names, not the compiled arrays)."""
    name = tax.nodes[v]
    return [v] + [tax.node_index(a) for a in tax.ancestors(name)]


def _lca_loop(tax, a: int, b: int) -> int:
    above_b = set(_path_up(tax, b))
    return next(u for u in _path_up(tax, a) if u in above_b)


def _check_all(tax) -> None:
    tree = TreeTensors(tax)
    anc = ancestor_table(tree)
    n = tax.num_nodes
    ids = torch.arange(n)
    paths = [_path_up(tax, v) for v in range(n)]
    a, b = ids[:, None], ids[None, :]

    under = torch.tensor([[u in paths[v] for u in range(n)] for v in range(n)])  # [v, u]: v under u
    assert torch.equal(anc.is_under(a, b), under)
    assert torch.equal(anc.truncate(b, a), torch.where(under.T, a, b))  # pred b under label a -> a

    want = torch.tensor([[_lca_loop(tax, i, j) for j in range(n)] for i in range(n)])
    assert torch.equal(anc.lca(a, b), want)
    assert torch.equal(anc.lca(b, a), want)  # shapes broadcast either way round
    names = tax.nodes
    assert all(names[int(want[i, j])] == tax.lca(names[i], names[j]) for i in range(n) for j in range(n))

    for d in range(tax.max_depth + 2):
        want_d = torch.tensor([p[len(p) - 1 - d] if d < len(p) else -1 for p in paths])
        assert torch.equal(anc.ancestor_at_depth(ids, d), want_d), d
    depths = torch.tensor([len(p) - 1 for p in paths])
    # a depth per query (a tensor that broadcasts): each node's own depth is the node itself
    assert torch.equal(anc.ancestor_at_depth(ids, depths), ids)
    assert torch.equal(anc.ancestor_at_depth(ids[:, None], torch.arange(3)), torch.stack(
        [anc.ancestor_at_depth(ids, d) for d in range(3)], 1))


@given(random_taxonomies(max_nodes=30))
def test_queries_match_walks_on_random_trees(tax):
    _check_all(tax)


@pytest.mark.parametrize("length", [1, 2, 7, 8, 9, 40])
def test_queries_on_chains_with_side_leaves(length):
    """A caterpillar: a spine of ``length`` nodes with a class at each, and a unary chain at the bottom: every
    jump length and bit pattern of the binary lifting is used."""
    g = nx.DiGraph()
    for i in range(length):
        g.add_edge(f"s{i}", f"s{i + 1}")
        g.add_edge(f"s{i}", f"leaf{i}")
    g.add_edge(f"s{length}", "u0")
    g.add_edge("u0", "u1")
    g.add_edge("u1", "bottom")
    tax = ts.Taxonomy.from_networkx(g)
    anc = ancestor_table(TreeTensors(tax))
    assert 2 ** anc.num_jumps > tax.max_depth >= 2 ** (anc.num_jumps - 1)
    _check_all(tax)


def test_one_node_one_class_and_a_star():
    _check_all(ts.Taxonomy.from_nested(["a"]))  # the root is the only class
    _check_all(ts.Taxonomy.from_edges([("r", "a")]))
    _check_all(ts.Taxonomy.from_nested({"r": ["a", "b", "c", "d"]}))


def test_tables_are_cached_per_tree_and_device_and_stay_out_of_state_dict(seed_tax):
    tree = tree_tensors(seed_tax)
    anc = ancestor_table(tree)
    assert ancestor_table(tree) is anc
    assert anc.state_dict() == {}
    assert anc.jump.shape == (anc.num_jumps, seed_tax.num_nodes)
    assert anc.end.tolist() == list(seed_tax.compiled.subtree_end)
    assert isinstance(anc, AncestorTable) and "max_depth=2" in repr(anc)


def test_take_keeps_the_index_shape():
    table = torch.arange(10) * 10
    idx = torch.tensor([[1, 2, 3], [9, 0, 0]])
    assert torch.equal(take(table, idx), table[idx])
    assert take(table, idx[:, :0]).shape == (2, 0)


@pytest.mark.parametrize("device", DEVICES)
def test_queries_follow_the_device_and_compile_without_breaks(device, seed_tax):
    tree = tree_tensors(seed_tax, device)
    anc = ancestor_table(tree)
    a = torch.tensor([0, 1, 2, 3, 4, 5, 6], device=device)

    def queries(a, b):
        return anc.lca(a, b), anc.truncate(b, a), anc.ancestor_at_depth(b, 1), anc.is_under(b, a)

    eager = queries(a[:, None], a[None, :])
    compiled = torch.compile(queries, fullgraph=True, backend="aot_eager")(a[:, None], a[None, :])
    for e, c in zip(eager, compiled):
        assert e.device.type == device and torch.equal(e, c)


@given(random_taxonomies(max_nodes=30), st.integers(0, 2**31 - 1))
def test_target_ids_through_the_tree_tensors(tax, seed):
    """The queries callers make: target ids to node ids (``target_node``), LCA, back to target ids."""
    tree = TreeTensors(tax)
    anc = ancestor_table(tree)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randint(0, tax.num_nodes, (2, 20), generator=g)
    u = take(tree.node_target, anc.lca(take(tree.target_node, x), take(tree.target_node, y)))
    names = tax.target_names
    assert [names[i] for i in u.tolist()] == [tax.lca(names[i], names[j]) for i, j in zip(x.tolist(), y.tolist())]
