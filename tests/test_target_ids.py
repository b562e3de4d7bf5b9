"""Target ids: classes keep their index, internal nodes follow in depth-first order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _trees import random_taxonomies, seed_taxonomy
from hypothesis import given
from hypothesis import strategies as st

from taxosmooth.errors import UnknownClassError


def test_seed_ids():
    tax = seed_taxonomy()
    assert tax.target_names == ("horse", "zebra", "whale", "shark", "animal", "mammal", "sea")
    assert tax.encode(["shark", "mammal", "animal"]).tolist() == [3, 5, 4]
    assert tax.encode("sea").shape == () and int(tax.encode("sea")) == 6
    assert tax.decode(6) == "sea"
    assert tax.decode(torch.tensor([[0, 6]])) == [["horse", "sea"]]
    assert tax.encode([]).tolist() == [] and tax.encode([]).dtype == np.int64


@given(random_taxonomies(max_nodes=25))
def test_ids_against_a_loop(tax):
    c = tax.compiled
    # classes first, in class order; then every internal node in node-id (pre-order) order
    internal = [tax.nodes[v] for v in range(tax.num_nodes) if not c.is_leaf[v]]
    assert tax.target_names == tax.classes + tuple(internal)
    ids = tax.encode(list(tax.target_names))
    assert ids.tolist() == list(range(tax.num_nodes))
    assert tax.decode(ids) == list(tax.target_names)
    for i, name in enumerate(tax.target_names):
        assert c.target_node[i] == tax.node_index(name)
        assert c.node_target[tax.node_index(name)] == i
        if i < tax.num_classes:
            assert tax.class_index(name) == i


@given(random_taxonomies(max_nodes=25), st.data())
def test_ancestor_at_depth_against_a_walk(tax, data):
    ids = np.arange(tax.num_nodes)
    depth = data.draw(st.integers(0, tax.max_depth + 1))
    got = tax.ancestor_at_depth(ids, depth)
    for i, name in enumerate(tax.target_names):
        chain = (name,) + tax.ancestors(name)  # self, parent, ..., root
        d = tax.depth(name)
        expected = tax.encode([chain[d - depth]])[0] if d >= depth else -1
        assert got[i] == expected, (name, depth)
    np.testing.assert_array_equal(tax.target_depth(ids), [tax.depth(n) for n in tax.target_names])


def test_unknown_and_bad_ids():
    tax = seed_taxonomy()
    with pytest.raises(UnknownClassError, match=r"'zebr' \(position 1\); did you mean 'zebra'\?"):
        tax.encode(["horse", "zebr"])
    with pytest.raises(UnknownClassError, match="2 labels"):
        tax.encode(["x", "y"])
    with pytest.raises(UnknownClassError, match="'unicorn'"):
        tax.encode("unicorn")
    with pytest.raises(IndexError, match=r"ids\[1\] = 7 is not a target id in \[0, 7\)"):
        tax.decode([0, 7])
    with pytest.raises(IndexError, match="-1"):
        tax.ancestor_at_depth([-1], 0)
    with pytest.raises(TypeError, match="integer"):
        tax.decode([0.5])
    with pytest.raises(ValueError, match="depth"):
        tax.ancestor_at_depth([0], -1)
    with pytest.raises(TypeError, match="sequence"):
        tax.encode(3)
