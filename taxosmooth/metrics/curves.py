"""Operating curves of the threshold rule: every trade-off between specificity and correctness at once.

Valmadre, "Hierarchical classification at multiple operating points",
NeurIPS 2022 (code: jvlmdr/hiercls, ``infer.pareto_optimal_predictions``,
``metrics.operating_curve``, ``metrics.pareto_integrate``). The threshold rule
of :func:`taxosmooth.decision.predict_node` answers, for a threshold ``τ``, the
most specific node with ``P(v) > τ``. As ``τ`` falls from 1 to 0 each sample's
answer moves from the root down a short sequence of nodes (its **records**,
see :func:`taxosmooth.decision.nodes.threshold_steps`), changing exactly when
``τ`` crosses the probability of the next record. So every per-sample metric
is a step function of ``τ``, and the mean over samples at *every* threshold
comes from sorting the steps of all samples once — exact, no grid of
thresholds.

Per-sample metrics on the curve (the fields of :func:`~taxosmooth.metrics.lca_metrics`,
:data:`~taxosmooth.metrics.LCA_FIELDS`): ``exact``, ``correct``, and the
excess, deficient, distance, precision, recall and F1 in depth and in
information. Their means are the curve's coordinates; the curves Valmadre
integrates are correct against depth or information recall (``AC(depth)``,
``AC(info)``), precision against recall (``AP(depth)``, ``AP(info)``), and
correct against exact (``AC(exact)``): :meth:`OperatingCurve.areas`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from taxosmooth._tensor_checks import as_probabilities
from taxosmooth.metrics._pairs import LCA_FIELDS, PairDistances, lca_values
from taxosmooth.tree_ops.ancestors import take

if TYPE_CHECKING:
    from taxosmooth.taxonomy import Taxonomy

__all__ = ["OperatingCurve", "operating_curve", "pareto_front", "pareto_integrate", "AREAS"]

#: the areas of :meth:`OperatingCurve.areas`: name → (x, y), as in Valmadre's evaluation
AREAS = {
    "AP(depth)": ("depth_recall", "depth_precision"),
    "AP(info)": ("info_recall", "info_precision"),
    "AC(depth)": ("depth_recall", "correct"),
    "AC(info)": ("info_recall", "correct"),
    "AC(exact)": ("exact", "correct"),
}


@dataclass
class OperatingCurve:
    """The operating curve of the threshold rule (from :func:`operating_curve`).

    Attributes
    ----------
    thresholds : Tensor (M,) float64
        ``thresholds[0] = 1``; then the distinct step values, descending. Point
        ``g >= 1`` is the threshold rule at every ``τ`` in
        ``[thresholds[g+1], thresholds[g])`` (``thresholds[M] := 0``); point 0
        at every ``τ`` in ``[thresholds[1], 1]``, where every sample answers
        the root. (``thresholds[1:]`` are hiercls's ``operating_curve`` scores.)
    metrics : dict of str → Tensor (M,) float64
        The mean over samples of each field of :data:`~taxosmooth.metrics.LCA_FIELDS`
        at each point (hiercls returns sums). NaN for an empty set.
    num_samples : int

    Notes
    -----
    **An empty set** (``num_samples == 0``) has one point, at threshold 1,
    whose means are NaN (the mean over no samples, as every metric of
    :mod:`taxosmooth.metrics` is for ``N = 0``). Its :meth:`area` and
    :meth:`areas` are NaN for the same reason; its :meth:`front` raises a
    ``ValueError`` that says the set is empty (there are no points to compare).
    """

    thresholds: torch.Tensor
    metrics: dict = field(repr=False)
    num_samples: int

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self.metrics[name]
        except KeyError:
            raise KeyError(f"no metric {name!r} on the curve; choose one of {', '.join(self.metrics)}") from None

    def __len__(self) -> int:
        return int(self.thresholds.shape[0])

    def front(self, x: str, y: str) -> dict[str, torch.Tensor]:
        """The Pareto front of ``(self[x], self[y])`` (both maximised): ``x``, ``y`` and ``thresholds`` of its
        points, ``x`` ascending (see :func:`pareto_front`)."""
        xs, ys = self[x], self[y]  # KeyError naming the choices first
        if self.num_samples == 0:
            raise ValueError(f"the curve is of an empty set (num_samples = 0): no points, so no Pareto front of "
                             f"({x!r}, {y!r})")
        idx = pareto_front(xs, ys)
        return {"x": self[x][idx], "y": self[y][idx], "thresholds": self.thresholds[idx]}

    def area(self, x: str, y: str) -> torch.Tensor:
        """:func:`pareto_integrate` of ``(self[x], self[y])``; NaN for an empty set (``num_samples == 0``)."""
        xs, ys = self[x], self[y]  # KeyError naming the choices first
        if self.num_samples == 0:
            return torch.tensor(math.nan, dtype=torch.float64, device=self.thresholds.device)
        return pareto_integrate(xs, ys)

    def areas(self) -> dict[str, torch.Tensor]:
        """The areas of :data:`AREAS`: ``AP(depth)``, ``AP(info)``, ``AC(depth)``, ``AC(info)``, ``AC(exact)``
        (each NaN for an empty set)."""
        return {name: self.area(x, y) for name, (x, y) in AREAS.items()}


# ---------------------------------------------------------------------- Pareto fronts
def _check_xy(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(x).detach().to(torch.float64)
    y = torch.as_tensor(y).detach().to(torch.float64).to(x.device)
    if x.ndim != 1 or x.shape != y.shape or x.shape[0] == 0:
        raise ValueError(f"x and y must be 1-D of one non-zero length, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    for name, v in (("x", x), ("y", y)):
        bad = ~torch.isfinite(v)
        if bad.any():
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"{name}[{i}] is {float(v[i])}; the points must be finite")
    if (x < 0).any():
        i = int((x < 0).nonzero()[0, 0])
        raise ValueError(f"x[{i}] = {float(x[i])} is negative; the area is taken from x = 0")
    return x, y


def pareto_front(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Indices of the Pareto-optimal points of ``(x, y)``, both maximised, ``x`` ascending.

    A point is on the front when no other point is at least as good in both
    coordinates and better in one; of identical points the lowest index is kept.

    Examples
    --------
    >>> pareto_front(torch.tensor([0.1, 0.5, 0.4, 0.9]), torch.tensor([1.0, 0.8, 0.7, 0.2])).tolist()
    [0, 1, 3]
    """
    x, y = _check_xy(x, y)
    idx = torch.arange(x.shape[0], device=x.device)
    # x descending, then y descending, then index ascending (stable sorts, last key first)
    order = idx
    order = order[torch.sort(-y[order], stable=True).indices]
    order = order[torch.sort(-x[order], stable=True).indices]
    ys = y[order]
    best = torch.cummax(ys, 0).values
    keep = torch.ones_like(ys, dtype=torch.bool)
    keep[1:] = ys[1:] > best[:-1]
    return order[keep].flip(0)


def pareto_integrate(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Area under the Pareto envelope of ``(x, y)``: ``∫_0^{max x} max{y_j : x_j >= t} dt``.

    The envelope is a step function (the best ``y`` still reachable at ``x >= t``);
    this is Valmadre's ``pareto_integrate`` (NeurIPS 2022). With ``x`` recall
    and ``y`` precision it is the area under the precision-recall front.

    Parameters
    ----------
    x, y : Tensor (M,)
        Finite, ``x >= 0``.

    Returns
    -------
    Tensor
        0-dim float64.

    Examples
    --------
    >>> pareto_integrate(torch.tensor([0.5, 1.0]), torch.tensor([1.0, 0.5])).item()
    0.75
    """
    x, y = _check_xy(x, y)
    order = torch.sort(x, stable=True).indices
    xs, ys = x[order], y[order]
    envelope = torch.cummax(ys.flip(0), 0).values.flip(0)
    width = xs - torch.cat([xs.new_zeros(1), xs[:-1]])
    return (width * envelope).sum()


# ---------------------------------------------------------------------- the curve
def _curve_steps(probs, target, pairs: PairDistances, from_logits: bool, coarse_labels: bool):
    """The steps of every sample's sequence: ``(values (R,), deltas (R, F), sums at the root (F,), N)``."""
    from taxosmooth.decision.nodes import chunks, node_mass, rules, threshold_steps
    from taxosmooth.metrics.functional import _labels

    tax = pairs.taxonomy
    assert tax is not None  # _tree_pairs: a taxonomy's
    p = as_probabilities(probs.detach() if isinstance(probs, torch.Tensor) else probs, from_logits, tax.num_classes)
    label = _labels(target, p.shape[0], pairs, tax.num_classes, coarse_labels, p.device)
    v = pairs.node_of(label)
    nf = len(LCA_FIELDS)
    anc = pairs.ancestors(p.device)

    def stacked(label_nodes, pred_nodes):
        vals = lca_values(pairs, label_nodes, anc.truncate(pred_nodes, label_nodes))
        return torch.stack([vals[k] for k in LCA_FIELDS], dim=-1)

    root = stacked(v, torch.zeros_like(v))  # (N, F)
    if tax.num_nodes == 1 or p.shape[0] == 0:
        return p.new_zeros(0, dtype=torch.float64), root.new_zeros(0, nf), root.sum(0), p.shape[0]
    tree = pairs.tree_on(p.device)
    r = rules(tree, tax)
    samples, nodes, values = [], [], []
    for a, b in chunks(p.shape[0], tree.num_nodes, p.device):
        sample, node, value = threshold_steps(node_mass(tree, p[a:b]), r, p[a:b].amax(1))
        samples.append(sample + a)
        nodes.append(node)
        values.append(value.to(torch.float64))
    sample, node, value = torch.cat(samples), torch.cat(nodes), torch.cat(values)
    cur = stacked(take(v, sample), node)
    # the previous answer of each step: the sample's next (less specific) record, or the root
    same = torch.zeros_like(sample, dtype=torch.bool)
    same[:-1] = sample[1:] == sample[:-1]
    nxt = torch.cat([cur[1:], cur.new_zeros(1, nf)], 0)
    prev = torch.where(same[:, None], nxt, root.index_select(0, sample))
    return value, cur - prev, root.sum(0), p.shape[0]


def _curve_from(values: torch.Tensor, deltas: torch.Tensor, root_sums: torch.Tensor, n: int) -> OperatingCurve:
    order = torch.sort(values, descending=True, stable=True).indices
    v = values.index_select(0, order)
    cums = torch.cumsum(deltas.index_select(0, order), 0)
    last = torch.ones_like(v, dtype=torch.bool)
    last[:-1] = v[1:] != v[:-1]
    last = last.nonzero()[:, 0]
    totals = torch.cat([root_sums[None, :].to(cums.dtype), root_sums[None, :].to(cums.dtype) + cums.index_select(0, last)], 0)
    thresholds = torch.cat([v.new_ones(1), v.index_select(0, last)])
    means = totals / n if n else torch.full_like(totals, math.nan)
    return OperatingCurve(thresholds, {k: means[:, i] for i, k in enumerate(LCA_FIELDS)}, n)


def operating_curve(probs: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, *, from_logits: bool = False,
                    coarse_labels: bool = False) -> OperatingCurve:
    """The exact operating curve of the threshold rule over all thresholds ``τ`` in ``(0, 1]``.

    For every distinct threshold at which some sample's answer changes, the
    mean over samples of each per-sample LCA metric (:func:`~taxosmooth.metrics.lca_metrics`)
    of the answers ``predict_node(probs, taxonomy, threshold=τ)``; computed
    from the node probabilities' prediction sequences, not by sweeping a grid,
    O(samples × nodes). Predictions under a coarse label count as the label.

    Parameters
    ----------
    probs : Tensor (N, C)
        Class probabilities, or logits with ``from_logits=True`` (calibrate first:
        :func:`taxosmooth.calibration.fit_temperature`).
    target : LongTensor (N,)
    taxonomy : Taxonomy
    from_logits : bool, default False
    coarse_labels : bool, default False

    Returns
    -------
    OperatingCurve
        ``curve.thresholds``, ``curve["correct"]``, ``curve.front("depth_recall", "correct")``,
        ``curve.areas()``.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> p = torch.tensor([[0.5, 0.25, 0.125, 0.125]])       # horse 0.5, mammal 0.75
    >>> curve = operating_curve(p, torch.tensor([0]), tax)  # the truth is horse
    >>> curve.thresholds.tolist()                           # root above 0.75, mammal down to 0.5, horse below
    [1.0, 0.75, 0.5]
    >>> curve["exact"].tolist(), curve["depth_recall"].tolist(), curve["correct"].tolist()
    ([0.0, 0.0, 1.0], [0.0, 0.5, 1.0], [1.0, 1.0, 1.0])
    """
    from taxosmooth.metrics.functional import _tree_pairs

    pairs = _tree_pairs(taxonomy, "operating curves")
    values, deltas, root, n = _curve_steps(probs, target, pairs, from_logits, coarse_labels)
    return _curve_from(values, deltas, root, n)


def __dir__() -> list[str]:
    return list(__all__)
