"""Losses that penalise close mistakes less: drop-in replacements for ``nn.CrossEntropyLoss``.

Every loss takes logits ``(N, C)`` or ``(N, C, d1, ...)`` and, as target,
integer class indices, class probabilities (Mixup, CutMix) or — with
``coarse_labels=True`` — the target ids of internal nodes (a genus, "shoes");
``weight``, ``ignore_index``, ``reduction`` and ``label_smoothing`` are those of
:func:`torch.nn.functional.cross_entropy`. The functional twins live in
:mod:`taxosmooth.functional`.

Class ids and coarse labels cost O(batch × classes) per call. Probability rows
with at most four classes above each row's floor (Mixup or CutMix of one-hot or
smoothed labels) are written as a few target columns and take the same
kernels (for tree-Wasserstein, rows that are zero elsewhere); any other
probability rows take passes over the nodes,
O(batch × nodes). None of them builds a ``(C, C)`` tensor.

Inputs are validated on every call; :func:`set_checks` chooses how: ``"full"``
(errors that name the offending target, row or logit; a host synchronisation
per check on a GPU), ``"device"`` (asynchronous device-side assertions, no
synchronisation, a fixed message) or ``"off"``. The default ``"auto"`` is
``"full"`` on the CPU and ``"device"`` elsewhere.
"""

from taxosmooth.losses._inputs import set_checks
from taxosmooth.losses.cosine import CosineLoss
from taxosmooth.losses.expected_cost import ExpectedCostLoss
from taxosmooth.losses.hxe import HXELoss
from taxosmooth.losses.pairwise import PairwiseCostLoss
from taxosmooth.losses.soft_labels import HierarchicalSoftLabelLoss
from taxosmooth.losses.soft_target import SoftTargetCrossEntropy
from taxosmooth.losses.wasserstein import TreeWassersteinLoss

__all__ = [
    "SoftTargetCrossEntropy",
    "HierarchicalSoftLabelLoss",
    "HXELoss",
    "ExpectedCostLoss",
    "TreeWassersteinLoss",
    "PairwiseCostLoss",
    "CosineLoss",
    "set_checks",
]


def __dir__() -> list[str]:
    return list(__all__)
