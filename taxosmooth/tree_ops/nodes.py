"""Passes over every node of the tree, level by level: subtree sums, sums over ancestors, subtree log-masses.

The passes work on **node-major, level-ordered** ``(N, B)`` tensors: one row per node, nodes by depth, each
level's internal nodes first (the parents of the level below: one block of rows), then its leaves, the batch
along the row. A level's subtree sums are then one ``index_add`` of the level below into it (rows of
``B`` contiguous numbers), and its sums over ancestors one ``index_select`` of the level above. The two linear
passes are each other's adjoint:

* ``up(y)(u) = Σ_{v in the subtree of u} y(v)`` (bottom-up),
* ``down(y)(u) = Σ_{v ancestor of u, u included} y(v)`` (top-down),

so each is the other's backward and every derivative order exists. :func:`subtree_logsumexp` combines each
node's children in log space, shifted by their own maximum (no underflow, whatever the spread of the
logits), and writes its gradient out (the children's softmax weights, top-down); a second derivative
differentiates its formula. Every pass adds children to parents: no prefix sums, no cancellation.

A loss moves its ``(B, C)`` rows into this layout once (:func:`place`), runs its passes there and reads the
classes back once (:func:`classes_of`). Each pass is a few torch operations per level, in place on one
buffer, with no autograd graph of its own: O(batch × nodes), on any device, traced whole by
``torch.compile``. Inside ``torch.func`` transforms the same passes run out of place (the formula).
"""

from __future__ import annotations

import numpy as np
import torch

from taxosmooth.tree_ops.tracing import is_functorch_wrapped

__all__ = ["place", "classes_of", "up", "down", "subtree_logsumexp", "column"]


def _levels(offsets: tuple[int, ...]) -> list[tuple[int, int]]:
    return [(offsets[d], offsets[d + 1]) for d in range(len(offsets) - 1)]


def _transposed(x: torch.Tensor) -> torch.Tensor:
    """``x.t()`` made contiguous; on eager CPU tensors outside autograd by numpy, whose blocked transposition
    runs about twice as fast as torch's copy here."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not torch.jit.is_tracing() \
            and not (x.requires_grad and torch.is_grad_enabled()) and not is_functorch_wrapped(x):
        return torch.from_numpy(np.ascontiguousarray(x.detach().numpy().T))
    return x.t().contiguous()


def place(tree, x: torch.Tensor, fill: float = 0.0, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Class values ``(B, C)`` (class order), times a per-class ``scale`` ``(C,)`` if given → node-major level
    order ``(N, B)``, the internal nodes ``fill``."""
    if torch.compiler.is_compiling() and not is_functorch_wrapped(x):
        if scale is not None:
            x = x * scale.to(x.dtype)
        return _place_op(x, tree.class_level_pos, tree.num_nodes, fill)
    if scale is None:
        xt = _transposed(x)
    elif is_functorch_wrapped(x):
        xt = (x * scale.to(x.dtype)).t().contiguous()
    else:  # the scaling and the transposition in one pass
        xt = torch.mul(x.t(), scale.to(x.dtype)[:, None], out=x.new_empty((x.shape[1], x.shape[0])))
    out = x.new_full((tree.num_nodes, x.shape[0]), fill)
    if is_functorch_wrapped(x):  # torch.func cannot write a batched tensor into a plain one
        return out.index_copy(0, tree.class_level_pos, xt)
    return out.index_copy_(0, tree.class_level_pos, xt)  # into the fresh buffer: no copy of all N rows


def classes_of(tree, lev: torch.Tensor) -> torch.Tensor:
    """Node-major level-ordered values ``(N, B)`` → the classes' values ``(B, C)``, class order."""
    if torch.compiler.is_compiling() and not is_functorch_wrapped(lev):
        return _classes_op(lev, tree.class_level_pos)
    return _transposed(lev.index_select(0, tree.class_level_pos))


# Compiled code moves rows between the two layouts by operators: fused into its neighbours by inductor, the
# transposition would be recomputed per element (several times slower than the copy itself).
@torch.library.custom_op("taxosmooth::place", mutates_args=())
def _place_op(x: torch.Tensor, class_level_pos: torch.Tensor, num_nodes: int, fill: float) -> torch.Tensor:
    return x.new_full((num_nodes, x.shape[0]), fill).index_copy_(0, class_level_pos, x.t().contiguous())


@torch.library.custom_op("taxosmooth::classes_of", mutates_args=())
def _classes_op(lev: torch.Tensor, class_level_pos: torch.Tensor) -> torch.Tensor:
    return lev.index_select(0, class_level_pos).t().contiguous()


@_place_op.register_fake
def _place_fake(x, class_level_pos, num_nodes, fill):
    return x.new_empty((num_nodes, x.shape[0]))


