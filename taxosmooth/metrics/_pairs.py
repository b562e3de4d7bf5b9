"""Lowest common ancestors and distances of (label, prediction) pairs, one pair per sample.

Labels and predictions are **target ids** (:meth:`~taxosmooth.Taxonomy.encode`):
classes in ``[0, C)``, internal nodes in ``[C, N)``. Internally they are
compiled node ids (depth-first pre-order), where the subtree of ``u`` is the id
range ``[u, subtree_end[u])``.

The LCA of two nodes ``a`` and ``b``: ``a`` itself when it is an ancestor of
``b`` (or ``b``), ``b`` when ``b`` is an ancestor of ``a``; otherwise the two
subtrees are disjoint and their LCA is that of any leaf of each: with leaves at
DFS positions ``i < j`` it is ``min(adjacent_lca[i:j])`` (node ids: in
pre-order the subtree root has the smallest id), a range minimum answered in
O(1) from a sparse table of ``C log C`` entries. No ``C × C`` table and no
``classes × depth`` table: any depth, any device.

From a user matrix only class pairs exist: a gather.
"""

from __future__ import annotations

import numpy as np
import torch

from taxosmooth.distances import resolve_source
from taxosmooth.taxonomy import Taxonomy

__all__ = ["PairDistances", "TreeIndex", "tree_index"]

#: node value names and how they are read (see :class:`TreeIndex`)
VALUES = ("depth", "info")


def _sparse_min_table(values: np.ndarray) -> np.ndarray:
    """``table[j, i] = min(values[i : i + 2**j])`` (padded with the largest int64 past the end)."""
    n = len(values)
    levels = max(1, int(n).bit_length())
    big = np.iinfo(np.int64).max
    table = np.full((levels, max(n, 1)), big, dtype=np.int64)
    table[0, :n] = values
    for j in range(1, levels):
        half = 1 << (j - 1)
        table[j, : n - half] = np.minimum(table[j - 1, : n - half], table[j - 1, half:n])
    return table


