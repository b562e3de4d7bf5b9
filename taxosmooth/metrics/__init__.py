"""Metrics of how good a classifier's mistakes are.

Functions (:mod:`taxosmooth.metrics.functional`, re-exported here):
:func:`topk_error`, :func:`mistake_severity`, :func:`hierarchical_distance_at_k`,
:func:`hierarchical_distance_top_k`, :func:`hierarchical_precision_recall_f1`
(and one function each for precision, recall, F1),
:func:`expected_calibration_error` and :func:`report` (all of them as a dict).

The same metrics as ``torchmetrics.Metric`` classes, whose states are sums that
reduce correctly across processes (:mod:`taxosmooth.metrics.modules`; needs the
extra ``pip install "taxosmooth[metrics]"``): :class:`TopKError`,
:class:`MistakeSeverity`, :class:`HierarchicalDistanceAtK`,
:class:`HierarchicalDistanceTopK`, :class:`HierarchicalPrecision`,
:class:`HierarchicalRecall`, :class:`HierarchicalF1`,
:class:`ExpectedCalibrationError`, :class:`HierarchicalReport`. They are
imported on first use, so ``import taxosmooth.metrics`` works without
torchmetrics.
"""

from __future__ import annotations

from taxosmooth.metrics.functional import (
    expected_calibration_error,
    hierarchical_distance_at_k,
    hierarchical_distance_top_k,
    hierarchical_f1,
    hierarchical_precision,
    hierarchical_precision_recall_f1,
    hierarchical_recall,
    mistake_severity,
    report,
    topk_error,
)

_METRIC_CLASSES = (
    "TopKError",
    "MistakeSeverity",
    "HierarchicalDistanceAtK",
    "HierarchicalDistanceTopK",
    "HierarchicalPrecision",
    "HierarchicalRecall",
    "HierarchicalF1",
    "ExpectedCalibrationError",
    "HierarchicalReport",
)

__all__ = [
    "topk_error",
    "mistake_severity",
    "hierarchical_distance_at_k",
    "hierarchical_distance_top_k",
    "hierarchical_precision_recall_f1",
    "hierarchical_precision",
    "hierarchical_recall",
    "hierarchical_f1",
    "expected_calibration_error",
    "report",
    *_METRIC_CLASSES,
]


def __getattr__(name: str):
    if name in _METRIC_CLASSES:
        import importlib

        # raises an ImportError that names the extra when torchmetrics is missing
        return getattr(importlib.import_module("taxosmooth.metrics.modules"), name)
    raise AttributeError(f"module 'taxosmooth.metrics' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
