"""Functional twins of the losses in :mod:`taxosmooth.losses` (like ``torch.nn.functional``).

Each function takes the logits, the targets, the hierarchy (or matrix) and the
loss's options, plus ``weight``, ``ignore_index`` and ``reduction`` exactly as
:func:`torch.nn.functional.cross_entropy`. Formulas, shapes and references are
in the docstrings of the matching modules.

With a taxonomy, the per-class tables are built once per (taxonomy, options,
device) and cached (the last 32 combinations, released when the taxonomy is
garbage-collected), so calling these in a training loop costs no rebuilding. With a matrix, the module is rebuilt and the matrix
validated on every call: build the module once for a training loop.
"""

from __future__ import annotations

import torch

from taxosmooth.losses import (
    ExpectedCostLoss,
    HierarchicalSoftLabelLoss,
    HXELoss,
    PairwiseCostLoss,
    SoftTargetCrossEntropy,
    TreeWassersteinLoss,
)
from taxosmooth.losses._common import cached, check_reduction, check_weight
from taxosmooth.taxonomy import Taxonomy

__all__ = [
    "soft_target_cross_entropy",
    "hierarchical_soft_label_loss",
    "hxe_loss",
    "expected_cost_loss",
    "tree_wasserstein_loss",
    "pairwise_cost_loss",
]


def _call(module, input, target, weight, ignore_index, reduction):
    check_reduction(reduction)
    w = check_weight(weight, module.num_classes) if weight is not None else None
    return module._loss(input, target, w, int(ignore_index), reduction)


def _module(cls, source, key, device, *args, **kwargs):
    if isinstance(source, Taxonomy):
        return cached(lambda: cls(source, *args, **kwargs), source, (cls,) + key, device)
    return cls(source, *args, **kwargs).to(device)


def soft_target_cross_entropy(input: torch.Tensor, target: torch.Tensor, targets, weight=None,
                              ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """Cross entropy against row ``target`` of ``targets`` (C, C). See :class:`~taxosmooth.SoftTargetCrossEntropy`."""
    mod = SoftTargetCrossEntropy(targets).to(input.device)
    return _call(mod, input, target, weight, ignore_index, reduction)


def hierarchical_soft_label_loss(input: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, beta: float,
                                 distance: str = "lca_height", scale="max", epsilon=None, weight=None,
                                 ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """Structured soft-label cross entropy. See :class:`~taxosmooth.HierarchicalSoftLabelLoss`."""
    mod = _module(HierarchicalSoftLabelLoss, taxonomy, (float(beta), distance, scale, epsilon), input.device,
                  beta, distance, scale, epsilon)
    return _call(mod, input, target, weight, ignore_index, reduction)


def hxe_loss(input: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, alpha: float, weighting: str = "depth",
             normalize: bool = False, weight=None, ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """Hierarchical cross entropy. See :class:`~taxosmooth.HXELoss`."""
    mod = _module(HXELoss, taxonomy, (float(alpha), weighting, normalize), input.device, alpha, weighting, normalize)
    return _call(mod, input, target, weight, ignore_index, reduction)


def expected_cost_loss(input: torch.Tensor, target: torch.Tensor, costs_or_taxonomy, ce_weight: float = 1.0,
                       distance: str = "lca_height", transform="identity", power: float = 1.0, weight=None,
                       ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """Expected cost plus cross entropy. See :class:`~taxosmooth.ExpectedCostLoss`."""
    mod = _module(ExpectedCostLoss, costs_or_taxonomy, (float(ce_weight), distance, transform, float(power)),
                  input.device, ce_weight, distance, transform, power)
    return _call(mod, input, target, weight, ignore_index, reduction)


def tree_wasserstein_loss(input: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, ce_weight: float = 0.0,
                          weight=None, ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """Exact tree Wasserstein-1. See :class:`~taxosmooth.TreeWassersteinLoss`."""
    mod = _module(TreeWassersteinLoss, taxonomy, (float(ce_weight),), input.device, ce_weight)
    return _call(mod, input, target, weight, ignore_index, reduction)


def pairwise_cost_loss(input: torch.Tensor, target: torch.Tensor, costs_or_taxonomy, distance: str = "lca_height",
                       transform="identity", power: float = 1.0, weight=None, ignore_index: int = -100,
                       reduction: str = "mean") -> torch.Tensor:
    """Cost-weighted pairwise loss. See :class:`~taxosmooth.PairwiseCostLoss`."""
    mod = _module(PairwiseCostLoss, costs_or_taxonomy, (distance, transform, float(power)), input.device,
                  distance, transform, power)
    return _call(mod, input, target, weight, ignore_index, reduction)
