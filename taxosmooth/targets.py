"""Soft targets ("soft labels") from tree distances.

.. math::

    q_t(i) = \\frac{\\exp(-\\beta\\, d(t, i) / s)}{\\sum_k \\exp(-\\beta\\, d(t, k) / s)},
    \\qquad q^{\\varepsilon}_t = (1 - \\varepsilon)\\,\\mathbb{1}_t + \\varepsilon\\, q_t

Bertinetto et al., "Making Better Mistakes: Leveraging Class Hierarchies with
Deep Networks", CVPR 2020, Sec. 3.2 ("soft labels"); their public code divides
the distances by their maximum (``scale="max"``).

**Coarse labels.** For a target id ``v`` that is an internal node ("the class
is somewhere under ``v``"), the classes under ``v`` are one merged outcome at
distance 0, and every other class ``j`` sits at ``d(v, j) = d(LCA(v, j))``:
``q_v(merged) = 1 / Z``, ``q_v(j) = exp(-β d(LCA(v, j)) / s) / Z``. At a leaf
this is ``q_t`` above. :class:`~taxosmooth.HierarchicalSoftLabelLoss` trains on
these rows (``coarse_labels=True``) without building them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from taxosmooth._checks import check_float_dtype, check_positive, check_probability
from taxosmooth.distances import DistanceSource, Source, resolve_source
from taxosmooth.taxonomy import CompiledTree, Taxonomy

__all__ = ["soft_targets", "beta_for_mass", "resolve_scale"]


def resolve_scale(scale: str | float | None, max_distance: float) -> float:
    """The divisor ``s``: ``"max"`` → the largest distance (1 if all are 0), ``None`` → 1, or a number > 0."""
    if scale is None:
        return 1.0
    if isinstance(scale, str):
        if scale != "max":
            raise ValueError(f"scale must be 'max', None or a positive number, got {scale!r}")
        return max_distance if max_distance > 0 else 1.0
    return check_positive(scale, "scale")


def _check_mix(mix) -> float | None:
    return None if mix is None else check_probability(mix, "mix")


def soft_targets(
    source: Source,
    beta: float,
    distance: str | None = None,
    scale: str | float | None = "max",
    mix: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Soft-target matrix ``(C, C)``: row ``t`` is the target distribution for class ``t``.

    Parameters
    ----------
    source : Taxonomy or array_like (C, C)
        A taxonomy (its ``distance`` is used) or a distance matrix (finite,
        non-negative, zero diagonal), see :func:`~taxosmooth.distances.resolve_source`.
    beta : float
        Inverse temperature, ``>= 0``. ``beta = 0`` is uniform; large ``beta``
        tends to the one-hot label. :func:`beta_for_mass` picks it from the
        mass wanted on the true class.
    distance : str, optional
        Kind of tree distance, with a taxonomy only (default ``"lca_height"``).
    scale : "max", None or float, default "max"
        Divide distances by ``s``: their maximum, 1, or the number given.
    mix : float in [0, 1], optional
        Mix with the one-hot label: ``(1 - mix) onehot + mix q``.
    dtype : torch.dtype, default torch.float32

    Returns
    -------
    torch.Tensor (C, C), rows sum to 1; on the device of a tensor ``source``.

    Examples
    --------
    >>> tax = Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> q = soft_targets(tax, beta=2.0)
    >>> bool(q[0, 1] > q[0, 2])  # zebra gets more of horse's mass than whale
    True
    """
    beta = check_positive(beta, "beta", allow_zero=True)
    check_float_dtype(dtype)
    mix = _check_mix(mix)
    src = resolve_source(source, distance, where="soft_targets")
    d = src.dense()
    s = resolve_scale(scale, float(d.max()))
    # -beta d / s <= 0 with 0 on the diagonal: exp never overflows and each row's sum is >= 1
    # (a huge beta makes the product -inf: exp gives 0, no warning needed)
    with np.errstate(over="ignore"):
        q = np.exp(-beta * (d / s))
    q /= q.sum(axis=1, keepdims=True)
    if mix is not None:
        q *= mix
        q[np.diag_indices_from(q)] += 1.0 - mix
    device = source.device if isinstance(source, torch.Tensor) else None  # follow a tensor input
    return torch.from_numpy(q).to(device=device, dtype=dtype)


