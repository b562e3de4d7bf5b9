"""Shared plumbing of the losses: input validation, flattening, class weights, reduction.

Every loss follows :func:`torch.nn.functional.cross_entropy`:

* ``input`` logits ``(N, C)``, ``(N, C, d1, ...)`` or unbatched ``(C,)``;
  ``target`` class indices ``(N)``, ``(N, d1, ...)`` or ``()``;
* ``weight`` ``(C,)``: sample ``i`` counts ``weight[target_i]``; ``mean`` is the
  weighted mean over non-ignored targets (``Σ w_i l_i / Σ w_i``);
* targets equal to ``ignore_index`` contribute 0 and do not count;
* ``reduction`` in ``"mean"``, ``"sum"``, ``"none"`` (``none`` keeps the target's
  shape, ignored positions hold 0).

float16 / bfloat16 logits are computed in float32 and the loss is returned in
float32 (as under autocast, where ``cross_entropy`` also runs in float32).

Validation per call (on by default, :func:`set_checks`): targets outside
``[0, C)`` (other than ``ignore_index``) raise ``IndexError`` naming the first
one; a NaN or ``+inf`` logit that makes the loss non-finite raises
``ValueError`` naming its position (``-inf`` logits, a common way to mask
classes, are allowed: a class with no target mass and a ``-inf`` logit
contributes 0; target mass on a ``-inf`` class gives a loss of ``+inf``). On a
GPU each check is one host synchronisation (two per call in all);
``set_checks(False)`` turns both off for speed. Under ``torch.compile`` the
target check is an asynchronous device assertion (``RuntimeError`` with a fixed
message, no position) and the logits are not checked.

The per-class tables of a loss (ring weights, coefficients, soft targets, costs)
keep their dtype when the module is cast (``.half()``, ``.to(torch.bfloat16)``
on a model containing the loss): they only follow device moves, so the loss's
value does not change with the model's precision.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from taxosmooth._checks import check_square_matrix
from taxosmooth._tensor_checks import compute_dtype
from taxosmooth.taxonomy import Taxonomy

REDUCTIONS = ("mean", "sum", "none")

_CHECKS = True


def set_checks(enabled: bool) -> bool:
    """Turn the per-call input validation of every loss on or off; returns the previous setting.

    On (the default), each call checks that the targets are in range and, when the
    loss comes out non-finite, which logit is NaN or ``+inf``: on a GPU that is two
    host synchronisations per call. Off, bad targets fail inside torch (or give
    garbage) and NaN logits give a NaN loss silently.

    Turning checks off saves the synchronisations, not arithmetic: the target
    check is also what tells a loss that no target is ignored, which lets it
    take its fastest path; without it every call masks. On a CPU, leave them on.
    """
    global _CHECKS
    if not isinstance(enabled, bool):
        raise TypeError(f"set_checks expects a bool, got {enabled!r}")
    previous, _CHECKS = _CHECKS, enabled
    return previous


def checks_enabled() -> bool:
    """Whether the per-call validation runs now (see :func:`set_checks`; never while compiling)."""
    return _CHECKS and not torch.compiler.is_compiling()


def given_float_dtype(matrix) -> torch.dtype:
    """The dtype a user matrix is kept in: its own floating dtype, else float32."""
    if isinstance(matrix, torch.Tensor) and matrix.is_floating_point():
        return matrix.dtype
    if isinstance(matrix, np.ndarray) and matrix.dtype in (np.float16, np.float32, np.float64):
        return torch.from_numpy(np.zeros(0, dtype=matrix.dtype)).dtype
    return torch.float32


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return reduction


def check_weight(weight, num_classes: int) -> torch.Tensor | None:
    """``weight`` as a float tensor ``(C,)`` (a copy), or ``None``."""
    if weight is None:
        return None
    w = torch.as_tensor(weight).detach().clone()
    if not (w.is_floating_point()):
        w = w.to(torch.get_default_dtype())
    if w.dim() != 1 or w.shape[0] != num_classes:
        raise ValueError(f"weight must have shape ({num_classes},) (one entry per class), got {tuple(w.shape)}")
    bad = ~torch.isfinite(w) | (w < 0)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise ValueError(f"weight[{k}] = {w[k].item()}; class weights must be finite and >= 0")
    return w


def no_autocast(device_type: str):
    """The loss manages its own precision; autocast would run its matmuls in half precision."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no per-device query
        enabled = torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()
    if enabled:
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def flatten(input: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int, name: str):
    """Validate and flatten ``(N, C, d1, ...)`` / ``(N, d1, ...)`` to ``(M, C)`` / ``(M,)``.

    Returns ``(logits (M, C) in the compute dtype, safe_target (M,) with ignored
    entries replaced by 0, valid (M,) bool or None when every target counts,
    target_shape)``.
    """
    if (isinstance(input, torch.Tensor) and isinstance(target, torch.Tensor) and input.dim() == 2
            and input.dtype in _DIRECT_DTYPES and target.dtype == torch.int64
            and input.shape[1] == num_classes and target.shape == input.shape[:1]):
        return _check_targets(input, target, num_classes, ignore_index, name, target.shape)
    return _flatten_general(input, target, num_classes, ignore_index, name)


