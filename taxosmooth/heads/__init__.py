"""Classifier heads built from the taxonomy: drop-in replacements for the last ``nn.Linear``.

* :class:`HierarchicalSoftmax`: a softmax over the children of every internal
  node; returns class log-probabilities.
* :class:`LevelwiseHead`: one linear head per depth, trained with the sum of the
  per-level cross entropies; class scores combined along each path.
"""

from taxosmooth.heads.hierarchical_softmax import HierarchicalSoftmax
from taxosmooth.heads.levelwise import LevelwiseHead

__all__ = ["HierarchicalSoftmax", "LevelwiseHead"]
