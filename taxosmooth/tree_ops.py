"""Hierarchy primitives in torch: subtree sums, top-down accumulation, ancestor rings.

:class:`TreeTensors` holds the index tensors of a :class:`~taxosmooth.taxonomy.CompiledTree`
as (non-persistent) module buffers, so a loss or metric that owns one as a
sub-module moves it with ``.to(device)`` and keeps it out of ``state_dict``
(it is derived from the taxonomy, which is configuration, not state). Every
operation is a handful of vectorized torch calls, O(batch × nodes) or
O(batch × classes); none loops over samples or class pairs, and none builds a
``(C, C)`` tensor.

Conventions
-----------
* ``x`` with a trailing class dimension ``(..., C)`` is in **class order**
  (the model's logit columns); node values ``(..., N)`` are indexed by
  **compiled node id** (DFS pre-order, root = 0).
* ``K = max_depth`` (the largest class depth). The ancestor path of class ``t``
  is ``a_0 = t, a_1 = parent(t), ..., a_{depth(t)} = root``; for
  ``k > depth(t)`` it is padded with the root, so every path has ``K + 1``
  entries (:attr:`TreeTensors.path`).
* The **ring** ``k`` of class ``t`` is the set of classes ``j`` with
  ``LCA(t, j) = a_k``: ``subtree(a_k) \\ subtree(a_{k-1})`` (ring 0 is ``{t}``;
  rings of padding entries, and of unary-chain nodes, are empty). Any function
  of the LCA node, e.g. ``d(t, j) = table[LCA(t, j)]``, is constant on a ring,
  which is what makes structured losses O(batch × classes).

Exactness
---------
Subtree and ring sums add the leaf values of each subtree directly (segment
sums over contiguous DFS leaf ranges, bottom-up level by level); no prefix sum
is ever differenced, so small subtrees next to large ones lose no precision.
:meth:`TreeTensors.subtree_logsumexp` works in log space with a per-node
maximum, so log-probabilities of subtrees whose probability underflows stay
finite.

Speed
-----
The ring kernels (:func:`segment_sum_leaf_order`, :func:`segment_expand_leaf_order`)
run on numpy's ``np.add.reduceat`` (pairwise summation per segment) and
``np.repeat`` for CPU tensors, several times faster there than
``torch.segment_reduce`` and a ``repeat_interleave`` gather, which they use on
other devices and under ``torch.compile``.

API (stable)
------------
``TreeTensors(tree)``
    ``tree`` a :class:`~taxosmooth.Taxonomy` or :class:`~taxosmooth.taxonomy.CompiledTree`.
Attributes (Python ints): ``num_nodes`` (N), ``num_classes`` (C), ``max_depth`` (K).
Buffers, int64: ``parent`` (N,; root's parent is 0), ``depth`` (N,), ``class_node`` (C,),
``class_position`` (C,), ``position_class`` (C,), ``path`` (C, K+1; padded with the root),
``path_len`` (C,; ``depth(t) + 1``, the number of real path entries); int32: ``ring_lengths`` (C, 2K+1),
the lengths of the DFS leaf segments of each class's rings (segment ``s`` belongs to ring ``|s - K|``),
and ``ring_starts`` (C, 2K+1), their offsets in the leaf order.
Low-level kernels (not differentiable, leaf order): :func:`segment_sum_leaf_order`,
:func:`segment_expand_leaf_order`, :func:`ring_sum_leaf_order`, :func:`ring_expand_leaf_order`.
Methods: :meth:`subtree_sum`, :meth:`subtree_logsumexp`, :meth:`accumulate_down`,
:meth:`node_to_class`, :meth:`path_of`, :meth:`path_mask`, :meth:`gather_path`,
:meth:`ring_sum`, :meth:`ring_expand`, :meth:`ring_rows`, :meth:`segment_rows`, :meth:`to_leaf_order`,
:meth:`to_class_order`. CPU kernels (numpy): :func:`host_segment_layout`, :func:`host_segment_reduce`,
:func:`host_segment_sum`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from taxosmooth.taxonomy import CompiledTree, Taxonomy

__all__ = [
    "TreeTensors",
    "compiled_tree",
    "ring_sum_leaf_order",
    "ring_expand_leaf_order",
    "segment_sum_leaf_order",
    "segment_expand_leaf_order",
]


def compiled_tree(tree) -> CompiledTree:
    """The :class:`CompiledTree` of a :class:`Taxonomy` (or the argument itself)."""
    if isinstance(tree, Taxonomy):
        return tree.compiled
    if isinstance(tree, CompiledTree):
        return tree
    raise TypeError(f"expected a Taxonomy or CompiledTree, got {type(tree).__name__}")


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a, dtype=np.int64).copy())


class _Permute(torch.autograd.Function):
    """``x.index_select(-1, perm)`` whose backward is another gather (``inverse``), not a scatter-add."""

    @staticmethod
    def forward(ctx, x, perm, inverse):
        ctx.save_for_backward(perm, inverse)
        return x.index_select(-1, perm)

    @staticmethod
    def backward(ctx, grad):
        perm, inverse = ctx.saved_tensors
        return _Permute.apply(grad, inverse, perm), None, None


def _fold_segments(seg: torch.Tensor, ring_of_segment: torch.Tensor, K: int) -> torch.Tensor:
    # segment s of a ring layout belongs to ring |s - K|
    return seg.new_zeros((seg.shape[0], K + 1)).index_add_(1, ring_of_segment, seg)


# the tests turn this off to run the device kernels (torch ops) on the CPU too
_HOST_KERNELS = True


def _host_kernel(x: torch.Tensor) -> bool:
    # numpy's segment kernels (np.add.reduceat, np.repeat) run several times faster than
    # torch.segment_reduce / repeat_interleave + gather on the CPU; on other devices, and
    # while tracing for torch.compile, the torch ops are used
    return (_HOST_KERNELS and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and not torch.compiler.is_compiling())


_OFFSETS: dict = {}


def _row_offsets(b: int, c: int) -> np.ndarray:
    """``[[0], [c], [2c], ...]`` (b, 1) int64, cached: the same batch shape comes back every step."""
    key = (b, c)
    out = _OFFSETS.get(key)
    if out is None:
        if len(_OFFSETS) > 64:
            _OFFSETS.clear()
        out = _OFFSETS[key] = np.arange(0, b * c, c, dtype=np.int64)[:, None]
        out.flags.writeable = False
    return out


def host_segment_layout(starts: np.ndarray, lengths: np.ndarray, c: int):
    """Flat ``np.add.reduceat`` indices for segments of rows of length ``c``: ``(index, empty, fix)``.

    ``starts``/``lengths`` (B, S) per row (``starts`` the segments' offsets in the
    row). ``empty`` marks the empty segments (reduceat gives them one element:
    they are zeroed); reduceat needs indices below ``B·c``, so empty segments at
    the end of the last row are moved back one place, and ``fix`` is the
    segment that then misses the last element (``-1``: none). Depends on the
    targets only, so it is prepared before the big passes over the batch.
    """
    b = starts.shape[0]
    index = np.add(starts, _row_offsets(b, c)).reshape(-1)
    empty = lengths.reshape(-1) == 0
    n = b * c
    fix = -1
    if index[-1] >= n:
        np.minimum(index, n - 1, out=index)
        # the last non-empty segment stops one short of the end (unless it is the last element alone)
        k = int(np.flatnonzero(~empty)[-1])
        fix = k if index[k] < n - 1 else -1
    return index, empty, fix


def host_segment_reduce(x: np.ndarray, layout) -> np.ndarray:
    """Segment sums (B, S) of ``x`` (B, C) on a :func:`host_segment_layout`: one ``np.add.reduceat``."""
    index, empty, fix = layout
    flat = x.reshape(-1)
    seg = np.add.reduceat(flat, index)
    if fix >= 0:
        seg[fix] += flat[-1]
    seg[empty] = 0
    return seg.reshape(x.shape[0], -1)


def host_segment_sum(x: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """numpy kernel of :func:`segment_sum_leaf_order`: ``x`` (B, C), ``starts``/``lengths`` (B, S) per row.

    ``starts`` are each row's segment offsets within the row (the exclusive
    cumulative sum of ``lengths``). One ``np.add.reduceat`` over the whole
    batch; empty segments are set to 0.
    """
    b, c = x.shape
    if b == 0:
        return np.zeros(starts.shape, dtype=x.dtype)
    return host_segment_reduce(x, host_segment_layout(starts, lengths, c))


def segment_sum_leaf_order(x_leaf: torch.Tensor, lengths: torch.Tensor, starts: torch.Tensor | None = None
                           ) -> torch.Tensor:
    """Sums of ``x_leaf`` (B, C) over each row's consecutive segments of the given ``lengths`` (B, S).

    Each row's lengths add up to ``C``; empty segments sum to 0. Every segment
    is summed on its own (pairwise summation on the CPU), never as a difference
    of prefix sums. Not differentiable: the low-level kernel of fused losses.
    With ``lengths = ring_lengths[target]``, segment ``s`` belongs to ring
    ``|s - K|`` (:func:`ring_sum_leaf_order` folds them). ``starts``, the
    segments' offsets within each row (``ring_starts[target]``), saves the CPU
    kernel a cumulative sum.
    """
    b = x_leaf.shape[0]
    if b == 0:  # segment_reduce refuses empty inputs
        return x_leaf.new_zeros((0, lengths.shape[-1]))
    if not _host_kernel(x_leaf):
        return torch.segment_reduce(x_leaf.contiguous(), "sum", lengths=lengths.long(), axis=1)
    ln = lengths.numpy()
    st = np.cumsum(ln, axis=1, dtype=np.int64) - ln if starts is None else starts.numpy()
    return torch.from_numpy(host_segment_sum(x_leaf.detach().contiguous().numpy(), st, ln))


def segment_expand_leaf_order(seg_values: torch.Tensor, lengths: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``out[b, j] = seg_values[b, s]`` for ``j`` in segment ``s`` of row ``b`` (B, C); not differentiable.

    The adjoint of :func:`segment_sum_leaf_order`: a fresh tensor, the caller may
    modify it in place.
    """
    b = seg_values.shape[0]
    if b > 0 and _host_kernel(seg_values):
        values = seg_values.detach().contiguous().numpy().reshape(-1)
        return torch.from_numpy(np.repeat(values, lengths.numpy().reshape(-1))).view(b, num_classes)
    # an int32 gather index is half the memory traffic of repeat_interleave's int64 one
    index = torch.repeat_interleave(lengths.reshape(-1).to(torch.int32, copy=False), output_size=b * num_classes)
    return seg_values.reshape(-1).index_select(0, index).view(b, num_classes)


