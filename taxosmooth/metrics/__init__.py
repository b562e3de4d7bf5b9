"""Metrics of how good a classifier's mistakes are, and of answers at any node.

Functions (:mod:`taxosmooth.metrics.functional` and :mod:`taxosmooth.metrics.curves`,
re-exported here): :func:`topk_error`, :func:`mistake_severity`,
:func:`mean_hierarchical_distance_at_k`, :func:`min_hierarchical_distance_at_k`,
:func:`hierarchical_precision_recall_f1` (micro and macro; one function each for
precision, recall, F1), :func:`lca_metrics`, :func:`accuracy_at_depth`,
:func:`full_path_accuracy`, :func:`path_consistency`,
:func:`expected_calibration_error`, :func:`report` (all at once, as a dict),
:func:`operating_curve`, :func:`pareto_front` and :func:`pareto_integrate`.

**Scores**: the ranking metrics take any scores (logits, probabilities, CRM's
``-R``); what needs probabilities reads them as probabilities unless
``from_logits=True`` (see :mod:`taxosmooth.metrics.functional`). **Coarse
labels** (``coarse_labels=True``) and **node predictions**: see there too.

The same metrics as ``torchmetrics.Metric`` classes, whose states are sums that
reduce correctly across processes (:mod:`taxosmooth.metrics.modules`; needs the
extra ``pip install "taxosmooth[metrics]"``): :class:`TopKError`,
:class:`MistakeSeverity`, :class:`MeanHierarchicalDistanceAtK`,
:class:`MinHierarchicalDistanceAtK`, :class:`HierarchicalPrecision`,
:class:`HierarchicalRecall`, :class:`HierarchicalF1`, :class:`LCAMetrics`,
:class:`AccuracyAtDepth`, :class:`FullPathAccuracy`, :class:`PathConsistency`,
:class:`ExpectedCalibrationError`, :class:`HierarchicalReport`,
:class:`HierarchicalOperatingCurve`. They are imported on first use, so
``import taxosmooth.metrics`` works without torchmetrics.
"""

from __future__ import annotations

from taxosmooth.metrics.curves import AREAS, OperatingCurve, operating_curve, pareto_front, pareto_integrate
from taxosmooth.metrics.functional import (
    LCA_FIELDS,
    accuracy_at_depth,
    expected_calibration_error,
    full_path_accuracy,
    hierarchical_distance_at_k,  # deprecated alias, not in __all__
    hierarchical_distance_top_k,  # deprecated alias, not in __all__
    hierarchical_f1,
    hierarchical_precision,
    hierarchical_precision_recall_f1,
    hierarchical_recall,
    lca_metrics,
    mean_hierarchical_distance_at_k,
    min_hierarchical_distance_at_k,
    mistake_severity,
    path_consistency,
    report,
    topk_error,
)

_METRIC_CLASSES = (
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
)

__all__ = [
    "topk_error",
    "mistake_severity",
    "mean_hierarchical_distance_at_k",
    "min_hierarchical_distance_at_k",
    "hierarchical_precision_recall_f1",
    "hierarchical_precision",
    "hierarchical_recall",
    "hierarchical_f1",
    "lca_metrics",
    "accuracy_at_depth",
    "full_path_accuracy",
    "path_consistency",
    "expected_calibration_error",
    "report",
    "operating_curve",
    "OperatingCurve",
    "pareto_front",
    "pareto_integrate",
    "LCA_FIELDS",
    "AREAS",
    *_METRIC_CLASSES,
]


#: deprecated aliases of torchmetrics classes (importable, not listed)
_DEPRECATED_CLASSES = ("HierarchicalDistanceAtK", "HierarchicalDistanceTopK")


def __getattr__(name: str) -> type:
    if name in _METRIC_CLASSES or name in _DEPRECATED_CLASSES:
        import importlib

        # raises an ImportError that names the extra when torchmetrics is missing
        return getattr(importlib.import_module("taxosmooth.metrics.modules"), name)
    raise AttributeError(f"module 'taxosmooth.metrics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
