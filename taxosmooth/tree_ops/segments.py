"""The three segment primitives every tree operation is made of, as torch operators.

Rows of a ``(B, C)`` tensor are cut into consecutive **segments** given by their
lengths: ``(B, S)``, one layout per row, or ``(S,)``, one layout for every row
(each row's lengths add up to ``C``; a length may be 0):

* :func:`segment_sum` ``(B, C) -> (B, S)``: the sum of each segment (0 when empty);
* :func:`segment_max` ``(B, C) -> (B, S)``: the maximum of each segment (``-inf`` when empty);
* :func:`expand` ``(B, S) -> (B, C)``: each segment's value repeated over the segment.

``segment_sum`` and ``expand`` are linear and each other's adjoint, so each is
the other's backward and every order of derivative exists; ``segment_max`` is
used for shifts only and has no gradient. With a tree's classes in depth-first
order, every subtree is one segment of a row, which is why these three carry
the losses, the heads' node passes and the decisions.

They are :mod:`torch.library` custom operators: ``torch.compile`` keeps them
in its graph (no graph break), ``torch.func`` transforms batch them by folding
the vmapped dimension into the rows, and each device has a kernel:

* CPU: numpy's ``reduceat`` and ``repeat`` (``reduceat`` sums each segment
  pairwise, about 1e-7 relative error at 10⁵ classes in float32; torch's
  ``segment_reduce`` adds sequentially, about 3e-5 there, and runs 3-4 times
  slower on the CPU: the numbers are in ``docs/benchmarks.md``);
* any other device: ``torch.segment_reduce`` (sums accumulated in float64) and
  its backward (the expansion), no host synchronisation.

The two kernels are tested equal.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["segment_sum", "segment_max", "expand", "segment_sum_kernel", "segment_max_kernel", "expand_kernel",
           "host_layout"]


# ------------------------------------------------------------------ CPU kernels (numpy)
def _flat_layout(lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Flat ``reduceat`` indices of the segments of ``B`` rows of ``width``: ``(index, empty, fix)``.

    ``reduceat`` sums ``x[index[i]:index[i+1]]`` (a single element where ``index[i] >=
    index[i+1]``: empty segments are overwritten by the caller) and needs indices below
    ``B·width``: empty segments at the very end point past it and are moved back one place;
    ``fix`` is then the last non-empty segment, whose sum misses the last element (``-1``: none).
    """
    b = lengths.shape[0]
    ends = np.cumsum(lengths, axis=1)
    index = (ends - lengths + np.arange(0, b * width, width, dtype=np.int64)[:, None]).reshape(-1)
    empty = lengths.reshape(-1) == 0
    n = b * width
    fix = -1
    if index.size and index[-1] >= n:
        np.minimum(index, n - 1, out=index)
        full = np.flatnonzero(~empty)
        if full.size:
            k = int(full[-1])
            fix = k if index[k] < n - 1 else -1
    return index, empty, fix


