"""Hierarchy primitives: the compiled tree as tensors, per-batch ring layouts, node passes.

:class:`TreeTensors` holds what the losses, decisions and metrics need of a
:class:`~taxosmooth.taxonomy.CompiledTree`: index tensors as non-persistent
buffers (they follow ``.to(device)`` and stay out of ``state_dict``: they are
derived from the taxonomy, which is configuration, not state), the same
arrays in numpy for the CPU kernels, and vectorized passes over them. Nothing
loops over samples or class pairs, and nothing builds a ``(C, C)`` tensor.

Conventions
-----------
* ``x`` with a trailing class dimension ``(..., C)`` is in **class order**
  (the model's logit columns); node values ``(..., N)`` are indexed by
  **compiled node id** (DFS pre-order, root = 0). The **leaf order** is the
  DFS order of the classes, in which every subtree is a contiguous range.
* A **target id** (:meth:`~taxosmooth.Taxonomy.encode`) names a class
  (``[0, C)``) or an internal node (``[C, N)``, a coarse label).

Rings
-----
For a target id ``v`` with ancestors ``a_1 = parent(v), …, root``, the **ring**
of ``a_k`` is ``subtree(a_k) \\ subtree(a_{k-1})``: the classes ``j`` with
``LCA(v, j) = a_k``; ring 0 is the subtree of ``v`` itself (the class, or the
classes under a coarse label). Any function of the LCA node is constant on a
ring, which is what makes the structured losses O(batch × classes).
Ancestors with an empty ring (single-child nodes) are skipped: the **ring
nodes** of ``v`` are ``r_0 = v`` and its branching ancestors ``r_1, r_2, …``
(``r_{k+1} = parent(top(r_k))``, ``top(u)`` the highest node reached from ``u``
through single-child parents), at most ``R`` of them per class, padded with
the root. In leaf order each ring is at most two contiguous **segments**
(left and right of the inner rings): a target's ``S = 2R - 1`` segments have
breakpoints ``lo(r_{R-1}) <= … <= lo(r_0) < hi(r_0) <= … <= hi(r_{R-1})``, and
segment ``s`` belongs to ring ``|s - (R - 1)|``. :meth:`TreeTensors.rings`
lays out a batch once (:class:`Rings`); the losses then read as arithmetic on
``(B, R)`` ring values, ``(B, S)`` segment sums and ``(B, C)`` expansions.

Kernels
-------
One switch, :func:`set_kernels`, decides how the losses compute:
``"auto"`` (default) runs the fused CPU kernels (numpy ``reduceat`` / ``repeat``
over the segment layout, gradient written in the forward) for eager float32 /
float64 CPU tensors, and the pure-torch, autograd-differentiable formulation
everywhere else: other devices, ``torch.compile``, ``torch.jit.trace``,
``torch.func`` transforms, and double backward. ``"torch"`` forces the
torch formulation on every device (the tests use it to check one against the
other). :func:`use_host_kernels` is the single place that decides.

Exactness
---------
Subtree and segment sums add the leaf values of each subtree directly
(per level, or per segment), never as a difference of prefix sums, so small
subtrees next to large ones lose no precision. Log-space passes
(:meth:`TreeTensors.subtree_logsumexp`, :meth:`Rings.logsumexp`) shift each
subtree or segment by its own maximum, so log-probabilities of subtrees whose
probability underflows stay finite.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from taxosmooth.taxonomy import CompiledTree, Taxonomy

__all__ = ["TreeTensors", "Rings", "set_kernels", "kernels", "use_host_kernels", "compiled_tree"]

# ------------------------------------------------------------------ the one switch
KERNEL_MODES = ("auto", "torch")
_KERNELS = "auto"


def set_kernels(mode: str) -> str:
    """Choose how the losses compute; returns the previous mode.

    ``"auto"`` (default): fused numpy kernels for eager float32/float64 CPU
    tensors, the pure-torch formulation elsewhere. ``"torch"``: the pure-torch
    formulation everywhere (slower on the CPU; what other devices, compilation,
    tracing and ``torch.func`` always use).
    """
    global _KERNELS
    if mode not in KERNEL_MODES:
        raise ValueError(f"kernel mode must be one of {', '.join(KERNEL_MODES)}, got {mode!r}")
    previous, _KERNELS = _KERNELS, mode
    return previous


@contextlib.contextmanager
def kernels(mode: str) -> Iterator[None]:
    """Context manager form of :func:`set_kernels`."""
    previous = set_kernels(mode)
    try:
        yield
    finally:
        set_kernels(previous)


def _is_functorch_wrapped(x: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():
        return False  # Dynamo traces torch.func itself, and warns that it cannot trace the builtin below
    try:
        return bool(torch._C._functorch.is_functorch_wrapped_tensor(x))
    except AttributeError:  # pragma: no cover - older torch
        return False


def _values_readable(x: torch.Tensor) -> bool:
    """Whether torch can read ``x``'s values now (``.item()``, comparisons): not batched by ``torch.func.vmap`` at
    any level. The wrappers of ``torch.func.grad`` / ``jacrev`` hold concrete values (numpy still cannot read them)."""
    if torch.compiler.is_compiling():
        return True
    functorch = torch._C._functorch
    try:
        while functorch.is_functorch_wrapped_tensor(x):
            if functorch.is_batchedtensor(x):
                return False
            x = functorch.get_unwrapped(x)
    except AttributeError:  # pragma: no cover - older torch
        return not _is_functorch_wrapped(x)
    return True


def is_symbolic(x: torch.Tensor) -> bool:
    """Whether ``x``'s values cannot be looked at now: compiling, tracing, or a ``torch.func`` transform."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or _is_functorch_wrapped(x)


