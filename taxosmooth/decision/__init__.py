"""Decisions from class probabilities: conditional risk minimisation over the classes, and decisions at any node.

* :mod:`taxosmooth.decision.crm`: :func:`conditional_risk`, :func:`crm_predict`
  and :class:`CRMClassifier` — the class of lowest expected cost (Karthik et al., ICLR 2021).
* :mod:`taxosmooth.decision.nodes`: :func:`node_probabilities` and
  :func:`predict_node` — an answer at any node of the taxonomy (a class, or a
  coarser node such as "dog" when the model is torn between two terriers).

**Scores.** Every function here needs probabilities: its input is read as
probabilities (rows in ``[0, 1]`` that sum to 1, checked) unless
``from_logits=True``, which applies a softmax first. That default is the same
everywhere in taxosmooth (:mod:`taxosmooth.metrics` too), so logits passed by
mistake are an error, never a silent softmax of probabilities.
"""

from taxosmooth.decision.crm import CRMClassifier, conditional_risk, crm_predict
from taxosmooth.decision.nodes import NODE_RULES, node_probabilities, predict_node

__all__ = ["conditional_risk", "crm_predict", "CRMClassifier", "node_probabilities", "predict_node", "NODE_RULES"]


def __dir__() -> list[str]:
    return list(__all__)
