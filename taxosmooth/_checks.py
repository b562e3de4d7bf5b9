"""Validation at the boundary: user matrices and arguments."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch


_NONE = object()


def as_numpy(matrix, name: str = "matrix") -> np.ndarray:
    """``matrix`` as a float64 array: real numbers only.

    Refused, rather than converted: complex values (``float64`` would drop the
    imaginary part), strings (``"0.5"`` is text, not a number), and objects
    that are not real numbers.
    """
    if isinstance(matrix, torch.Tensor):
        if matrix.is_complex():
            raise TypeError(f"{name} must be real, got a complex tensor ({matrix.dtype})")
        matrix = matrix.detach().cpu()
        matrix = matrix.numpy() if matrix.dtype != torch.bfloat16 else matrix.double().numpy()
    try:
        raw = np.asarray(matrix)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array, got {type(matrix).__name__} ({exc})") from None
    kind = raw.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} must be real, got complex values ({raw.dtype}); pass the real part explicitly if that is meant")
    if kind in "USV" or kind == "M" or kind == "m":
        raise TypeError(f"{name} must be a numeric array, got {raw.dtype} values")
    if kind == "O":
        bad = next((x for x in raw.flat if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real)), _NONE)
        if bad is not _NONE:
            raise TypeError(f"{name} must hold real numbers, got {type(bad).__name__} {bad!r:.40}")
    try:
        arr = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{name} must be a numeric array, got {type(matrix).__name__} ({exc})") from None
    return arr


def check_square_matrix(matrix, name: str = "distance matrix", num_classes: int | None = None) -> np.ndarray:
    """A ``(C, C)`` float64 copy of ``matrix`` after checking: finite, >= 0, zero diagonal.

    The error names the first offending entry.
    """
    arr = as_numpy(matrix, name)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be square (C, C), got shape {tuple(arr.shape)}")
    if num_classes is not None and arr.shape[0] != num_classes:
        raise ValueError(f"{name} has {arr.shape[0]} classes, expected {num_classes}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"{name}[{i}, {j}] is {arr[i, j]}; all entries must be finite")
    neg = arr < 0
    if neg.any():
        i, j = np.argwhere(neg)[0]
        raise ValueError(f"{name}[{i}, {j}] = {arr[i, j]} is negative; all entries must be >= 0")
    diag = np.diagonal(arr)
    nz = np.flatnonzero(diag != 0)
    if nz.size:
        i = nz[0]
        raise ValueError(f"{name}[{i}, {i}] = {diag[i]}; the diagonal must be zero (a correct prediction costs nothing)")
    return np.array(arr, dtype=np.float64)


def _scalar(value):
    """A one-element tensor or numpy array as a Python number; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, np.ndarray) and value.size == 1:
        return value.item()
    return value


def check_float_dtype(dtype, name: str = "dtype") -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch dtype (e.g. torch.float32), got {dtype!r}")
    return dtype


def check_positive(value, name: str, allow_zero: bool = False) -> float:
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return value


def check_probability(value, name: str) -> float:
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in [0, 1], got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return value