def ring_sum_leaf_order(x_leaf: torch.Tensor, lengths: torch.Tensor, ring_of_segment: torch.Tensor) -> torch.Tensor:
    """Ring sums of ``x_leaf`` (B, C) in leaf order, ``lengths = ring_lengths[target]``; not differentiable.

    The low-level kernel behind :meth:`TreeTensors.ring_sum`, for fused losses
    that write their own backward.
    """
    K = (ring_of_segment.shape[0] - 1) // 2
    return _fold_segments(segment_sum_leaf_order(x_leaf, lengths), ring_of_segment, K)


def ring_expand_leaf_order(values: torch.Tensor, lengths: torch.Tensor, ring_of_segment: torch.Tensor,
                           num_classes: int) -> torch.Tensor:
    """``out[b, j] = values[b, ring(j)]`` (B, C) in leaf order; not differentiable.

    The low-level kernel behind :meth:`TreeTensors.ring_expand`.
    """
    return segment_expand_leaf_order(values.index_select(1, ring_of_segment), lengths, num_classes)


class _RingSum(torch.autograd.Function):
    """Ring sums in leaf order; the backward is :class:`_RingExpand` (they are adjoint)."""

    @staticmethod
    def forward(ctx, x_leaf, lengths, ring_of_segment):
        ctx.save_for_backward(lengths, ring_of_segment)
        ctx.num_classes = x_leaf.shape[1]
        return ring_sum_leaf_order(x_leaf, lengths, ring_of_segment)

    @staticmethod
    def backward(ctx, grad):
        lengths, ring_of_segment = ctx.saved_tensors
        return _RingExpand.apply(grad, lengths, ring_of_segment, ctx.num_classes), None, None