@_classes_op.register_fake
def _classes_fake(lev, class_level_pos):
    return lev.new_empty((lev.shape[1], class_level_pos.shape[0]))


def _place_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])
    ctx.num_nodes = output.shape[0] if output.dim() else 0


def _place_backward(ctx, grad):
    return _classes_op(grad.contiguous(), ctx.saved_tensors[0]), None, None, None


def _classes_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])
    ctx.num_nodes = inputs[0].shape[0]


def _classes_backward(ctx, grad):
    return _place_op(grad.contiguous(), ctx.saved_tensors[0], ctx.num_nodes, 0.0), None


_place_op.register_autograd(_place_backward, setup_context=_place_context)
_classes_op.register_autograd(_classes_backward, setup_context=_classes_context)


def column(tree, node_values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A per-node table ``(N,)`` (node-id order) as a level-ordered column ``(N, 1)`` that scales ``(N, B)``."""
    return node_values.to(dtype).index_select(0, tree.level_order).unsqueeze(1)


# ------------------------------------------------------------------ the linear passes
def _up_levels(lev: torch.Tensor, parent: torch.Tensor, offsets: tuple[int, ...]) -> torch.Tensor:
    """In place: each node adds its children's totals, deepest level first (``parent``: each node's parent's
    position in the level above)."""
    levels = _levels(offsets)
    for d in range(len(levels) - 1, 0, -1):
        (a, b), (c, e) = levels[d - 1], levels[d]
        lev[a:b].index_add_(0, parent[c:e], lev[c:e])
    return lev


def _down_levels(lev: torch.Tensor, parent: torch.Tensor, offsets: tuple[int, ...]) -> torch.Tensor:
    """In place: each node adds its parent's running sum, top level first."""
    levels = _levels(offsets)
    for d in range(1, len(levels)):
        (a, b), (c, e) = levels[d - 1], levels[d]
        lev[c:e] += lev[a:b].index_select(0, parent[c:e])
    return lev


class _Up(torch.autograd.Function):
    """``up`` on node-major level-ordered values; the backward is ``down``."""

    @staticmethod
    def forward(ctx, y, parent, offsets):
        ctx.save_for_backward(parent)
        ctx.offsets = offsets
        return _up_levels(y.clone(), parent, offsets)

    @staticmethod
    def backward(ctx, grad):
        (parent,) = ctx.saved_tensors
        return _Down.apply(grad, parent, ctx.offsets), None, None


class _Down(torch.autograd.Function):
    """``down`` on node-major level-ordered values; the backward is ``up``."""

    @staticmethod
    def forward(ctx, y, parent, offsets):
        ctx.save_for_backward(parent)
        ctx.offsets = offsets
        return _down_levels(y.clone(), parent, offsets)

    @staticmethod
    def backward(ctx, grad):
        (parent,) = ctx.saved_tensors
        return _Up.apply(grad, parent, ctx.offsets), None, None


# Compiled code calls the passes as operators: inductor would turn each level's index_add into a scatter loop
# (several times slower than the eager kernels on the CPU), so they stay opaque, each with its adjoint as backward.
@torch.library.custom_op("taxosmooth::up_levels", mutates_args=())
def _up_op(lev: torch.Tensor, parent: torch.Tensor, offsets: list[int]) -> torch.Tensor:
    return _up_levels(lev.clone(), parent, tuple(offsets))


@torch.library.custom_op("taxosmooth::down_levels", mutates_args=())
def _down_op(lev: torch.Tensor, parent: torch.Tensor, offsets: list[int]) -> torch.Tensor:
    return _down_levels(lev.clone(), parent, tuple(offsets))


@_up_op.register_fake
def _up_fake(lev, parent, offsets):
    return torch.empty_like(lev)


@_down_op.register_fake
def _down_fake(lev, parent, offsets):
    return torch.empty_like(lev)


def _pass_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])
    ctx.offsets = inputs[2]


def _up_backward(ctx, grad):
    return _down_op(grad.contiguous(), ctx.saved_tensors[0], ctx.offsets), None, None


def _down_backward(ctx, grad):
    return _up_op(grad.contiguous(), ctx.saved_tensors[0], ctx.offsets), None, None


_up_op.register_autograd(_up_backward, setup_context=_pass_context)
_down_op.register_autograd(_down_backward, setup_context=_pass_context)


def _formula_up(tree, lev: torch.Tensor) -> torch.Tensor:
    levels = _levels(tree.level_offsets)
    parts = [lev[a:b] for a, b in levels]
    for d in range(len(levels) - 1, 0, -1):
        c, e = levels[d]
        parts[d - 1] = parts[d - 1].index_add(0, tree.level_parent_local[c:e], parts[d])
    return torch.cat(parts, dim=0)


