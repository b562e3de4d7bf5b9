"""The metrics of :mod:`taxosmooth.metrics.functional` as ``torchmetrics.Metric`` classes.

Needs the optional dependency torchmetrics (``pip install "taxosmooth[metrics]"``).

Every state is a **sum** over samples (counts, sums of source, per-bin
sums) reduced with ``dist_reduce_fx="sum"``; ``compute()`` forms the ratios
once, at the end. So a metric updated batch by batch, or on several processes
under ``DistributedDataParallel``, equals the functional metric of the whole
set — batch averages are never averaged.

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

try:
    import torchmetrics
except ImportError as exc:  # pragma: no cover - exercised by a test that hides torchmetrics
    raise ImportError(
        "taxosmooth's torchmetrics classes need the optional dependency torchmetrics: "
        'pip install "taxosmooth[metrics]"'
    ) from exc

import torch

from taxosmooth._ranking import stable_topk
from taxosmooth._tensor_checks import as_probabilities, check_k, check_target
from taxosmooth.metrics import functional as F
from taxosmooth.metrics._pairs import PairDistances

__all__ = [
    "TopKError",
    "MistakeSeverity",
    "HierarchicalDistanceAtK",
    "HierarchicalDistanceTopK",
    "HierarchicalPrecision",
    "HierarchicalRecall",
    "HierarchicalF1",
    "ExpectedCalibrationError",
    "HierarchicalReport",
]


class _SumMetric(torchmetrics.Metric):
    """A metric whose states are sums, reduced across processes with ``sum``."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._sum_names: list[str] = []

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

    def _pairs(self, source, distance: str | None) -> PairDistances:
        pairs = PairDistances(source, distance)
        self.num_classes = pairs.num_classes
        return pairs

    def _check(self, scores, target):
        return F._check(scores, target, getattr(self, "num_classes", None))


