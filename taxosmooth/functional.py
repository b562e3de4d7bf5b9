"""The losses as functions (like ``torch.nn.functional``): the one implementation of each loss.

Each function takes the logits, the target (integer ids or class probabilities), the hierarchy (or
matrix) and the loss's options, plus ``weight``, ``ignore_index``, ``reduction`` and
``label_smoothing`` exactly as :func:`torch.nn.functional.cross_entropy`, and ``coarse_labels``. The
modules of :mod:`taxosmooth.losses` hold the same tables as buffers and call the same code. Formulas,
shapes and references are in the modules' docstrings.

With a taxonomy, its tensors and the loss's tables are built once per (taxonomy, options, device) and
kept with the taxonomy (released with it), so calling these in a training loop rebuilds nothing. With
a matrix, it is validated on every call: build the module once for a training loop.
"""

from __future__ import annotations

from taxosmooth.losses.expected_cost import expected_cost_loss
from taxosmooth.losses.hxe import hxe_loss
from taxosmooth.losses.linear import linear_loss
from taxosmooth.losses.pairwise import pairwise_cost_loss
from taxosmooth.losses.soft_labels import hierarchical_soft_label_loss
from taxosmooth.losses.soft_target import soft_target_cross_entropy
from taxosmooth.losses.wasserstein import tree_wasserstein_loss

__all__ = [
    "soft_target_cross_entropy",
    "hierarchical_soft_label_loss",
    "hxe_loss",
    "expected_cost_loss",
    "tree_wasserstein_loss",
    "pairwise_cost_loss",
    "linear_loss",
]


def __dir__() -> list[str]:
    return list(__all__)
