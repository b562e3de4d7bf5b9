"""Classifier heads built from the taxonomy: drop-in replacements for the last ``nn.Linear``.

* :class:`HierarchicalSoftmax`: a softmax over the children of every internal
  node; returns class log-probabilities.
"""

from taxosmooth.heads.hierarchical_softmax import HierarchicalSoftmax

__all__ = ["HierarchicalSoftmax"]
