"""Distances between predicted and true classes, one pair per sample.

From a :class:`Taxonomy` the distance of a pair is computed from the pair's
lowest common ancestor, found by comparing the two classes' ancestors depth by
depth: O(depth) per pair and never a ``C × C`` table. From a user matrix it
is a gather.
"""

from __future__ import annotations

import numpy as np
import torch

from taxosmooth.distances import resolve_source
from taxosmooth.taxonomy import Taxonomy

__all__ = ["PairDistances", "ancestors_by_depth"]


def ancestors_by_depth(tax: Taxonomy) -> np.ndarray:
    """``(C, D + 1)`` int64: entry ``[c, d]`` is the ancestor of class ``c`` at depth ``d`` (itself at
    its own depth), ``-1`` below the class's depth."""
    c = tax.compiled
    path = c.class_path
    depth = c.depth[c.class_node]
    out = np.full(path.shape, -1, dtype=np.int64)
    rows, ks = np.nonzero(path >= 0)
    out[rows, depth[rows] - ks] = path[rows, ks]
    return out


class PairDistances:
    """``d(target, pred)`` for index tensors of any (broadcastable) shape.

    Parameters
    ----------
    source : Taxonomy or array_like (C, C)
        A taxonomy (``distance`` picks the kind) or a matrix whose entry
        ``[t, j]`` is the distance of predicting ``j`` for true class ``t``
        (finite, >= 0, zero diagonal), resolved by
        :func:`~taxosmooth.distances.resolve_source`.
    distance : str, optional
        One of :data:`taxosmooth.distances.DISTANCE_KINDS` (default ``"lca_height"``); taxonomies only.
    """

    def __init__(self, source, distance: str | None = None):
        src = resolve_source(source, distance, where="metrics")
        self.taxonomy = src.taxonomy
        self.num_classes = src.num_classes
        if self.taxonomy is not None:
            c = self.taxonomy.compiled
            cpu = {"anc": torch.from_numpy(ancestors_by_depth(self.taxonomy))}
            if src.structured:
                cpu["node_value"] = torch.from_numpy(np.array(src.node_table))
            else:  # path_length: wd(a) + wd(b) - 2 wd(LCA)
                cpu["wdepth"] = torch.from_numpy(np.array(c.weighted_depth))
            cpu["class_depth"] = torch.from_numpy(c.depth[c.class_node])
            cpu["class_node"] = torch.from_numpy(np.array(c.class_node))
        else:
            dense = torch.from_numpy(np.array(src.dense()))
            cpu = {"matrix": dense if src.given_dtype is None else dense.to(src.given_dtype)}
        self.distance = src.distance
        self._cpu = cpu
        self._cache: dict = {}

    def _tensors(self, device: torch.device) -> dict:
        key = str(device)
        if key not in self._cache:
            self._cache[key] = {name: t.to(device) for name, t in self._cpu.items()}
        return self._cache[key]

    def lca(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Node id and depth (edges) of ``LCA(a, b)``; taxonomies only."""
        t = self._tensors(a.device)
        anc_a, anc_b = t["anc"][a], t["anc"][b]
        # the root always matches; ancestors agree down to the LCA's depth and differ below it
        depth = ((anc_a == anc_b) & (anc_a >= 0)).sum(dim=-1) - 1
        node = anc_a.gather(-1, depth.unsqueeze(-1)).squeeze(-1)
        return node, depth

    def class_depth(self, a: torch.Tensor) -> torch.Tensor:
        """Depth (edges from the root) of classes ``a``; taxonomies only."""
        return self._tensors(a.device)["class_depth"][a]

    def __call__(self, target: torch.Tensor, pred: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Distances ``d(target, pred)`` (broadcast), as ``dtype``."""
        t = self._tensors(pred.device)
        if "matrix" in t:
            m = t["matrix"]
            return m[target, pred].to(dtype)
        target, pred = torch.broadcast_tensors(target, pred)
        node, _ = self.lca(target, pred)
        if "node_value" in t:
            return t["node_value"][node].to(dtype)
        wd, cn = t["wdepth"], t["class_node"]
        return (wd[cn[target]] + wd[cn[pred]] - 2 * wd[node]).to(dtype)
