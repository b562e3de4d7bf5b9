"""Distances and LCA metrics of (label, prediction) pairs, one pair per sample.

Labels and predictions are target ids (classes ``[0, C)``, internal nodes
``[C, N)``); the lowest common ancestors come from the tree engine's ancestor
queries (:mod:`taxosmooth.tree_ops.ancestors`: binary lifting over pre-order
id ranges, O(N log depth) memory, no ``C × C`` or ``classes × depth`` table),
on the labels' device. From a user matrix only class pairs exist: a gather.

**Coarse labels.** A prediction at or below the label counts as the label
(:meth:`~taxosmooth.tree_ops.ancestors.AncestorTable.truncate`) before anything is measured: the truth is
somewhere under the label, so that part of the prediction can be neither
confirmed nor refuted. A prediction under a coarse label is therefore correct,
at distance 0.
"""

from __future__ import annotations

import numpy as np
import torch

from taxosmooth.distances import resolve_source
from taxosmooth.tree_ops import TreeTensors, tree_tensors
from taxosmooth.tree_ops.ancestors import AncestorTable, ancestor_table, take

__all__ = ["PairDistances", "lca_values", "LCA_FIELDS"]


class PairDistances:
    """``d(label, pred)`` for target-id tensors of any (broadcastable) shape.

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
    From a taxonomy ``d`` is defined between any two nodes ``a``, ``b``, with
    ``u = LCA(a, b)``: 0 when ``a = b``; otherwise ``height(u)``
    (``lca_height``), ``D − depth(u)`` (``lca_depth_complement``), or
    ``wdepth(a) + wdepth(b) − 2·wdepth(u)`` (``path_length``, the sum of the
    edge weights on the tree path). Between classes these are the class
    distances. The prediction is truncated at the label first (module docstring).
    """

    def __init__(self, source, distance: str | None = None):
        src = resolve_source(source, distance, where="metrics")
        self.taxonomy = src.taxonomy
        self.num_classes = src.num_classes
        self.distance = src.distance
        #: the deepest node's depth; None for a matrix
        self.max_depth: int | None = None
        if self.taxonomy is not None:
            c = self.taxonomy.compiled
            self.num_nodes = c.num_nodes
            self.max_depth = int(c.depth.max())
            leaves = c.leaf_hi - c.leaf_lo
            # node values in float64 (node-id order), built once on the host
            cpu = {"depth": torch.from_numpy(c.depth.astype(np.float64)),
                   "info": torch.from_numpy(np.log2(c.num_classes / leaves)),
                   "weighted_depth": torch.from_numpy(np.array(c.weighted_depth))}
            if src.structured:
                cpu["node_value"] = torch.from_numpy(np.array(src.node_table))
        else:
            self.num_nodes = src.num_classes
            dense = torch.from_numpy(np.array(src.dense()))
            cpu = {"matrix": dense if src.given_dtype is None else dense.to(src.given_dtype)}
        self._cpu = cpu
        self._cache: dict = {}

    def _tensors(self, device: torch.device) -> dict:
        key = str(device)
        if key not in self._cache:
            self._cache[key] = {name: t.to(device) for name, t in self._cpu.items()}
        return self._cache[key]

    def tree_on(self, device: torch.device) -> TreeTensors:
        """The taxonomy's :class:`~taxosmooth.tree_ops.TreeTensors` on ``device`` (a taxonomy's only)."""
        assert self.taxonomy is not None  # a matrix knows no nodes; its callers compare classes instead
        return tree_tensors(self.taxonomy, device)

    def ancestors(self, device: torch.device) -> AncestorTable:
        """The ancestor queries of the taxonomy on ``device``."""
        return ancestor_table(self.tree_on(device))

    def node_of(self, ids: torch.Tensor) -> torch.Tensor:
        """Compiled node ids of target ids."""
        return take(self.tree_on(ids.device).target_node, ids)

    def is_leaf(self, nodes: torch.Tensor) -> torch.Tensor:
        """Whether compiled node ids are classes (their target ids are below ``C``)."""
        return take(self.tree_on(nodes.device).node_target, nodes) < self.num_classes

    def value(self, name: str, nodes: torch.Tensor) -> torch.Tensor:
        """A float64 node value (``depth``, ``info``, ``weighted_depth``) at compiled node ids."""
        return take(self._tensors(nodes.device)[name], nodes)

    def nodes(self, label: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Compiled node ids of label and prediction target ids, the prediction truncated at the label."""
        a, b = torch.broadcast_tensors(self.node_of(label), self.node_of(pred))
        return a, self.ancestors(pred.device).truncate(b, a)

    def correct(self, label: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Whether the prediction is the label or lies under it (equality for a matrix)."""
        if self.taxonomy is None:
            return label == pred
        a, b = self.nodes(label, pred)
        return a == b

    def __call__(self, label: torch.Tensor, pred: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Distances ``d(label, pred)`` (broadcast), as ``dtype``; a prediction under the label is at 0."""
        t = self._tensors(pred.device)
        if "matrix" in t:
            return t["matrix"][label, pred].to(dtype)
        a, b = self.nodes(label, pred)
        u = self.ancestors(pred.device).lca(a, b)
        if "node_value" in t:
            d = take(t["node_value"], u).to(dtype)
        else:
            wd = t["weighted_depth"]
            d = (take(wd, a) + take(wd, b) - 2 * take(wd, u)).to(dtype)
        return torch.where(a == b, torch.zeros_like(d), d)


#: the per-sample LCA metrics of :func:`lca_values` (Valmadre 2022's evaluation fields)
LCA_FIELDS = (
    "exact", "correct",
    "depth_excess", "depth_deficient", "depth_dist", "depth_precision", "depth_recall", "depth_f1",
    "info_excess", "info_deficient", "info_dist", "info_precision", "info_recall", "info_f1",
)


def _ratio_one(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with ``0 / 0 = 1`` (an empty set predicted or labelled: nothing wrong)."""
    return torch.where(den == 0, torch.ones_like(num), num / torch.where(den == 0, torch.ones_like(den), den))


def lca_values(pairs: PairDistances, label: torch.Tensor, pred: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-pair LCA metrics (float64) of compiled node ids, the prediction already truncated at the label.

    With ``a = LCA(label, pred)`` and a node value ``f`` (``depth``, or ``info``
    = ``log2(C / n(v))``): ``excess = f(pred) − f(a)``, ``deficient = f(label) −
    f(a)``, ``dist`` their sum, ``precision = f(a) / f(pred)``, ``recall = f(a) /
    f(label)`` (``0 / 0 = 1``), ``f1 = 2 P R / (P + R)`` (0 when both are 0);
    ``exact``: the prediction is the label; ``correct``: one of the two is an
    ancestor of (or is) the other. Valmadre, NeurIPS 2022 (jvlmdr/hiercls ``metrics.py``).
    """
    a = pairs.ancestors(label.device).lca(label, pred)
    out = {"exact": (pred == label).double(), "correct": ((a == label) | (a == pred)).double()}
    for name in ("depth", "info"):
        f_label, f_pred, f_a = (pairs.value(name, x) for x in (label, pred, a))
        p = _ratio_one(f_a, f_pred)
        r = _ratio_one(f_a, f_label)
        out[f"{name}_excess"] = f_pred - f_a
        out[f"{name}_deficient"] = f_label - f_a
        out[f"{name}_dist"] = (f_pred - f_a) + (f_label - f_a)
        out[f"{name}_precision"] = p
        out[f"{name}_recall"] = r
        out[f"{name}_f1"] = torch.where(p + r > 0, 2 * p * r / torch.where(p + r > 0, p + r, 1.0), 0.0)
    return out
