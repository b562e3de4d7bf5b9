"""Functional twins of the losses in :mod:`taxosmooth.losses` (like ``torch.nn.functional``).

Each function takes the logits, the target (integer ids or class
probabilities), the hierarchy (or matrix) and the loss's options, plus
``weight``, ``ignore_index``, ``reduction`` and ``label_smoothing`` exactly as
:func:`torch.nn.functional.cross_entropy`, and ``coarse_labels``. Formulas,
shapes and references are in the docstrings of the matching modules.

With a taxonomy, the per-class tables are built once per (taxonomy, options,
device) and cached (the last 32 combinations, released when the taxonomy is
garbage-collected), so calling these in a training loop costs no rebuilding.
With a matrix, the module is rebuilt and the matrix validated on every call:
build the module once for a training loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from taxosmooth.losses._base import cached as _cached
from taxosmooth.losses._base import check_weight as _check_weight
from taxosmooth.losses._inputs import check_ignore_index as _check_ignore_index
from taxosmooth.losses._inputs import check_label_smoothing as _check_label_smoothing
from taxosmooth.losses._inputs import check_reduction as _check_reduction
from taxosmooth.losses.expected_cost import ExpectedCostLoss
from taxosmooth.losses.hxe import HXELoss
from taxosmooth.losses.pairwise import PairwiseCostLoss
from taxosmooth.losses.soft_labels import HierarchicalSoftLabelLoss
from taxosmooth.losses.soft_target import SoftTargetCrossEntropy
from taxosmooth.losses.wasserstein import TreeWassersteinLoss
from taxosmooth.taxonomy import Taxonomy

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import ArrayLike

    from taxosmooth.distances import Source

__all__ = [
    "soft_target_cross_entropy",
    "hierarchical_soft_label_loss",
    "hxe_loss",
    "expected_cost_loss",
    "tree_wasserstein_loss",
    "pairwise_cost_loss",
]


def _call(module, input, target, weight, ignore_index, reduction, label_smoothing):
    _check_reduction(reduction)
    w = _check_weight(weight, module.num_classes, module.num_targets) if weight is not None else None
    return module._loss(input, target, w, _check_ignore_index(ignore_index), reduction,
                        _check_label_smoothing(label_smoothing))


def _module(cls, source, key, device, *args, **kwargs):
    if isinstance(source, Taxonomy):
        return _cached(lambda: cls(source, *args, **kwargs), source, (cls,) + key, device)
    return cls(source, *args, **kwargs).to(device)


def _device(input):
    return input.device if isinstance(input, torch.Tensor) else torch.device("cpu")


def soft_target_cross_entropy(input: torch.Tensor, target: torch.Tensor,
                              matrix: torch.Tensor | ArrayLike | None = None, weight: ArrayLike | None = None,
                              ignore_index: int = -100, reduction: str = "mean",
                              label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross entropy against probability targets, or rows of ``matrix`` (C, C).

    See :class:`~taxosmooth.SoftTargetCrossEntropy`.
    """
    mod = SoftTargetCrossEntropy(matrix).to(_device(input))
    if matrix is None and isinstance(input, torch.Tensor) and input.dim() >= 1:
        mod.num_classes = mod.num_targets = int(input.shape[0 if input.dim() == 1 else 1])
    return _call(mod, input, target, weight, ignore_index, reduction, label_smoothing)


def hierarchical_soft_label_loss(input: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, beta: float,
                                 distance: str | None = None, scale: str | float | None = "max",
                                 epsilon: float | None = None, weight: ArrayLike | None = None,
                                 ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                                 coarse_labels: bool = False) -> torch.Tensor:
    """Structured soft-label cross entropy. See :class:`~taxosmooth.HierarchicalSoftLabelLoss`."""
    mod = _module(HierarchicalSoftLabelLoss, taxonomy, (float(beta), distance, scale, epsilon, coarse_labels),
                  _device(input), beta, distance, scale, epsilon, coarse_labels=coarse_labels)
    return _call(mod, input, target, weight, ignore_index, reduction, label_smoothing)


def hxe_loss(input: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, alpha: float, weighting: str = "depth",
             normalize: bool = False, weight: ArrayLike | None = None, ignore_index: int = -100,
             reduction: str = "mean", label_smoothing: float = 0.0, coarse_labels: bool = False) -> torch.Tensor:
    """Hierarchical cross entropy. See :class:`~taxosmooth.HXELoss`."""
    mod = _module(HXELoss, taxonomy, (float(alpha), weighting, normalize, coarse_labels), _device(input), alpha,
                  weighting, normalize, coarse_labels=coarse_labels)
    return _call(mod, input, target, weight, ignore_index, reduction, label_smoothing)


def expected_cost_loss(input: torch.Tensor, target: torch.Tensor, source: Source, ce_weight: float = 1.0,
                       distance: str | None = None, transform: str | Callable | None = "identity", power: float = 1.0,
                       weight: ArrayLike | None = None, ignore_index: int = -100, reduction: str = "mean",
                       label_smoothing: float = 0.0, coarse_labels: bool = False) -> torch.Tensor:
    """Expected cost plus cross entropy. See :class:`~taxosmooth.ExpectedCostLoss`."""
    mod = _module(ExpectedCostLoss, source, (float(ce_weight), distance, transform, float(power), coarse_labels),
                  _device(input), ce_weight, distance, transform, power, coarse_labels=coarse_labels)
    return _call(mod, input, target, weight, ignore_index, reduction, label_smoothing)


def tree_wasserstein_loss(input: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, ce_weight: float = 1.0,
                          weight: ArrayLike | None = None, ignore_index: int = -100, reduction: str = "mean",
                          label_smoothing: float = 0.0, coarse_labels: bool = False) -> torch.Tensor:
    """Exact tree Wasserstein-1 (plus cross entropy). See :class:`~taxosmooth.TreeWassersteinLoss`."""
    mod = _module(TreeWassersteinLoss, taxonomy, (float(ce_weight), coarse_labels), _device(input), ce_weight,
                  coarse_labels=coarse_labels)
    return _call(mod, input, target, weight, ignore_index, reduction, label_smoothing)


def pairwise_cost_loss(input: torch.Tensor, target: torch.Tensor, source: Source, distance: str | None = None,
                       transform: str | Callable | None = "identity", power: float = 1.0,
                       weight: ArrayLike | None = None, ignore_index: int = -100, reduction: str = "mean",
                       label_smoothing: float = 0.0, coarse_labels: bool = False) -> torch.Tensor:
    """Cost-weighted pairwise loss. See :class:`~taxosmooth.PairwiseCostLoss`."""
    mod = _module(PairwiseCostLoss, source, (distance, transform, float(power), coarse_labels), _device(input),
                  distance, transform, power, coarse_labels=coarse_labels)
    return _call(mod, input, target, weight, ignore_index, reduction, label_smoothing)


def __dir__() -> list[str]:
    return list(__all__)
