"""Validation of tensors at the boundary of decisions and metrics.

Each check runs on the tensor's own device (no copy to numpy) and raises an
error that names the argument and the first offending entry. Labels, target
ids and the arguments every layer shares are checked in
:mod:`taxosmooth._validation`.
"""

from __future__ import annotations

import torch

__all__ = [
    "as_float_tensor",
    "check_scores",
    "check_probabilities",
    "check_logits",
    "check_square_tensor",
    "accumulate_dtype",
    "compute_dtype",
]


def as_float_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must be a tensor or array_like, got {type(x).__name__} ({exc})") from None
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {x.dtype}")
    return x


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32, float16 and bfloat16 are computed in float32 (no fp16 overflow)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def accumulate_dtype(device: torch.device) -> torch.dtype:
    """dtype of sums over many samples: float64, except where the device has none (MPS)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def _first(mask: torch.Tensor) -> tuple:
    return tuple(int(i) for i in mask.nonzero()[0])


def _check_shape(scores, name: str, num_classes: int | None) -> torch.Tensor:
    scores = as_float_tensor(scores, name)
    if scores.ndim != 2:
        raise ValueError(f"{name} must have shape (N, C), got shape {tuple(scores.shape)}")
    if scores.shape[1] == 0:
        raise ValueError(f"{name} has no classes (shape {tuple(scores.shape)})")
    if num_classes is not None and scores.shape[1] != num_classes:
        raise ValueError(
            f"{name} has {scores.shape[1]} columns but there are {num_classes} classes (in the taxonomy, costs or distances)"
        )
    return scores


def _raise_nan(scores, name: str) -> None:
    nan = torch.isnan(scores)
    if nan.any():
        raise ValueError(f"{name}{list(_first(nan))} is NaN")


def check_scores(scores, name: str = "scores", num_classes: int | None = None) -> torch.Tensor:
    """A 2-D ``(N, C)`` floating tensor without NaN (``±inf`` is allowed: masked logits)."""
    scores = _check_shape(scores, name, num_classes)
    _raise_nan(scores, name)
    return scores


def check_probabilities(probs, name: str = "probs", num_classes: int | None = None) -> torch.Tensor:
    """Rows of probabilities: entries in [0, 1] that sum to 1 (to 1e-3; 1e-2 in half precision)."""
    probs = _check_shape(probs, name, num_classes)
    if probs.numel():
        low, high = torch.aminmax(probs)  # one pass; NaN propagates into both
        if torch.isnan(low) or torch.isnan(high):
            _raise_nan(probs, name)
        if low < 0 or high > 1:
            bad = (probs < 0) | (probs > 1)
            i, j = _first(bad)
            raise ValueError(
                f"{name}[{i}, {j}] = {float(probs[i, j])} is not a probability; pass from_logits=True for logits"
            )
    if probs.shape[0]:
        tol = 1e-2 if probs.dtype in (torch.float16, torch.bfloat16) else 1e-3
        sums = probs.sum(dim=1, dtype=compute_dtype(probs.dtype))
        off = (sums - 1).abs() > tol
        if off.any():
            i = int(off.nonzero()[0, 0])
            raise ValueError(
                f"row {i} of {name} sums to {float(sums[i]):.6g}, not 1; pass probabilities (softmax) "
                "or from_logits=True"
            )
    return probs


def check_logits(logits, name: str = "logits", num_classes: int | None = None) -> torch.Tensor:
    """Logits: no NaN, no ``+inf``, and at least one finite entry per row (so softmax is defined)."""
    logits = check_scores(logits, name, num_classes)
    pos = torch.isposinf(logits)
    if pos.any():
        raise ValueError(f"{name}{list(_first(pos))} is +inf; softmax is undefined")
    if logits.shape[0]:
        dead = torch.isneginf(logits).all(dim=1)
        if dead.any():
            raise ValueError(f"row {int(dead.nonzero()[0, 0])} of {name} is -inf everywhere; softmax is undefined")
    return logits


def check_square_tensor(matrix, name: str) -> torch.Tensor:
    """A ``(C, C)`` floating tensor: finite, >= 0, zero diagonal (a correct prediction costs nothing)."""
    if not isinstance(matrix, torch.Tensor):
        try:
            matrix = torch.as_tensor(matrix)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must be a tensor or array_like, got {type(matrix).__name__} ({exc})") from None
    if matrix.dtype == torch.bool or matrix.is_complex():
        raise TypeError(f"{name} must be a real matrix, got dtype {matrix.dtype}")
    if not matrix.is_floating_point():
        matrix = matrix.to(torch.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{name} must be square (C, C), got shape {tuple(matrix.shape)}")
    if matrix.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    bad = ~torch.isfinite(matrix)
    if bad.any():
        i, j = _first(bad)
        raise ValueError(f"{name}[{i}, {j}] is {float(matrix[i, j])}; all entries must be finite")
    neg = matrix < 0
    if neg.any():
        i, j = _first(neg)
        raise ValueError(f"{name}[{i}, {j}] = {float(matrix[i, j])} is negative; all entries must be >= 0")
    diag = torch.diagonal(matrix)
    nz = diag != 0
    if nz.any():
        i = int(nz.nonzero()[0, 0])
        raise ValueError(f"{name}[{i}, {i}] = {float(diag[i])}; the diagonal must be zero (a correct prediction costs nothing)")
    return matrix


def as_probabilities(scores, from_logits: bool, num_classes: int | None = None, name: str = "probs") -> torch.Tensor:
    """Validated probabilities in the compute dtype: a softmax of checked logits, or checked probabilities."""
    if from_logits:
        logits = check_logits(scores, "logits" if name == "probs" else name, num_classes)  # a caller's own name
        return torch.softmax(logits.to(compute_dtype(logits.dtype)), dim=1)
    p = check_probabilities(scores, name, num_classes)
    return p.to(compute_dtype(p.dtype))