_DIRECT_DTYPES = (torch.float32, torch.float64)


def _flatten_general(input, target, num_classes: int, ignore_index: int, name: str):
    if not isinstance(input, torch.Tensor) or not input.is_floating_point():
        raise TypeError(f"{name}: input must be a floating-point tensor of logits, got "
                        f"{type(input).__name__ if not isinstance(input, torch.Tensor) else input.dtype}")
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        got = type(target).__name__ if not isinstance(target, torch.Tensor) else target.dtype
        raise TypeError(f"{name}: target must be an integer tensor of class indices, got {got}")
    if input.dim() == 0:
        raise ValueError(f"{name}: input must have a class dimension, got a scalar")
    class_dim = 0 if input.dim() == 1 else 1
    if input.shape[class_dim] != num_classes:
        raise ValueError(
            f"{name}: expected {num_classes} classes (the taxonomy's / matrix's size) in dimension {class_dim} "
            f"of input, got {input.shape[class_dim]} (input shape {tuple(input.shape)})"
        )
    expected_target = input.shape[:class_dim] + input.shape[class_dim + 1 :]
    if target.shape != expected_target:
        raise ValueError(
            f"{name}: expected target of shape {tuple(expected_target)} for input of shape {tuple(input.shape)}, "
            f"got {tuple(target.shape)}"
        )
    if class_dim == 0:
        z = input.unsqueeze(0)
    elif input.dim() == 2:
        z = input
    else:
        z = input.movedim(1, -1).reshape(-1, num_classes)
    dtype = compute_dtype(input.dtype)
    if z.dtype != dtype:
        z = z.to(dtype)
    t = target if target.dim() == 1 and target.dtype == torch.int64 else target.reshape(-1).long()
    return _check_targets(z, t, num_classes, ignore_index, name, target.shape)


def _check_targets(z, t, num_classes: int, ignore_index: int, name: str, target_shape):
    """The target checks of :func:`flatten` on flat ``t`` (M,); returns its four values."""
    if t.numel() == 0:
        return z, t, None, target_shape
    check = checks_enabled()
    if check:
        if t.device.type == "cpu":
            # one numpy pass, a fraction of aminmax's cost: as unsigned, negative targets are huge
            tn = t.numpy()
            if (tn.view(np.uint64) < num_classes).all() and not (0 <= ignore_index < num_classes
                                                              and (tn == ignore_index).any()):
                return z, t, None, target_shape  # every target valid, none ignored: no masking needed
        else:
            lo, hi = torch.aminmax(t)
            lo, hi = int(lo), int(hi)
            if lo >= 0 and hi < num_classes and not (lo <= ignore_index <= hi):
                return z, t, None, target_shape  # every target valid, none ignored: no masking needed
    valid = t != ignore_index
    if torch.compiler.is_compiling() and _CHECKS:
        # traceable, asynchronous: no host synchronisation, no position in the message
        in_range = (t >= 0) & (t < num_classes)
        torch._assert_async((in_range | ~valid).all(),
                            f"{name}: a target is out of range; expected class indices in [0, {num_classes}) "
                            f"or ignore_index={ignore_index}")
    if check:
        bad = valid & ((t < 0) | (t >= num_classes))
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            pos = tuple(int(i) for i in np.unravel_index(k, tuple(target_shape))) if len(target_shape) else ()
            raise IndexError(
                f"{name}: target {int(t[k])} at position {pos} is out of range; expected class indices in "
                f"[0, {num_classes}) or ignore_index={ignore_index}"
            )
    safe = torch.where(valid, t, torch.zeros_like(t))
    return z, safe, valid, target_shape


