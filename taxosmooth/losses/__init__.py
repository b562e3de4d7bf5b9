"""Losses that penalise close mistakes less: drop-in replacements for ``nn.CrossEntropyLoss``.

Every loss takes logits ``(N, C)`` or ``(N, C, d1, ...)`` and integer targets,
with ``weight``, ``ignore_index`` and ``reduction`` as in
:func:`torch.nn.functional.cross_entropy`; the functional twins live in
:mod:`taxosmooth.functional`. Inputs are validated on every call (target range;
NaN / ``+inf`` logits named in a ``ValueError``), at the cost of host
synchronisations on a GPU; :func:`set_checks` ``(False)`` turns that off.
"""

from taxosmooth.losses._common import set_checks
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
    "set_checks",
]
