"""Misclassification costs from tree distances: ``cost[t, j] = f(d(t, j))``.

``f`` is ``d ** power``, then optionally normalised to [0, 1] (divided by the
largest cost) or passed through a user function. The diagonal is always 0:
a correct prediction costs nothing. Costs are used by
:class:`~taxosmooth.losses.ExpectedCostLoss`, :class:`~taxosmooth.losses.PairwiseCostLoss`
and conditional risk minimisation (:func:`~taxosmooth.decision.crm_predict`);
every one of them resolves its ``source`` with :func:`resolve_costs`, so the
same arguments mean the same costs everywhere.

A ``source`` is a :class:`~taxosmooth.Taxonomy` (``distance=`` picks the tree
distance) or a ``(C, C)`` matrix of distances (finite, ``>= 0``, zero
diagonal): ``transform`` and ``power`` apply to both, ``distance`` only to a
taxonomy (refused with a matrix). With the defaults a matrix is the cost
matrix itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from taxosmooth._checks import check_float_dtype, check_positive, check_square_matrix
from taxosmooth.distances import DistanceSource, Source, resolve_source
from taxosmooth.taxonomy import Taxonomy

__all__ = ["cost_matrix", "node_costs", "resolve_costs", "CostSource", "TRANSFORMS"]

TRANSFORMS = ("identity", "normalize")


def _check_transform(transform):
    if transform is None or callable(transform) or transform in TRANSFORMS:
        return transform
    raise ValueError(f"transform must be one of {TRANSFORMS} or a callable (or None), got {transform!r}")


def _apply(d: np.ndarray, power: float, transform, max_value: float, what: str) -> np.ndarray:
    """``f(d)``: ``d ** power``, then the transform; every result is checked finite and ``>= 0``."""
    with np.errstate(over="ignore"):
        out = d**power if power != 1.0 else d.copy()
    if transform == "normalize":
        # the largest cost, computed as the entries are (d ** power), so that it is their maximum
        with np.errstate(over="ignore"):
            m = np.float64(max_value) ** power
        if np.isfinite(m):
            out = out / m if m > 0 else out
        else:
            # d ** p / max ** p overflows, (d / max) ** p is the same cost in [0, 1] (underflow to 0 is exact enough)
            with np.errstate(under="ignore"):
                out = (d / np.float64(max_value)) ** power
    elif callable(transform):
        res = np.asarray(transform(out), dtype=np.float64)
        if res.shape != out.shape:
            raise ValueError(f"transform must be elementwise: returned shape {res.shape} for input {out.shape}")
        bad = np.flatnonzero(~np.isfinite(res) | (res < 0))
        if bad.size:
            k = bad[0]
            where = tuple(int(i) for i in np.unravel_index(k, res.shape))
            raise ValueError(f"transform gave {res.flat[k]} for {what} {where} (distance {out.flat[k]}); costs must "
                             "be finite and >= 0")
        return res
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        k = bad[0]
        where = tuple(int(i) for i in np.unravel_index(k, out.shape))
        raise ValueError(f"power={power:g} overflows: distance {d.flat[k]} ** {power:g} for {what} {where} is not a "
                         "finite float64; lower the power")
    return out


#: A resolved cost source: the same class as a resolved distance source (one concept, one holder), its node
#: table holding the costs (transformed distances) of each LCA node, or its dense matrix the costs.
CostSource = DistanceSource


def resolve_costs(
    source: Source | CostSource,
    distance: str | None = None,
    transform: str | Callable | None = "identity",
    power: float = 1.0,
    *,
    where: str = "source",
    what: str = "cost matrix",
) -> CostSource:
    """Resolve a cost ``source`` once: the single place that turns "taxonomy or matrix" into costs.

    Parameters
    ----------
    source : Taxonomy, array_like (C, C), Tensor (C, C) or CostSource
        A taxonomy, or a distance matrix (with the default ``transform`` and
        ``power``, the cost matrix itself).
    distance : str, optional
        Tree distance of a taxonomy (default ``"lca_height"``); refused with a matrix.
    transform : {"identity", "normalize"}, None or callable, default "identity"
    power : float, default 1.0
    where : str
        The caller's name, for error messages.
    """
    if isinstance(source, CostSource):
        if distance is not None or transform not in (None, "identity") or power != 1.0:
            raise ValueError(f"{where}: the costs are already resolved; pass distance, transform and power "
                             "when resolving them")
        return source
    transform = _check_transform(transform)
    power = check_positive(power, "power")
    src = resolve_source(source, distance, where=where, what=what)
    if src.structured:
        assert src.taxonomy is not None  # structured: a taxonomy's
        table = node_costs(src.taxonomy, src.distance, transform, power)
        table.setflags(write=False)
        return CostSource(src.taxonomy, src.distance, src.num_classes, table, None, None)
    d = src.dense()
    cost = _apply(d, power, transform, float(d.max()), "entry")
    check_square_matrix(cost, f"{where}: cost matrix")  # a callable must keep the diagonal at 0
    cost.setflags(write=False)
    return CostSource(src.taxonomy, src.distance, src.num_classes, None, cost, src.given_dtype)


def cost_matrix(
    source: Source,
    distance: str | None = None,
    transform: str | Callable | None = "identity",
    power: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Cost matrix ``(C, C)``: ``cost[t, j]`` is the cost of predicting ``j`` when the truth is ``t``.

    Parameters
    ----------
    source : Taxonomy or array_like (C, C)
        A taxonomy (its ``distance`` is used) or a distance matrix.
    distance : str, optional
        Tree distance, with a taxonomy only (default ``"lca_height"``).
    transform : {"identity", "normalize"} or callable, default "identity"
        ``"normalize"`` divides by the largest cost (costs in [0, 1]); a
        callable maps a numpy array of ``d ** power`` elementwise to costs.
    power : float, default 1.0
        ``cost = d ** power`` before the transform.
    dtype : torch.dtype, default torch.float32

    Examples
    --------
    >>> tax = Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> cost_matrix(tax, transform="normalize")[0].tolist()
    [0.0, 0.5, 1.0, 1.0]
    """
    check_float_dtype(dtype)
    costs = resolve_costs(source, distance, transform, power, where="cost_matrix", what="distance matrix")
    device = source.device if isinstance(source, torch.Tensor) else None  # follow a tensor input
    return torch.from_numpy(np.array(costs.dense())).to(device=device, dtype=dtype)