class TopKError(_SumMetric):
    """Top-k error; see :func:`taxosmooth.metrics.topk_error`.

    Parameters
    ----------
    k : int, default 1
    """

    higher_is_better = False

    def __init__(self, k: int = 1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        self.k = k
        self._sum_state(f"wrong_at_{k}", floating=False)
        self._sum_state("total", floating=False)

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        scores, target = self._check(scores, target)
        check_k(self.k, scores.shape[1])
        self._add(F._topk_stats(scores, target, (self.k,)))

    def compute(self) -> torch.Tensor:
        return F._ratio(getattr(self, f"wrong_at_{self.k}"), self.total)


class MistakeSeverity(_SumMetric):
    """Mean distance of the wrong top-1 predictions (NaN if none); see
    :func:`taxosmooth.metrics.mistake_severity`.

    Parameters
    ----------
    source : Taxonomy or Tensor (C, C)
    distance : str, optional
        With a taxonomy only (default ``"lca_height"``).
    """

    higher_is_better = False

    def __init__(self, source, distance: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.pairs = self._pairs(source, distance)
        self._sum_state("mistake_distance", floating=True)
        self._sum_state("mistakes", floating=False)

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        scores, target = self._check(scores, target)
        self._add(F._severity_stats(stable_topk(scores, 1)[:, 0], target, self.pairs))

    def compute(self) -> torch.Tensor:
        return F._ratio(self.mistake_distance, self.mistakes)


class _HierarchicalDistance(_SumMetric):
    higher_is_better = False
    _key = ""

    def __init__(self, source, k: int, distance: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.pairs = self._pairs(source, distance)
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


class HierarchicalDistanceAtK(_HierarchicalDistance):
    """Mean over samples of the mean distance of the k best predictions; see
    :func:`taxosmooth.metrics.hierarchical_distance_at_k`.

    Parameters
    ----------
    source : Taxonomy or Tensor (C, C)
    k : int
    distance : str, optional
        With a taxonomy only (default ``"lca_height"``).
    """

    _key = "dist_mean"


class HierarchicalDistanceTopK(_HierarchicalDistance):
    """Mean over samples of the distance of the closest of the k best predictions; see
    :func:`taxosmooth.metrics.hierarchical_distance_top_k`.

    Parameters
    ----------
    source : Taxonomy or Tensor (C, C)
    k : int
    distance : str, optional
        With a taxonomy only (default ``"lca_height"``).
    """

    _key = "dist_min"


class _HierarchicalPRF(_SumMetric):
    higher_is_better = True
    _which = 0

    def __init__(self, taxonomy, **kwargs):
        super().__init__(**kwargs)
        self.pairs = self._pairs(taxonomy, None)
        if self.pairs.taxonomy is None:
            raise TypeError(f"{type(self).__name__} needs a Taxonomy (ancestor sets), not a distance matrix")
        for name in ("ancestors_common", "ancestors_pred", "ancestors_true"):
            self._sum_state(name, floating=False)

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        scores, target = self._check(scores, target)
        self._add(F._hprf_stats(stable_topk(scores, 1)[:, 0], target, self.pairs))

    def compute(self) -> torch.Tensor:
        return F._hprf_from(self._stats())[self._which]


class HierarchicalPrecision(_HierarchicalPRF):
    """Hierarchical precision on ancestor sets (Kiritchenko et al. 2005); see
    :func:`taxosmooth.metrics.hierarchical_precision_recall_f1`.

    Parameters
    ----------
    taxonomy : Taxonomy
    """

    _which = 0


class HierarchicalRecall(_HierarchicalPRF):
    """Hierarchical recall on ancestor sets (Kiritchenko et al. 2005); see
    :func:`taxosmooth.metrics.hierarchical_precision_recall_f1`.

    Parameters
    ----------
    taxonomy : Taxonomy
    """

    _which = 1


class HierarchicalF1(_HierarchicalPRF):
    """Hierarchical F1 on ancestor sets (Kiritchenko et al. 2005); see
    :func:`taxosmooth.metrics.hierarchical_precision_recall_f1`.

    Parameters
    ----------
    taxonomy : Taxonomy
    """

    _which = 2


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
    """

    higher_is_better = False

    def __init__(self, n_bins: int = 15, from_logits: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.n_bins = F._check_bins(n_bins)
        self.from_logits = bool(from_logits)
        self._sum_state("bin_count", floating=False, size=self.n_bins)
        self._sum_state("bin_confidence", floating=True, size=self.n_bins)
        self._sum_state("bin_correct", floating=True, size=self.n_bins)

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        probs = as_probabilities(probs, self.from_logits)
        target = check_target(target, probs.shape[0], probs.shape[1]).to(probs.device)
        self._add(F._ece_stats(probs, target, self.n_bins))

    def compute(self) -> torch.Tensor:
        return F._ece_from(self._stats())


class HierarchicalReport(_SumMetric):
    """All metrics of :func:`taxosmooth.metrics.report` in one torchmetrics object.

    ``compute()`` returns a dict of 0-dim tensors with the keys of
    :func:`~taxosmooth.metrics.report` (ready for ``log_dict``).

    Parameters
    ----------
    source : Taxonomy or Tensor (C, C)
    k : int or sequence of int, default 1
    distance : str, optional
        With a taxonomy only (default ``"lca_height"``).
    from_logits : bool, default False
        Whether ``update`` receives logits or probabilities (for the calibration error).
    n_bins : int, default 15
    """

    higher_is_better = None

    def __init__(self, source, k=1, distance: str | None = None, from_logits: bool = False, n_bins: int = 15, **kwargs):
        super().__init__(**kwargs)
        self.pairs = self._pairs(source, distance)
        self.ks = F._check_ks(k, self.pairs.num_classes)
        self.from_logits = bool(from_logits)
        self.n_bins = F._check_bins(n_bins)
        for k_ in self.ks:
            self._sum_state(f"wrong_at_{k_}", floating=False)
            self._sum_state(f"dist_mean_at_{k_}", floating=True)
            self._sum_state(f"dist_min_at_{k_}", floating=True)
        self._sum_state("total", floating=False)
        self._sum_state("mistake_distance", floating=True)
        self._sum_state("mistakes", floating=False)
        if self.pairs.taxonomy is not None:
            for name in ("ancestors_common", "ancestors_pred", "ancestors_true"):
                self._sum_state(name, floating=False)
        self._sum_state("bin_count", floating=False, size=self.n_bins)
        self._sum_state("bin_confidence", floating=True, size=self.n_bins)
        self._sum_state("bin_correct", floating=True, size=self.n_bins)

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        scores, target = self._check(scores, target)
        probs = as_probabilities(scores, self.from_logits, name="scores")
        self._add(F._report_stats(scores, target, self.pairs, self.ks, probs, self.n_bins))

    def compute(self) -> dict[str, torch.Tensor]:
        return F._report_from(self._stats(), self.ks)