def _ring_layout(src: DistanceSource):
    """Per target id: ring sizes ``n`` and ring distances ``d`` (num_nodes, K+1), for an LCA kind.

    Ring 0 of target id ``v`` is the subtree of ``v`` (its classes, one merged
    outcome); ring ``k >= 1`` the classes whose LCA with ``v`` is the ``k``-th
    ancestor ``a_k`` of ``v``, each at distance ``node_table[a_k]``. Padding
    entries (beyond the root) have size 0.
    """
    assert src.taxonomy is not None and src.node_table is not None  # an LCA kind of a taxonomy
    c = src.taxonomy.compiled
    path = node_paths(c)  # (N, K+1) node ids, target-id order, padded with -1
    safe = np.maximum(path, 0)  # padding repeats the root: its rings are empty
    size = (c.leaf_hi - c.leaf_lo)[safe].astype(np.float64)
    ring = np.diff(size, axis=1, prepend=0.0)  # subtree(a_k) \ subtree(a_{k-1})
    d = src.node_table[safe].copy()
    d[:, 0] = 0.0
    return ring, d


def node_paths(c: CompiledTree) -> np.ndarray:
    """``(num_nodes, K+1)`` node ids from each target id's node up to the root, padded with ``-1``.

    Row ``i`` belongs to target id ``i`` (a class's row equals its ``class_path``).
    """
    n = c.num_nodes
    K = c.max_depth
    path = np.full((n, K + 1), -1, dtype=np.int64)
    path[:, 0] = c.target_node
    for k in range(1, K + 1):
        prev = path[:, k - 1]
        ok = prev > 0  # the root (node 0) has no parent
        path[ok, k] = c.parent[prev[ok]]
    return path


def beta_for_mass(
    source: Source,
    mass: float,
    distance: str | None = None,
    scale: str | float | None = "max",
    mix: float | None = None,
) -> float:
    """The ``beta`` at which soft targets keep, on average over the classes, ``mass`` on the true class.

    Solves ``(1/C) Σ_t q_t(t; β) = mass`` for ``β`` (with ``q`` as in
    :func:`soft_targets`, the same ``distance``, ``scale`` and ``mix``).
    The mean is strictly increasing in ``β``: from ``1/C`` (``β = 0``, uniform
    targets; with ``mix``, ``1 - ε + ε/C``) towards ``1`` (one-hot) — less
    when a user matrix has zero distances off the diagonal. Bisection to
    ``1e-12`` relative in ``β``; O(nodes) per step for the LCA kinds, O(C²)
    otherwise.

    Parameters
    ----------
    source : Taxonomy or array_like (C, C)
    mass : float
        The mean target mass on the true class, strictly between the two limits above.
    distance, scale, mix
        As in :func:`soft_targets`.

    Examples
    --------
    >>> tax = Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> beta = beta_for_mass(tax, 0.8)
    >>> round(float(soft_targets(tax, beta).diagonal().mean()), 6)
    0.8
    """
    mix = _check_mix(mix)
    if isinstance(mass, bool) or not isinstance(mass, (int, float, np.floating, np.integer)):
        raise TypeError(f"mass must be a number in (0, 1), got {mass!r}")
    mass = float(mass)
    src = resolve_source(source, distance, where="beta_for_mass")
    C = src.num_classes
    if src.structured:
        ring, d = _ring_layout(src)
        ring, d = ring[:C], d[:C]  # the classes' rows
        s = resolve_scale(scale, src.max_distance())
        d = d / s
        counts = ring
    else:
        dense = src.dense()
        s = resolve_scale(scale, float(dense.max()))
        d = dense / s
        counts = None

    def mean_mass(beta: float) -> float:
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            e = np.exp(-beta * d)
        e[np.isnan(e)] = 1.0  # beta * 0 with beta = inf
        z = (e * counts).sum(axis=1) if counts is not None else e.sum(axis=1)
        q = 1.0 / z if counts is not None else np.diagonal(e) / z
        if mix is not None:
            q = (1.0 - mix) + mix * q
        return float(q.mean())

    low, high = mean_mass(0.0), mean_mass(math.inf)
    if not low < mass < high:
        raise ValueError(
            f"mass must lie strictly between {low:.6g} (beta = 0) and {high:.6g} (beta -> inf) for this "
            f"source{'' if mix is None else f' and mix={mix:g}'}, got {mass!r}"
        )
    lo, hi = 0.0, 1.0
    while mean_mass(hi) < mass:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mean_mass(mid) < mass:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return 0.5 * (lo + hi)



def __dir__() -> list[str]:
    return list(__all__)