def node_costs(
    taxonomy: Taxonomy,
    distance: str | None = None,
    transform: str | Callable | None = "identity",
    power: float = 1.0,
) -> np.ndarray:
    """Costs as a function of the LCA node: ``cost[t, j] = table[LCA(t, j)]`` for ``t != j``.

    The structured counterpart of :func:`cost_matrix` (same arguments, same
    values), float64 ``(N,)`` by compiled node id, 0 on leaves. Only for
    distances that are functions of the LCA node (``lca_height``,
    ``lca_depth_complement``).
    """
    if not isinstance(taxonomy, Taxonomy):
        raise TypeError(f"node_costs: taxonomy must be a Taxonomy, got {type(taxonomy).__name__}")
    transform = _check_transform(transform)
    power = check_positive(power, "power")
    src: DistanceSource = resolve_source(taxonomy, distance, where="node_costs")
    if not src.structured:
        raise ValueError(f"{src.distance!r} is not a function of the LCA node; use cost_matrix() instead")
    table = src.node_table
    assert table is not None  # structured
    c = taxonomy.compiled
    out = _apply(table, power, transform, src.max_distance(), "node")
    if np.any(out[c.is_leaf] != 0):
        raise ValueError("transform(0) must be 0: a correct prediction costs nothing")
    return np.array(out)



def __dir__() -> list[str]:
    return list(__all__)
