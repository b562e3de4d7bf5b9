"""The losses' boundary: argument checks, the per-call validation modes, and flattening of input and target.

Every loss takes, as :func:`torch.nn.functional.cross_entropy` does,

* ``input`` logits ``(N, C)``, ``(N, C, d1, ...)`` or unbatched ``(C,)``;
* ``target`` either **integer ids** ``(N)``, ``(N, d1, ...)`` or ``()`` — class
  indices in ``[0, C)``, and with ``coarse_labels=True`` also the ids of
  internal nodes in ``[C, num_nodes)`` (:meth:`~taxosmooth.Taxonomy.encode`) —
  or **class probabilities** with the input's shape (Mixup, CutMix).

Validation per call (:func:`set_checks`):

* ``"full"``: bad targets raise ``IndexError`` / ``ValueError`` naming the
  first one (position and value), probability rows that are negative, NaN or
  do not sum to 1 name the row, and a NaN or ``+inf`` logit that makes the loss
  non-finite is named; each check is a host synchronisation on a GPU;
* ``"device"``: the same conditions as asynchronous device-side assertions
  (:func:`torch._assert_async`): no host synchronisation, a fixed message
  without positions, raised at the next synchronisation;
* ``"off"``: nothing is checked (bad targets give garbage or fail inside torch);
* ``"auto"`` (default): ``"full"`` for CPU tensors, ``"device"`` elsewhere
  (and under ``torch.compile``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from taxosmooth._tensor_checks import compute_dtype
from taxosmooth.tree_ops.tracing import is_symbolic

__all__ = ["set_checks", "check_mode", "flatten", "FlatBatch", "REDUCTIONS", "CHECK_MODES"]

REDUCTIONS = ("mean", "sum", "none")
CHECK_MODES = ("auto", "full", "device", "off")
_CHECKS = "auto"

#: how far a probability row may sum from 1, by dtype (about 4 units in the last place of its sum)
# how far a row of probabilities may sum from 1: the precision the values were computed in, which the holding
# dtype does not tell (a float32 softmax, Mixup row or target file read back as float64 is common): float64
# rows get float32's tolerance, as F.cross_entropy and timm accept them
_ROW_SUM_TOLERANCE = {torch.float64: 1e-5, torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def set_checks(mode) -> str:
    """Choose the per-call validation of every loss; returns the previous mode.

    Parameters
    ----------
    mode : {"auto", "full", "device", "off"} or bool
        ``True`` means ``"auto"``, ``False`` means ``"off"``. See
        :mod:`taxosmooth.losses` for what each mode checks and costs.
    """
    global _CHECKS
    if mode is True:
        mode = "auto"
    elif mode is False:
        mode = "off"
    if mode not in CHECK_MODES:
        raise ValueError(f"set_checks expects one of {', '.join(CHECK_MODES)} (or a bool), got {mode!r}")
    previous, _CHECKS = _CHECKS, mode
    return previous


def check_mode(device: torch.device) -> str:
    """The validation that runs now for tensors on ``device``: ``"full"``, ``"device"`` or ``"off"``."""
    if _CHECKS == "off" or torch.jit.is_tracing():
        return "off"
    if torch.compiler.is_compiling():
        return "device"
    if _CHECKS == "auto":
        return "full" if device.type == "cpu" else "device"
    return _CHECKS


@dataclass
class FlatBatch:
    """A validated, flattened batch.

    ``z`` (M, C) logits in the compute dtype (float64 stays float64; float32,
    float16 and bfloat16 are computed in float32), class order. ``kind`` is
    ``"index"`` (``ids`` (M,) int64 target ids, ignored entries replaced by 0,
    and ``valid`` (M,) bool, or ``None`` when every target counts) or
    ``"prob"`` (``prob`` (M, C) target probabilities in the compute dtype).
    ``out_shape`` is the shape of ``reduction="none"``; ``coarse`` is whether an
    id names an internal node (``None``: not known without a synchronisation).
    """

    z: torch.Tensor
    kind: str
    out_shape: tuple
    ids: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    prob: torch.Tensor | None = None
    coarse: bool | None = None
    floor: torch.Tensor | None = None  # probability rows: their minima, when the check computed them


def _position(k: int, shape: tuple) -> tuple:
    return tuple(int(i) for i in np.unravel_index(k, shape)) if len(shape) else ()


def flatten(input, target, *, num_classes: int, num_targets: int, ignore_index: int, name: str,
            mode: str, num_nodes: int | None = None) -> FlatBatch:
    """Validate ``input`` and ``target`` (see the module docstring) and flatten them to rows."""
    if not isinstance(input, torch.Tensor):
        hint = " (convert it with torch.from_numpy / torch.as_tensor)" if isinstance(input, np.ndarray) else ""
        raise TypeError(f"{name}: input must be a torch.Tensor of logits, got {type(input).__name__}{hint}")
    if not input.is_floating_point():
        raise TypeError(f"{name}: input must be a floating-point tensor of logits, got {input.dtype}")
    if not isinstance(target, torch.Tensor):
        hint = " (convert it with torch.from_numpy / torch.as_tensor)" if isinstance(target, np.ndarray) else ""
        raise TypeError(f"{name}: target must be a torch.Tensor of class indices or probabilities, got "
                        f"{type(target).__name__}{hint}")
    if input.dim() == 0:
        raise ValueError(f"{name}: input must have a class dimension, got a scalar")
    class_dim = 0 if input.dim() == 1 else 1
    if input.shape[class_dim] != num_classes:
        raise ValueError(
            f"{name}: expected {num_classes} classes (the taxonomy's / matrix's size) in dimension {class_dim} "
            f"of input, got {input.shape[class_dim]} (input shape {tuple(input.shape)})"
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
    out_shape = tuple(input.shape[:class_dim] + input.shape[class_dim + 1 :])

    if target.is_floating_point():
        if target.shape != input.shape:
            raise ValueError(
                f"{name}: a floating-point target holds class probabilities and must have the input's shape "
                f"{tuple(input.shape)}, got {tuple(target.shape)} (integer class indices have shape "
                f"{out_shape})"
            )
        p = target.unsqueeze(0) if class_dim == 0 else (target if target.dim() == 2 else
                                                         target.movedim(1, -1).reshape(-1, num_classes))
        floor = _check_probabilities(p, target.dtype, name, input.shape, class_dim, mode)
        p = p.to(dtype=dtype, device=z.device)
        if floor is not None:
            floor = floor.to(dtype=dtype, device=z.device)
        return FlatBatch(z=z, kind="prob", out_shape=out_shape, prob=p, floor=floor)
    if target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"{name}: target must hold integer class indices or floating-point probabilities, got "
                        f"{target.dtype}")
    if tuple(target.shape) != out_shape:
        raise ValueError(
            f"{name}: expected target of shape {out_shape} for input of shape {tuple(input.shape)}, got "
            f"{tuple(target.shape)} (class probabilities would have the input's shape)"
        )
    t = target if target.dim() == 1 and target.dtype == torch.int64 else target.reshape(-1).long()
    return _check_ids(z, t, num_classes, num_targets, ignore_index, name, out_shape, mode, num_nodes)


def _check_probabilities(p: torch.Tensor, dtype, name: str, shape, class_dim: int, mode: str):
    """Rows must be finite, ``>= 0`` and sum to 1 within the dtype's tolerance. Two passes (row minima and
    row sums: a NaN makes a minimum NaN, an infinity a sum infinite); the diagnosis only on failure.
    Returns the row minima (the floor of Mixup rows, reused by the loss) or ``None`` unchecked."""
    if mode == "off" or p.numel() == 0:
        return None
    acc = torch.float64 if p.dtype == torch.float64 else torch.float32
    sums = p.sum(dim=1, dtype=acc)
    mins = p.amin(dim=1)
    tol = _ROW_SUM_TOLERANCE.get(dtype, 1e-5)
    if mode == "device":
        ok = (mins >= 0).all() & ((sums - 1).abs() <= tol).all()
        torch._assert_async(ok, f"{name}: a probability target is negative, not finite, or its row does not sum "
                                "to 1")
        return mins
    if bool((mins >= 0).all()) and bool(((sums - 1).abs() <= tol).all()):
        return mins
    bad_entry = ~torch.isfinite(p) | (p < 0)
    if bool(bad_entry.any()):
        row, col = (int(i) for i in bad_entry.nonzero()[0])
        raise ValueError(f"{name}: target probability {float(p[row, col]):.6g} in row {_row_name(row, shape, class_dim)} "
                         f"(class {col}) is {'not finite' if not torch.isfinite(p[row, col]) else 'negative'}; "
                         "probabilities must be finite and >= 0")
    off = (sums - 1).abs() > tol
    row = int(off.nonzero()[0, 0])
    raise ValueError(f"{name}: the target probabilities of row {_row_name(row, shape, class_dim)} sum to "
                     f"{float(sums[row]):.{12 if acc == torch.float64 else 6}g}, not 1 (tolerance {tol:g} for {dtype})")


def _row_name(row: int, shape, class_dim: int) -> str:
    """The position of a flattened row in the input, as the user indexes it (class dimension as ':')."""
    if class_dim == 0:
        return "(:)"
    rest = _position(row, (shape[0],) + tuple(shape[2:]))
    return "(" + ", ".join([str(rest[0]), ":"] + [str(i) for i in rest[1:]]) + ")"


def _in_functorch_transform() -> bool:
    """Inside torch.func.grad / vmap, even a plain tensor cannot be read by numpy (torch ops still work)."""
    level = getattr(torch._C._functorch, "maybe_current_level", None)
    return level is not None and level() is not None


def _check_ids(z, t, num_classes: int, num_targets: int, ignore_index: int, name: str, out_shape, mode: str,
               num_nodes: int | None = None):
    if t.numel() == 0:
        return FlatBatch(z=z, kind="index", out_shape=out_shape, ids=t, valid=None, coarse=False)
    if t.device != z.device:
        t = t.to(z.device)
    if mode == "full" and t.device.type == "cpu" and not _in_functorch_transform():
        # one numpy pass: as unsigned, negative ids are huge, so the maximum alone bounds them
        tn = t.numpy()
        top = int(tn.view(np.uint64).max())
        if top < num_targets and not (0 <= ignore_index < num_targets and bool((tn == ignore_index).any())):
            return FlatBatch(z=z, kind="index", out_shape=out_shape, ids=t, valid=None, coarse=top >= num_classes)
    elif mode == "full":
        lo, hi = (int(v) for v in torch.aminmax(t))
        if lo >= 0 and hi < num_targets and not (lo <= ignore_index <= hi):
            return FlatBatch(z=z, kind="index", out_shape=out_shape, ids=t, valid=None, coarse=hi >= num_classes)
    valid = t != ignore_index
    if mode == "device":
        in_range = (t >= 0) & (t < num_targets)
        what = "target ids" if num_targets > num_classes else "class indices"
        torch._assert_async((in_range | ~valid).all(),
                            f"{name}: a target is out of range; expected {what} in [0, {num_targets}) or "
                            f"ignore_index={ignore_index}")
    elif mode == "full":
        bad = valid & ((t < 0) | (t >= num_targets))
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            v = int(t[k])
            hint = ""
            if num_targets == num_classes and num_nodes is not None and num_classes <= v < num_nodes:
                # only a loss built on a taxonomy has internal nodes to point to
                hint = " (ids >= C name internal nodes: pass coarse_labels=True to train on coarse labels)"
            raise IndexError(
                f"{name}: target {v} at position {_position(k, out_shape)} is out of range; expected "
                f"{'target ids' if num_targets > num_classes else 'class indices'} in [0, {num_targets}) or "
                f"ignore_index={ignore_index}{hint}"
            )
    safe = torch.where(valid, t, torch.zeros_like(t))
    coarse = None
    if mode == "full" or safe.device.type == "cpu" and not is_symbolic(safe):
        coarse = num_targets > num_classes and bool((safe >= num_classes).any())
    return FlatBatch(z=z, kind="index", out_shape=out_shape, ids=safe, valid=valid, coarse=coarse)
