"""Losses that penalise close mistakes less: drop-in replacements for ``nn.CrossEntropyLoss``.

Every loss takes logits ``(N, C)`` or ``(N, C, d1, ...)`` and, as target,
integer class indices, class probabilities (Mixup, CutMix) or — with
``coarse_labels=True`` — the target ids of internal nodes (a genus, "shoes");
``weight``, ``ignore_index``, ``reduction`` and ``label_smoothing`` are those of
:func:`torch.nn.functional.cross_entropy`. The functional twins live in
:mod:`taxosmooth.functional`.

Class ids and coarse labels cost O(batch × classes) per call: a few operations
on the targets' paths through the tree (:mod:`taxosmooth.tree_ops`). Probability
rows (Mixup, CutMix) and the uniform part of label smoothing take passes over
the nodes, O(batch × nodes). None of them builds a ``(C, C)`` tensor; all of
them run alike on every device, under ``torch.compile`` (``fullgraph=True``),
``torch.func`` and ``torch.jit.trace``, with derivatives of every order.

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
from taxosmooth.losses.linear import LinearLoss, linear_loss
from taxosmooth.losses.pairwise import PairwiseCostLoss
from taxosmooth.losses.soft_labels import HierarchicalSoftLabelLoss
from taxosmooth.losses.soft_target import SoftTargetCrossEntropy
from taxosmooth.losses.wasserstein import TreeWassersteinLoss
from taxosmooth.losses import sharded as _sharded  # noqa: E402,F401 - registers the class-sharded form (process_group=)

__all__ = [
    "SoftTargetCrossEntropy",
    "HierarchicalSoftLabelLoss",
    "HXELoss",
    "ExpectedCostLoss",
    "TreeWassersteinLoss",
    "PairwiseCostLoss",
    "CosineLoss",
    "LinearLoss",
    "linear_loss",
    "set_checks",
]


def __dir__() -> list[str]:
    return list(__all__)