def use_host_kernels(x: torch.Tensor) -> bool:
    """Whether the fused CPU (numpy) kernels apply to ``x``: the single decision point.

    True for an eager float32/float64 CPU tensor that numpy can read, with the
    switch on ``"auto"``; False while compiling, tracing, under ``torch.func``
    transforms, for other dtypes or devices.
    """
    return (_KERNELS == "auto" and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and not is_symbolic(x))


def compiled_tree(tree: Taxonomy | CompiledTree) -> CompiledTree:
    """The :class:`CompiledTree` of a :class:`Taxonomy` (or the argument itself)."""
    if isinstance(tree, Taxonomy):
        return tree.compiled
    if isinstance(tree, CompiledTree):
        return tree
    raise TypeError(f"expected a Taxonomy or CompiledTree, got {type(tree).__name__}")


def _t(a, dtype=torch.int64) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a).copy()).to(dtype)


#: tables larger than this are refused before they are allocated
TABLE_BYTES_LIMIT = 4 * 1024**3


class _Permute(torch.autograd.Function):
    """``x.index_select(-1, perm)`` whose backward is another gather (``inverse``), not a scatter-add."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, perm, inverse):
        return x.index_select(-1, perm)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, perm, inverse = inputs
        ctx.save_for_backward(perm, inverse)

    @staticmethod
    def backward(ctx, grad):
        perm, inverse = ctx.saved_tensors
        return _Permute.apply(grad, inverse, perm), None, None


class _LevelSum(torch.autograd.Function):
    """Sums over consecutive child segments of one level; the backward is a gather (itself
    differentiable), so every derivative order exists (``segment_reduce``'s backward has none)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(below, lengths, parent_of_child):
        return torch.segment_reduce(below.contiguous(), "sum", lengths=lengths.expand(below.shape[0], -1), axis=1)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[2])

    @staticmethod
    def backward(ctx, grad):
        (parent_of_child,) = ctx.saved_tensors
        return grad.index_select(1, parent_of_child), None, None


def _flat(x: torch.Tensor, size: int, what: str) -> torch.Tensor:
    if x.dim() < 1 or x.shape[-1] != size:
        raise ValueError(f"{what} must have a last dimension of size {size}, got shape {tuple(x.shape)}")
    return x.reshape(-1, size)


@dataclass(frozen=True)
class _HostTree:
    """The numpy arrays of the CPU kernels (read-only)."""

    leaf_lo: np.ndarray  # (N,)
    leaf_hi: np.ndarray  # (N,)
    depth: np.ndarray  # (N,)
    target_node: np.ndarray  # (N,)
    node_target: np.ndarray  # (N,)
    class_position: np.ndarray  # (C,)
    position_class: np.ndarray  # (C,)
    ring_nodes: np.ndarray  # (C, R) class order; padded with the root
    ring_size: np.ndarray  # (C, R) classes per ring
    ring_starts: np.ndarray  # (C, S) segment offsets in leaf order
    ring_lengths: np.ndarray  # (C, S) segment lengths
    class_layout: np.ndarray  # (C, 2R + 2S): nodes, sizes, starts, lengths side by side (one gather per batch)
    first_class: np.ndarray  # (N,) the class at the first leaf position of each node
    ring_shift: np.ndarray  # (N,) rings of first_class at or below the node (excluding ring 0)
    leaf_node: np.ndarray  # (C,) node id at each leaf position
    top: np.ndarray  # (N,) top(u): the highest node reached from u through single-child parents
    subtree_end: np.ndarray  # (N,) node ids of the subtree of u are [u, subtree_end[u])
    is_leaf: np.ndarray  # (N,) bool


def _top_of_chain(c: CompiledTree, n_children: np.ndarray) -> np.ndarray:
    """``top(u)``: climb from ``u`` while the parent has a single child (the root stops the climb)."""
    n = c.num_nodes
    top = np.arange(n, dtype=np.int64)
    for d in range(1, len(c.levels)):
        lv = c.levels[d]
        par = c.parent[lv]
        top[lv] = np.where(n_children[par] == 1, top[par], lv)
    return top


def _ring_nodes(c: CompiledTree, top: np.ndarray) -> np.ndarray:
    """``(C, R)`` ring nodes of every class (class order), padded with the root."""
    # the next ring node above u is the parent of top(u) (none above the root)
    nxt = np.where(top > 0, c.parent[np.maximum(top, 0)], -1)
    nxt[top == 0] = -1
    rows = [c.class_node.astype(np.int64)]
    cur = rows[0]
    while True:
        cur = np.where(cur >= 0, nxt[np.maximum(cur, 0)], -1)
        if not (cur >= 0).any():
            break
        rows.append(cur)
        size = len(rows) * c.num_classes * 48  # ring nodes, sizes, segment starts and lengths, numpy and torch
        if size > TABLE_BYTES_LIMIT:
            raise MemoryError(
                f"the ring table of this taxonomy would take more than {size / 1024**3:.1f} GiB "
                f"({c.num_classes} classes × {len(rows)}+ branching ancestors); its classes sit too deep "
                "below too many branching nodes for the structured losses"
            )
    out = np.stack(rows, axis=1)
    out[out < 0] = 0
    return out


