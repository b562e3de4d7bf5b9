"""The metrics of :mod:`taxosmooth.metrics` as ``torchmetrics.Metric`` classes.

Needs the optional dependency torchmetrics (``pip install "taxosmooth[metrics]"``).

Every state is a **sum** over samples (counts, sums of distances, per-bin
sums) reduced with ``dist_reduce_fx="sum"``; ``compute()`` forms the ratios
once, at the end. So a metric updated batch by batch, or on several processes
under ``DistributedDataParallel``, equals the functional metric of the whole
set — batch averages are never averaged. The one exception is
:class:`HierarchicalOperatingCurve`, whose states are the concatenated steps of
every sample's prediction sequence (``dist_reduce_fx="cat"``): the curve is a
function of that set of steps, so it too is exact across batches and processes.

Arguments, rules for coarse labels and node predictions: as in the functions
of :mod:`taxosmooth.metrics.functional` and :mod:`taxosmooth.metrics.curves`.

Examples
--------
>>> import taxosmooth as ts
>>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
>>> metric = MistakeSeverity(tax)
>>> metric.update(torch.tensor([[0.1, 0.0, 0.9, 0.0]]), torch.tensor([0]))
>>> metric.update(torch.tensor([[0.1, 0.9, 0.0, 0.0]]), torch.tensor([0]))
>>> metric.compute().item()   # mistakes at distance 2 and 1
1.5
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

try:
    import torchmetrics
except ImportError as exc:  # pragma: no cover - exercised by a test that hides torchmetrics
    raise ImportError(
        "taxosmooth's torchmetrics classes need the optional dependency torchmetrics: "
        'pip install "taxosmooth[metrics]"'
    ) from exc

import torch

from taxosmooth._ranking import stable_topk
from taxosmooth._tensor_checks import as_probabilities
from taxosmooth._validation import check_coarse, check_k
from taxosmooth.metrics import curves as Cv
from taxosmooth.metrics import functional as F
from taxosmooth.metrics._pairs import LCA_FIELDS, PairDistances

if TYPE_CHECKING:
    from taxosmooth.distances import Source
    from taxosmooth.taxonomy import Taxonomy

__all__ = [
    "TopKError",
    "MistakeSeverity",
    "MeanHierarchicalDistanceAtK",
    "MinHierarchicalDistanceAtK",
    "HierarchicalPrecision",
    "HierarchicalRecall",
    "HierarchicalF1",
    "LCAMetrics",
    "AccuracyAtDepth",
    "FullPathAccuracy",
    "PathConsistency",
    "ExpectedCalibrationError",
    "HierarchicalReport",
    "HierarchicalOperatingCurve",
]


class _SumMetric(torchmetrics.Metric):
    """A metric whose states are sums, reduced across processes with ``sum``."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sum_names: list[str] = []
        self.pairs: PairDistances | None = None
        self.coarse_labels = False

    def _sum_state(self, name: str, floating: bool, size: int | None = None) -> None:
        dtype = torch.float64 if floating else torch.int64
        default = torch.zeros(() if size is None else (size,), dtype=dtype)
        self.add_state(name, default=default, dist_reduce_fx="sum")
        self._sum_names.append(name)

    def _add(self, stats: dict) -> None:
        for name in self._sum_names:
            if name in stats:
                state = getattr(self, name)
                setattr(self, name, state + stats[name].to(device=state.device, dtype=state.dtype))

    def _stats(self) -> dict:
        return {name: getattr(self, name) for name in self._sum_names}

    def _source(self, source, distance: str | None, coarse_labels: bool, taxonomy_only: str | None = None) -> None:
        self.pairs = PairDistances(source, distance)
        if taxonomy_only and self.pairs.taxonomy is None:
            raise TypeError(f"{type(self).__name__} needs a Taxonomy ({taxonomy_only}), not a distance matrix")
        self.coarse_labels = check_coarse(coarse_labels)
        if coarse_labels and self.pairs.taxonomy is None:
            raise TypeError("coarse_labels=True needs a Taxonomy (the subtree of each coarse label), not a distance matrix")
        self.num_classes = self.pairs.num_classes

    def _check(self, scores, target):
        return F._check(scores, target, getattr(self, "num_classes", None), self.pairs, self.coarse_labels)

    def _predicted(self, scores, target):
        assert self.pairs is not None  # the metrics that predict call _source first
        return F._predicted(scores, target, self.pairs, self.coarse_labels, nodes=True)