def reduce(loss: torch.Tensor, safe_target: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor | None,
           reduction: str, target_shape) -> torch.Tensor:
    """Weight, mask and reduce per-sample losses ``(M,)`` exactly as ``cross_entropy`` does."""
    if valid is None:  # nothing ignored
        if weight is None:
            if reduction == "none":
                return loss.reshape(target_shape)
            return loss.sum() if reduction == "sum" else loss.mean()
        w = weight.to(device=loss.device, dtype=loss.dtype).index_select(0, safe_target)
        weighted = loss * w
    else:
        if weight is not None:
            w = weight.to(device=loss.device, dtype=loss.dtype).index_select(0, safe_target)
            w = torch.where(valid, w, torch.zeros_like(w))
        else:
            w = valid.to(loss.dtype)
        # where, not multiply: an ignored sample's loss may be anything (its target was replaced by 0)
        weighted = torch.where(valid, loss * w, torch.zeros_like(loss))
    if reduction == "none":
        return weighted.reshape(target_shape)
    if reduction == "sum":
        return weighted.sum()
    return weighted.sum() / w.sum()


def scale_saved_gradient(grad: torch.Tensor, grad_out: torch.Tensor, fused: bool) -> torch.Tensor:
    """The backward of a loss kernel that wrote its gradient ``grad`` (M, C) in the forward.

    Per-row losses (``fused=False``): each row times its incoming gradient.
    Summed form (``fused=True``): times the incoming scalar, or ``grad`` itself
    for an incoming ``1`` on the CPU (as in ``loss.backward()``), no pass at all.
    """
    if not fused:
        return grad * grad_out.unsqueeze(1)
    if grad_out.device.type == "cpu" and grad_out.item() == 1.0:
        return grad
    return grad * grad_out


def softmax_lse(z: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale · softmax(z), logsumexp(z))`` of ``z`` (M, C) with one exponential pass (no autograd).

    The softmax is a fresh tensor the caller may modify in place; ``scale``
    costs nothing (it joins the normalisation).
    """
    m = z.amax(dim=1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.sub(z, m).exp_()
    total = p.sum(dim=1, keepdim=True)
    lse = (m + total.log()).squeeze(1)
    return p.mul_(total.reciprocal_().mul_(scale)), lse


def xlogy_cross_entropy(q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``-Σ_j q_j log_softmax(z)_j`` per row with ``0·log 0 = 0`` (``-inf`` logits without mass), by autograd."""
    log_p = torch.log_softmax(z, dim=1)
    return -torch.where(q == 0, torch.zeros_like(log_p), q * log_p).sum(dim=1)


def class_costs(costs_or_taxonomy, name: str) -> np.ndarray:
    """A validated dense ``(C, C)`` float64 cost matrix (user matrices only)."""
    return check_square_matrix(costs_or_taxonomy, f"{name}: cost matrix")