class NodeLayout:
    """Node values in **level order** for the host kernels: nodes sorted by depth, then by id.

    Every depth is then a contiguous block of columns, and the children of
    consecutive nodes of one depth are consecutive in the next, so a bottom-up
    step is one ``np.add.reduceat`` over a contiguous block and a top-down step
    one gather from the block above: O(B × N) per pass with no scattered
    columns. Arrays are ``(B, N)`` in this order; :meth:`table` puts a node
    table (node-id order) in it.
    """

    def __init__(self, c: CompiledTree) -> None:
        order = np.concatenate(c.levels)
        pos = np.empty(c.num_nodes, dtype=np.int64)
        pos[order] = np.arange(c.num_nodes)
        self.order, self.pos = order, pos
        self.offsets = np.concatenate([[0], np.cumsum([len(lv) for lv in c.levels])]).astype(np.int64)
        self.leaf_pos = pos[c.leaf_node]  # (C,) level-order column of each leaf (leaf order)
        off = self.offsets
        self.leaves_are_last_block = bool(np.array_equal(self.leaf_pos, np.arange(off[-1] - len(c.leaf_node),
                                                                                    off[-1])))
        self.steps = []  # bottom-up, deepest first: (d, parent columns, reduceat starts)
        self.parent_cols = []  # top-down: for depth d >= 1, the column (in level order) of each node's parent
        for d in range(1, len(c.levels)):
            children = c.levels[d]
            par = c.parent[children]
            parents, first = np.unique(par, return_index=True)
            self.steps.append((d, pos[parents], first))
            self.parent_cols.append(pos[par])
        self.steps.reverse()
        self.num_nodes = c.num_nodes

    def table(self, node_table: np.ndarray) -> np.ndarray:
        """A node-id-order table ``(N,)`` (or ``(B, N)``) in level order."""
        return node_table[..., self.order]

    def to_node_order(self, values: np.ndarray) -> np.ndarray:
        return values[..., self.pos]

    def _fill_leaves(self, out: np.ndarray, x_leaf: np.ndarray) -> None:
        if self.leaves_are_last_block:
            out[:, self.offsets[-1] - x_leaf.shape[1] :] = x_leaf
        else:
            out[:, self.leaf_pos] = x_leaf

    def up(self, x_leaf: np.ndarray, reduce: np.ufunc = np.add) -> np.ndarray:
        """Subtree sums (or another ``reduce``: ``np.maximum``) of leaf-order values: ``(B, C)`` → ``(B, N)``."""
        b = x_leaf.shape[0]
        out = np.empty((b, self.num_nodes), dtype=x_leaf.dtype)
        self._fill_leaves(out, x_leaf)
        off = self.offsets
        for d, parent_cols, starts in self.steps:
            if len(parent_cols):
                out[:, parent_cols] = reduce.reduceat(out[:, off[d] : off[d + 1]], starts, axis=1)
        return out

    def children_sum(self, values: np.ndarray) -> np.ndarray:
        """For every node the sum of its children's values (0 at leaves), level order."""
        out = np.zeros_like(values)
        off = self.offsets
        for d, parent_cols, starts in self.steps:
            if len(parent_cols):
                out[:, parent_cols] = np.add.reduceat(values[:, off[d] : off[d + 1]], starts, axis=1)
        return out

    def down(self, values: np.ndarray) -> np.ndarray:
        """Sums over every node's ancestors, itself included (a fresh array), level order."""
        out = values.copy()
        off = self.offsets
        for d, parent_cols in enumerate(self.parent_cols, start=1):
            out[:, off[d] : off[d + 1]] += out[:, parent_cols]
        return out

    def leaves(self, values: np.ndarray) -> np.ndarray:
        """The leaves' values ``(B, C)``, leaf order."""
        if self.leaves_are_last_block:
            return values[:, self.offsets[-1] - len(self.leaf_pos) :]
        return values[:, self.leaf_pos]