class TopKError(_SumMetric):
    """Top-k error; see :func:`taxosmooth.metrics.topk_error`.

    Parameters
    ----------
    k : int, default 1
    taxonomy : Taxonomy, optional
        Needed with ``coarse_labels=True``.
    coarse_labels : bool, default False
    """

    higher_is_better = False
    total: torch.Tensor  # a state

    def __init__(self, k: int = 1, *, taxonomy: Taxonomy | None = None, coarse_labels: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        self.k = k
        self.coarse_labels = check_coarse(coarse_labels)
        self.pairs = F._optional_pairs(taxonomy, coarse_labels)
        if self.pairs is not None:
            self.num_classes = self.pairs.num_classes
        self._sum_state(f"wrong_at_{k}", floating=False)
        self._sum_state("total", floating=False)

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        scores, target = self._check(scores, target)
        check_k(self.k, scores.shape[1])
        self._add(F._topk_stats(scores, target, (self.k,), self.pairs, self.coarse_labels))

    def compute(self) -> torch.Tensor:
        return F._ratio(getattr(self, f"wrong_at_{self.k}"), self.total)


class MistakeSeverity(_SumMetric):
    """Mean distance of the wrong top-1 predictions (NaN if none); see
    :func:`taxosmooth.metrics.mistake_severity`. ``update`` takes scores or predicted target ids.

    Parameters
    ----------
    source : Taxonomy or Tensor (C, C)
    distance : str, optional
        With a taxonomy only (default ``"lca_height"``).
    coarse_labels : bool, default False
    """

    higher_is_better = False
    pairs: PairDistances  # set by _source
    mistake_distance: torch.Tensor  # states
    mistakes: torch.Tensor

    def __init__(self, source: Source, distance: str | None = None, *, coarse_labels: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._source(source, distance, coarse_labels)
        self._sum_state("mistake_distance", floating=True)
        self._sum_state("mistakes", floating=False)

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        pred, label = self._predicted(scores, target)
        self._add(F._severity_stats(pred, label, self.pairs))

    def compute(self) -> torch.Tensor:
        return F._ratio(self.mistake_distance, self.mistakes)


class _HierarchicalDistance(_SumMetric):
    higher_is_better = False
    pairs: PairDistances  # set by _source
    total: torch.Tensor  # a state
    _key = ""

    def __init__(self, source: Source, k: int, distance: str | None = None, *, coarse_labels: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._source(source, distance, coarse_labels)
        self.k = check_k(k, self.pairs.num_classes)
        self._sum_state(f"{self._key}_at_{self.k}", floating=True)
        self._sum_state("total", floating=False)

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        scores, target = self._check(scores, target)
        stats = F._hdist_stats(stable_topk(scores, self.k), target, self.pairs, self.k)
        stats["total"] = torch.tensor(target.shape[0])
        self._add(stats)

    def compute(self) -> torch.Tensor:
        return F._ratio(getattr(self, f"{self._key}_at_{self.k}"), self.total)


class MeanHierarchicalDistanceAtK(_HierarchicalDistance):
    """Mean over samples of the mean distance of the k best predictions; see
    :func:`taxosmooth.metrics.mean_hierarchical_distance_at_k`.

    Parameters
    ----------
    source : Taxonomy or Tensor (C, C)
    k : int
    distance : str, optional
        With a taxonomy only (default ``"lca_height"``).
    coarse_labels : bool, default False
    """

    _key = "dist_mean"


class MinHierarchicalDistanceAtK(_HierarchicalDistance):
    """Mean over samples of the distance of the closest of the k best predictions; see
    :func:`taxosmooth.metrics.min_hierarchical_distance_at_k`.

    Parameters
    ----------
    source : Taxonomy or Tensor (C, C)
    k : int
    distance : str, optional
        With a taxonomy only (default ``"lca_height"``).
    coarse_labels : bool, default False
    """

    _key = "dist_min"


class HierarchicalDistanceAtK(MeanHierarchicalDistanceAtK):
    """Deprecated alias of :class:`MeanHierarchicalDistanceAtK`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn("HierarchicalDistanceAtK is deprecated; use MeanHierarchicalDistanceAtK (the mean distance of "
                      "the k best predictions; MinHierarchicalDistanceAtK is the closest of them)",
                      DeprecationWarning, stacklevel=2)
        super().__init__(*args, **kwargs)


class HierarchicalDistanceTopK(MinHierarchicalDistanceAtK):
    """Deprecated alias of :class:`MinHierarchicalDistanceAtK`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn("HierarchicalDistanceTopK is deprecated; use MinHierarchicalDistanceAtK (the distance of the "
                      "closest of the k best predictions)", DeprecationWarning, stacklevel=2)
        super().__init__(*args, **kwargs)


_HPRF_STATES = ("ancestors_common", "ancestors_pred", "ancestors_true", "sample_precision", "sample_recall",
                "sample_f1", "total")


class _HierarchicalPRF(_SumMetric):
    higher_is_better = True
    pairs: PairDistances  # set by _source
    _which = 0

    def __init__(self, taxonomy: Taxonomy, *, average: str = "micro", coarse_labels: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._source(taxonomy, None, coarse_labels, taxonomy_only="ancestor sets")
        self.average = F._check_average(average)
        for name in _HPRF_STATES:
            self._sum_state(name, floating=name.startswith("sample_"))

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        pred, label = self._predicted(scores, target)
        self._add(F._hprf_stats(pred, label, self.pairs))

    def compute(self) -> torch.Tensor:
        return F._hprf_from(self._stats(), self.average)[self._which]


class HierarchicalPrecision(_HierarchicalPRF):
    """Hierarchical precision on ancestor sets (Kiritchenko et al. 2005); see
    :func:`taxosmooth.metrics.hierarchical_precision_recall_f1`.

    Parameters
    ----------
    taxonomy : Taxonomy
    average : {"micro", "macro"}, default "micro"
    coarse_labels : bool, default False
    """

    _which = 0


class HierarchicalRecall(_HierarchicalPRF):
    """Hierarchical recall on ancestor sets (Kiritchenko et al. 2005); see
    :func:`taxosmooth.metrics.hierarchical_precision_recall_f1`.

    Parameters
    ----------
    taxonomy : Taxonomy
    average : {"micro", "macro"}, default "micro"
    coarse_labels : bool, default False
    """

    _which = 1


class HierarchicalF1(_HierarchicalPRF):
    """Hierarchical F1 on ancestor sets (Kiritchenko et al. 2005); see
    :func:`taxosmooth.metrics.hierarchical_precision_recall_f1`.

    Parameters
    ----------
    taxonomy : Taxonomy
    average : {"micro", "macro"}, default "micro"
    coarse_labels : bool, default False
    """

    _which = 2


class LCAMetrics(_SumMetric):
    """Valmadre's LCA metrics (exact, correct, excess / deficient / distance / precision / recall / F1 in depth
    and information); see :func:`taxosmooth.metrics.lca_metrics`. ``compute()`` returns a dict.

    Parameters
    ----------
    taxonomy : Taxonomy
    coarse_labels : bool, default False
    """

    higher_is_better = None
    pairs: PairDistances  # set by _source

    def __init__(self, taxonomy: Taxonomy, *, coarse_labels: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._source(taxonomy, None, coarse_labels, taxonomy_only="ancestor sets")
        for name in LCA_FIELDS:
            self._sum_state(f"lca_{name}", floating=True)
        self._sum_state("total", floating=False)

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        pred, label = self._predicted(scores, target)
        self._add(F._lca_stats(pred, label, self.pairs))

    def compute(self) -> dict[str, torch.Tensor]:
        return F._lca_from(self._stats())


class AccuracyAtDepth(_SumMetric):
    """Accuracy at one depth of the tree; see :func:`taxosmooth.metrics.accuracy_at_depth`.

    Parameters
    ----------
    taxonomy : Taxonomy
    depth : int
    coarse_labels : bool, default False
    """

    higher_is_better = True
    pairs: PairDistances  # set by _source

    def __init__(self, taxonomy: Taxonomy, depth: int, *, coarse_labels: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._source(taxonomy, None, coarse_labels, taxonomy_only="ancestors at a depth")
        self.depth = F._check_depth(depth, self.pairs)
        self._sum_state(f"right_at_depth_{self.depth}", floating=False)
        self._sum_state(f"counted_at_depth_{self.depth}", floating=False)

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        pred, label = self._predicted(scores, target)
        self._add(F._depth_stats(pred, label, self.pairs, self.depth))

    def compute(self) -> torch.Tensor:
        s = self._stats()
        return F._ratio(s[f"right_at_depth_{self.depth}"], s[f"counted_at_depth_{self.depth}"])


class FullPathAccuracy(_SumMetric):
    """Full-path accuracy of per-level predictions ``(N, L)``; see :func:`taxosmooth.metrics.full_path_accuracy`.

    Parameters
    ----------
    taxonomy : Taxonomy
    coarse_labels : bool, default False
    """

    higher_is_better = True
    pairs: PairDistances  # set by _source
    path_right: torch.Tensor  # states
    path_counted: torch.Tensor

    def __init__(self, taxonomy: Taxonomy, *, coarse_labels: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._source(taxonomy, None, coarse_labels, taxonomy_only="ancestor paths")
        self._sum_state("path_right", floating=False)
        self._sum_state("path_counted", floating=False)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        ids = F._check_levels(preds, self.pairs)
        label = F._labels(target, ids.shape[0], self.pairs, self.pairs.num_classes, self.coarse_labels, ids.device)
        self._add(F._full_path_stats(ids, label, self.pairs))

    def compute(self) -> torch.Tensor:
        return F._ratio(self.path_right, self.path_counted)


class PathConsistency(_SumMetric):
    """Fraction of per-level predictions ``(N, L)`` that form one path; see
    :func:`taxosmooth.metrics.path_consistency`. ``update(preds)`` takes no labels.

    Parameters
    ----------
    taxonomy : Taxonomy
    """

    higher_is_better = True
    pairs: PairDistances  # set by _source
    consistent: torch.Tensor  # states
    total: torch.Tensor

    def __init__(self, taxonomy: Taxonomy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._source(taxonomy, None, False, taxonomy_only="ancestor paths")
        self._sum_state("consistent", floating=False)
        self._sum_state("total", floating=False)

    def update(self, preds: torch.Tensor) -> None:
        self._add(F._consistency_stats(F._check_levels(preds, self.pairs), self.pairs))

    def compute(self) -> torch.Tensor:
        return F._ratio(self.consistent, self.total)


class ExpectedCalibrationError(_SumMetric):
    """Expected calibration error, equal-width bins (Guo et al. 2017); see
    :func:`taxosmooth.metrics.expected_calibration_error`.

    States are per-bin sums (count, confidence, correct), so the result is
    exact across batches and processes.

    Parameters
    ----------
    n_bins : int, default 15
    from_logits : bool, default False
        Whether ``update`` receives logits (softmax is applied) or probabilities.
    taxonomy : Taxonomy, optional
        Needed with ``coarse_labels=True``.
    coarse_labels : bool, default False
    """

    higher_is_better = False

    def __init__(self, n_bins: int = 15, from_logits: bool = False, *, taxonomy: Taxonomy | None = None,
                 coarse_labels: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_bins = F._check_bins(n_bins)
        self.from_logits = bool(from_logits)
        self.coarse_labels = check_coarse(coarse_labels)
        self.pairs = F._optional_pairs(taxonomy, coarse_labels)
        self._sum_state("bin_count", floating=False, size=self.n_bins)
        self._sum_state("bin_confidence", floating=True, size=self.n_bins)
        self._sum_state("bin_correct", floating=True, size=self.n_bins)

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        num_classes = None if self.pairs is None else self.pairs.num_classes
        probs = as_probabilities(F._detached(probs), self.from_logits, num_classes)
        label = F._labels(target, probs.shape[0], self.pairs, probs.shape[1], self.coarse_labels, probs.device)
        self._add(F._ece_stats(probs, label, self.n_bins, self.pairs, self.coarse_labels))

    def compute(self) -> torch.Tensor:
        return F._ece_from(self._stats())


class HierarchicalReport(_SumMetric):
    """All metrics of :func:`taxosmooth.metrics.report` in one torchmetrics object.

    ``update(scores, target)`` ranks by any scores; with ``calibration=True``,
    ``update(scores, target, probs)`` also takes the probabilities (or logits,
    ``from_logits=True``) for the calibration error, as ``report``'s ``probs=``.
    ``compute()`` returns a dict of 0-dim tensors with the keys of
    :func:`~taxosmooth.metrics.report` (ready for ``log_dict``).

    Parameters
    ----------
    source : Taxonomy or Tensor (C, C)
    k : int or sequence of int, default 1
    distance : str, optional
        With a taxonomy only (default ``"lca_height"``).
    calibration : bool, default False
        Whether ``update`` receives ``probs`` and ``ece`` is reported.
    from_logits : bool, default False
        Whether ``probs`` holds logits.
    n_bins : int, default 15
    coarse_labels : bool, default False
    """

    higher_is_better = None
    pairs: PairDistances  # set by _source

    def __init__(self, source: Source, k: int | Sequence[int] = 1, distance: str | None = None, *,
                 calibration: bool = False, from_logits: bool = False, n_bins: int = 15, coarse_labels: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._source(source, distance, coarse_labels)
        self.ks = F._check_ks(k, self.pairs.num_classes)
        if not isinstance(calibration, bool):
            raise TypeError(f"calibration must be True or False, got {calibration!r}")
        if from_logits and not calibration:
            raise ValueError("from_logits=True applies to the probs of the calibration error: pass calibration=True")
        self.calibration = calibration
        self.from_logits = bool(from_logits)
        self.n_bins = F._check_bins(n_bins)
        for k_ in self.ks:
            self._sum_state(f"wrong_at_{k_}", floating=False)
            self._sum_state(f"dist_mean_at_{k_}", floating=True)
            self._sum_state(f"dist_min_at_{k_}", floating=True)
        self._sum_state("total", floating=False)
        self._sum_state("mistake_distance", floating=True)
        self._sum_state("mistakes", floating=False)
        self.max_depth = self.pairs.max_depth
        if self.pairs.taxonomy is not None:
            for name in _HPRF_STATES[:-1]:
                self._sum_state(name, floating=name.startswith("sample_"))
            assert self.max_depth is not None  # a taxonomy's
            for d in range(1, self.max_depth + 1):
                self._sum_state(f"right_at_depth_{d}", floating=False)
                self._sum_state(f"counted_at_depth_{d}", floating=False)
        if calibration:
            self._sum_state("bin_count", floating=False, size=self.n_bins)
            self._sum_state("bin_confidence", floating=True, size=self.n_bins)
            self._sum_state("bin_correct", floating=True, size=self.n_bins)

    def update(self, scores: torch.Tensor, target: torch.Tensor, probs: torch.Tensor | None = None) -> None:
        scores, target = self._check(scores, target)
        p = None
        if self.calibration:
            if probs is None:
                raise ValueError("this HierarchicalReport was built with calibration=True: update(scores, target, probs)")
            p = as_probabilities(F._detached(probs), self.from_logits, self.pairs.num_classes, name="probs")
            if p.shape[0] != scores.shape[0]:
                raise ValueError(f"probs has {p.shape[0]} rows but scores has {scores.shape[0]}")
            p = p.to(scores.device)
        elif probs is not None:
            raise ValueError("probs given, but this HierarchicalReport was built without calibration=True")
        self._add(F._report_stats(scores, target, self.pairs, self.ks, p, self.n_bins, self.coarse_labels))

    def compute(self) -> dict[str, torch.Tensor]:
        return F._report_from(self._stats(), self.ks, self.max_depth)


class HierarchicalOperatingCurve(torchmetrics.Metric):
    """The operating curve of the threshold rule, accumulated over batches; see
    :func:`taxosmooth.metrics.operating_curve`.

    States: the steps of every sample's prediction sequence (threshold, change
    of every per-sample metric) and the sums at the root, concatenated across
    batches and processes. ``compute()`` returns an
    :class:`~taxosmooth.metrics.OperatingCurve`.

    Parameters
    ----------
    taxonomy : Taxonomy
    from_logits : bool, default False
        Whether ``update`` receives logits.
    coarse_labels : bool, default False
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False
    # states: lists of batches (one tensor after a sync: see _cat)
    step_values: list[torch.Tensor]
    step_deltas: list[torch.Tensor]
    root_sums: torch.Tensor
    total: torch.Tensor

    def __init__(self, taxonomy: Taxonomy, *, from_logits: bool = False, coarse_labels: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pairs = F._tree_pairs(taxonomy, "operating curves")
        self.from_logits = bool(from_logits)
        self.coarse_labels = check_coarse(coarse_labels)
        self.add_state("step_values", default=[], dist_reduce_fx="cat")
        self.add_state("step_deltas", default=[], dist_reduce_fx="cat")
        self.add_state("root_sums", default=torch.zeros(len(LCA_FIELDS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        values, deltas, root, n = Cv._curve_steps(probs, target, self.pairs, self.from_logits, self.coarse_labels)
        self.step_values.append(values.to(torch.float64))
        self.step_deltas.append(deltas)
        self.root_sums = self.root_sums + root.to(self.root_sums.device)
        self.total = self.total + n

    def compute(self) -> Cv.OperatingCurve:
        values = _cat(self.step_values, torch.zeros(0, dtype=torch.float64))
        deltas = _cat(self.step_deltas, torch.zeros(0, len(LCA_FIELDS), dtype=torch.float64))
        return Cv._curve_from(values, deltas, self.root_sums, int(self.total))


def _cat(state, empty: torch.Tensor) -> torch.Tensor:
    # a list state before a sync, one tensor after it
    if isinstance(state, torch.Tensor):
        return state
    return torch.cat(state) if state else empty
