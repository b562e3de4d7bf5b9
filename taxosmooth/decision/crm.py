"""Decisions by expected cost: conditional risk minimisation (CRM).

A classifier trained with any loss outputs probabilities ``p``. Instead of the
most probable class, CRM predicts the class of lowest *expected cost*

.. math::

    R_j = \\sum_i p_i \\, \\mathrm{cost}[i, j], \\qquad \\hat y = \\arg\\min_j R_j,

(Karthik, Prabhu, Dokania and Gandhi, "No Cost Likelihood Manipulation at Test
Time for Making Better Mistakes in Deep Networks", ICLR 2021). With 0/1 costs
``R_j = 1 - p_j`` and CRM is the usual argmax; with tree costs it trades a
little top-1 accuracy for much milder mistakes, without retraining.

Two ways to compute ``R``, identical rankings:

* **dense**: one matmul ``p @ cost``, O(B·C²), for any cost matrix;
* **structured**: when ``cost[i, j] = c(LCA(i, j))`` (a :class:`Taxonomy` with an
  LCA distance kind, see :func:`taxosmooth.node_costs`), ``R`` telescopes along
  the ancestors of ``j``:

  .. math::

      R_j = \\sum_{u \\in \\mathrm{anc}(j)} P(u) \\, \\big(c(u) - c(\\mathrm{parent}(u))\\big),
      \\qquad c(\\mathrm{parent}(\\mathrm{root})) := 0,

  with ``anc(j)`` the ancestors of ``j`` including ``j`` and ``P(u)`` the
  probability mass under ``u``: a leaf ``i`` whose LCA with ``j`` is ``u_m``
  contributes ``p_i (c(u_1) - c(u_0) + … + c(u_m) - c(u_{m-1})) = p_i c(u_m)``.
  One bottom-up pass for ``P`` and one top-down pass, O(B·N) for N tree nodes.

**Tie rule.** Classes are ranked by expected cost; classes of equal expected
cost are ranked by class index, lowest first (what a stable sort gives). Both
paths obey the rule exactly whenever they compute equal costs, e.g. for
probabilities and costs that are exact in binary. Otherwise the two paths add
the same terms in a different order, so two classes whose expected costs agree
to within rounding (about 1e-7 relative in float32, 1e-16 in float64) may come
in either order — their expected costs are then equal to that precision. Pass
float64 probabilities where this matters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from taxosmooth._ranking import stable_topk
from taxosmooth._tensor_checks import as_probabilities
from taxosmooth._validation import check_k
from taxosmooth.costs import resolve_costs
from taxosmooth.distances import Source
from taxosmooth.tree_ops.costs import CostTables

__all__ = ["conditional_risk", "crm_predict", "CRMClassifier"]


def _prepare(source, distance, transform, power) -> CostTables:
    """The costs of a source on tensors (the functional forms prepare them per call, CRMClassifier once)."""
    if isinstance(source, CostTables):
        if distance is not None or transform != "identity" or power != 1.0:
            raise ValueError("the costs are already prepared; pass distance, transform and power when preparing them")
        return source
    costs = resolve_costs(source, distance, transform, power, where="costs")
    # a user matrix keeps its dtype; a taxonomy's dense costs are float32, the usual input dtype (no per-call cast)
    tables = CostTables.from_source(costs, dtype=torch.float32)
    if isinstance(source, torch.Tensor):
        tables = tables.to(source.device)
    return tables


def _risk(costs: CostTables, p: torch.Tensor) -> torch.Tensor:
    if costs.device != p.device:
        what = "cost matrix" if not costs.structured else "costs"
        raise RuntimeError(f"the {what} is on {costs.device} but the probabilities on {p.device}; "
                           "move the module with .to(device)")
    return costs.expected(p)


def conditional_risk(
    probs: torch.Tensor,
    source: Source | CostTables,
    from_logits: bool = False,
    *,
    distance: str | None = None,
    transform: str | Callable | None = "identity",
    power: float = 1.0,
) -> torch.Tensor:
    """Expected cost of predicting each class: ``R[b, j] = Σ_i p[b, i] · cost[i, j]``.

    Parameters
    ----------
    probs : Tensor (N, C)
        Class probabilities (rows sum to 1), or logits with ``from_logits=True``.
    source : Taxonomy or Tensor (C, C)
        A taxonomy, whose costs are ``cost_matrix(taxonomy, distance, transform, power)``
        (structured O(N·nodes) computation for ``lca_height`` and
        ``lca_depth_complement``, dense for ``path_length``), or a matrix of
        distances (finite, >= 0, zero diagonal; ``[i, j]`` for predicting ``j``
        when the truth is ``i``): with the default ``transform`` and ``power``,
        the cost matrix itself (see :func:`taxosmooth.costs.resolve_costs`).
    from_logits : bool, default False
        Apply a softmax to ``probs`` first.
    distance, transform, power
        How the source becomes costs, as in :func:`taxosmooth.cost_matrix`
        (``distance`` with a taxonomy only).

    Returns
    -------
    Tensor (N, C)
        float64 for float64 input, float32 otherwise (half precision is
        computed in float32), on the input's device.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> conditional_risk(torch.tensor([[0.4, 0.0, 0.3, 0.3]], dtype=torch.float64), tax)
    tensor([[1.2000, 1.6000, 1.1000, 1.1000]], dtype=torch.float64)
    """
    costs = _prepare(source, distance, transform, power)
    p = as_probabilities(probs, from_logits, costs.num_classes)
    return _risk(costs.to(p.device), p) if costs is not source else _risk(costs, p)


def crm_predict(
    probs: torch.Tensor,
    source: Source | CostTables,
    k: int = 1,
    from_logits: bool = False,
    *,
    distance: str | None = None,
    transform: str | Callable | None = "identity",
    power: float = 1.0,
) -> torch.Tensor:
    """Conditional risk minimisation: the k classes of lowest expected cost.

    Karthik et al., "No Cost Likelihood Manipulation at Test Time for Making
    Better Mistakes in Deep Networks", ICLR 2021: predict
    ``argmin_j Σ_i p_i · cost[i, j]`` (see :func:`conditional_risk` for the
    arguments and the module docstring for the structured computation).

    Ties: classes of equal expected cost come in class-index order, lowest first.

    Parameters
    ----------
    probs : Tensor (N, C)
        Probabilities, or logits with ``from_logits=True``.
    source : Taxonomy or Tensor (C, C)
    k : int, default 1
        How many classes to return, ``1 <= k <= C``.
    from_logits : bool, default False

    Returns
    -------
    LongTensor
        ``(N,)`` for ``k == 1`` (like ``argmax``), else ``(N, k)`` with the
        lowest expected cost first.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> p = torch.tensor([[0.4, 0.0, 0.3, 0.3]])   # argmax: horse
    >>> crm_predict(p, tax).tolist()               # "sea" holds 0.6: whale is the safer bet
    [2]
    """
    costs = _prepare(source, distance, transform, power)
    k = check_k(k, costs.num_classes)
    p = as_probabilities(probs, from_logits, costs.num_classes)
    risk = _risk(costs.to(p.device), p) if costs is not source else _risk(costs, p)
    idx = stable_topk(risk, k, largest=False)
    return idx[:, 0] if k == 1 else idx


class CRMClassifier(nn.Module):
    """Wrap a trained classifier so that it decides by expected cost (CRM).

    ``forward`` returns the **negative expected costs** ``-R`` ``(N, C)``: a
    score whose ``argmax`` (and any ranking, with the tie rule of
    :func:`crm_predict`) is the CRM decision, so existing evaluation code and
    every ranking metric of :mod:`taxosmooth.metrics` (and
    :func:`~taxosmooth.metrics.report`) work on it unchanged. ``-R`` are not
    probabilities: the calibration error takes the model's own probabilities
    (``report(crm(x), y, tax, probs=...)``). :meth:`predict` returns the k best classes.

    Parameters
    ----------
    model : nn.Module
        Returns ``(N, C)`` probabilities, or logits with ``from_logits=True``.
    source : Taxonomy or Tensor (C, C)
        As in :func:`crm_predict`; prepared once here.
    k : int, default 1
        Classes returned by :meth:`predict`.
    from_logits : bool, default False
        Whether ``model`` outputs logits (a softmax is applied). The default is
        that of every function that needs probabilities: a model that outputs
        logits without ``from_logits=True`` gets an error, never a silent misreading.
    distance, transform, power
        How a taxonomy becomes costs (:func:`taxosmooth.cost_matrix`).

    Examples
    --------
    >>> import taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> crm = CRMClassifier(nn.Linear(3, 4), tax, from_logits=True).eval()
    >>> crm.predict(torch.randn(5, 3)).shape
    torch.Size([5])
    """

    def __init__(
        self,
        model: nn.Module,
        source: Source,
        k: int = 1,
        from_logits: bool = False,
        *,
        distance: str | None = None,
        transform: str | Callable | None = "identity",
        power: float = 1.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.costs = _prepare(source, distance, transform, power)
        self.k = check_k(k, self.costs.num_classes)
        self.from_logits = bool(from_logits)

    @property
    def num_classes(self) -> int:
        return self.costs.num_classes

    def risk(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Expected costs ``(N, C)`` of the model's output."""
        return conditional_risk(self.model(*args, **kwargs), self.costs, self.from_logits)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return -self.risk(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The CRM decision: ``(N,)`` for ``k == 1``, else ``(N, k)`` best first."""
        return crm_predict(self.model(*args, **kwargs), self.costs, self.k, self.from_logits)

    def extra_repr(self) -> str:
        kind = "structured" if self.costs.structured else "dense"
        return f"num_classes={self.num_classes}, k={self.k}, costs={kind}"


def __dir__() -> list[str]:
    return list(__all__)
