"""Validation of tensors at the boundary of decisions and metrics.

Each check runs on the tensor's own device (no copy to numpy) and raises an
error that names the argument and the first offending entry.
"""

from __future__ import annotations

import numbers

import torch

__all__ = [
    "as_float_tensor",
    "check_scores",
    "check_probabilities",
    "check_logits",
    "check_target",
    "check_node_ids",
    "check_coarse",
    "check_k",
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


def _integer_tensor(x, name: str, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must hold integer {what}, got {type(x).__name__} ({exc})") from None
    if x.is_floating_point() or x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must hold integer {what}, got dtype {x.dtype}")
    return x


def check_coarse(coarse_labels) -> bool:
    if not isinstance(coarse_labels, bool):
        raise TypeError(f"coarse_labels must be True or False, got {coarse_labels!r}")
    return coarse_labels


def check_target(
    target, n: int, num_classes: int, name: str = "target", *, coarse_labels: bool = False,
    num_nodes: int | None = None,
) -> torch.Tensor:
    """Integer labels ``(N,)``: class indices in ``[0, C)``, or target ids in ``[0, num_nodes)`` with
    ``coarse_labels=True`` (internal nodes, coarse labels: see :meth:`taxosmooth.Taxonomy.encode`)."""
    target = _integer_tensor(target, name, "class indices" if not coarse_labels else "target ids")
    if target.ndim != 1 or target.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match the scores, got shape {tuple(target.shape)}")
    check_coarse(coarse_labels)
    if coarse_labels and num_nodes is None:
        raise TypeError("coarse_labels=True needs a Taxonomy (the subtree of each coarse label), not a distance matrix")
    limit = num_nodes if coarse_labels else num_classes
    bad = (target < 0) | (target >= limit)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        v = int(target[i])
        if coarse_labels:
            raise ValueError(f"{name}[{i}] = {v} is not a target id in [0, {num_nodes})")
        hint = ""
        if num_nodes is not None and num_classes <= v < num_nodes:
            hint = "; it is the target id of an internal node: pass coarse_labels=True for coarse labels"
        raise ValueError(f"{name}[{i}] = {v} is not a class index in [0, {num_classes}){hint}")
    return target.long()


def check_node_ids(ids, n: int, num_nodes: int, name: str = "preds", shape: tuple | None = None) -> torch.Tensor:
    """Predicted target ids (any node, e.g. :func:`taxosmooth.decision.predict_node`): integers in ``[0, num_nodes)``."""
    ids = _integer_tensor(ids, name, "target ids")
    want = (n,) if shape is None else shape
    if tuple(ids.shape) != tuple(want):
        raise ValueError(f"{name} must have shape {want}, got shape {tuple(ids.shape)}")
    bad = (ids < 0) | (ids >= num_nodes)
    if bad.any():
        k = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name}{list(k)} = {int(ids[k])} is not a target id in [0, {num_nodes})")
    return ids.long()


def check_k(k, num_classes: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {k!r}")
    k = int(k)
    if not 1 <= k <= num_classes:
        raise ValueError(f"{name} = {k} is out of range: it must be between 1 and the number of classes ({num_classes})")
    return k


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
