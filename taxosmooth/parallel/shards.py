"""Class shards: which classes each rank holds, and the part of the tree each rank's loss passes run on.

A shard is a run of consecutive classes in depth-first (leaf) order. Every subtree is a run of leaves, so a
shard is a sequence of whole subtrees plus the ancestors that straddle its two edges: the **boundary
nodes**, those whose leaf range contains a cut between two ranks, at most ``depth`` per cut. Everything a
loss needs about a node that is not on the boundary lives on one rank; the boundary nodes are what the
ranks exchange (``O(batch × depth × world)`` numbers, whatever the number of classes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from taxosmooth.taxonomy import CompiledTree, Taxonomy
from taxosmooth.tree_ops.tables import compiled_tree

__all__ = ["shard_classes", "shard_bounds", "ShardPlan", "shard_plan", "boundary_values", "with_boundary"]


def shard_bounds(taxonomy: Taxonomy | CompiledTree, world_size: int, slack: float = 0.02) -> np.ndarray:
    """The cuts between shards in leaf positions: ``(world_size + 1,)``, from 0 to ``C``.

    Each cut starts at the even split ``k·C/world`` (``torch.chunk``'s sizes) and moves by at most ``slack`` of
    a shard's width to the position whose two neighbouring leaves have the shallowest lowest common ancestor,
    which leaves the fewest nodes straddling it. ``slack=0``: exactly ``torch.chunk``'s sizes (what a DTensor
    sharded on the class dimension holds).
    """
    c = compiled_tree(taxonomy)
    C = c.num_classes
    if isinstance(world_size, bool) or not isinstance(world_size, (int, np.integer)) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if world_size > C:
        raise ValueError(f"world_size {world_size} is larger than the number of classes {C}: every rank must hold "
                         "at least one class")
    if not (isinstance(slack, (int, float)) and 0.0 <= float(slack) <= 0.5):
        raise ValueError(f"slack must be a number in [0, 0.5], got {slack!r}")
    chunk = -(-C // world_size)  # torch.chunk: ceil(C / world) per rank, the last ones smaller
    even = np.minimum(np.arange(world_size + 1) * chunk, C)
    if even[-2] >= C:  # torch.chunk gives fewer chunks than ranks here: split as evenly as possible instead
        even = np.round(np.linspace(0, C, world_size + 1)).astype(np.int64)
    cuts = even.astype(np.int64).copy()
    if slack > 0 and world_size > 1 and C > 1:
        # lca_depth[k]: depth of LCA(leaf k-1, leaf k), the number of nodes a cut at k makes straddle
        lca_depth = np.full(C + 1, -1, dtype=np.int64)
        lca_depth[1:C] = c.depth[c.adjacent_lca()]
        reach = int(slack * C / world_size)
        for k in range(1, world_size):
            lo = max(cuts[k - 1] + 1, even[k] - reach)
            hi = min(even[k] + reach, C - (world_size - k))
            if lo > hi:
                continue
            window = lca_depth[lo: hi + 1]
            best = np.flatnonzero(window == window.min()) + lo
            cuts[k] = int(best[np.argmin(np.abs(best - even[k]))])
    return cuts


def shard_classes(taxonomy: Taxonomy | CompiledTree, world_size: int, slack: float = 0.02) -> list[torch.Tensor]:
    """The class ids each rank holds, for a classifier (and its logits) split over ``world_size`` ranks.

    Rank ``r`` holds ``shard_classes(taxonomy, world)[r]``: class ids consecutive in depth-first order,
    balanced in count (``torch.chunk``'s sizes, each cut moved by at most ``slack`` of a shard to a subtree
    boundary nearby). Order the rows of a class-sharded classifier (and so the columns of each rank's
    logits) by them::

        ids = ts.parallel.shard_classes(tax, world)[rank]
        head = nn.Linear(hidden, len(ids))  # row k scores class ids[k]
        loss = ts.HXELoss(tax, 0.5, process_group=group)
        loss(head(features), global_targets)

    ``slack=0`` gives exactly ``torch.chunk``'s split, what a ``DTensor`` sharded with ``Shard(1)`` holds.
    """
    c = compiled_tree(taxonomy)
    cuts = shard_bounds(c, world_size, slack)
    order = torch.from_numpy(c.position_class.astype(np.int64))
    return [order[int(cuts[r]): int(cuts[r + 1])].clone() for r in range(world_size)]


@dataclass(frozen=True, eq=False)
class ShardPlan:
    """What rank ``rank`` of ``world`` needs for its loss passes (built once per taxonomy, world and rank).

    ``lo, hi``: its leaf positions. ``nodes`` ``(n,)``: the global ids of the nodes whose leaf range meets
    ``[lo, hi)``, in level order (depth, then id): its **local tree**, on which the node passes run (the same
    level layout as :class:`~taxosmooth.tree_ops.TreeTensors`: ``level_offsets``, ``level_parent_local``,
    ``level_is_leaf``, ``class_level_pos``; ``node_parent`` the global id of each one's parent).
    ``boundary`` ``(K,)``: the global ids of every node straddling a cut between two ranks (the same on every
    rank), in level order; ``local_boundary`` ``(n,)``: each local node's index in ``boundary`` (-1 for a node that
    lies on this rank alone), ``local_rows`` the local nodes that are on the boundary; ``boundary_parent``
    ``(K,)``: each boundary node's parent's index in ``boundary`` (the root: itself).
    """

    world: int
    rank: int
    lo: int
    hi: int
    num_classes: int
    nodes: torch.Tensor
    level_offsets: tuple
    level_inner: tuple
    level_parent_local: torch.Tensor
    level_parent: torch.Tensor
    level_is_leaf: torch.Tensor
    class_level_pos: torch.Tensor
    class_ids: torch.Tensor
    local_boundary: torch.Tensor
    local_rows: torch.Tensor
    node_parent: torch.Tensor
    boundary: torch.Tensor
    boundary_parent: torch.Tensor
    boundary_lo: torch.Tensor
    boundary_hi: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return int(self.nodes.shape[0])

    @property
    def width(self) -> int:
        return self.hi - self.lo

    def to(self, device) -> ShardPlan:
        moved: dict[str, Any] = {k: v.to(device) for k, v in self.__dict__.items() if isinstance(v, torch.Tensor)}
        return dataclasses.replace(self, **moved)


def _level_layout(c: CompiledTree, nodes: np.ndarray):
    """Level order of a set of nodes closed under parents (each level's internal nodes first): offsets, each
    node's parent's position in the level above, leaf flags."""
    depth = c.depth[nodes]
    order = np.lexsort((nodes, c.is_leaf[nodes], depth))  # by depth, internal nodes first, by id
    nodes = nodes[order]
    depth = depth[order]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(depth, minlength=int(depth.max()) + 1))]).astype(np.int64)
    where = np.full(c.num_nodes, -1, dtype=np.int64)
    where[nodes] = np.arange(nodes.size)
    parent = c.parent[nodes]
    parent_pos = where[np.maximum(parent, 0)]
    level_start = offsets[np.maximum(depth - 1, 0)]
    local_parent = np.where(depth > 0, parent_pos - level_start, 0)
    return nodes, offsets, local_parent, where, np.where(depth > 0, parent_pos, 0)


def shard_plan(taxonomy: Taxonomy | CompiledTree, world: int, rank: int, slack: float = 0.02) -> ShardPlan:
    """The :class:`ShardPlan` of ``rank`` (cached on the compiled tree)."""
    c = compiled_tree(taxonomy)
    cache = getattr(c, "_shard_plans", None)
    if cache is None:
        cache = {}
        object.__setattr__(c, "_shard_plans", cache)
    key = (world, rank, float(slack))
    if key in cache:
        return cache[key]
    cuts = shard_bounds(c, world, slack)
    lo, hi = int(cuts[rank]), int(cuts[rank + 1])
    leaf_lo, leaf_hi = c.leaf_lo, c.leaf_hi
    local = np.flatnonzero((leaf_lo < hi) & (leaf_hi > lo))
    nodes, offsets, local_parent, where, level_parent = _level_layout(c, local)
    inner = cuts[1:-1]
    straddle = np.zeros(c.num_nodes, dtype=bool)
    for k in inner:  # world - 1 cuts, each O(nodes)
        straddle |= (leaf_lo < k) & (leaf_hi > k)
    if straddle.any():
        bnodes, _, _, bwhere, _ = _level_layout(c, np.flatnonzero(straddle))
    else:
        bnodes, bwhere = np.zeros(0, dtype=np.int64), np.full(c.num_nodes, -1, dtype=np.int64)
    boundary_parent = bwhere[np.maximum(c.parent[bnodes], 0)] if bnodes.size else np.zeros(0, dtype=np.int64)
    is_leaf = c.is_leaf[nodes]
    depth = c.depth[nodes]
    class_level_pos = where[c.leaf_node[lo:hi]]
    plan = ShardPlan(
        world=world, rank=rank, lo=lo, hi=hi, num_classes=c.num_classes,
        nodes=torch.from_numpy(nodes.astype(np.int64)),
        level_offsets=tuple(int(o) for o in offsets),
        level_inner=tuple(int((~is_leaf[depth == d]).sum()) for d in range(len(offsets) - 1)),
        level_parent_local=torch.from_numpy(local_parent.astype(np.int64)),
        level_parent=torch.from_numpy(level_parent.astype(np.int64)),
        level_is_leaf=torch.from_numpy(is_leaf.copy()),
        class_level_pos=torch.from_numpy(class_level_pos.astype(np.int64)),
        class_ids=torch.from_numpy(c.position_class[lo:hi].astype(np.int64)),
        local_boundary=torch.from_numpy(bwhere[nodes].astype(np.int64)),
        local_rows=torch.from_numpy(np.flatnonzero(bwhere[nodes] >= 0).astype(np.int64)),
        node_parent=torch.from_numpy(np.maximum(c.parent[nodes], 0).astype(np.int64)),
        boundary=torch.from_numpy(bnodes.astype(np.int64)),
        boundary_parent=torch.from_numpy(boundary_parent.astype(np.int64)),
        boundary_lo=torch.from_numpy(leaf_lo[bnodes].astype(np.int64)),
        boundary_hi=torch.from_numpy(leaf_hi[bnodes].astype(np.int64)),
    )
    cache[key] = plan
    return plan


# ------------------------------------------------------------------ values on the local tree and its boundary
def boundary_values(plan: ShardPlan, lev: torch.Tensor, fill: float) -> torch.Tensor:
    """This rank's values ``(n, B)`` at the boundary nodes as ``(B, K)`` (``fill`` where it holds none)."""
    rows = plan.local_rows
    out = lev.new_full((plan.boundary.shape[0], lev.shape[1]), fill)
    return out.index_copy(0, plan.local_boundary.index_select(0, rows), lev.index_select(0, rows)).t()


def with_boundary(plan: ShardPlan, lev: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``lev`` ``(n, B)`` with its boundary nodes' rows replaced by their global ``values`` ``(B, K)``."""
    rows = plan.local_rows
    return lev.index_copy(0, rows, values.t().index_select(0, plan.local_boundary.index_select(0, rows)))
