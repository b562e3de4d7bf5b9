"""Misclassification costs from tree distances: ``cost[t, j] = f(d(t, j))``.

``f`` is ``d ** power``, then optionally normalised to [0, 1] (divided by the
largest cost) or passed through a user function. The diagonal is always 0:
a correct prediction costs nothing. Costs are used by
:class:`~taxosmooth.losses.ExpectedCostLoss`, :class:`~taxosmooth.losses.PairwiseCostLoss`
and conditional risk minimisation (:func:`~taxosmooth.decision.crm_predict`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from taxosmooth._checks import check_float_dtype, check_positive, check_square_matrix
from taxosmooth.distances import LCA_KINDS, check_kind, node_distance
from taxosmooth.targets import distance_source
from taxosmooth.taxonomy import Taxonomy

__all__ = ["cost_matrix", "node_costs"]

TRANSFORMS = ("identity", "normalize")


def _apply(d: np.ndarray, power: float, transform, max_value: float, what: str) -> np.ndarray:
    power = check_positive(power, "power")
    out = d**power if power != 1.0 else d.copy()
    if transform is None or transform == "identity":
        return out
    if transform == "normalize":
        m = max_value**power
        return out / m if m > 0 else out
    if callable(transform):
        res = np.asarray(transform(out), dtype=np.float64)
        if res.shape != out.shape:
            raise ValueError(f"transform must be elementwise: returned shape {res.shape} for input {out.shape}")
        bad = np.flatnonzero(~np.isfinite(res) | (res < 0))
        if bad.size:
            k = bad[0]
            where = tuple(int(i) for i in np.unravel_index(k, res.shape))
            raise ValueError(f"transform gave {res.flat[k]} for {what} {where} (distance {out.flat[k]}); costs must be finite and >= 0")
        return res
    raise ValueError(f"transform must be one of {TRANSFORMS} or a callable, got {transform!r}")


def cost_matrix(
    source,
    distance: str = "lca_height",
    transform: str | Callable | None = "identity",
    power: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Cost matrix ``(C, C)``: ``cost[t, j]`` is the cost of predicting ``j`` when the truth is ``t``.

    Parameters
    ----------
    source : Taxonomy or array_like (C, C)
        A taxonomy (its ``distance`` is used) or a distance matrix.
    distance : str, default "lca_height"
    transform : {"identity", "normalize"} or callable, default "identity"
        ``"normalize"`` divides by the largest cost (costs in [0, 1]); a
        callable maps a numpy array of ``d ** power`` elementwise to costs.
    power : float, default 1.0
        ``cost = d ** power`` before the transform.

    Examples
    --------
    >>> tax = Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> cost_matrix(tax, transform="normalize")[0].tolist()
    [0.0, 0.5, 1.0, 1.0]
    """
    check_float_dtype(dtype)
    d = distance_source(source, distance)
    cost = _apply(d, power, transform, float(d.max()), "entry")
    check_square_matrix(cost, "cost matrix")  # a callable must keep the diagonal at 0
    device = source.device if isinstance(source, torch.Tensor) else None  # follow a tensor input
    return torch.from_numpy(cost).to(device=device, dtype=dtype)


def node_costs(
    tax: Taxonomy,
    distance: str = "lca_height",
    transform: str | Callable | None = "identity",
    power: float = 1.0,
) -> np.ndarray:
    """Costs as a function of the LCA node: ``cost[t, j] = table[LCA(t, j)]`` for ``t != j``.

    The structured counterpart of :func:`cost_matrix` (same arguments, same
    values), float64 ``(N,)`` by compiled node id, 0 on leaves. Only for
    distances that are functions of the LCA node (``lca_height``,
    ``lca_depth_complement``).
    """
    check_kind(distance)
    if distance not in LCA_KINDS:
        raise ValueError(f"{distance!r} is not a function of the LCA node; use cost_matrix() instead")
    table = node_distance(tax, distance)
    c = tax.compiled
    branching = c.is_branching
    max_value = float(table[branching].max()) if branching.any() else 0.0
    out = _apply(table, power, transform, max_value, "node")
    if np.any(out[c.is_leaf] != 0):
        raise ValueError("transform(0) must be 0: a correct prediction costs nothing")
    return out
