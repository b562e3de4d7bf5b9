"""Validation and small helpers shared by the heads."""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np
import torch

from taxosmooth._validation import check_target_ids
from taxosmooth.taxonomy import Taxonomy


def check_in_features(in_features, name: str = "in_features") -> int:
    """A positive int (the width of the features the head reads)."""
    if isinstance(in_features, bool) or not isinstance(in_features, numbers.Integral):
        raise TypeError(f"{name} must be an int >= 1 (the number of input features), got {in_features!r}")
    if in_features <= 0:
        raise ValueError(f"{name} must be >= 1 (the number of input features), got {in_features}")
    return int(in_features)


def check_taxonomy(taxonomy, head: str) -> Taxonomy:
    """A :class:`Taxonomy` with at least two classes (so at least one internal node that branches)."""
    if not isinstance(taxonomy, Taxonomy):
        raise TypeError(f"{head}: taxonomy must be a taxosmooth.Taxonomy, got {type(taxonomy).__name__}")
    if taxonomy.num_nodes == taxonomy.num_classes:
        raise ValueError(
            f"{head}: the taxonomy has no internal nodes (its {taxonomy.num_nodes} node(s) are all classes); "
            "a head over a hierarchy needs a root above the classes: build it with at least one parent -> child edge"
        )
    if taxonomy.num_classes < 2:
        raise ValueError(
            f"{head}: the taxonomy has {taxonomy.num_classes} class ({taxonomy.classes[0]!r}); "
            "a classifier needs at least 2 classes"
        )
    return taxonomy


def check_class_vectors(vectors, head: str, arg: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A floating ``(C, dim)`` table of class vectors, ``C >= 2``, and its row norms (each finite and > 0)."""
    v = torch.as_tensor(vectors)
    if v.ndim != 2 or not v.is_floating_point() or v.shape[0] < 2:
        raise ValueError(f"{head}: {arg} must be a floating (C, dim) tensor with C >= 2, "
                         f"got shape {tuple(v.shape)} and dtype {v.dtype}")
    norms = v.norm(dim=1)
    bad = (norms == 0) | ~torch.isfinite(norms)
    if bool(bad.any()):
        raise ValueError(f"{head}: {arg}[{int(bad.nonzero()[0, 0])}] is zero or not finite")
    return v, norms


def internal_node_values(values, taxonomy: Taxonomy, name: str, default: float, upper: float | None = None) -> np.ndarray:
    """A float64 value per node (node-id order) from a scalar, a mapping or an array of the internal nodes.

    ``values`` is a number (every internal node), a mapping ``{internal node name: value}``
    (the others keep ``default``), or an array of one value per internal node in
    target-id order (ids ``C … N-1``, as :attr:`Taxonomy.target_names` lists them).
    Leaves get ``default`` (they have no softmax of their own). Values must be
    finite, ``>= 0`` and, with ``upper``, ``<= upper``.
    """
    c = taxonomy.compiled
    n, k = taxonomy.num_nodes, taxonomy.num_classes
    out = np.full(n, float(default), dtype=np.float64)
    internal = c.target_node[k:]  # node ids of the internal nodes, in target-id order
    if isinstance(values, Mapping):
        for key, value in values.items():
            if key not in taxonomy:
                raise ValueError(f"{name}: {key!r} is not a node of this taxonomy")
            v = taxonomy.node_index(key)
            if c.is_leaf[v]:
                raise ValueError(f"{name}: {key!r} is a class (a leaf); only internal nodes have a softmax over children")
            out[v] = _check_value(value, f"{name}[{key!r}]", upper)
        return out
    if isinstance(values, (numbers.Real, np.floating, np.integer)) and not isinstance(values, bool):
        out[internal] = _check_value(values, name, upper)
        return out
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, a mapping {{internal node: value}} or an array of "
                        f"{n - k} values (one per internal node), got {type(values).__name__}") from None
    if arr.shape != (n - k,):
        raise ValueError(f"{name} must hold one value per internal node ({n - k}, in target-id order "
                         f"C ... N-1), got shape {tuple(arr.shape)}")
    for i, value in enumerate(arr):
        _check_value(value, f"{name}[{i}] (node {taxonomy.target_names[k + i]!r})", upper)
    out[internal] = arr
    return out


def _check_value(value, what: str, upper: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{what} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (upper is not None and value > upper):
        bound = f"in [0, {upper:g}]" if upper is not None else "finite and >= 0"
        raise ValueError(f"{what} must be {bound}, got {value!r}")
    return value


def check_targets(target, n: int, taxonomy: Taxonomy, coarse_labels: bool, ignore_index: int | None,
                  head: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(safe_target, valid)``: int64 target ids with ignored entries replaced by 0, and the mask (None: all valid).

    Class indices ``[0, C)``; with ``coarse_labels`` any target id ``[0, num_nodes)``.
    ``ignore_index=None``: nothing is ignored. The checks of :mod:`taxosmooth._validation`.
    """
    return check_target_ids(target, n, taxonomy.num_classes, coarse_labels=coarse_labels, num_nodes=taxonomy.num_nodes,
                            ignore_index=ignore_index, target_names=taxonomy.target_names, where=head)


def check_class_targets(target, n: int, num_classes: int, ignore_index: int | None,
                        head: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """As :func:`check_targets`, for class indices ``[0, num_classes)`` without a taxonomy."""
    return check_target_ids(target, n, num_classes, ignore_index=ignore_index, where=head)


def reduce(loss: torch.Tensor, valid: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Mean over the valid samples (``nan`` if there are none, as ``F.cross_entropy``), sum, or per sample."""
    if valid is not None:
        loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    count = loss.shape[0] if valid is None else valid.sum()
    return loss.sum() / count


def float_for(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32 (no fp16/bf16 overflow)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def index_buffer(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