class TreeLossBase(nn.Module):
    """Common state of the losses: ``weight`` buffer, ``ignore_index``, ``reduction``.

    Subclasses implement ``_per_sample(z, safe_target) -> (M,)`` on flattened,
    validated logits in the compute dtype, and set ``num_classes``. A subclass
    whose kernel can also sum its rows sets ``fuses_reduction = True`` and
    accepts ``_per_sample(z, safe_target, scale)``, returning ``scale · Σ_i l_i``
    (a scalar): used when no target is ignored and there is no class weight,
    which spares a reduction and its backward.
    """

    num_classes: int
    fuses_reduction: bool = False

    def __init__(self, num_classes: int, weight=None, ignore_index: int = -100, reduction: str = "mean"):
        super().__init__()
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.reduction = check_reduction(reduction)
        self.register_buffer("weight", check_weight(weight, self.num_classes))

    def _loss(self, input, target, weight, ignore_index, reduction):
        name = type(self).__name__
        with no_autocast(input.device.type):
            z, t, valid, shape = flatten(input, target, self.num_classes, ignore_index, name)
            check = checks_enabled() and t.numel() > 0
            if self.fuses_reduction and valid is None and weight is None and reduction != "none" and t.numel() > 0:
                out = self._per_sample(z, t, 1.0 / t.numel() if reduction == "mean" else 1.0)
                if check and not math.isfinite(out.item()):
                    return reduce(self._nonfinite(input, z, t, valid, name), t, valid, weight, reduction, shape)
                return out
            loss = self._per_sample(z, t)
            if check:
                counted = loss if valid is None else torch.where(valid, loss, torch.zeros_like(loss))
                if not bool(torch.isfinite(counted).all()):
                    loss = self._nonfinite(input, z, t, valid, name)
            return reduce(loss, t, valid, weight, reduction, shape)

    def _nonfinite(self, input, z, t, valid, name) -> torch.Tensor:
        """A non-finite loss: name the first NaN / +inf logit, else recompute with ``_exact_per_sample``."""
        bad = torch.isnan(z) | (z == math.inf)
        if valid is not None:
            bad &= valid.unsqueeze(1)
        if bool(bad.any()):
            row, col = (int(i) for i in bad.nonzero()[0])
            if input.dim() == 1:
                pos = (col,)
            else:
                rest = np.unravel_index(row, (input.shape[0],) + tuple(input.shape[2:]))
                pos = (int(rest[0]), col) + tuple(int(i) for i in rest[1:])
            value = input[pos].item()
            raise ValueError(f"{name}: input[{', '.join(map(str, pos))}] is {value}; logits must be finite or -inf")
        # only -inf logits: a loss with an exact form for them recomputes; +inf (target mass on a -inf class) stays
        loss = self._exact_per_sample(z, t)
        counted = loss if valid is None else torch.where(valid, loss, torch.zeros_like(loss))
        if bool(torch.isnan(counted).any()):
            k = int(torch.isnan(counted).nonzero()[0, 0])
            raise ValueError(f"{name}: the loss of sample {k} (flattened) is nan; its logits are finite or -inf, "
                             "but -inf where this loss cannot take it (e.g. at the target)")
        return loss

    def _exact_per_sample(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-sample loss for rows with ``-inf`` logits (slow, autograd); by default the ordinary one."""
        return self._per_sample(z, t)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._loss(input, target, self.weight, self.ignore_index, self.reduction)

    def _per_sample(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise TypeError(f"{type(self).__name__} must define _per_sample(z, t): the per-sample loss of (M, C) logits")

    def buffer_bytes(self) -> int:
        """Bytes held in buffers (index tensors and per-class tables)."""
        seen, total = set(), 0
        for b in self.buffers():
            if id(b) not in seen:
                seen.add(id(b))
                total += b.numel() * b.element_size()
        return total

    def _apply(self, fn, recurse=True):
        # dtype casts (.half(), .to(torch.bfloat16), .double()) of a model containing the loss must not
        # round the loss's tables: float buffers only follow the device
        tables = {k: b for k, b in self._buffers.items() if b is not None and b.is_floating_point()}
        for k in tables:
            self._buffers[k] = None
        try:
            super()._apply(fn, recurse)
        finally:
            for k, b in tables.items():
                device = fn(b.new_empty(0)).device
                self._buffers[k] = b if device == b.device else b.to(device)
        return self


def as_taxonomy(obj, name: str) -> Taxonomy:
    if not isinstance(obj, Taxonomy):
        raise TypeError(f"{name}: expected a Taxonomy, got {type(obj).__name__}")
    return obj


def cached(factory: Callable, taxonomy, key: tuple, device: torch.device):
    """A module built once per (taxonomy, key, device): the functional twins reuse their tables.

    Keyed on the taxonomy's identity (no O(nodes) hashing); the entries of a
    taxonomy are dropped when it is garbage-collected (a weak reference), and
    only the last :data:`_CACHE_SIZE` modules are kept.
    """
    try:
        hash(key)
    except TypeError:
        return factory().to(device)  # the module validates the options (and names the bad one)
    tid = id(taxonomy)
    k = (tid,) + key + (str(device),)
    mod = _CACHE.get(k)
    if mod is not None and _ALIVE.get(tid) is not None and _ALIVE[tid]() is taxonomy:
        _CACHE.move_to_end(k)
        return mod
    mod = factory().to(device)
    if _ALIVE.get(tid) is None or _ALIVE[tid]() is not taxonomy:
        _forget(tid)
        _ALIVE[tid] = weakref.ref(taxonomy, lambda ref, tid=tid: _ALIVE.get(tid) is ref and _forget(tid))
    _CACHE[k] = mod
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return mod


def _forget(tid: int) -> None:
    for k in [k for k in _CACHE if k[0] == tid]:
        del _CACHE[k]
    _ALIVE.pop(tid, None)


_CACHE_SIZE = 32
_CACHE: OrderedDict = OrderedDict()
_ALIVE: dict = {}
