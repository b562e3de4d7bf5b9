"""Shared test helpers: small hand-made trees and hypothesis strategies for random trees."""

from __future__ import annotations

import networkx as nx
from hypothesis import strategies as st

import taxosmooth as ts

SEED_NESTED = {"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}}


def seed_taxonomy() -> ts.Taxonomy:
    """The seed question's four classes: horse, zebra (mammals), whale, shark (sea)."""
    return ts.Taxonomy.from_nested(SEED_NESTED)


@st.composite
def random_graphs(draw, min_nodes: int = 2, max_nodes: int = 30, weighted: bool = False):
    """A random rooted tree as a DiGraph (node 0 is the root), plus its leaves in a random order.

    Random recursive trees: node i picks a parent among 0..i-1, which yields
    unbalanced trees, unary chains and leaves directly under the root.
    """
    n = draw(st.integers(min_nodes, max_nodes))
    g = nx.DiGraph()
    g.add_node(0)
    for i in range(1, n):
        p = draw(st.integers(0, i - 1))
        if weighted:
            g.add_edge(p, i, weight=draw(st.sampled_from([0.5, 1.0, 2.0, 3.0])))
        else:
            g.add_edge(p, i)
    leaves = [v for v in g.nodes if g.out_degree(v) == 0]
    leaves = draw(st.permutations(leaves))
    return g, list(leaves)


@st.composite
def random_taxonomies(draw, min_nodes: int = 2, max_nodes: int = 30, weighted: bool = False):
    """A random :class:`Taxonomy` with classes in a random (non-DFS) order."""
    g, leaves = draw(random_graphs(min_nodes, max_nodes, weighted))
    return ts.Taxonomy.from_networkx(g, classes=leaves)


def all_loss_modules(tax, **kw):
    """One instance of every loss on ``tax`` (taxonomy and matrix forms), sharing ``kw``."""
    cost = ts.cost_matrix(tax)
    return [
        ts.SoftTargetCrossEntropy(ts.soft_targets(tax, 2.0), **kw),
        ts.HierarchicalSoftLabelLoss(tax, 2.0, **kw),
        ts.HXELoss(tax, 0.5, **kw),
        ts.ExpectedCostLoss(tax, **kw),
        ts.ExpectedCostLoss(cost, **kw),
        ts.TreeWassersteinLoss(tax, **kw),
        ts.PairwiseCostLoss(tax, **kw),
        ts.PairwiseCostLoss(cost, **kw),
    ]
