"""Classifier heads built from the taxonomy: replacements for the last ``nn.Linear`` of a network.

Each head takes features ``(N, in_features)`` and returns class scores
``(N, C)`` in class order, usable as logits by every loss, decision (CRM) and
metric; each has a ``loss(x, target)`` with the training objective of its paper.

* :class:`HierarchicalSoftmax`: a softmax over the children of every internal
  node; returns class log-probabilities.
* :class:`LevelwiseHead`: one linear head per depth (Flamingo, CVPR 2021; HAF,
  ECCV 2022), trained with the sum of the per-level cross entropies.
* :class:`EmbeddingHead`: a projection onto class vectors whose dot products
  are the class similarities (Barz & Denzler, WACV 2019), with the cosine loss.
* :class:`FixedClassifier`: fixed class weights, e.g. the Hierarchy-Aware Frame
  (Liang & Davis, ICCV 2023), with its mixed cross-entropy / cosine loss.
"""

from taxosmooth.heads.embedding import EmbeddingHead
from taxosmooth.heads.fixed import FixedClassifier
from taxosmooth.heads.hierarchical_softmax import HierarchicalSoftmax
from taxosmooth.heads.levelwise import LevelwiseHead

__all__ = ["HierarchicalSoftmax", "LevelwiseHead", "EmbeddingHead", "FixedClassifier"]


def __dir__() -> list[str]:
    return list(__all__)