def _shared_layout(lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """As :func:`_flat_layout` for one layout shared by every row (``reduceat`` along axis 1)."""
    ends = np.cumsum(lengths)
    index = ends - lengths
    empty = lengths == 0
    fix = -1
    if index.size and index[-1] >= width:
        np.minimum(index, width - 1, out=index)
        full = np.flatnonzero(~empty)
        if full.size:
            k = int(full[-1])
            fix = k if index[k] < width - 1 else -1
    return index, empty, fix


def _cpu_reduce(x: Tensor, lengths: Tensor, ufunc, fill: float, layout=None) -> Tensor:
    b, width = x.shape
    out_shape = (b, lengths.shape[-1])
    if b == 0 or width == 0 or lengths.shape[-1] == 0:
        return x.new_full(out_shape, fill)
    xn = x.detach().contiguous().numpy()
    if lengths.dim() == 1:
        index, empty, fix = layout if layout is not None else _shared_layout(lengths.numpy().astype(np.int64), width)
        out = ufunc.reduceat(xn, index, axis=1)
        if fix >= 0:
            out[:, fix] = ufunc(out[:, fix], xn[:, -1])
        out[:, empty] = fill
        return torch.from_numpy(out)
    flat = xn.reshape(-1)
    index, empty, fix = layout if layout is not None else _flat_layout(lengths.numpy().astype(np.int64), width)
    out = ufunc.reduceat(flat, index)
    if fix >= 0:
        out[fix] = ufunc(out[fix], flat[-1])
    out[empty] = fill
    return torch.from_numpy(out.reshape(out_shape))


def _cpu_expand(values: Tensor, lengths: Tensor, width: int) -> Tensor:
    b = values.shape[0]
    if b == 0 or width == 0:
        return values.new_zeros((b, width))
    v = values.detach().contiguous().numpy()
    ln = lengths.numpy()
    if ln.ndim == 1:
        return torch.from_numpy(np.repeat(v, ln, axis=1))
    out = np.repeat(v.reshape(-1), ln.reshape(-1))
    return torch.from_numpy(out.reshape(b, width))


def _per_row(lengths: Tensor, b: int) -> Tensor:
    """Per-row lengths ``(B, S)`` for torch's kernels, which take no shared layout."""
    return lengths if lengths.dim() == 2 else lengths.unsqueeze(0).expand(b, -1).contiguous()


def _generic_sum(x: Tensor, lengths: Tensor) -> Tensor:
    if x.shape[0] == 0 or lengths.shape[-1] == 0:
        return x.new_zeros((x.shape[0], lengths.shape[-1]))
    acc = torch.float64 if x.dtype != torch.float64 else x.dtype
    # unsafe: our lengths are valid by construction, and the checks read two numbers on the host (a GPU sync)
    return torch.segment_reduce(x.to(acc), "sum", lengths=_per_row(lengths, x.shape[0]), axis=1,
                                unsafe=True).to(x.dtype)


# ------------------------------------------------------------------ the operators (kernels, no autograd)
@torch.library.custom_op("taxosmooth::segment_sum", mutates_args=())
def _segment_sum_op(x: Tensor, lengths: Tensor) -> Tensor:
    return _generic_sum(x, lengths)


@_segment_sum_op.register_kernel("cpu")
def _segment_sum_cpu(x: Tensor, lengths: Tensor) -> Tensor:
    return _cpu_reduce(x, lengths, np.add, 0.0)


@_segment_sum_op.register_fake
def _segment_sum_fake(x: Tensor, lengths: Tensor) -> Tensor:
    return x.new_empty((x.shape[0], lengths.shape[-1]))


@torch.library.custom_op("taxosmooth::segment_max", mutates_args=())
def _segment_max_op(x: Tensor, lengths: Tensor) -> Tensor:
    return _generic_max(x, lengths)


def _generic_max(x: Tensor, lengths: Tensor) -> Tensor:
    b = x.shape[0]
    if b == 0 or lengths.shape[-1] == 0:
        return x.new_full((b, lengths.shape[-1]), float("-inf"))
    per_row = _per_row(lengths, b)
    out = torch.segment_reduce(x, "max", lengths=per_row, axis=1, unsafe=True)
    return out.masked_fill(per_row == 0, float("-inf"))


def _generic_expand(values: Tensor, lengths: Tensor, width: int) -> Tensor:
    b = values.shape[0]
    if b == 0 or width == 0 or lengths.shape[-1] == 0:
        return values.new_zeros((b, width))
    like = values.new_empty((b, width))
    return torch.ops.aten._segment_reduce_backward(values.contiguous(), values, like, "sum",
                                                   lengths=_per_row(lengths, b), axis=1)


@_segment_max_op.register_kernel("cpu")
def _segment_max_cpu(x: Tensor, lengths: Tensor) -> Tensor:
    return _cpu_reduce(x, lengths, np.maximum, float("-inf"))


@_segment_max_op.register_fake
def _segment_max_fake(x: Tensor, lengths: Tensor) -> Tensor:
    return x.new_empty((x.shape[0], lengths.shape[-1]))


@torch.library.custom_op("taxosmooth::expand", mutates_args=())
def _expand_op(values: Tensor, lengths: Tensor, width: int) -> Tensor:
    return _generic_expand(values, lengths, width)


@_expand_op.register_kernel("cpu")
def _expand_cpu(values: Tensor, lengths: Tensor, width: int) -> Tensor:
    return _cpu_expand(values, lengths, width)


@_expand_op.register_fake
def _expand_fake(values: Tensor, lengths: Tensor, width: int) -> Tensor:
    return values.new_empty((values.shape[0], width))


# ------------------------------------------------------------------ autograd and torch.func
def _fold(x: Tensor, x_dim: int | None, lengths: Tensor, lengths_dim: int | None, v: int):
    """Inputs under ``vmap`` as one bigger batch: the vmapped dimension (of size ``v``) folded into the rows.

    Returns ``(x (v·B, ...), lengths, B)``; a layout shared by all rows and slices stays shared.
    """
    x = x.movedim(x_dim, 0) if x_dim is not None else x.unsqueeze(0).expand(v, *x.shape)
    b = x.shape[1]
    x = x.reshape(v * b, *x.shape[2:]).contiguous()
    if lengths_dim is None:
        if lengths.dim() == 1:
            return x, lengths, b
        lengths = lengths.unsqueeze(0).expand(v, *lengths.shape)
    else:
        lengths = lengths.movedim(lengths_dim, 0)
        if lengths.dim() == 2:  # one shared layout per slice
            lengths = lengths.unsqueeze(1).expand(v, b, lengths.shape[-1])
    return x, lengths.reshape(v * b, lengths.shape[-1]).contiguous(), b


class _SegmentSum(torch.autograd.Function):
    """``segment_sum``; its backward is ``expand`` (and the other way round): every derivative order exists."""

    @staticmethod
    def forward(x, lengths):
        return segment_sum_kernel(x, lengths)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, lengths = inputs
        ctx.save_for_backward(lengths)
        ctx.save_for_forward(lengths)
        ctx.width = x.shape[1]

    @staticmethod
    def backward(ctx, grad):
        (lengths,) = ctx.saved_tensors
        return expand(grad, lengths, ctx.width), None


    @staticmethod
    def vmap(info, in_dims, x, lengths):
        x, lengths, b = _fold(x, in_dims[0], lengths, in_dims[1], info.batch_size)
        return segment_sum(x, lengths).reshape(info.batch_size, b, -1), 0


class _Expand(torch.autograd.Function):
    @staticmethod
    def forward(values, lengths, width):
        return expand_kernel(values, lengths, width)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[1])
        ctx.save_for_forward(inputs[1])
        ctx.width = inputs[2]

    @staticmethod
    def backward(ctx, grad):
        (lengths,) = ctx.saved_tensors
        return segment_sum(grad.contiguous(), lengths), None, None


    @staticmethod
    def vmap(info, in_dims, values, lengths, width):
        values, lengths, b = _fold(values, in_dims[0], lengths, in_dims[1], info.batch_size)
        return expand(values, lengths, width).reshape(info.batch_size, b, width), 0