class TreeTensors(nn.Module):
    """Index tensors of a compiled tree, as buffers, and the vectorized passes over them.

    Parameters
    ----------
    taxonomy : Taxonomy or CompiledTree

    Attributes
    ----------
    num_nodes, num_classes : int
    num_rings : int
        ``R``: the most ring nodes a class has (1 + its branching ancestors).

    Examples
    --------
    >>> import torch, taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> tt = TreeTensors(tax)
    >>> p = torch.tensor([[0.125, 0.25, 0.125, 0.5]])
    >>> tt.subtree_sum(p)[0, [tax.node_index(n) for n in ("animal", "mammal", "sea")]].tolist()
    [1.0, 0.375, 0.625]
    """

    # buffers (register_buffer): the attributes are tensors
    parent: torch.Tensor
    depth: torch.Tensor
    class_node: torch.Tensor
    class_position: torch.Tensor
    position_class: torch.Tensor
    target_node: torch.Tensor
    leaf_lo: torch.Tensor
    leaf_hi: torch.Tensor
    ring_nodes: torch.Tensor
    first_class: torch.Tensor
    ring_shift: torch.Tensor
    ring_of_segment: torch.Tensor
    top: torch.Tensor
    subtree_end: torch.Tensor
    _level_order: torch.Tensor
    _level_pos: torch.Tensor
    _level_children: torch.Tensor
    _level_class: torch.Tensor
    _level_is_leaf: torch.Tensor
    _parent_level_pos: torch.Tensor

    def __init__(self, taxonomy: Taxonomy | CompiledTree) -> None:
        super().__init__()
        c = compiled_tree(taxonomy)
        n, C = c.num_nodes, c.num_classes
        self.num_nodes, self.num_classes = n, C
        n_children = np.bincount(c.parent[1:], minlength=n)
        top = _top_of_chain(c, n_children)
        ring_nodes = _ring_nodes(c, top)
        R = ring_nodes.shape[1]
        self.num_rings = R
        first_class = c.position_class[np.minimum(c.leaf_lo, C - 1)]
        # rings of first_class whose node is the node itself or below it: they merge into its ring 0
        # (padding repeats the root, depth 0: never at or below an internal node other than the root)
        ring_depth = c.depth[ring_nodes]
        ring_depth[:, 0] = -1
        shift = np.zeros(n, dtype=np.int64)
        step = max(1, (1 << 24) // max(R, 1))
        for a in range(0, n, step):  # chunks bound the (nodes, R) comparison
            v = np.arange(a, min(n, a + step))
            shift[v] = (ring_depth[first_class[v]] >= c.depth[v][:, None]).sum(1)
        shift[c.is_leaf] = 0
        self.leaf_order_is_class_order = bool(np.array_equal(c.position_class, np.arange(C)))
        size, starts, lengths = _ring_layout(c.leaf_lo[ring_nodes], c.leaf_hi[ring_nodes], np)
        size, starts, lengths = (np.ascontiguousarray(a) for a in (size, starts, lengths))
        for arr in (size, starts, lengths):
            arr.setflags(write=False)
        self._host = _HostTree(
            leaf_lo=c.leaf_lo, leaf_hi=c.leaf_hi, depth=c.depth, target_node=c.target_node,
            node_target=c.node_target, class_position=c.class_position, position_class=c.position_class,
            ring_nodes=ring_nodes, ring_size=size, ring_starts=starts, ring_lengths=lengths,
            class_layout=np.ascontiguousarray(np.concatenate([ring_nodes, size, starts, lengths], axis=1)),
            first_class=first_class, ring_shift=shift, leaf_node=c.leaf_node,
            top=top, subtree_end=c.subtree_end, is_leaf=c.is_leaf,
        )
        for arr in (ring_nodes, first_class, shift, top):
            arr.setflags(write=False)
        self.ring_of_segment_list = tuple(abs(s - (R - 1)) for s in range(2 * R - 1))
        self.nodes_host = NodeLayout(c)

        # buffers of the torch formulation (any device)
        parent = c.parent.copy()
        parent[0] = 0
        self.register_buffer("parent", _t(parent), persistent=False)
        self.register_buffer("depth", _t(c.depth), persistent=False)
        self.register_buffer("class_node", _t(c.class_node), persistent=False)
        self.register_buffer("class_position", _t(c.class_position), persistent=False)
        self.register_buffer("position_class", _t(c.position_class), persistent=False)
        self.register_buffer("target_node", _t(c.target_node), persistent=False)
        self.register_buffer("leaf_lo", _t(c.leaf_lo), persistent=False)
        self.register_buffer("leaf_hi", _t(c.leaf_hi), persistent=False)
        self.register_buffer("ring_nodes", _t(ring_nodes), persistent=False)
        self.register_buffer("first_class", _t(first_class), persistent=False)
        self.register_buffer("ring_shift", _t(shift), persistent=False)
        self.register_buffer("ring_of_segment", _t(self.ring_of_segment_list), persistent=False)
        self.register_buffer("top", _t(top), persistent=False)
        self.register_buffer("subtree_end", _t(c.subtree_end), persistent=False)

        # bottom-up level layout for the differentiable node passes: nodes by depth, each level in id
        # order; the children of consecutive nodes of level d-1 are consecutive in level d
        levels = c.levels
        self.depth_levels = len(levels) - 1
        level_order = np.concatenate(levels)
        offsets = np.concatenate([[0], np.cumsum([len(lv) for lv in levels])])
        node_class = np.full(n, C, dtype=np.int64)  # C = the zero column appended to x
        node_class[c.class_node] = np.arange(C)
        level_pos = np.empty(n, dtype=np.int64)
        level_pos[level_order] = np.arange(n)
        self.level_offsets = tuple(int(o) for o in offsets)
        self.register_buffer("_level_order", _t(level_order), persistent=False)
        self.register_buffer("_level_pos", _t(level_pos), persistent=False)
        self.register_buffer("_level_children", _t(n_children[level_order]), persistent=False)
        self.register_buffer("_level_class", _t(node_class[level_order]), persistent=False)
        self.register_buffer("_level_is_leaf", torch.as_tensor(c.is_leaf[level_order].copy()), persistent=False)
        parent_level_pos = np.zeros(n, dtype=np.int64)
        for d in range(1, self.depth_levels + 1):
            lv = levels[d]
            parent_level_pos[offsets[d] : offsets[d + 1]] = level_pos[c.parent[lv]] - offsets[d - 1]
        self.register_buffer("_parent_level_pos", _t(parent_level_pos), persistent=False)

    def extra_repr(self) -> str:
        return f"num_nodes={self.num_nodes}, num_classes={self.num_classes}, num_rings={self.num_rings}"

    def buffer_bytes(self) -> int:
        """Total size of the buffers in bytes: O(nodes + classes × rings)."""
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

    def leaf_cols(self, x: Any) -> Any:
        """``(M, C)`` class order → leaf order, for numpy arrays and tensors alike (no autograd needed)."""
        if self.leaf_order_is_class_order:
            return x
        if isinstance(x, torch.Tensor):
            return x.index_select(1, self.position_class.to(x.device))
        return np.take(x, self._host.position_class, axis=1)

    def class_cols(self, x: Any) -> Any:
        """``(M, C)`` leaf order → class order (the inverse of :meth:`leaf_cols`)."""
        if self.leaf_order_is_class_order:
            return x
        if isinstance(x, torch.Tensor):
            return x.index_select(1, self.class_position.to(x.device))
        return np.take(x, self._host.class_position, axis=1)

    def node_to_class(self, values: torch.Tensor) -> torch.Tensor:
        """Node values ``(..., N)`` → the values at the class nodes ``(..., C)``, class order."""
        return values.index_select(-1, self.class_node)

    # ------------------------------------------------------------------ rings
    def rings(self, target: torch.Tensor, host: bool | None = None, coarse: bool | None = None) -> Rings:
        """The ring layout of a batch of target ids ``(B,)`` (see the module docstring).

        ``host``: numpy arrays for the host kernels (default: when the targets
        are on the CPU and the kernel switch allows), else torch tensors on the
        targets' device. ``coarse``: whether some target is an internal node,
        when the caller knows (saves a pass). Targets must be valid ids
        (``[0, N)``); the caller checks them.
        """
        if host is None:
            host = target.device.type == "cpu" and _KERNELS == "auto" and not is_symbolic(target)
        return Rings.build(self, target, host, coarse)

    # ------------------------------------------------------------------ bottom-up (differentiable)
    def _levels_from_classes(self, x: torch.Tensor, fill: float) -> torch.Tensor:
        # (B, C) class order → (B, N) level order with leaves filled, internal nodes = fill
        ext = torch.cat([x, x.new_full((x.shape[0], 1), fill)], dim=1)
        return ext.index_select(1, self._level_class)

    # The level passes run eagerly under torch.compile (a graph break): inductor mis-compiles
    # segment_reduce on strided level slices (wrong rows) and fails on the index_add alternative.
    @torch.compiler.disable
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
        parts = cast("list[torch.Tensor]", [None] * (self.depth_levels + 1))  # every slot is filled below
        below = lv[:, off[-2] : off[-1]]
        parts[-1] = below
        for d in range(self.depth_levels, 0, -1):
            lengths = self._level_children[off[d - 1] : off[d]]
            sums = _LevelSum.apply(below, lengths, self._parent_level_pos[off[d] : off[d + 1]])
            below = lv[:, off[d - 1] : off[d]] + sums
            parts[d - 1] = below
        out = torch.cat(parts, dim=1).index_select(1, self._level_pos)
        return out.reshape(*shape, self.num_nodes)

    @torch.compiler.disable
    def subtree_logsumexp(self, x: torch.Tensor) -> torch.Tensor:
        """``log Σ_{classes j under v} exp(x_j)`` for every node ``v``, in log space.

        With ``x = log_softmax(logits)`` this is ``log P(v)`` and stays finite
        where ``P(v)`` underflows. Each level combines its children with their
        own maximum, so no exponent overflows or underflows needlessly. A
        subtree whose leaves are all ``-inf`` is ``-inf`` with a zero gradient.

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
        parts = cast("list[torch.Tensor]", [None] * (self.depth_levels + 1))  # every slot is filled below
        below = lv[:, off[-2] : off[-1]]
        parts[-1] = below
        for d in range(self.depth_levels, 0, -1):
            lengths = self._level_children[off[d - 1] : off[d]].expand(b, -1)
            below_c = below.contiguous()
            m = torch.segment_reduce(below_c.detach(), "max", lengths=lengths, axis=1)
            m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
            pos = self._parent_level_pos[off[d] : off[d + 1]]
            m_child = m.index_select(1, pos)
            s = _LevelSum.apply(torch.exp(below_c - m_child), self._level_children[off[d - 1] : off[d]], pos)
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

    # ------------------------------------------------------------------ top-down (differentiable)
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

    # ------------------------------------------------------------------ node passes in numpy (no autograd)
    def host_subtree_sum(self, x_leaf: np.ndarray) -> np.ndarray:
        """numpy: ``(B, C)`` values in **leaf order** → ``(B, N)`` subtree sums (node-id order), exact.

        The kernels use :attr:`nodes_host` (level order) directly; this node-order
        form is for callers that want node ids.
        """
        lay = self.nodes_host
        return lay.to_node_order(lay.up(x_leaf))

    def host_accumulate_down(self, values: np.ndarray) -> np.ndarray:
        """numpy: ``(B, N)`` node values → ``(B, N)`` sums over each node's ancestors (itself included)."""
        lay = self.nodes_host
        return lay.to_node_order(lay.down(lay.table(values)))

    def host_children_sum(self, values: np.ndarray) -> np.ndarray:
        """numpy: ``(B, N)`` node values → ``(B, N)``: for each node the sum over its children (0 at leaves)."""
        lay = self.nodes_host
        return lay.to_node_order(lay.children_sum(lay.table(values)))

    def children_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Torch (differentiable): ``(B, N)`` node values → the sum over each node's children."""
        out = torch.zeros_like(values)
        return out.index_add(1, self.parent[1:], values[:, 1:])

    def ancestor_indicator(self, node: Any, host: bool) -> Any:
        """``(B, N)``: 1 where node ``u`` is an ancestor of (or is) ``node[b]`` (pre-order ranges)."""
        if host:
            h = self._host
            u: Any = np.arange(self.num_nodes)  # numpy here, torch below
            v: Any = np.asarray(node)[:, None]
            return ((u[None, :] <= v) & (v < h.subtree_end[None, :])).astype(np.float64)
        u = torch.arange(self.num_nodes, device=node.device)
        v = node[:, None]
        return ((u[None, :] <= v) & (v < self.subtree_end[None, :])).to(torch.float64)

    def host_subtree_max(self, x_leaf: np.ndarray) -> np.ndarray:
        """numpy: ``(B, C)`` leaf-order values → ``(B, N)`` maximum over each subtree (node-id order)."""
        lay = self.nodes_host
        return lay.to_node_order(lay.up(x_leaf, np.maximum))


# ------------------------------------------------------------------ per-batch ring layouts
_OFFSETS: dict[tuple[int, int], np.ndarray] = {}


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


def _reduceat_layout(starts: np.ndarray, lengths: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Flat ``reduceat`` indices for segments of rows of length ``c``: ``(index, empty, fix)``.

    ``starts``/``lengths`` (B, S) per row. ``empty`` marks the empty segments
    (reduceat gives them one element: the caller overwrites them); reduceat
    needs indices below ``B·c``, so empty segments at the end of the last row
    are moved back one place, and ``fix`` is the segment that then misses the
    last element (``-1``: none).
    """
    b = starts.shape[0]
    index = np.add(starts, _row_offsets(b, c)).reshape(-1)
    empty = lengths.reshape(-1) == 0
    n = b * c
    fix = -1
    if index.size and index[-1] >= n:
        np.minimum(index, n - 1, out=index)
        k = int(np.flatnonzero(~empty)[-1])
        fix = k if index[k] < n - 1 else -1
    return index, empty, fix


#: from this many classes on, :meth:`Rings.expand_sum` merges the columns' segments before one pass
_EXPAND_SUM_MIN_CLASSES = 2048


class Rings:
    """The ring layout of one batch of target ids (built by :meth:`TreeTensors.rings`).

    Fields are numpy arrays (host kernels) or torch tensors (everywhere else):

    * ``target`` (B,): target ids; ``node`` (B,): their node ids;
    * ``nodes`` (B, R): ring nodes ``r_0 = node, r_1, …`` (padded with the root);
    * ``size`` (B, R): classes per ring (ring 0: the classes under the target);
    * ``lengths``, ``starts`` (B, S): the leaf-order segments (segment ``s`` of ring ``|s - (R-1)|``);
    * ``coarse``: whether any target is an internal node (host kernels only; always True in torch).

    Methods give segment sums and maxima of ``(B, C)`` leaf-order arrays and
    expansions of per-ring or per-segment values back to ``(B, C)``; none is
    differentiable (the tables they expand are constants).
    """

    __slots__ = ("tree", "host", "target", "node", "nodes", "size", "lengths", "starts", "coarse", "_layout", "_ring0")
    # the array fields are numpy arrays when ``host`` is True, torch tensors otherwise
    tree: TreeTensors
    host: bool
    target: Any
    node: Any
    nodes: Any
    size: Any
    lengths: Any
    starts: Any
    coarse: bool
    _layout: tuple[np.ndarray, np.ndarray, int] | None
    _ring0: tuple[np.ndarray, np.ndarray, np.ndarray]  # set on first use (ring0_cells)

    @classmethod
    def build(cls, tree: TreeTensors, target: torch.Tensor, host: bool, coarse: bool | None = None) -> Rings:
        self = object.__new__(cls)
        self.tree = tree
        self.host = bool(host)
        self._layout = None
        C = tree.num_classes
        if self.host:
            h = tree._host
            # numpy here, torch below
            t: Any = target.numpy() if target.dtype == torch.int64 else target.numpy().astype(np.int64)
            self.target = t
            self.node = h.target_node[t]
            self.coarse = (bool((t >= C).any()) if t.size else False) if coarse is None else bool(coarse)
            if not self.coarse:  # the classes' layouts are tabulated: one gather
                rows = h.class_layout[t]
                R = tree.num_rings
                self.nodes, self.size = rows[:, :R], rows[:, R : 2 * R]
                self.starts, self.lengths = rows[:, 2 * R : 4 * R - 1], rows[:, 4 * R - 1 :]
                return self
            cls_: Any = np.where(t < C, t, h.first_class[self.node])  # numpy here, torch below
            self.nodes = _shift_rings(h.ring_nodes[cls_], h.ring_shift[self.node], self.node, np)
            self.size, self.starts, self.lengths = _ring_layout(h.leaf_lo[self.nodes], h.leaf_hi[self.nodes], np)
            return self
        t = target.long()
        node = tree.target_node.index_select(0, t)
        cls_ = torch.where(t < C, t, tree.first_class.index_select(0, node))
        nodes = _shift_rings(tree.ring_nodes.index_select(0, cls_), tree.ring_shift.index_select(0, node), node, torch)
        self.target, self.node, self.nodes, self.coarse = t, node, nodes, True
        self.size, self.starts, self.lengths = _ring_layout(tree.leaf_lo[nodes], tree.leaf_hi[nodes], torch)
        return self

    def take(self, rows: Any) -> Rings:
        """The layout of a subset of the batch's rows (host kernels): ``rows`` an index array."""
        out = object.__new__(Rings)
        out.tree, out.host, out._layout = self.tree, self.host, None
        for name in ("target", "node", "nodes", "size", "lengths", "starts"):
            setattr(out, name, getattr(self, name)[rows])
        out.coarse = bool((out.target >= self.tree.num_classes).any()) if self.coarse else False
        return out

    # ------------------------------------------------------------------ tables on rings
    def gather(self, table: Any) -> Any:
        """``table[r_k]`` for every ring node: a node table ``(N,)`` (numpy or tensor) → ``(B, R)``."""
        if self.host:
            return np.asarray(table)[self.nodes]
        return table[self.nodes]

    def segments(self, ring_values: Any) -> Any:
        """Per-ring values ``(B, R)`` → per-segment values ``(B, S)``."""
        idx = self.tree.ring_of_segment_list
        if self.host:
            return ring_values[:, list(idx)]
        return ring_values.index_select(1, self.tree.ring_of_segment.to(ring_values.device))

    def expand(self, seg_values: Any, dtype: Any = None) -> Any:
        """Per-segment values ``(B, S)`` → ``(B, C)`` in leaf order (a fresh array/tensor)."""
        C = self.tree.num_classes
        b = seg_values.shape[0]
        if self.host:
            v = seg_values if dtype is None else seg_values.astype(dtype, copy=False)
            return np.repeat(v.reshape(-1), self.lengths.reshape(-1)).reshape(b, C)
        if dtype is not None:
            seg_values = seg_values.to(dtype)
        index = torch.repeat_interleave(self.lengths.reshape(-1).to(torch.int32), output_size=b * C)
        return seg_values.reshape(-1).index_select(0, index).view(b, C)

    def expand_rings(self, ring_values: Any, dtype: Any = None) -> Any:
        """Per-ring values ``(B, R)`` → ``(B, C)`` in leaf order: ``out[b, j] = ring_values[b, ring(j)]``."""
        return self.expand(self.segments(ring_values), dtype)

    @staticmethod
    def expand_sum(columns: list[tuple[Rings, Any]], dtype: Any = None) -> np.ndarray:
        """``Σ_c columns[c].rings.expand_rings(columns[c].values)`` in one pass over ``(B, C)`` (host).

        ``columns`` is a list of ``(rings, ring_values (B, R))`` for the same rows. Each column is a
        step function over the leaf positions, constant on its segments; their sum is a step
        function on the union of the segment starts, so it is written once (a sort of the few
        breakpoints per row and one ``repeat``) instead of once per column.
        """
        if len(columns) == 1:
            rings, values = columns[0]
            return rings.expand_rings(values, dtype)
        first = columns[0][0]
        C = first.tree.num_classes
        if C < _EXPAND_SUM_MIN_CLASSES:  # small rows: the few-breakpoint bookkeeping costs more than a pass
            out = first.expand_rings(columns[0][1], dtype)
            for rings, values in columns[1:]:
                out += rings.expand_rings(values, out.dtype)
            return out
        starts: Any  # lists of columns, then their concatenation
        deltas: Any
        starts, deltas = [], []
        for rings, values in columns:
            seg = rings.segments(np.asarray(values, dtype=np.float64))
            d = np.empty_like(seg)
            d[:, 0] = seg[:, 0]
            d[:, 1:] = seg[:, 1:] - seg[:, :-1]
            starts.append(rings.starts)
            deltas.append(d)
        starts = np.concatenate(starts, axis=1)
        deltas = np.concatenate(deltas, axis=1)
        b, n = starts.shape
        key = (starts + (np.arange(b) * (C + 1))[:, None]).reshape(-1)
        order = np.argsort(key, kind="stable")
        starts = starts.reshape(-1)[order].reshape(b, n)
        vals = np.cumsum(deltas.reshape(-1)[order].reshape(b, n), axis=1)
        lengths = np.diff(starts, axis=1, append=C)
        v = vals if dtype is None else vals.astype(dtype)
        return np.repeat(v.reshape(-1), lengths.reshape(-1)).reshape(b, C)

    # ------------------------------------------------------------------ reductions (host kernels)
    def _host_layout(self) -> tuple[np.ndarray, np.ndarray, int]:
        if self._layout is None:
            self._layout = _reduceat_layout(self.starts, self.lengths, self.tree.num_classes)
        return self._layout

    def sum(self, x_leaf: np.ndarray) -> np.ndarray:
        """Segment sums ``(B, S)`` of ``(B, C)`` leaf-order values (numpy); empty segments are 0."""
        index, empty, fix = self._host_layout()
        flat = x_leaf.reshape(-1)
        seg = np.add.reduceat(flat, index)
        if fix >= 0:
            seg[fix] += flat[-1]
        seg[empty] = 0
        return seg.reshape(x_leaf.shape[0], -1)

    def max(self, x_leaf: np.ndarray) -> np.ndarray:
        """Segment maxima ``(B, S)`` (numpy); empty segments are ``-inf``."""
        index, empty, fix = self._host_layout()
        flat = x_leaf.reshape(-1)
        seg = np.maximum.reduceat(flat, index)
        if fix >= 0:
            seg[fix] = max(seg[fix], flat[-1])
        seg[empty] = -np.inf
        return seg.reshape(x_leaf.shape[0], -1)

    def ring_sums(self, seg: np.ndarray) -> np.ndarray:
        """Segment values ``(B, S)`` folded to rings ``(B, R)`` (each ring's two segments added)."""
        R = self.tree.num_rings
        out = seg[:, R - 1 :].copy()
        out[:, 1:] += seg[:, R - 2 :: -1]
        return out

    def logsumexp(self, x_leaf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact log-space masses of the rings, host kernels.

        Returns ``(e, m, ring_lse)``: ``m`` (B, S) the segment maxima (``-inf``
        for empty or all ``-inf`` segments), ``e = exp(x - m_seg)`` (B, C) (a
        fresh array, each element shifted by its segment's maximum, 0 in
        ``-inf`` segments) and ``ring_lse`` (B, R) float64
        ``log Σ_{j ∈ ring k} exp(x_j)`` (``-inf`` for empty rings). No exponent
        overflows, none underflows needlessly.
        """
        m = self.max(x_leaf)
        shift = np.where(np.isfinite(m), m, 0.0).astype(x_leaf.dtype)
        e = self.expand(shift)
        np.subtract(x_leaf, e, out=e)
        np.exp(e, out=e)
        seg = self.sum(e).astype(np.float64)
        with np.errstate(divide="ignore"):
            seg_lse = np.log(seg) + shift
        R = self.tree.num_rings
        ring_lse = seg_lse[:, R - 1 :].copy()
        if R > 1:
            ring_lse[:, 1:] = np.logaddexp(ring_lse[:, 1:], seg_lse[:, R - 2 :: -1])
        return e, m, ring_lse

    def ring0_logsumexp(self, x_leaf: np.ndarray) -> np.ndarray:
        """``log Σ_{j ∈ ring 0} exp(x_j)`` per row (float64, exact), host kernels.

        For a class target it is ``x_t``; for a coarse label a log-sum-exp over
        the classes under it (each row's one contiguous range).
        """
        b, C = x_leaf.shape
        h = self.tree._host
        if not self.coarse:
            return x_leaf[np.arange(b), h.class_position[self.target]].astype(np.float64)
        rows, cols, n = self.ring0_cells()
        v = x_leaf[rows, cols]
        starts = np.cumsum(n) - n
        m = np.maximum.reduceat(v, starts)
        m = np.where(np.isfinite(m), m, 0.0).astype(x_leaf.dtype)
        s = np.add.reduceat(np.exp(v - np.repeat(m, n)), starts).astype(np.float64)
        with np.errstate(divide="ignore"):
            return np.log(s) + m

    def ring0_cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The (row, leaf column) cells of ring 0, row by row, and the ring's size per row (host).

        Ring 0 of a row is the leaf range ``[lo, hi)`` of its target node: one cell for a class, the
        classes under it for a coarse label. O(cells), computed once per layout.
        """
        cells = getattr(self, "_ring0", None)
        if cells is None:
            h = self.tree._host
            lo = h.leaf_lo[self.node]
            n = h.leaf_hi[self.node] - lo  # >= 1: every node has a class under it
            starts = np.cumsum(n) - n
            rows = np.repeat(np.arange(len(n)), n)
            cols = np.repeat(lo - starts, n) + np.arange(int(n.sum()))
            cells = self._ring0 = (rows, cols, n)
        return cells


def _ring_layout(lo: Any, hi: Any, lib: Any) -> tuple[Any, Any, Any]:
    """Ring sizes (B, R) and segment starts and lengths (B, S) from the leaf ranges of the ring nodes."""
    size = hi - lo
    if lib is np:
        size = np.concatenate([size[:, :1], size[:, 1:] - size[:, :-1]], axis=1)
        # breakpoints lo(r_{R-1}) .. lo(r_0), hi(r_0) .. hi(r_{R-1}); segments between them
        br: Any = np.concatenate([lo[:, ::-1], hi], axis=1)  # numpy here, torch below
        return size, br[:, :-1], np.diff(br, axis=1)
    size = torch.cat([size[:, :1], size[:, 1:] - size[:, :-1]], dim=1)
    br = torch.cat([lo.flip(1), hi], dim=1)
    return size, br[:, :-1], br[:, 1:] - br[:, :-1]


def _shift_rings(rows: Any, shift: Any, node: Any, lib: Any) -> Any:
    """Ring nodes of coarse targets from those of their first class: drop the rings at or below the
    node (they are its ring 0), keep the rest, pad with the root; ``r_0`` becomes the node itself."""
    R = rows.shape[1]
    if lib is np:
        k: Any = np.arange(R)[None, :]  # numpy here, torch below
        src: Any = k + shift[:, None]
        out: Any = np.take_along_axis(rows, np.minimum(src, R - 1), axis=1)
        out[src > R - 1] = 0
        out[:, 0] = node
        return out
    k = torch.arange(R, device=rows.device)[None, :]
    src = k + shift[:, None]
    out = torch.gather(rows, 1, src.clamp_max(R - 1))
    out = torch.where(src > R - 1, torch.zeros_like(out), out)
    return torch.cat([node[:, None], out[:, 1:]], dim=1)


def __dir__() -> list[str]:
    return list(__all__)