class TreeIndex:
    """Tensors of one taxonomy for the metrics and node decisions, cached per device.

    Node arrays are in **compiled node id** order. ``node_of(ids)`` maps target ids to node ids.

    Node values: ``depth`` (edges from the root), ``weighted_depth`` (sum of
    edge weights), ``leaves`` (classes under the node, ``n(v)``) and ``info``,
    the information of the node under a uniform prior over the classes,
    ``log2(C / n(v))`` bits (Valmadre, NeurIPS 2022: "−log of the leaf
    fraction"; the root has 0).
    """

    def __init__(self, taxonomy: Taxonomy):
        c = taxonomy.compiled
        self.taxonomy = taxonomy
        self.num_classes = c.num_classes
        self.num_nodes = c.num_nodes
        leaves = (c.leaf_hi - c.leaf_lo).astype(np.int64)
        adj = c.adjacent_lca().astype(np.int64)
        lg = np.zeros(max(c.num_classes, 2), dtype=np.int64)
        lg[2:] = np.floor(np.log2(np.arange(2, len(lg)))).astype(np.int64)
        self._cpu = {
            "target_node": torch.from_numpy(np.array(c.target_node)),
            "node_target": torch.from_numpy(np.array(c.node_target)),
            "subtree_end": torch.from_numpy(np.array(c.subtree_end)),
            "leaf_lo": torch.from_numpy(np.array(c.leaf_lo)),
            "parent": torch.from_numpy(np.where(c.parent >= 0, c.parent, 0)),
            "depth": torch.from_numpy(np.array(c.depth)),
            "weighted_depth": torch.from_numpy(np.array(c.weighted_depth)),
            "leaves": torch.from_numpy(leaves),
            "info": torch.from_numpy(np.log2(c.num_classes / leaves)),
            "is_leaf": torch.from_numpy(np.array(c.is_leaf)),
            "rmq": torch.from_numpy(_sparse_min_table(adj)),
            "log2": torch.from_numpy(lg),
        }
        self.max_depth = int(c.depth.max())
        self._cache: dict = {}

    def tensors(self, device) -> dict:
        key = str(torch.device(device))
        if key not in self._cache:
            self._cache[key] = {k: v.to(device) for k, v in self._cpu.items()}
        return self._cache[key]

    def node_of(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tensors(ids.device)["target_node"][ids]

    def target_of(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.tensors(nodes.device)["node_target"][nodes]

    def is_under(self, node: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        """Whether ``node`` is ``top`` or one of its descendants (compiled ids, broadcast)."""
        end = self.tensors(node.device)["subtree_end"]
        return (top <= node) & (node < end[top])

    def lca(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Node id of ``LCA(a, b)`` for compiled node ids of any broadcastable shapes."""
        t = self.tensors(a.device)
        a, b = torch.broadcast_tensors(a, b)
        a_over_b = self.is_under(b, a)
        b_over_a = self.is_under(a, b)
        la, lb = t["leaf_lo"][a], t["leaf_lo"][b]
        lo, hi = torch.minimum(la, lb), torch.maximum(la, lb)
        # disjoint subtrees: lo < hi; elsewhere the query is not used (clamped to a valid range)
        length = (hi - lo).clamp(min=1)
        j = t["log2"][length]
        rmq = t["rmq"]
        width = rmq.shape[1]
        lo_c = lo.clamp(max=width - 1)
        right = (hi - (1 << j)).clamp(min=0, max=width - 1)
        m = torch.minimum(rmq[j, lo_c], rmq[j, right])
        return torch.where(a_over_b, a, torch.where(b_over_a, b, m))

    def truncate(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """A prediction at or below the label counts as the label (compiled ids): the truth is somewhere
        under a coarse label, so the part of a prediction below it cannot be judged."""
        return torch.where(self.is_under(pred, label), label, pred)

    def value(self, name: str, nodes: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
        return self.tensors(nodes.device)[name][nodes].to(dtype)


# one TreeIndex per compiled tree (Taxonomy objects are immutable; their compiled tree is held by identity)
import weakref  # noqa: E402

_INDEX: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tree_index(taxonomy: Taxonomy) -> TreeIndex:
    """The cached :class:`TreeIndex` of a taxonomy."""
    key = taxonomy.compiled
    index = _INDEX.get(key)
    if index is None:
        index = _INDEX[key] = TreeIndex(taxonomy)
    return index


class PairDistances:
    """``d(label, pred)`` for index tensors of any (broadcastable) shape.

    Parameters
    ----------
    source : Taxonomy or array_like (C, C)
        A taxonomy (``distance`` picks the kind) or a matrix whose entry
        ``[t, j]`` is the distance of predicting ``j`` for true class ``t``
        (finite, >= 0, zero diagonal), resolved by
        :func:`~taxosmooth.distances.resolve_source`.
    distance : str, optional
        One of :data:`taxosmooth.distances.DISTANCE_KINDS` (default ``"lca_height"``); taxonomies only.

    Notes
    -----
    From a taxonomy, ``d`` is defined between any two nodes ``a``, ``b`` (target
    ids), with ``u = LCA(a, b)``: 0 when ``a = b``; otherwise ``height(u)``
    (``lca_height``), ``D − depth(u)`` (``lca_depth_complement``) or
    ``wdepth(a) + wdepth(b) − 2·wdepth(u)`` (``path_length``, edge weights
    summed). Between classes these are the class distances.
    """

    def __init__(self, source, distance: str | None = None):
        src = resolve_source(source, distance, where="metrics")
        self.taxonomy = src.taxonomy
        self.num_classes = src.num_classes
        self.distance = src.distance
        self.tree = tree_index(self.taxonomy) if self.taxonomy is not None else None
        self.num_nodes = self.tree.num_nodes if self.tree is not None else src.num_classes
        if self.taxonomy is not None:
            cpu = {"node_value": torch.from_numpy(np.array(src.node_table))} if src.structured else {}
        else:
            dense = torch.from_numpy(np.array(src.dense()))
            cpu = {"matrix": dense if src.given_dtype is None else dense.to(src.given_dtype)}
        self._cpu = cpu
        self._cache: dict = {}

    def _tensors(self, device: torch.device) -> dict:
        key = str(device)
        if key not in self._cache:
            self._cache[key] = {name: t.to(device) for name, t in self._cpu.items()}
        return self._cache[key]

    def nodes(self, label: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Compiled node ids of label and prediction target ids, the prediction truncated at the label."""
        tree = self.tree
        a, b = torch.broadcast_tensors(tree.node_of(label), tree.node_of(pred))
        return a, tree.truncate(b, a)

    def __call__(self, label: torch.Tensor, pred: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Distances ``d(label, pred)`` (broadcast), as ``dtype``; a prediction under the label is at 0."""
        t = self._tensors(pred.device)
        if "matrix" in t:
            return t["matrix"][label, pred].to(dtype)
        a, b = self.nodes(label, pred)
        u = self.tree.lca(a, b)
        if "node_value" in t:
            d = t["node_value"][u].to(dtype)
        else:
            wd = self.tree.tensors(pred.device)["weighted_depth"]
            d = (wd[a] + wd[b] - 2 * wd[u]).to(dtype)
        return torch.where(a == b, torch.zeros_like(d), d)