def _formula_down(tree, lev: torch.Tensor) -> torch.Tensor:
    levels = _levels(tree.level_offsets)
    parts = [lev[a:b] for a, b in levels]
    for d in range(1, len(levels)):
        c, e = levels[d]
        parts[d] = parts[d] + parts[d - 1].index_select(0, tree.level_parent_local[c:e])
    return torch.cat(parts, dim=0)


def _no_graph(lev: torch.Tensor) -> bool:
    return not (lev.requires_grad and torch.is_grad_enabled())


def up(tree, lev: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
    """``Σ_{v in the subtree of u} y(v)`` for every node ``u``: node-major level-ordered ``(N, B)`` → ``(N, B)``.

    ``overwrite``: ``lev`` is a temporary of the caller's, which the pass may overwrite when no gradient flows.
    """
    if is_functorch_wrapped(lev):  # torch.func batches and differentiates the formula
        return _formula_up(tree, lev)
    if torch.compiler.is_compiling():
        return _up_op(lev, tree.level_parent_local, list(tree.level_offsets))
    if overwrite and _no_graph(lev):
        return _up_levels(lev, tree.level_parent_local, tree.level_offsets)
    return _Up.apply(lev, tree.level_parent_local, tree.level_offsets)


def down(tree, lev: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
    """``Σ_{v ancestor of u, u included} y(v)`` for every node ``u``: node-major level-ordered ``(N, B)`` → ``(N, B)``."""
    if is_functorch_wrapped(lev):
        return _formula_down(tree, lev)
    if torch.compiler.is_compiling():
        return _down_op(lev, tree.level_parent_local, list(tree.level_offsets))
    if overwrite and _no_graph(lev):
        return _down_levels(lev, tree.level_parent_local, tree.level_offsets)
    return _Down.apply(lev, tree.level_parent_local, tree.level_offsets)


# ------------------------------------------------------------------ log space
def _lse_levels(lev: torch.Tensor, parent: torch.Tensor, offsets: tuple[int, ...], inner: tuple[int, ...]):
    """In place on a buffer holding the classes' values: each internal node becomes the log-sum-exp of its
    children, every child shifted by the children's maximum. ``inner[d]``: level ``d`` starts with that many
    internal nodes (every one has a child; the leaves after them keep their values)."""
    levels = _levels(offsets)
    for d in range(len(levels) - 1, 0, -1):
        (a, _), (c, e) = levels[d - 1], levels[d]
        below, idx = lev[c:e], parent[c:e]
        parents = lev[a:a + inner[d - 1]]
        m = torch.empty_like(parents).scatter_reduce_(0, idx[:, None].expand(below.shape), below, "amax",
                                                      include_self=False)
        m.nan_to_num_(nan=float("nan"), posinf=float("inf"), neginf=0.0)  # no child with mass: any finite shift
        ex = (below - m.index_select(0, idx)).exp_()
        parents.zero_().index_add_(0, idx, ex).log_().add_(m)  # log 0 = -inf: classes all -inf
    return lev


def _formula_lse(tree, x: torch.Tensor) -> torch.Tensor:
    lev = place(tree, x, float("-inf"))
    levels = _levels(tree.level_offsets)
    parts = [lev[a:b] for a, b in levels]
    for d in range(len(levels) - 1, 0, -1):
        (a, b), (c, e) = levels[d - 1], levels[d]
        idx, below = tree.level_parent_local[c:e], parts[d]
        index = idx[:, None].expand(below.shape)
        m = torch.full_like(parts[d - 1], float("-inf")).scatter_reduce(0, index, below.detach(), "amax")
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        s = torch.zeros_like(m).index_add(0, idx, torch.exp(below - m.index_select(0, idx)))
        empty = s == 0
        combined = (torch.log(torch.where(empty, torch.ones_like(s), s)) + m).masked_fill(empty, float("-inf"))
        parts[d - 1] = torch.where(tree.level_is_leaf[a:b, None], parts[d - 1], combined)
    return torch.cat(parts, dim=0)


class _LevelIndex:
    """The index tensors and sizes the formulas read (``is_leaf``: for :func:`_formula_lse` only), for a double
    backward inside a fused function."""

    def __init__(self, class_level_pos, parent, is_leaf, offsets):
        self.num_nodes, self.class_level_pos, self.level_parent_local = offsets[-1], class_level_pos, parent
        self.level_is_leaf, self.level_offsets = is_leaf, offsets


class _SubtreeLSE(torch.autograd.Function):
    """Log-masses of every subtree (node-major level order), the gradient written out: ``∂V_u/∂V_c =
    exp(V_c - V_u)`` for a child ``c``, carried top-down level by level (every exponent ``<= 0``); a second
    derivative differentiates the formula."""

    @staticmethod
    def forward(ctx, x, class_level_pos, parent, is_leaf, offsets, inner):
        lev = place(_LevelIndex(class_level_pos, parent, is_leaf, offsets), x, float("-inf"))
        lev = _lse_levels(lev, parent, offsets, inner)
        ctx.save_for_backward(x, lev, class_level_pos, parent, is_leaf)
        ctx.offsets = offsets
        return lev

    @staticmethod
    def backward(ctx, grad):
        x, lev, class_level_pos, parent, is_leaf = ctx.saved_tensors
        offsets = ctx.offsets
        none = (None,) * 5
        if torch.is_grad_enabled():  # a double backward: differentiate the formula
            with torch.enable_grad():
                out = _formula_lse(_LevelIndex(class_level_pos, parent, is_leaf, offsets), x)
                (gx,) = torch.autograd.grad(out, x, grad, create_graph=True)
            return (gx,) + none
        return (_lse_gradient(grad, lev, class_level_pos, parent, offsets),) + none


def _lse_gradient(grad, lev, class_level_pos, parent, offsets, own: bool = False) -> torch.Tensor:
    """The gradient of the subtree log-masses ``lev`` with respect to the classes ``(B, C)`` (a transposed view),
    top-down level by level: each child adds ``exp(V_c - V_u)`` times its parent's (``own``: ``grad`` is the
    caller's buffer, overwritten)."""
    g = grad if own else grad.clone()
    levels = _levels(offsets)
    for d in range(1, len(levels)):
        (a, b), (c, e) = levels[d - 1], levels[d]
        idx = parent[c:e]
        w = (lev[c:e] - lev[a:b].index_select(0, idx)).exp_()  # exp(V_c - V_u) <= 1 (0: a child without mass)
        g[c:e] += w.mul_(g[a:b].index_select(0, idx)).nan_to_num_(nan=0.0)
    return g.index_select(0, class_level_pos).t()


# the same under a compiler: operators, the passes in their eager kernels (see _up_op)
@torch.library.custom_op("taxosmooth::subtree_logsumexp", mutates_args=())
def _lse_op(x: torch.Tensor, class_level_pos: torch.Tensor, parent: torch.Tensor, is_leaf: torch.Tensor,
            offsets: list[int], inner: list[int]) -> torch.Tensor:
    lev = x.new_full((is_leaf.shape[0], x.shape[0]), float("-inf")).index_copy_(0, class_level_pos, x.t().contiguous())
    return _lse_levels(lev, parent, tuple(offsets), tuple(inner))


@torch.library.custom_op("taxosmooth::subtree_logsumexp_backward", mutates_args=())
def _lse_backward_op(grad: torch.Tensor, lev: torch.Tensor, class_level_pos: torch.Tensor, parent: torch.Tensor,
                     offsets: list[int]) -> torch.Tensor:
    return _lse_gradient(grad, lev, class_level_pos, parent, tuple(offsets)).contiguous()


@_lse_op.register_fake
def _lse_fake(x, class_level_pos, parent, is_leaf, offsets, inner):
    return x.new_empty((is_leaf.shape[0], x.shape[0]))


@_lse_backward_op.register_fake
def _lse_backward_fake(grad, lev, class_level_pos, parent, offsets):
    return grad.new_empty((grad.shape[1], class_level_pos.shape[0]))


def _lse_context(ctx, inputs, output):
    ctx.save_for_backward(output, inputs[1], inputs[2])
    ctx.offsets = inputs[4]


def _lse_op_backward(ctx, grad):
    lev, class_level_pos, parent = ctx.saved_tensors
    return (_lse_backward_op(grad.contiguous(), lev, class_level_pos, parent, ctx.offsets),) + (None,) * 5


_lse_op.register_autograd(_lse_op_backward, setup_context=_lse_context)


def subtree_logsumexp(tree, x: torch.Tensor) -> torch.Tensor:
    """``log Σ_{classes j under u} exp(x_j)`` for every node ``u``: ``(B, C)`` class order → ``(N, B)`` node-major
    level order; ``-inf`` for a subtree whose classes are all ``-inf``."""
    if is_functorch_wrapped(x):
        return _formula_lse(tree, x)
    if torch.compiler.is_compiling():
        return _lse_op(x, tree.class_level_pos, tree.level_parent_local, tree.level_is_leaf,
                       list(tree.level_offsets), list(tree.level_inner))
    return _SubtreeLSE.apply(x, tree.class_level_pos, tree.level_parent_local, tree.level_is_leaf,
                             tree.level_offsets, tree.level_inner)
