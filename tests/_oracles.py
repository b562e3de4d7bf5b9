"""Independent oracles for tree distances: plain loops over pairs on networkx functions."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np


def brute_force_distances(g: nx.DiGraph, classes: list, kind: str) -> np.ndarray:
    """d(i, j) by a plain loop over pairs, from networkx's own LCA and path functions."""
    root = next(n for n in g.nodes if g.in_degree(n) == 0)
    depth = nx.shortest_path_length(g, root)  # edges from the root

    def height(v):
        below = nx.descendants(g, v)
        return max((nx.shortest_path_length(g, v, u) for u in below), default=0)

    max_depth = max(depth[c] for c in classes)
    und = g.to_undirected()
    C = len(classes)
    out = np.zeros((C, C))
    for i, j in itertools.product(range(C), range(C)):
        a, b = classes[i], classes[j]
        if a == b:
            continue
        lca = nx.lowest_common_ancestor(g, a, b)
        if kind == "lca_height":
            out[i, j] = height(lca)
        elif kind == "lca_depth_complement":
            out[i, j] = max_depth - depth[lca]
        else:
            # weighted tree path (weight 1 when the edge has none)
            out[i, j] = nx.shortest_path_length(und, a, b, weight=lambda u, v, e: e.get("weight", 1.0))
    return out
