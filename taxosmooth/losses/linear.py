r"""A loss of a linear classifier's logits, computed in chunks of rows: the ``(N, C)`` logits never exist at once.

.. math::

    L = \operatorname{reduce}_i\; \ell\bigl(h_i W^\top + b,\; t_i\bigr)

for any loss ``ℓ`` of :mod:`taxosmooth.losses` (and :class:`torch.nn.CrossEntropyLoss`): with a million
classes the logits of a batch of 256 are 1 GB in float32, their gradient another, and a loss's intermediates a
few more, while ``W`` itself is 256 MB at a hidden size of 64. :func:`linear_loss` takes the rows ``r`` at a
time: a chunk's logits ``Z_c = H_c W^\top + b`` ``(r, C)``, the loss summed over the chunk, and — while the
chunk is alive — its gradient ``G_c = ∂ℓ/∂Z_c`` from the loss's own backward, folded into

.. math::

    \frac{\partial L}{\partial H_c} = G_c W, \qquad
    \frac{\partial L}{\partial W} \mathrel{+}= G_c^\top H_c, \qquad
    \frac{\partial L}{\partial b} \mathrel{+}= \mathbf 1^\top G_c.

With ``reduction="mean"`` the sum is divided once by the batch's denominator (``F.cross_entropy``'s rule:
``Σ weight[t_i]`` over the counted rows, their number without class weights, the number of rows for probability
targets; a coarse label counts its node's mean class weight), so the value equals the loss of the materialised
logits. The gradients of ``"mean"`` and ``"sum"`` are computed during the forward pass and only scaled by the
incoming gradient in the backward pass (no second pass over the classes); ``"none"`` recomputes each chunk in the
backward pass, with its rows' incoming gradients. Peak memory: ``W``, its gradient and one chunk's logits, their
gradient and the loss's intermediates (by default 64 MiB of logits, or ``min(H, 128)`` rows if more: see
:func:`auto_chunk_size`) instead of ``N × C``.

Rows are enough: a hierarchical loss normalises over the whole class row (its log-sum-exp and the subtree sums
of the softmax), so each chunk holds whole rows. Class-sharded training (``process_group``) splits the classes
across ranks instead: each rank holds its weight rows ``(C_rank, H)`` and the loss meets the other ranks inside
each chunk.

References: the fused linear cross entropy of Liger-Kernel (Hsu et al., "Liger Kernel: Efficient Triton Kernels
for LLM Training", 2024), which computes the chunk's gradient in the forward pass as here, and Apple's Cut
Cross-Entropy (Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models", ICLR 2025), which also
never materialises the logits (it chunks classes too, which plain cross entropy allows; a hierarchical loss's
row normalisation makes row chunks the exact choice here).
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from taxosmooth._tensor_checks import compute_dtype
from taxosmooth.losses._frame import mean_denominator, no_autocast
from taxosmooth.losses._inputs import REDUCTIONS

__all__ = ["linear_loss", "LinearLoss", "auto_chunk_size", "CHUNK_BYTES", "MIN_CHUNK_ROWS"]

#: the automatic chunk: as many rows as keep one chunk's logits (in the loss's compute dtype) under this many bytes,
#: but at least ``min(H, MIN_CHUNK_ROWS)`` rows (:func:`auto_chunk_size`)
CHUNK_BYTES = 64 * 2**20
MIN_CHUNK_ROWS = 128


def auto_chunk_size(num_classes: int, hidden_size: int, dtype: torch.dtype = torch.float32) -> int:
    """The rows of a chunk when ``chunk_size=None``: ``max(CHUNK_BYTES // (C · itemsize), min(H, 128))``.

    The memory budget alone would make chunks thin at many classes (16 rows at a million float32 classes), and
    every chunk passes over ``weight`` twice (its logits, the hidden gradient) and over the weight gradient
    once, ``(C, H)`` each, while its logits take about ten passes of ``(r, C)``: with ``r >= H`` rows the
    weight's passes cost no more than the logits' (at C = 10⁶, H = 64 on a CPU, 16-row chunks took 1.5x the
    time of 64-row chunks). A chunk's logits are then at most the size of ``weight`` itself.
    """
    per_row = max(1, int(num_classes) * torch.empty((), dtype=dtype).element_size())
    return max(1, CHUNK_BYTES // per_row, min(int(hidden_size), MIN_CHUNK_ROWS))


_DOUBLE_BACKWARD = (b"linear_loss: double backward is not supported (its gradients are computed during the "
                    b"forward pass, chunk by chunk); materialise the logits, loss(F.linear(hidden, weight, bias), "
                    b"target), to differentiate twice")


# ----------------------------------------------------------------------------- the plan of one call
@dataclass
class _Job:
    """What the chunk loop needs: the loss with the reduction a chunk is computed in (``"sum"`` or ``"none"``)."""

    loss: Any
    reduction: str  # the user's: "mean", "sum" or "none"
    chunk_reduction: str  # the chunks': "sum" or "none"
    rows: int  # rows per chunk
    out_shape: tuple  # the rows' shape ("none")
    denominator: Any  # (flat target) -> float64 0-d tensor, for "mean"
    group: Any  # process group: the hidden gradient is summed over it


def _chunks(m: int, rows: int):
    for a in range(0, m, rows):
        yield a, min(a + rows, m)


def _leaf(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A chunk's logits in the input's dtype, as the loss sees them (float16 / bfloat16: in float32, as every
    loss of this library computes them), a fresh leaf."""
    z = F.linear(hidden, weight, bias)
    dtype = compute_dtype(z.dtype)
    return z if z.dtype == dtype else z.to(dtype)


def _chunk_rows(job: _Job, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    out = job.loss(z, t)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"linear_loss: the loss returned {type(out).__name__}, not a tensor")
    if job.chunk_reduction == "none" and tuple(out.shape) != (z.shape[0],):
        raise ValueError(f"linear_loss: with reduction='none' the loss must return one value per row, got shape "
                         f"{tuple(out.shape)} for {z.shape[0]} rows")
    if job.chunk_reduction != "none" and out.dim() != 0:
        raise ValueError(f"linear_loss: with reduction='sum' the loss must return a scalar, got shape "
                         f"{tuple(out.shape)}")
    return out


def _all_reduce(x: torch.Tensor, group) -> None:
    import torch.distributed as dist

    dist.all_reduce(x, group=group)


def _loss_only(job: _Job, hidden, weight, bias, target) -> torch.Tensor:
    """No gradient wanted: the chunks' losses alone."""
    parts, total, dtype = [], None, None
    for a, b in _chunks(hidden.shape[0], job.rows):
        out = _chunk_rows(job, _leaf(hidden[a:b], weight, bias), target[a:b])
        dtype = out.dtype
        if job.reduction == "none":
            parts.append(out)
        else:
            s = out.to(torch.float64)
            total = s if total is None else total + s
    denom = job.denominator(target) if job.reduction == "mean" else None
    return _finish(job, parts, total, dtype, hidden, weight, denom)


def _finish(job: _Job, parts, total, dtype, hidden, weight, denom) -> torch.Tensor:
    if dtype is None:  # no rows
        dtype = compute_dtype(torch.promote_types(hidden.dtype, weight.dtype))
    if job.reduction == "none":
        out = torch.cat(parts) if parts else hidden.new_zeros((0,), dtype=dtype)
        return out.reshape(job.out_shape)
    if total is None:
        total = torch.zeros((), dtype=torch.float64, device=hidden.device)
    if denom is not None:
        total = total / denom  # nothing counted: 0 / 0 = nan, as in cross_entropy
    return total.to(dtype)


class _LinearLoss(torch.autograd.Function):
    """The chunked loss and its gradients for ``hidden`` ``(M, H)``, ``weight`` ``(C, H)``, ``bias`` ``(C,)``.

    ``"mean"`` / ``"sum"``: the gradients are computed in forward and kept on ``ctx`` (not saved tensors: they are
    scaled in place by the incoming gradient and handed out, so no second copy of ``weight``'s gradient exists);
    ``"none"``: the inputs are saved and each chunk is computed again in backward.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, job: _Job):
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2])
        ctx.job, ctx.need = job, need
        if job.reduction == "none":  # the rows' incoming gradients are not known yet: recompute in backward
            ctx.save_for_backward(hidden, weight, bias, target)
            return _loss_only(job, hidden, weight, bias, target)
        grads, total, dtype = _chunk_grads(job, hidden, weight, bias, target, need)
        denom = job.denominator(target) if job.reduction == "mean" else None
        value = _finish(job, [], total, dtype, hidden, weight, denom)
        if denom is not None:  # nothing counted: the gradient is 0, as in cross_entropy
            grads.append(torch.where(denom == 0, torch.zeros_like(denom), 1.0 / denom))
        ctx.grads = grads
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return value

    @staticmethod
    def backward(ctx, grad):
        gh, gw, gb = _grads(ctx, grad)
        return gh, gw, gb, None, None


def _chunk_grads(job: _Job, hidden, weight, bias, target, need, upstream=None):
    """The chunk loop with gradients: ``([grad hidden, grad weight, grad bias], summed loss, loss dtype)``.

    ``upstream`` ``(M,)``: the rows' incoming gradients (``"none"``); else each chunk's summed loss is
    differentiated. The gradients of ``weight`` and ``bias`` are accumulated in the compute dtype (float32 for
    float16 / bfloat16); the hidden gradient is summed over the process group.
    """
    need_h, need_w, need_b = need
    acc = compute_dtype(weight.dtype)
    gh = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device) if need_h else None  # contiguous
    gw = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
    gb = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b else None
    total, dtype = None, None
    for a, b in _chunks(hidden.shape[0], job.rows):
        h = hidden[a:b]
        z = _leaf(h, weight, bias).requires_grad_()
        with torch.enable_grad():
            out = _chunk_rows(job, z, target[a:b])
        (g,) = torch.autograd.grad(out, z, None if upstream is None else upstream[a:b].to(out.dtype))
        if gh is not None:
            torch.mm(g.to(weight.dtype), weight, out=gh[a:b])
        if gw is not None:
            gw.addmm_(g.t().to(acc), h.to(acc))
        if gb is not None:
            gb.add_(g.sum(0).to(acc))
        del g, z
        if upstream is None:
            dtype = out.dtype
            s = out.detach().to(torch.float64)
            total = s if total is None else total + s
    if gh is not None and job.group is not None:
        _all_reduce(gh, job.group)
    return [gh, gw, gb], total, dtype


def _once_differentiable(fn):
    """As :func:`torch.autograd.function.once_differentiable`, with linear_loss's own message."""

    @functools.wraps(fn)
    def wrapper(ctx, grad):
        with torch.no_grad():
            outputs = fn(ctx, grad)
        if not torch.is_grad_enabled():
            return outputs
        err = torch._C._functions.DelayedError(_DOUBLE_BACKWARD, len(outputs))
        fake = []
        for v in outputs:
            if v is not None:
                v = v.detach()
                v.requires_grad = True
            fake.append(v)
        out = err(*fake)
        return out if isinstance(out, tuple) else (out,)

    return wrapper


@_once_differentiable
def _grads(ctx, grad):
    job: _Job = ctx.job
    if job.reduction == "none":
        hidden, weight, bias, target = ctx.saved_tensors
        (gh, gw, gb), _, _ = _chunk_grads(job, hidden, weight, bias, target, ctx.need, upstream=grad.reshape(-1))
        dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return tuple(None if x is None else x.to(dt) for x, dt in zip((gh, gw, gb), dtypes))
    grads = ctx.grads
    if grads is None:
        raise RuntimeError("linear_loss: backward through the same loss twice (retain_graph=True) is not supported: "
                           "its gradients, computed in the forward pass, were handed out by the first backward")
    ctx.grads = None
    s = grad.to(torch.float64)
    if len(grads) == 4:
        s = s * grads[3]
    # in place: the kept gradients become the results (float64 scale, rounded once to each gradient's dtype)
    return tuple(None if x is None else x.mul_(s.to(x.dtype)).to(dt) for x, dt in zip(grads[:3], ctx.dtypes))


# ----------------------------------------------------------------------------- the boundary
def _reduction_of(loss) -> str:
    reduction = getattr(loss, "reduction", None)
    if reduction not in REDUCTIONS:
        raise TypeError(f"linear_loss: loss must be a loss module with a reduction attribute in "
                        f"{', '.join(REDUCTIONS)} (a taxosmooth loss, nn.CrossEntropyLoss, ...), got "
                        f"{type(loss).__name__}" + ("" if reduction is None else f" with reduction={reduction!r}"))
    return reduction


def _loss_classes(loss) -> int | None:
    """The number of logit columns the loss expects, when it says (``None``: any)."""
    if getattr(loss, "_any_width", False):
        return None
    n = getattr(loss, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    w = getattr(loss, "weight", None)
    if isinstance(loss, (nn.CrossEntropyLoss, nn.NLLLoss)) and isinstance(w, torch.Tensor):
        return int(w.shape[0])
    return None


def _denominator(loss, num_classes: int, prob: bool):
    """``target (M,) or (M, C) -> Σ weight[t]`` over the counted rows, by the frame's rules (``F.cross_entropy``'s)."""
    if not hasattr(loss, "ignore_index"):
        raise TypeError(
            f"linear_loss: cannot tell how {type(loss).__name__} averages (reduction='mean' is supported for losses "
            "that follow torch.nn.functional.cross_entropy's conventions: the taxosmooth losses, nn.CrossEntropyLoss, "
            "nn.NLLLoss); give the loss reduction='sum' and divide the result yourself"
        )
    if prob:
        return lambda target: torch.tensor(float(target.shape[0]), dtype=torch.float64, device=target.device)
    ignore_index = int(loss.ignore_index)
    weight = getattr(loss, "weight", None)
    if not isinstance(weight, torch.Tensor):
        weight = None
    target_weights = None
    if getattr(loss, "coarse_labels", False):
        target_weights = loss.tree.target_means
    classes = int(getattr(loss, "num_classes", 0) or num_classes)

    def denominator(target: torch.Tensor) -> torch.Tensor:
        valid = target != ignore_index
        ids = torch.where(valid, target, torch.zeros_like(target))
        return mean_denominator(ids, valid, weight, classes, target_weights)

    return denominator


def _check_chunk_size(chunk_size) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(f"linear_loss: chunk_size must be a positive int (rows per chunk) or None, got "
                        f"{chunk_size!r} ({type(chunk_size).__name__})")
    if chunk_size < 1:
        raise ValueError(f"linear_loss: chunk_size must be a positive int (rows per chunk) or None, got {chunk_size}")
    return int(chunk_size)


def _check_tensors(hidden, weight, bias, target) -> None:
    for name, x in (("hidden", hidden), ("weight", weight), ("bias", bias)):
        if x is None and name == "bias":
            continue
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"linear_loss: {name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"linear_loss: {name} must be a floating-point tensor, got {x.dtype}")
    if hidden.dim() < 2:
        raise ValueError(f"linear_loss: hidden must have shape (N, H) or (N, d1, ..., H), got {tuple(hidden.shape)}")
    size = hidden.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != size:
        raise ValueError(f"linear_loss: weight must have shape (C, H) with H = {size} (hidden's last dimension), as "
                         f"nn.Linear(H, C).weight, got {tuple(weight.shape)}")
    c = weight.shape[0]
    if bias is not None and tuple(bias.shape) != (c,):
        raise ValueError(f"linear_loss: bias must have shape (C,) = ({c},) (one per row of weight), got "
                         f"{tuple(bias.shape)}")
    for name, x in (("weight", weight), ("bias", bias)):
        if x is not None and x.dtype != hidden.dtype:
            raise TypeError(f"linear_loss: {name} has dtype {x.dtype} but hidden has {hidden.dtype}; they must match "
                            "(as in F.linear)")
        if x is not None and x.device != hidden.device:
            raise ValueError(f"linear_loss: {name} is on {x.device} but hidden is on {hidden.device}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"linear_loss: target must be a torch.Tensor of class indices or probabilities, got "
                        f"{type(target).__name__}")
    rows = tuple(hidden.shape[:-1])
    if target.is_floating_point():
        if tuple(target.shape) != rows + (c,):
            raise ValueError(f"linear_loss: a floating-point target holds class probabilities and must have shape "
                             f"{rows + (c,)} (hidden's rows, then one per row of weight), got {tuple(target.shape)} "
                             f"(class indices have shape {rows})")
        if target.requires_grad:
            raise ValueError("linear_loss: target requires grad, but linear_loss does not differentiate the target; "
                             "pass target.detach()")
    elif tuple(target.shape) != rows:
        raise ValueError(f"linear_loss: expected target of shape {rows} (hidden's shape without its last dimension) "
                         f"for hidden of shape {tuple(hidden.shape)}, got {tuple(target.shape)} (class probabilities "
                         f"would have shape {rows + (c,)})")


def linear_loss(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, loss: nn.Module,
                bias: torch.Tensor | None = None, chunk_size: int | None = None,
                process_group: Any = None) -> torch.Tensor:
    r"""``loss(F.linear(hidden, weight, bias), target)`` without the ``(N, C)`` logits: computed ``chunk_size`` rows
    at a time.

    .. math::

        L = \operatorname{reduce}_i\; \ell\bigl(h_i W^\top + b,\; t_i\bigr)

    The value and the gradients of ``hidden``, ``weight`` and ``bias`` equal those of the materialised logits
    (to rounding); only one chunk's logits, their gradient and the loss's intermediates are alive at a time.
    With ``reduction="mean"`` or ``"sum"`` (the loss's own) the gradients are computed during the forward pass,
    chunk by chunk, and kept (the sizes of ``hidden``, ``weight`` and ``bias``): the backward pass only scales
    them, so a forward pass under autograd costs a forward and a backward of the loss; under
    :func:`torch.no_grad` it is the forward alone. With ``reduction="none"`` the backward pass computes each chunk
    again. See :mod:`taxosmooth.losses.linear` for the derivation; references: Liger-Kernel's fused linear cross
    entropy, Apple's Cut Cross-Entropy.

    Parameters
    ----------
    hidden : Tensor (N, H) or (N, d1, ..., H)
        The features, ``nn.Linear``'s input.
    weight : Tensor (C, H)
        The classifier matrix, as ``nn.Linear(H, C).weight`` (not class weights: those belong to the loss).
        With a class-sharded loss, this rank's rows ``(C_rank, H)``.
    target : Tensor
        Class indices (or target ids, with a loss built with ``coarse_labels=True``) of shape ``(N)`` /
        ``(N, d1, ...)``, or class probabilities ``(N, C)`` / ``(N, d1, ..., C)`` (the logits' shape).
    loss : nn.Module
        Any taxosmooth loss (:class:`HierarchicalSoftLabelLoss`, :class:`HXELoss`, ...), or
        :class:`torch.nn.CrossEntropyLoss`: a module with a ``reduction`` attribute whose loss is a sum over
        rows. Its ``reduction``, ``weight``, ``ignore_index``, ``label_smoothing`` and ``coarse_labels`` apply
        as they do on logits; ``"mean"`` needs the conventions of ``F.cross_entropy`` (an ``ignore_index``
        attribute). With ``"mean"`` or ``"sum"`` the chunks are computed with the module's ``reduction`` set to
        ``"sum"`` during the call (restored on return and on error; do not share the module with another
        thread during the call).
    bias : Tensor (C,), optional
    chunk_size : int, optional
        Rows per chunk; chunks need not divide ``N``. ``None``: :func:`auto_chunk_size` — as many rows as keep
        a chunk's logits under :data:`CHUNK_BYTES` (64 MiB) in the loss's compute dtype, but at least
        ``min(H, 128)`` (64 rows, 256 MB of logits, at a million float32 classes and H = 64).
    process_group : optional
        Class sharding: each rank passes its weight rows (and bias rows, and probability columns) and a loss that
        meets the other ranks (built with ``process_group=``); the gradient of ``hidden`` (replicated on every
        rank) is summed over the group. ``None``: the loss's ``process_group`` attribute, if any. Every rank
        must use the same chunks: the automatic size is computed from the loss's ``num_classes`` when it has
        one, so pass ``chunk_size`` if it differs between ranks.

    Returns
    -------
    Tensor
        A scalar, or the rows' losses of shape ``(N)`` / ``(N, d1, ...)`` with ``reduction="none"``; float32 for
        float16 / bfloat16 inputs (the losses compute in float32).

    Notes
    -----
    float16 / bfloat16: the logits are computed in the input's dtype (as ``F.linear``) and the loss in float32;
    the gradient of ``weight`` and ``bias`` is accumulated in float32. Under autocast the inputs are cast to
    the autocast dtype first, as ``F.linear`` would be. ``torch.compile(fullgraph=True)`` traces the chunk loop
    with ``torch._dynamo.config.trace_autograd_ops = True`` (each chunk's gradient is a ``torch.autograd.grad``
    inside the forward pass); without it Dynamo breaks the graph there, with the same results. No value is read
    on the host. Not supported: double backward (a clear error is raised when the gradients are
    differentiated), a second backward through the same graph with ``"mean"`` / ``"sum"`` (``retain_graph=True``:
    a clear error; the kept gradients are handed out once), gradients for the target or the loss's own
    parameters, and ``torch.func`` transforms.

    Examples
    --------
    >>> import torch, taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> head = torch.nn.Linear(8, tax.num_classes)
    >>> h, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 3, 0])
    >>> criterion = ts.HierarchicalSoftLabelLoss(tax, beta=4.0)
    >>> loss = ts.linear_loss(h, head.weight, y, criterion, bias=head.bias, chunk_size=2)
    >>> torch.allclose(loss, criterion(head(h), y))
    True
    >>> loss.backward()  # head.weight.grad, head.bias.grad as from criterion(head(h), y)
    """
    reduction = _reduction_of(loss)
    chunk_size = _check_chunk_size(chunk_size)
    _check_tensors(hidden, weight, bias, target)
    own_group = getattr(loss, "process_group", None)
    if process_group is None:
        process_group = own_group
    elif own_group is not None and own_group is not process_group:
        raise ValueError("linear_loss: process_group differs from the loss's own process_group")
    c = weight.shape[0]
    expected = _loss_classes(loss)
    if process_group is None and expected is not None and expected != c:
        raise ValueError(f"linear_loss: weight has {c} rows (classes) but {type(loss).__name__} expects {expected} "
                         f"classes; weight must have shape ({expected}, H)")
    if isinstance(loss, nn.Module) and any(p.requires_grad for p in loss.parameters()):
        raise ValueError(f"linear_loss: {type(loss).__name__} has parameters that require grad; linear_loss "
                         "differentiates hidden, weight and bias only")
    device = hidden.device
    if torch.is_autocast_enabled(device.type):
        dt = torch.get_autocast_dtype(device.type)
        hidden, weight = hidden.to(dt), weight.to(dt)
        bias = None if bias is None else bias.to(dt)
    prob = target.is_floating_point()
    rows = tuple(hidden.shape[:-1])
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    flat_t = target.reshape(-1, c) if prob else target.reshape(-1)
    if chunk_size is None:
        columns = expected if (process_group is not None and expected) else c
        chunk_size = auto_chunk_size(columns, hidden.shape[-1], compute_dtype(hidden.dtype))
    chunk_reduction = "none" if reduction == "none" else "sum"
    # "mean" and "sum": the chunks are summed by the loss itself, its reduction set to "sum" for this call (the
    # forward pass; restored on the way out, errors included); a copy of the module would lose the caches a loss
    # keeps on itself (a sharded loss's shard plan), and torch.compile cannot trace one. "none": used as it is,
    # in the backward pass too.
    swap = chunk_reduction != reduction
    job = _Job(loss=loss, reduction=reduction, chunk_reduction=chunk_reduction, rows=chunk_size, out_shape=rows,
               denominator=_denominator(loss, c, prob) if reduction == "mean" else None, group=process_group)
    with no_autocast(device.type):
        wants_grad = torch.is_grad_enabled() and (
            flat_h.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
        mod: Any = loss
        if swap:
            mod.reduction = chunk_reduction
        try:
            if not wants_grad:
                return _loss_only(job, flat_h, weight, bias, flat_t)
            return _LinearLoss.apply(flat_h, weight, bias, flat_t, job)
        finally:
            if swap:
                mod.reduction = reduction


class LinearLoss(nn.Module):
    r"""A loss of ``nn.Linear``'s logits computed in chunks of rows: :func:`linear_loss` as a module.

    ``LinearLoss(loss)(hidden, weight, target, bias)`` equals ``loss(F.linear(hidden, weight, bias), target)``,
    value and gradients, without ever holding the ``(N, C)`` logits or their gradient; the loss module (a
    submodule, so ``.to(device)`` moves its tables) keeps its options (``reduction``, ``weight``,
    ``ignore_index``, ``label_smoothing``, ``coarse_labels``, ``process_group``). The classifier stays where it
    is, in the model (pass ``head.weight`` and ``head.bias``), so the model's ``state_dict`` and optimiser do
    not change.

    Parameters
    ----------
    loss : nn.Module
        A taxosmooth loss or :class:`torch.nn.CrossEntropyLoss` (see :func:`linear_loss`).
    chunk_size : int, optional
        Rows per chunk (``None``: :func:`auto_chunk_size`).

    Shape
    -----
    - hidden: ``(N, H)`` or ``(N, d1, ..., H)``
    - weight: ``(C, H)``; bias: ``(C,)``
    - target: ``(N)`` / ``(N, d1, ...)`` ids, or probabilities ``(N, C)`` / ``(N, d1, ..., C)``
    - output: scalar, or the target's (ids') shape with ``reduction="none"``

    Examples
    --------
    >>> import torch, taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> backbone, head = torch.nn.Linear(16, 8), torch.nn.Linear(8, tax.num_classes)
    >>> criterion = ts.LinearLoss(ts.HXELoss(tax, alpha=0.1), chunk_size=128)
    >>> x, y = torch.randn(32, 16), torch.randint(0, tax.num_classes, (32,))
    >>> loss = criterion(backbone(x), head.weight, y, head.bias)   # instead of HXELoss(...)(head(backbone(x)), y)
    >>> loss.backward()
    """

    def __init__(self, loss: nn.Module, chunk_size: int | None = None) -> None:
        super().__init__()
        _reduction_of(loss)
        self.loss = loss
        self.chunk_size = _check_chunk_size(chunk_size)

    def extra_repr(self) -> str:
        return f"chunk_size={self.chunk_size}"

    def forward(self, hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        return linear_loss(hidden, weight, target, self.loss, bias=bias, chunk_size=self.chunk_size)