class _SegmentMax(torch.autograd.Function):
    @staticmethod
    def forward(x, lengths):
        return segment_max_kernel(x, lengths)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output)

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - the output is marked non-differentiable
        return None, None

    @staticmethod
    def vmap(info, in_dims, x, lengths):
        x, lengths, b = _fold(x, in_dims[0], lengths, in_dims[1], info.batch_size)
        return _SegmentMax.apply(x, lengths).reshape(info.batch_size, b, -1), 0


# Dynamo traces no autograd.Function that defines jvp, and forward-mode AD (torch.func.jvp, jacfwd, hessian)
# needs one: eager code gets these twins, compiled code the ones above.
class _SegmentSumJvp(_SegmentSum):
    @staticmethod
    def jvp(ctx, x_tangent, lengths_tangent):
        (lengths,) = ctx.saved_tensors
        return segment_sum(x_tangent, lengths)


class _ExpandJvp(_Expand):
    @staticmethod
    def jvp(ctx, values_tangent, lengths_tangent, width_tangent):
        (lengths,) = ctx.saved_tensors
        return expand(values_tangent, lengths, ctx.width)


# ------------------------------------------------------------------ the public face
def segment_sum(x: Tensor, lengths: Tensor) -> Tensor:
    """``out[b, s] = Σ x[b, j]`` over segment ``s`` of row ``b`` (0 for an empty segment).

    ``x`` ``(B, C)`` floating point; ``lengths`` int64 ``(B, S)`` (a layout per row) or ``(S,)`` (one
    for all rows), each row's adding up to ``C``.
    Differentiable to any order (the backward is :func:`expand`), in reverse and forward mode.
    """
    if torch.compiler.is_compiling():
        return _SegmentSum.apply(x, lengths)
    return _SegmentSumJvp.apply(x, lengths)


