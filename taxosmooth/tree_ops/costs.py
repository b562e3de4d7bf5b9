"""Misclassification costs as tensors: a table over the nodes (costs that are a function of the LCA) or a
``(C, C)`` matrix, with the two products every cost consumer needs.

For a structured cost ``cost(i, j) = κ(LCA(i, j))`` (``κ`` 0 on the leaves), the expected cost of
predicting ``j`` under a distribution ``p`` over the classes is

.. math::

    \\sum_i p_i\\, \\mathrm{cost}(i, j) = \\sum_{u \\text{ ancestor of } j} (\\kappa(u) - \\kappa(\\mathrm{parent}(u)))\\, P(u),
    \\qquad P(u) = \\sum_{i \\text{ under } u} p_i

(summation by parts along ``j``'s path): one pass up, one pass down, O(batch × nodes), no ``(C, C)``
tensor. The losses (expected cost, pairwise) and the decisions (conditional risk minimisation) share it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from taxosmooth.tree_ops.tables import TreeTensors

__all__ = ["CostTables"]


class CostTables(nn.Module):
    """Costs on a device: ``node_cost`` ``(N,)`` on a :class:`TreeTensors` (structured), or ``matrix`` ``(C, C)``.

    Build it from what :func:`~taxosmooth.costs.resolve_costs` resolved: ``CostTables(tree, node_table=κ)`` or
    ``CostTables(None, matrix=m)``. Buffers are non-persistent (they follow ``.to()``, stay out of ``state_dict``).
    A matrix keeps its dtype (float64 when none is given); node tables are float64.
    """

    node_cost: torch.Tensor | None  # buffers
    node_step: torch.Tensor | None
    matrix: torch.Tensor | None
    path_cost: torch.Tensor | None

    def __init__(self, tree: TreeTensors | None, node_table: np.ndarray | None = None, matrix=None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if (node_table is None) == (matrix is None):
            raise ValueError("CostTables takes a node table (with a tree) or a matrix")
        self.tree = tree
        if node_table is not None:
            if tree is None:
                raise ValueError("a node-cost table needs the tree it is indexed by")
            table = np.asarray(node_table, dtype=np.float64)
            parent = tree.parent.cpu().numpy()
            step = table - np.where(np.arange(table.shape[0]) > 0, table[parent], 0.0)
            self.register_buffer("node_cost", torch.from_numpy(table.copy()), persistent=False)
            self.register_buffer("node_step", torch.from_numpy(step), persistent=False)
            self.register_buffer("matrix", None, persistent=False)
            self.num_classes = tree.num_classes
            self.register_buffer("path_cost", tree.per_target(lambda path, ids: self.segment_costs(path)),
                                 persistent=False)
        else:
            m = torch.as_tensor(np.array(matrix) if not isinstance(matrix, torch.Tensor) else matrix)
            self.register_buffer("node_cost", None, persistent=False)
            self.register_buffer("node_step", None, persistent=False)
            self.register_buffer("matrix", m.to(dtype or (m.dtype if m.is_floating_point() else torch.float64)),
                                 persistent=False)
            self.register_buffer("path_cost", None, persistent=False)
            self.num_classes = int(m.shape[0])

    @classmethod
    def from_source(cls, costs, tree: TreeTensors | None = None, dtype: torch.dtype | None = None) -> CostTables:
        """From a resolved cost source (:func:`~taxosmooth.costs.resolve_costs`): its node table on ``tree`` (built
        from the source's taxonomy when not given) when the costs are structured, else its dense matrix in
        ``dtype`` (that of a user matrix when it had one)."""
        if costs.structured:
            return cls(tree if tree is not None else TreeTensors(costs.taxonomy), node_table=costs.node_table)
        return cls(None, matrix=costs.dense(), dtype=costs.given_dtype or dtype)

    @property
    def structured(self) -> bool:
        return self.node_cost is not None

    @property
    def device(self) -> torch.device:
        table = self.node_step if self.node_step is not None else self.matrix
        assert table is not None
        return table.device

    def expected(self, p: torch.Tensor) -> torch.Tensor:
        """``R[b, j] = Σ_i p[b, i] cost(i, j)`` for rows ``p`` ``(B, C)`` (class order; not necessarily normalised)."""
        if self.node_step is None:
            assert self.matrix is not None
            return p @ self.matrix.to(p.dtype)
        tree = self.tree
        assert tree is not None
        return tree.lca_expectation(p, self.node_step)

    def segment_costs(self, path: torch.Tensor) -> torch.Tensor:
        """``cost(t, j)`` on every segment of targets' paths ``(M, 2R - 1)`` (structured costs): ``κ(a_r)`` on ring
        ``r``, 0 under the target."""
        assert self.node_cost is not None and self.tree is not None
        depth = path.shape[1] - 1
        kappa = self.node_cost.index_select(0, path[:, :depth].reshape(-1)).view(path.shape[0], depth)
        return torch.cat([kappa, kappa.new_zeros((kappa.shape[0], 1))], dim=1).index_select(1, self.tree.segment_ring)

    def on_paths(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lengths, segment costs)`` of target ids' paths (structured costs): a gather where tabulated."""
        tree = self.tree
        assert tree is not None
        if self.path_cost is not None:
            return tree.lengths_of(ids), self.path_cost.index_select(0, ids)
        path, lengths = tree.paths(ids)
        return lengths, self.segment_costs(path)

    def rows(self, classes: torch.Tensor) -> torch.Tensor:
        """``cost(c, ·)`` for classes ``c`` ``(B,)``: dense matrices only (structured costs use the paths)."""
        assert self.matrix is not None
        return self.matrix.index_select(0, classes)
