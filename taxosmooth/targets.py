"""Soft targets ("soft labels") from tree distances.

.. math::

    q_t(i) = \\frac{\\exp(-\\beta\\, d(t, i) / s)}{\\sum_k \\exp(-\\beta\\, d(t, k) / s)},
    \\qquad q^{\\varepsilon}_t = (1 - \\varepsilon)\\,\\mathbb{1}_t + \\varepsilon\\, q_t

Bertinetto et al., "Making Better Mistakes: Leveraging Class Hierarchies with
Deep Networks", CVPR 2020, Sec. 3.2 ("soft labels"); their public code divides
the distances by their maximum (``scale="max"``).
"""

from __future__ import annotations

import numpy as np
import torch

from taxosmooth._checks import check_float_dtype, check_positive, check_probability, check_square_matrix
from taxosmooth.distances import LCA_KINDS, check_kind, class_distances, node_distance
from taxosmooth.taxonomy import Taxonomy

__all__ = ["soft_targets", "resolve_scale", "distance_source"]


def distance_source(source, distance: str = "lca_height") -> np.ndarray:
    """Dense ``(C, C)`` distances from a :class:`Taxonomy` or a validated user matrix."""
    if isinstance(source, Taxonomy):
        return class_distances(source, check_kind(distance))
    return check_square_matrix(source, "distance matrix")


def max_pair_distance(tax: Taxonomy, distance: str) -> float:
    """``max_{i != j} d(i, j)`` without building the matrix when ``d`` is a function of the LCA."""
    if distance in LCA_KINDS:
        c = tax.compiled
        branching = c.is_branching
        return float(node_distance(tax, distance)[branching].max()) if branching.any() else 0.0
    return float(class_distances(tax, distance).max())


def resolve_scale(scale, max_distance: float) -> float:
    """The divisor ``s``: ``"max"`` → the largest distance (1 if all are 0), ``None`` → 1, or a number > 0."""
    if scale is None:
        return 1.0
    if isinstance(scale, str):
        if scale != "max":
            raise ValueError(f"scale must be 'max', None or a positive number, got {scale!r}")
        return max_distance if max_distance > 0 else 1.0
    return check_positive(scale, "scale")


def soft_targets(
    source,
    beta: float,
    distance: str = "lca_height",
    scale="max",
    epsilon: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Soft-target matrix ``(C, C)``: row ``t`` is the target distribution for class ``t``.

    Parameters
    ----------
    source : Taxonomy or array_like (C, C)
        A taxonomy (its ``distance`` is used) or a distance matrix (finite,
        non-negative, zero diagonal).
    beta : float
        Inverse temperature, ``>= 0``. ``beta = 0`` is uniform; large ``beta``
        tends to the one-hot label.
    distance : str, default "lca_height"
        Kind of tree distance when ``source`` is a taxonomy.
    scale : "max", None or float, default "max"
        Divide distances by ``s``: their maximum, 1, or the number given.
    epsilon : float in [0, 1], optional
        Mix with the one-hot label: ``(1 - epsilon) onehot + epsilon q``.
    dtype : torch.dtype, default torch.float32

    Returns
    -------
    torch.Tensor (C, C), rows sum to 1.

    Examples
    --------
    >>> tax = Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> q = soft_targets(tax, beta=2.0)
    >>> bool(q[0, 1] > q[0, 2])  # zebra gets more of horse's mass than whale
    True
    """
    beta = check_positive(beta, "beta", allow_zero=True)
    check_float_dtype(dtype)
    d = distance_source(source, distance)
    s = resolve_scale(scale, float(d.max()))
    logits = -beta * d / s
    # the diagonal is 0 and every other entry <= 0, so exp never overflows
    q = np.exp(logits - logits.max(axis=1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    if epsilon is not None:
        epsilon = check_probability(epsilon, "epsilon")
        q *= epsilon
        q[np.diag_indices_from(q)] += 1.0 - epsilon
    device = source.device if isinstance(source, torch.Tensor) else None  # follow a tensor input
    return torch.from_numpy(q).to(device=device, dtype=dtype)