def segment_max(x: Tensor, lengths: Tensor) -> Tensor:
    """``out[b, s] = max x[b, j]`` over segment ``s`` of row ``b`` (``-inf`` for an empty segment); no gradient."""
    if torch.compiler.is_compiling():
        return _segment_max_op(x.detach(), lengths)
    return _SegmentMax.apply(x, lengths)


def expand(values: Tensor, lengths: Tensor, width: int) -> Tensor:
    """``out[b, j] = values[b, s]`` for every ``j`` in segment ``s`` of row ``b``: ``(B, S) -> (B, width)``.

    Differentiable to any order (the backward is :func:`segment_sum`), in reverse and forward mode.
    """
    if torch.compiler.is_compiling():
        return _Expand.apply(values, lengths, width)
    return _ExpandJvp.apply(values, lengths, width)


# ------------------------------------------------------------------ the kernels, without autograd
def _direct(x: Tensor) -> bool:
    # an eager CPU call goes straight to the numpy kernel (the dispatcher's round trip costs more than the
    # kernel at a thousand classes); compiling or tracing records the operator itself
    return x.device.type == "cpu" and not torch.compiler.is_compiling() and not torch.jit.is_tracing()


def host_layout(lengths: Tensor, width: int):
    """The numpy kernels' view of a layout, computed once for several calls on the same segments (``None``
    where the numpy kernels do not run: other devices, compiling, tracing)."""
    if not _direct(lengths):
        return None
    ln = lengths.numpy().astype(np.int64, copy=False)
    return _shared_layout(ln, width) if ln.ndim == 1 else _flat_layout(ln, width)


def segment_sum_kernel(x: Tensor, lengths: Tensor, layout=None) -> Tensor:
    """:func:`segment_sum` without autograd, for code that writes its own gradient (the fused losses);
    ``layout``: :func:`host_layout` of ``lengths``, if the caller has it."""
    return _cpu_reduce(x, lengths, np.add, 0.0, layout) if _direct(x) else _segment_sum_op(x, lengths)


def segment_max_kernel(x: Tensor, lengths: Tensor, layout=None) -> Tensor:
    """:func:`segment_max` without autograd."""
    if _direct(x):
        return _cpu_reduce(x, lengths, np.maximum, float("-inf"), layout)
    return _segment_max_op(x, lengths)


def expand_kernel(values: Tensor, lengths: Tensor, width: int) -> Tensor:
    """:func:`expand` without autograd."""
    return _cpu_expand(values, lengths, width) if _direct(values) else _expand_op(values, lengths, width)