class _RingExpand(torch.autograd.Function):
    """``out[b, j] = values[b, ring(j)]`` in leaf order; the backward is :class:`_RingSum`."""

    @staticmethod
    def forward(ctx, values, lengths, ring_of_segment, num_classes):
        ctx.save_for_backward(lengths, ring_of_segment)
        return ring_expand_leaf_order(values, lengths, ring_of_segment, num_classes)

    @staticmethod
    def backward(ctx, grad):
        lengths, ring_of_segment = ctx.saved_tensors
        return _RingSum.apply(grad, lengths, ring_of_segment), None, None, None


def _flat(x: torch.Tensor, size: int, what: str) -> torch.Tensor:
    if x.dim() < 1 or x.shape[-1] != size:
        raise ValueError(f"{what} must have a last dimension of size {size}, got shape {tuple(x.shape)}")
    return x.reshape(-1, size)


class TreeTensors(nn.Module):
    """Index tensors of a compiled tree, as buffers, and the vectorized passes over them.

    Parameters
    ----------
    tree : Taxonomy or CompiledTree

    Examples
    --------
    >>> import torch, taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> tt = TreeTensors(tax)
    >>> p = torch.tensor([[0.125, 0.25, 0.125, 0.5]])
    >>> tt.subtree_sum(p)[0, [tax.node_index(n) for n in ("animal", "mammal", "sea")]].tolist()
    [1.0, 0.375, 0.625]
    """

    def __init__(self, tree):
        super().__init__()
        c = compiled_tree(tree)
        n, C = c.num_nodes, c.num_classes
        K = c.max_depth
        self.num_nodes, self.num_classes, self.max_depth = n, C, K
        # the whole tree may be deeper than K only through non-class nodes, which
        # cannot exist (every leaf is a class); levels therefore run 0..K
        levels = c.levels
        depth_levels = len(levels) - 1

        parent = c.parent.copy()
        parent[0] = 0
        path = c.padded_path
        path_len = c.depth[c.class_node] + 1

        # ring segments in leaf order: breakpoints lo(a_K) <= ... <= lo(a_0) < hi(a_0) <= ... <= hi(a_K)
        lo, hi = c.leaf_lo[path], c.leaf_hi[path]  # (C, K+1)
        br = np.concatenate([lo[:, ::-1], hi], axis=1)  # (C, 2K+2), br[:, 0] = 0, br[:, -1] = C
        ring_lengths = np.diff(br, axis=1)
        # segment s belongs to ring |s - K|
        self.ring_of_segment_list = tuple(abs(s - K) for s in range(2 * K + 1))

        # bottom-up level layout: nodes by depth, each level in id order; the
        # children of consecutive nodes of level d-1 are consecutive in level d
        level_order = np.concatenate(levels)
        offsets = np.concatenate([[0], np.cumsum([len(lv) for lv in levels])])
        n_children = np.bincount(c.parent[1:], minlength=n)
        is_leaf = c.is_leaf
        node_class = np.full(n, C, dtype=np.int64)  # C = the zero column appended to x
        node_class[c.class_node] = np.arange(C)
        level_pos = np.empty(n, dtype=np.int64)
        level_pos[level_order] = np.arange(n)
        self.level_offsets = tuple(int(o) for o in offsets)
        self.depth_levels = depth_levels
        self.leaf_order_is_class_order = bool(np.array_equal(c.position_class, np.arange(C)))

        self.register_buffer("parent", _t(parent), persistent=False)
        self.register_buffer("depth", _t(c.depth), persistent=False)
        self.register_buffer("class_node", _t(c.class_node), persistent=False)
        self.register_buffer("class_position", _t(c.class_position), persistent=False)
        self.register_buffer("position_class", _t(c.position_class), persistent=False)
        self.register_buffer("path", _t(path), persistent=False)
        self.register_buffer("path_len", _t(path_len), persistent=False)
        self.register_buffer("ring_lengths", _t(ring_lengths).to(torch.int32), persistent=False)
        self.register_buffer("ring_starts", _t(br[:, :-1]).to(torch.int32), persistent=False)
        self.register_buffer("ring_of_segment", _t(self.ring_of_segment_list), persistent=False)
        self.register_buffer("_level_order", _t(level_order), persistent=False)
        self.register_buffer("_level_pos", _t(level_pos), persistent=False)
        self.register_buffer("_level_children", _t(n_children[level_order]), persistent=False)
        self.register_buffer("_level_class", _t(node_class[level_order]), persistent=False)
        self.register_buffer("_level_is_leaf", torch.as_tensor(is_leaf[level_order].copy()), persistent=False)
        # position in level d-1 of the parent of each node of level d (for top-down passes)
        parent_level_pos = np.zeros(n, dtype=np.int64)
        for d in range(1, depth_levels + 1):
            lv = levels[d]
            parent_level_pos[offsets[d] : offsets[d + 1]] = level_pos[c.parent[lv]] - offsets[d - 1]
        self.register_buffer("_parent_level_pos", _t(parent_level_pos), persistent=False)

    def extra_repr(self) -> str:
        return f"num_nodes={self.num_nodes}, num_classes={self.num_classes}, max_depth={self.max_depth}"

    def buffer_bytes(self) -> int:
        """Total size of the buffers in bytes: O(nodes + classes × depth)."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    # ------------------------------------------------------------------ orders
    def to_leaf_order(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., C)`` class order → DFS leaf order (the input itself when they coincide)."""
        if self.leaf_order_is_class_order:
            return x
        return _Permute.apply(x, self.position_class, self.class_position)

    def to_class_order(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., C)`` DFS leaf order → class order."""
        if self.leaf_order_is_class_order:
            return x
        return _Permute.apply(x, self.class_position, self.position_class)

    def node_to_class(self, values: torch.Tensor) -> torch.Tensor:
        """Node values ``(..., N)`` → the values at the class nodes ``(..., C)``, class order."""
        return values.index_select(-1, self.class_node)

    # ------------------------------------------------------------------ bottom-up
    def _levels_from_classes(self, x: torch.Tensor, fill: float) -> torch.Tensor:
        # (B, C) class order → (B, N) level order with leaves filled, internal nodes = fill
        ext = torch.cat([x, x.new_full((x.shape[0], 1), fill)], dim=1)
        return ext.index_select(1, self._level_class)

    def subtree_sum(self, x: torch.Tensor) -> torch.Tensor:
        """``P(v) = Σ_{classes j under v} x_j`` for every node ``v``.

        Parameters
        ----------
        x : Tensor (..., C), class order.

        Returns
        -------
        Tensor (..., N), node-id order. Exact sums (bottom-up, level by level,
        one segment sum per level: O(batch × nodes)); differentiable.
        """
        shape = x.shape[:-1]
        x2 = _flat(x, self.num_classes, "x")
        b = x2.shape[0]
        if b == 0:
            return x.new_zeros((*shape, self.num_nodes))
        lv = self._levels_from_classes(x2, 0.0)
        off = self.level_offsets
        parts = [None] * (self.depth_levels + 1)
        below = lv[:, off[-2] : off[-1]]
        parts[-1] = below
        for d in range(self.depth_levels, 0, -1):
            lengths = self._level_children[off[d - 1] : off[d]].expand(b, -1)
            sums = torch.segment_reduce(below.contiguous(), "sum", lengths=lengths, axis=1)
            below = lv[:, off[d - 1] : off[d]] + sums
            parts[d - 1] = below
        out = torch.cat(parts, dim=1).index_select(1, self._level_pos)
        return out.reshape(*shape, self.num_nodes)

    def subtree_logsumexp(self, x: torch.Tensor) -> torch.Tensor:
        """``log Σ_{classes j under v} exp(x_j)`` for every node ``v``, in log space.

        With ``x = log_softmax(logits)`` this is ``log P(v)`` and stays finite
        where ``P(v)`` underflows. Each level combines its children with their
        own maximum, so no exponent overflows or underflows needlessly.

        Returns
        -------
        Tensor (..., N), node-id order.
        """
        shape = x.shape[:-1]
        x2 = _flat(x, self.num_classes, "x")
        b = x2.shape[0]
        if b == 0:
            return x.new_zeros((*shape, self.num_nodes))
        lv = self._levels_from_classes(x2, float("-inf"))
        off = self.level_offsets
        parts = [None] * (self.depth_levels + 1)
        below = lv[:, off[-2] : off[-1]]
        parts[-1] = below
        for d in range(self.depth_levels, 0, -1):
            lengths = self._level_children[off[d - 1] : off[d]].expand(b, -1)
            below_c = below.contiguous()
            m = torch.segment_reduce(below_c.detach(), "max", lengths=lengths, axis=1)
            m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
            m_child = m.index_select(1, self._parent_level_pos[off[d] : off[d + 1]])
            s = torch.segment_reduce(torch.exp(below_c - m_child), "sum", lengths=lengths, axis=1)
            is_leaf = self._level_is_leaf[off[d - 1] : off[d]]
            # leaves of level d-1 carry their own value; internal nodes the combined children
            # (log of 1, not of the empty sum, at leaves and at subtrees whose leaves are all -inf:
            # keeps the gradient finite; such a subtree is -inf)
            masked = s == 0
            s = torch.where(is_leaf | masked, torch.ones_like(s), s)
            combined = (torch.log(s) + m).masked_fill(masked, float("-inf"))
            below = torch.where(is_leaf, lv[:, off[d - 1] : off[d]], combined)
            parts[d - 1] = below
        out = torch.cat(parts, dim=1).index_select(1, self._level_pos)
        return out.reshape(*shape, self.num_nodes)

    # ------------------------------------------------------------------ top-down
    def accumulate_down(self, values: torch.Tensor) -> torch.Tensor:
        """``A(v) = Σ_{u ancestor of v, v included} values(u)`` for every node ``v``.

        E.g. conditional risk with a structured cost ``cost[i, j] =
        table[LCA(i, j)]`` (``table`` 0 on leaves): with ``g(u) = table[u] -
        table[parent(u)]`` (``g(root) = table[root]``) and ``P = subtree_sum(p)``,
        ``node_to_class(accumulate_down(P * g))[j] = Σ_i p_i cost[i, j]``, the
        expected cost of predicting ``j``. Top-down, level by level, O(batch × nodes).

        Parameters
        ----------
        values : Tensor (..., N), node-id order.

        Returns
        -------
        Tensor (..., N), node-id order.
        """
        shape = values.shape[:-1]
        v2 = _flat(values, self.num_nodes, "values").index_select(1, self._level_order)
        off = self.level_offsets
        above = v2[:, off[0] : off[1]]
        parts = [above]
        for d in range(1, self.depth_levels + 1):
            above = v2[:, off[d] : off[d + 1]] + above.index_select(1, self._parent_level_pos[off[d] : off[d + 1]])
            parts.append(above)
        out = torch.cat(parts, dim=1).index_select(1, self._level_pos)
        return out.reshape(*shape, self.num_nodes)

    # ------------------------------------------------------------------ paths and rings
    def path_of(self, target: torch.Tensor) -> torch.Tensor:
        """Node ids ``a_0 … a_K`` of each target's ancestor path, ``(..., K+1)``, padded with the root."""
        return self.path[target]

    def path_mask(self, target: torch.Tensor) -> torch.Tensor:
        """``(..., K+1)`` bool: ``True`` for real path entries ``k <= depth(t)``, ``False`` for padding."""
        k = torch.arange(self.max_depth + 1, device=target.device)
        return k < self.path_len[target].unsqueeze(-1)

    def gather_path(self, values: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Node values along each target's path: ``out[..., k] = values[..., a_k(target)]``.

        Parameters
        ----------
        values : Tensor (..., N), node-id order.
        target : LongTensor (...), class indices.

        Returns
        -------
        Tensor (..., K+1); padding entries hold the root's value (see :meth:`path_mask`).
        """
        return torch.gather(values, -1, self.path[target])

    def ring_sum(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``R_k = Σ_{j : LCA(target, j) = a_k} x_j`` for ``k = 0 … K``.

        Exact segment sums over at most two contiguous leaf ranges per ring,
        O(batch × classes). Partial sums ``Σ_{k' <= k} R_k'`` are the subtree
        sums ``P(a_k)`` along the path, without cancellation.

        Parameters
        ----------
        x : Tensor (B, C), class order.
        target : LongTensor (B,), valid class indices.

        Returns
        -------
        Tensor (B, K+1).
        """
        lengths = self.ring_lengths.index_select(0, target)
        return _RingSum.apply(self.to_leaf_order(x), lengths, self.ring_of_segment)

    def ring_rows(self, values: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """:meth:`ring_expand` without autograd, for constant tables: the rows of a
        structured ``(C, C)`` matrix (soft targets, costs) for the batch's targets."""
        with torch.no_grad():
            lengths = self.ring_lengths.index_select(0, target)
            rows = ring_expand_leaf_order(values, lengths, self.ring_of_segment, self.num_classes)
            return rows if self.leaf_order_is_class_order else rows.index_select(1, self.class_position)

    def segment_rows(self, table: torch.Tensor, target: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Rows ``j ↦ table[t, seg(t, j)]`` (B, C) in class order for a constant per-class table of
        segment values ``(C, 2K+1)`` (a ring table laid out with :attr:`ring_of_segment`); no autograd.

        The rows of a structured ``(C, C)`` matrix (soft targets, costs) for the
        batch's targets, a fresh tensor in ``dtype``; gathered with numpy on the CPU.
        """
        if (_host_kernel(table) and dtype in (torch.float32, torch.float64) and target.device.type == "cpu"
                and target.numel() > 0):
            tn = target.numpy()
            np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
            rows = torch.from_numpy(np.repeat(table.numpy()[tn].astype(np_dtype, copy=False).reshape(-1),
                                              self.ring_lengths.numpy()[tn].reshape(-1))).view(-1, self.num_classes)
        else:
            with torch.no_grad():
                rows = segment_expand_leaf_order(table.index_select(0, target).to(dtype),
                                                 self.ring_lengths.index_select(0, target), self.num_classes)
        return rows if self.leaf_order_is_class_order else rows.index_select(1, self.class_position)

    def ring_expand(self, values: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`ring_sum`: ``out[b, j] = values[b, k]`` where ``LCA(target_b, j) = a_k``.

        With ``values[b, k] = f(a_k)`` this writes the row ``j ↦ f(LCA(t, j))``,
        e.g. a soft-target or cost row, in O(batch × classes).

        Parameters
        ----------
        values : Tensor (B, K+1).
        target : LongTensor (B,), valid class indices.

        Returns
        -------
        Tensor (B, C), class order.
        """
        lengths = self.ring_lengths.index_select(0, target)
        return self.to_class_order(_RingExpand.apply(values, lengths, self.ring_of_segment, self.num_classes))
