"""The compiled tree as tensors on a device, and the per-batch layout of target paths.

:class:`TreeTensors` holds what every training-time computation needs of a
:class:`~taxosmooth.taxonomy.CompiledTree`, as non-persistent buffers (they follow
``.to(device)`` and stay out of ``state_dict``: they derive from the taxonomy,
which is configuration). Everything is O(nodes), except the optional path
table below, which is refused past a size.

Two orders of the classes (see :mod:`taxosmooth.taxonomy`): the **class order**
of the logits, and the **leaf order** (depth-first), in which every subtree
``v`` is the contiguous range ``[lo(v), hi(v))``. :meth:`TreeTensors.to_leaf_order`
and :meth:`TreeTensors.to_class_order` move between them (nothing to do when the
taxonomy was built with ``classes="tree"`` or its classes are in depth-first order).

Paths
-----
A target id ``v`` (a class, or with coarse labels an internal node) has branching
ancestors ``a_0, a_1, …, a_{b(v)-1}`` (the ancestors with two or more children,
from the top; ``b(v)`` their number), and only they can be the lowest common
ancestor of ``v`` and a class: single-child nodes are skipped. The **path** of
``v`` is ``a_0, …, a_{b(v)-1}, v``, padded to ``R`` entries with ``v`` itself
(``R`` = :attr:`TreeTensors.num_rings`, one more than the most branching
ancestors of any node). In leaf order the path cuts every row into ``S = 2R - 1``
**segments**:

.. code-block:: text

    [lo(a_0), lo(a_1)) … [lo(a_{R-2}), lo(a_{R-1})) | [lo(v), hi(v)) | [hi(a_{R-1}), hi(a_{R-2})) … [hi(a_1), hi(a_0))
      left part of ring 0 … of ring R-2               ring R-1: the    right part of ring R-2 … of ring 0
                                                      target's subtree

where **ring** ``k < R - 1`` holds the classes ``j`` with ``LCA(v, j) = a_k`` (empty
for ``k >= b(v)``), and the last ring the classes under ``v``. A function of the
LCA is constant on each ring, so the structured losses are a few
:mod:`~taxosmooth.tree_ops.segments` operations per batch, O(batch × classes),
whatever the tree; a chain of single-child nodes costs nothing.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from taxosmooth.taxonomy import CompiledTree, Taxonomy
from taxosmooth.tree_ops import nodes
from taxosmooth.tree_ops.paths import TRIANGLE_RINGS

__all__ = ["TreeTensors", "Paths", "tree_tensors", "compiled_tree", "chain_top", "PATH_TABLE_BYTES"]

#: the per-target path tables are kept while they take at most this many bytes; beyond (deep trees with many
#: nodes) each batch's paths are found by a binary search over the levels instead: O(nodes) memory either way
PATH_TABLE_BYTES = 32 * 1024**2


def compiled_tree(tree: Taxonomy | CompiledTree) -> CompiledTree:
    """The :class:`CompiledTree` of a :class:`Taxonomy` (or the argument itself)."""
    if isinstance(tree, Taxonomy):
        return tree.compiled
    if isinstance(tree, CompiledTree):
        return tree
    raise TypeError(f"expected a Taxonomy or CompiledTree, got {type(tree).__name__}")


def _t(a, dtype=torch.int64) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a).copy()).to(dtype)


class Paths(NamedTuple):
    """The path layout of a batch of target ids (see the module docstring).

    ``path`` ``(B, R)`` node ids: the branching ancestors from the top, then the target's node (repeated to
    fill ``R``); ``lengths`` ``(B, 2R - 1)`` the leaf-order segment lengths of every row.
    """

    path: torch.Tensor
    lengths: torch.Tensor


class _Permute(torch.autograd.Function):
    """``x.index_select(-1, perm)`` whose backward is the inverse gather (not a scatter-add)."""

    @staticmethod
    def forward(x, perm, inverse):
        return x.index_select(-1, perm)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, perm, inverse = inputs
        ctx.save_for_backward(perm, inverse)
        ctx.save_for_forward(perm, inverse)

    @staticmethod
    def backward(ctx, grad):
        perm, inverse = ctx.saved_tensors
        return _permute(grad, inverse, perm), None, None

    @staticmethod
    def vmap(info, in_dims, x, perm, inverse):
        x_dim = in_dims[0]
        if x_dim is None:
            return _permute(x, perm, inverse), None
        x = x.movedim(x_dim, 0)
        return _permute(x, perm, inverse), 0


def chain_top(tree: Taxonomy | CompiledTree) -> np.ndarray:
    """``top(u)`` for every node: the highest node reached from ``u`` through single-child parents (the node
    itself when its parent branches; the root for the root)."""
    c = compiled_tree(tree)
    single = np.bincount(c.parent[1:], minlength=c.num_nodes) == 1
    top = np.arange(c.num_nodes, dtype=np.int64)
    for d in range(1, len(c.levels)):
        lv = c.levels[d]
        par = c.parent[lv]
        top[lv] = np.where(single[par], top[par], lv)
    return top


def _branching_depth(c: CompiledTree) -> tuple[np.ndarray, np.ndarray]:
    """``b(u)``, the number of branching strict ancestors of every node, and whether each node branches."""
    n = c.num_nodes
    branching = np.bincount(c.parent[1:], minlength=n) >= 2
    b = np.zeros(n, dtype=np.int64)
    for d in range(1, len(c.levels)):
        lv = c.levels[d]
        par = c.parent[lv]
        b[lv] = b[par] + branching[par]
    return b, branching


def _path_table(c: CompiledTree, b: np.ndarray, branching: np.ndarray, rings: int) -> np.ndarray:
    """``(N, R)`` paths of every node (node-id order): its branching ancestors from the top, then itself."""
    n = c.num_nodes
    table = np.empty((n, rings), dtype=np.int64)
    table[:, :] = np.arange(n)[:, None]
    # a node's row is its parent's row, with the parent at its own branching depth when the parent branches
    for d in range(1, len(c.levels)):
        lv = c.levels[d]
        par = c.parent[lv]
        table[lv] = table[par]
        table[lv, b[par]] = np.where(branching[par], par, lv)
        # positions from b(v) on hold v itself
        k = np.arange(rings)[None, :]
        table[lv] = np.where(k >= b[lv][:, None], lv[:, None], table[lv])
    return table


def _segment_lengths(lo: Any, hi: Any, lib) -> Any:
    """Segment lengths ``(.., 2D + 1)`` from the leaf ranges ``(.., D + 1)`` of a path (numpy or torch)."""
    if lib is np:
        return np.concatenate([np.diff(lo, axis=-1), hi[..., -1:] - lo[..., -1:], -np.diff(hi, axis=-1)[..., ::-1]],
                              axis=-1)
    return torch.cat([lo[..., 1:] - lo[..., :-1], hi[..., -1:] - lo[..., -1:], (hi[..., :-1] - hi[..., 1:]).flip(-1)],
                     dim=-1)


def _rows(x: torch.Tensor, size: int, what: str) -> tuple[torch.Tensor, tuple]:
    """``x`` ``(..., size)`` as rows ``(B, size)``, and the leading shape to restore."""
    if x.dim() < 1 or x.shape[-1] != size:
        raise ValueError(f"{what} must have a last dimension of size {size}, got shape {tuple(x.shape)}")
    return x.reshape(-1, size), tuple(x.shape[:-1])


class _PermuteJvp(_Permute):
    """:class:`_Permute` with forward-mode AD, for eager code (Dynamo traces no Function that defines jvp)."""

    @staticmethod
    def jvp(ctx, x_tangent, perm_tangent, inverse_tangent):
        perm, inverse = ctx.saved_tensors
        return _permute(x_tangent, perm, inverse)


def _permute(x: torch.Tensor, perm: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    if torch.compiler.is_compiling():
        return _Permute.apply(x, perm, inverse)
    return _PermuteJvp.apply(x, perm, inverse)


class TreeTensors(nn.Module):
    """Index tensors of a compiled tree as buffers, and the layouts and node passes built on them.

    Parameters
    ----------
    taxonomy : Taxonomy or CompiledTree

    Attributes
    ----------
    num_classes, num_nodes : int
    num_rings : int
        ``R``: paths have ``R`` entries and ``2R - 1`` segments (one more than the most branching ancestors
        of any node).
    leaf_order_is_class_order : bool

    Examples
    --------
    >>> import torch, taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> tt = ts.TreeTensors(tax)
    >>> p = torch.tensor([[0.125, 0.25, 0.125, 0.5]])
    >>> tt.subtree_sum(p)[0, [tax.node_index(n) for n in ("animal", "mammal", "sea")]].tolist()
    [1.0, 0.375, 0.625]
    """

    # buffers (register_buffer): the attributes are tensors
    class_position: torch.Tensor
    position_class: torch.Tensor
    target_node: torch.Tensor
    node_target: torch.Tensor
    node_depth: torch.Tensor
    leaf_lo: torch.Tensor
    leaf_hi: torch.Tensor
    parent: torch.Tensor
    class_node: torch.Tensor
    leaf_node_ids: torch.Tensor
    target_path: torch.Tensor | None
    target_lengths: torch.Tensor | None
    branching_depth: torch.Tensor
    branch_keys: torch.Tensor
    branch_nodes: torch.Tensor
    segment_ring: torch.Tensor
    ring_sides: torch.Tensor
    ring_gather: torch.Tensor
    ring_outside: torch.Tensor | None
    level_order: torch.Tensor
    level_pos: torch.Tensor
    level_class: torch.Tensor
    level_children: torch.Tensor
    level_is_leaf: torch.Tensor
    class_level_pos: torch.Tensor
    level_parent: torch.Tensor
    level_parent_local: torch.Tensor

    def __init__(self, taxonomy: Taxonomy | CompiledTree) -> None:
        super().__init__()
        c = compiled_tree(taxonomy)
        n, C = c.num_nodes, c.num_classes
        b, branching = _branching_depth(c)
        R = int(b.max()) + 1
        self.num_nodes, self.num_classes, self.num_rings = n, C, R
        self.leaf_order_is_class_order = bool(np.array_equal(c.position_class, np.arange(C)))
        parent = np.where(c.parent >= 0, c.parent, 0)
        for name, arr in (("class_position", c.class_position), ("position_class", c.position_class),
                          ("target_node", c.target_node), ("node_target", c.node_target), ("node_depth", c.depth),
                          ("leaf_lo", c.leaf_lo), ("leaf_hi", c.leaf_hi), ("parent", parent),
                          ("class_node", c.class_node), ("branching_depth", b), ("leaf_node_ids", c.leaf_node)):
            self.register_buffer(name, _t(arr), persistent=False)

        # paths of every target id: a table while it is small, else a binary search per batch over the
        # branching nodes sorted by (branching depth, id): the ancestor of v at branching depth k is the last
        # branching node of that depth whose id is <= v (branching nodes of one depth have disjoint subtrees)
        order = np.flatnonzero(branching)
        keys = b[order] * n + order
        sort = np.argsort(keys, kind="stable")
        # a sentinel first (key -1, the root) keeps the search in range when no node branches
        self.register_buffer("branch_keys", _t(np.concatenate([[-1], keys[sort]])), persistent=False)
        self.register_buffer("branch_nodes", _t(np.concatenate([[0], order[sort]])), persistent=False)
        # the path table, its segment lengths and one loss's float64 table per segment: (R + 2 S) numbers a node
        self.uses_path_table = n * (5 * R - 2) * 8 <= PATH_TABLE_BYTES
        if self.uses_path_table:
            table = _path_table(c, b, branching, R)[c.target_node]
            lengths = _segment_lengths(c.leaf_lo[table], c.leaf_hi[table], np)
            self.register_buffer("target_path", _t(table), persistent=False)
            self.register_buffer("target_lengths", _t(lengths), persistent=False)
        else:
            self.register_buffer("target_path", None, persistent=False)
            self.register_buffer("target_lengths", None, persistent=False)

        # the ring of every segment, and each ring's two segments from the target outward (the target's own
        # subtree has one: its partner is a padding column, index S)
        S = 2 * R - 1
        self.register_buffer("segment_ring", _t([k if k < R else S - 1 - k for k in range(S)]), persistent=False)
        left = list(range(R - 1, -1, -1))
        right = [S] + [S - 1 - k for k in range(R - 2, -1, -1)]
        self.register_buffer("ring_sides", _t([left, right]), persistent=False)
        # the segments from the target outward, each ring's two in turn: [D, D-1, D+1, …, 0, 2D] (D = R - 1); a
        # cumulative log-sum-exp over them holds the path's log-masses, target first, at the even columns
        D = R - 1
        self.register_buffer("ring_gather", _t([D] + [s for k in range(1, R) for s in (D - k, D + k)]),
                             persistent=False)
        # (S, R): whether segment s lies outside the path's node at depth D - k (k < D - ring(s)); for paths of up
        # to TRIANGLE_RINGS rings (a gradient takes an (S, R) product per row)
        ring_of = np.array([k if k < R else S - 1 - k for k in range(S)])
        outside = torch.as_tensor(np.arange(R)[None, :] < (D - ring_of)[:, None]) if R <= TRIANGLE_RINGS else None
        self.register_buffer("ring_outside", outside, persistent=False)

        # the levels, for the passes over all nodes: nodes by depth, each level's internal nodes first (a pass
        # writes its parents as one block of rows), then its leaves, each part in id order
        level_order = np.concatenate([lv[np.argsort(c.is_leaf[lv], kind="stable")] for lv in c.levels])
        offsets = np.concatenate([[0], np.cumsum([len(lv) for lv in c.levels])]).astype(np.int64)
        self.level_offsets = tuple(int(o) for o in offsets)
        self.level_inner = tuple(int((~c.is_leaf[lv]).sum()) for lv in c.levels)
        level_pos = np.empty(n, dtype=np.int64)
        level_pos[level_order] = np.arange(n)
        node_class = np.full(n, C, dtype=np.int64)  # C: a zero (or -inf) column appended to the classes
        node_class[c.class_node] = np.arange(C)
        n_children = np.bincount(c.parent[1:], minlength=n)
        self.register_buffer("level_order", _t(level_order), persistent=False)
        self.register_buffer("level_pos", _t(level_pos), persistent=False)
        self.register_buffer("level_class", _t(node_class[level_order]), persistent=False)
        self.register_buffer("level_children", _t(n_children[level_order]), persistent=False)
        self.register_buffer("level_is_leaf", torch.as_tensor(c.is_leaf[level_order].copy()), persistent=False)
        self.register_buffer("class_level_pos", _t(level_pos[c.class_node]), persistent=False)
        level_parent = level_pos[parent[level_order]]
        self.register_buffer("level_parent", _t(level_parent), persistent=False)
        depth_of = np.repeat(np.arange(len(c.levels)), np.diff(offsets))
        local = level_parent - offsets[np.maximum(depth_of - 1, 0)]
        self.register_buffer("level_parent_local", _t(local), persistent=False)

    def extra_repr(self) -> str:
        return f"num_nodes={self.num_nodes}, num_classes={self.num_classes}, num_rings={self.num_rings}"

    def buffer_bytes(self) -> int:
        """Total size of the buffers in bytes: O(nodes), plus the path tables while they are small."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    # ------------------------------------------------------------------ orders
    def to_leaf_order(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., C)`` class order → depth-first leaf order (``x`` itself when they coincide); differentiable."""
        if self.leaf_order_is_class_order:
            return x
        return _permute(x, self.position_class, self.class_position)

    def to_class_order(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., C)`` leaf order → class order (the inverse of :meth:`to_leaf_order`); differentiable."""
        if self.leaf_order_is_class_order:
            return x
        return _permute(x, self.class_position, self.position_class)

    def leaf_permutation(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(position_class, class_position)``: class order → leaf order and back; ``(None, None)`` when they
        coincide."""
        if self.leaf_order_is_class_order:
            return None, None
        return self.position_class, self.class_position

    # ------------------------------------------------------------------ paths
    def paths(self, ids: torch.Tensor) -> Paths:
        """The path layout of target ids ``(B,)`` (valid ids in ``[0, num_nodes)``; the caller checks them)."""
        if self.target_path is not None and self.target_lengths is not None:
            return Paths(self.target_path.index_select(0, ids), self.target_lengths.index_select(0, ids))
        node = self.target_node.index_select(0, ids)
        k = torch.arange(self.num_rings, device=ids.device)[None, :]
        own = self.branching_depth.index_select(0, node)[:, None]
        keys = k * self.num_nodes + node[:, None]
        at = torch.searchsorted(self.branch_keys, keys.contiguous(), right=True) - 1
        found = self.branch_nodes.index_select(0, at.reshape(-1)).view_as(at)
        path = torch.where(k < own, found, node[:, None])
        lo = self.leaf_lo.index_select(0, path.reshape(-1)).view_as(path)
        hi = self.leaf_hi.index_select(0, path.reshape(-1)).view_as(path)
        return Paths(path, _segment_lengths(lo, hi, torch))

    def lengths_of(self, ids: torch.Tensor) -> torch.Tensor:
        """The segment lengths ``(B, 2R - 1)`` of target ids' paths (:meth:`paths` without the node ids)."""
        if self.target_lengths is not None:
            return self.target_lengths.index_select(0, ids)
        return self.paths(ids).lengths

    def per_target(self, segment_values) -> torch.Tensor | None:
        """``segment_values(path, ids)`` for every target id at once, ``(N, ...)``: a loss's table of per-segment
        values, gathered per batch instead of recomputed. ``None`` where paths are searched (deep trees with
        many nodes, where such a table would be large): the loss then computes them per batch."""
        if self.target_path is None:
            return None
        ids = torch.arange(self.num_nodes, device=self.target_path.device)
        with torch.no_grad():
            return segment_values(self.target_path, ids)

    # ------------------------------------------------------------------ passes over all nodes (exact, differentiable)
    def _levels(self):
        off = self.level_offsets
        return [(off[d], off[d + 1]) for d in range(len(off) - 1)]

    def subtree_sum(self, x: torch.Tensor) -> torch.Tensor:
        """``P(v) = Σ_{classes j under v} x_j`` for every node ``v``: ``(..., C)`` class order → ``(..., N)`` node order.

        Bottom-up, one :func:`~taxosmooth.tree_ops.segments.segment_sum` per level (children of a node are
        consecutive in the next level): every sum adds the children themselves, never a difference of
        prefix sums, so small subtrees beside large ones keep their digits. O(batch × nodes);
        differentiable to any order.
        """
        x, shape = _rows(x, self.num_classes, "x")
        lev = nodes.up(self, nodes.place(self, x), overwrite=True)
        return lev.index_select(0, self.level_pos).t().reshape(*shape, self.num_nodes)

    def subtree_logsumexp(self, x: torch.Tensor) -> torch.Tensor:
        """``log Σ_{classes j under v} exp(x_j)`` for every node ``v``: ``(..., C)`` → ``(..., N)``, in log space.

        With ``x = log_softmax(z)`` this is ``log P(v)``, finite where ``P(v)`` underflows: each level
        combines a node's children shifted by their own maximum. A subtree whose classes are all
        ``-inf`` is ``-inf`` (with a zero gradient). Differentiable to any order.
        """
        x, shape = _rows(x, self.num_classes, "x")
        lev = nodes.subtree_logsumexp(self, x)
        return lev.index_select(0, self.level_pos).t().reshape(*shape, self.num_nodes)

    def accumulate_down(self, values: torch.Tensor) -> torch.Tensor:
        """``A(v) = Σ_{u ancestor of v, v included} values(u)``: ``(..., N)`` → ``(..., N)``, node order.

        Top-down, one :func:`~taxosmooth.tree_ops.segments.expand` per level (each node's running sum
        repeated over its children). With ``g(u) = table(u) - table(parent(u))`` and ``P`` the subtree sums
        of ``p``, ``accumulate_down(P * g)`` at a class ``j`` is ``Σ_i p_i table(LCA(i, j))``: an expected
        cost for every class at once. O(batch × nodes); differentiable to any order.
        """
        values, shape = _rows(values, self.num_nodes, "values")
        lev = nodes.down(self, values.t().index_select(0, self.level_order))
        return lev.index_select(0, self.level_pos).t().reshape(*shape, self.num_nodes)

    def lca_expectation(self, x: torch.Tensor, step: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """``y[b, j] = Σ_i x[b, i] table(LCA(i, j))`` for rows ``x`` ``(B, C)`` (class order) and a node table given by
        its steps ``step(u) = table(u) - table(parent(u))`` ``(N,)`` (node order; ``step(root) = table(root)``).

        ``Σ_i x_i table(LCA(i, j)) = Σ_{u ancestor of j} step(u) Σ_{i under u} x_i``: one pass up, one product,
        one pass down, in level order (two gathers a call). ``scale`` ``(C,)`` multiplies ``x``'s classes first.
        O(batch × nodes), in ``x``'s dtype; differentiable to any order (the map is symmetric: its backward is
        itself). The result is a transposed view.
        """
        lev = nodes.up(self, nodes.place(self, x, scale=scale), overwrite=True) * nodes.column(self, step, x.dtype)
        return nodes.classes_of(self, nodes.down(self, lev, overwrite=True))

    def node_to_class(self, values: torch.Tensor) -> torch.Tensor:
        """Node values ``(..., N)`` → the values at the class nodes ``(..., C)``, class order."""
        return values.index_select(-1, self.class_node)

    def children_sum(self, values: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` node values → for every node the sum of its children's values (0 at a leaf); differentiable."""
        return torch.zeros_like(values).index_add(1, self.parent[1:], values[:, 1:])

    def target_means(self, class_values: torch.Tensor) -> torch.Tensor:
        """``(C,)`` per-class values → ``(N,)`` per target id: a class's own, an internal node the mean of its classes'."""
        sums = self.subtree_sum(class_values.unsqueeze(0))[0]
        counts = (self.leaf_hi - self.leaf_lo).to(sums.dtype)
        return (sums / counts).index_select(0, self.target_node)

    # ------------------------------------------------------------------ tables derived from the tree, cached
    def derived(self, key, make):
        """A tensor or module derived from the tree (a loss's node table), built once by ``make()`` on this
        tree's device and kept (the last 64); ``None`` is a value too.

        The functional losses use it so that a training loop builds no table twice; ``key`` must name
        everything ``make`` depends on.
        """
        cache = self.__dict__.setdefault("_derived", {})
        try:
            value = cache.get(key)
        except TypeError:  # an option that cannot be a key (a list): nothing is kept
            value = make()
            return value if value is None else value.to(self.leaf_lo.device)
        if key not in cache:
            if len(cache) >= 64:
                cache.pop(next(iter(cache)))
            value = make()
            value = cache[key] = value if value is None else value.to(self.leaf_lo.device)
        return value


# ------------------------------------------------------------------ one TreeTensors per taxonomy and device
def tree_tensors(taxonomy: Taxonomy | CompiledTree, device: torch.device | str | None = None) -> TreeTensors:
    """The cached :class:`TreeTensors` of a taxonomy on ``device`` (built once per compiled tree and device).

    The functional losses, the decisions and the metrics share these; a loss module holds its own (a
    submodule that follows ``.to()``). The cache lives on the compiled tree (an attribute lookup, which
    ``torch.compile`` traces as a constant once the tables exist).
    """
    c = compiled_tree(taxonomy)
    per_device = getattr(c, "_tree_tensors", None)
    if per_device is None:
        per_device = {}
        object.__setattr__(c, "_tree_tensors", per_device)  # a frozen dataclass: the cache is not a field
    key = str(torch.device("cpu") if device is None else torch.device(device))
    tt = per_device.get(key)
    if tt is None:
        tt = per_device[key] = TreeTensors(c).to(key)
    return tt
