"""Expected misclassification cost (Bayes risk), mixed with cross entropy."""

from __future__ import annotations

import numpy as np
import torch

from taxosmooth._checks import check_positive
from taxosmooth.costs import node_costs
from taxosmooth.losses._common import (
    TreeLossBase,
    class_costs,
    given_float_dtype,
    scale_saved_gradient,
    softmax_lse,
)
from taxosmooth.taxonomy import Taxonomy
from taxosmooth.tree_ops import TreeTensors

__all__ = ["ExpectedCostLoss", "ring_costs", "expected_row"]


def ring_costs(taxonomy, distance="lca_height", transform="identity", power=1.0) -> np.ndarray:
    """``cost[t, j]`` on each ring of ``t``: float64 ``(C, K+1)``, 0 on ring 0 (``j = t``).

    From :func:`~taxosmooth.node_costs`; only distances that are functions of the
    LCA node (others raise, naming :func:`~taxosmooth.cost_matrix` instead).
    """
    table = node_costs(taxonomy, distance, transform, power)
    c = taxonomy.compiled
    path = c.padded_path
    out = table[path]
    out[:, 0] = 0.0
    return out


class _ExpectedRow(torch.autograd.Function):
    """``Σ_j softmax(z)_j row_j + γ·CE(z, t)`` for constant rows ``(M, C)``, gradient written out.

    ``∂/∂z_j = p_j (row_j - risk + γ) - γ [j = t]`` (``risk`` the first term),
    written in the forward over the rows (a scratch copy). With ``scale``
    the loss is ``scale ×`` the sum of the rows' and the gradient is scaled
    alike, so the backward only hands it on (nothing at all for an incoming
    ``1``).
    """

    @staticmethod
    def forward(ctx, z, rows, target, gamma: float, scale):
        s = 1.0 if scale is None else scale
        p, lse = softmax_lse(z, s)  # s·p
        risk = torch.linalg.vecdot(p, rows, dim=1)  # s·risk
        loss = risk
        if gamma:
            loss = risk + (s * gamma) * (lse - z.gather(1, target.unsqueeze(1)).squeeze(1))
        diff = rows.sub_(risk.unsqueeze(1).div(s).sub_(gamma)).mul_(p)
        if gamma:
            diff.scatter_add_(1, target.unsqueeze(1), diff.new_full((diff.shape[0], 1), -s * gamma))
        ctx.save_for_backward(diff)
        ctx.fused = scale is not None
        return loss if scale is None else loss.sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (diff,) = ctx.saved_tensors
        return scale_saved_gradient(diff, grad, ctx.fused), None, None, None, None


def expected_row(z: torch.Tensor, rows: torch.Tensor, target: torch.Tensor, ce_weight: float,
                 scale: float | None = None) -> torch.Tensor:
    """``Σ_j softmax(z)_j rows_j + ce_weight · CE(z, target)`` per row (``scale ×`` their sum with
    ``scale``); rows are constants, and overwritten."""
    return _ExpectedRow.apply(z, rows, target, float(ce_weight), scale)


class _CostLoss(TreeLossBase):
    """Holds either a structured ring-cost table (taxonomy) or a dense matrix."""

    def __init__(self, costs_or_taxonomy, distance, transform, power, weight, ignore_index, reduction):
        name = type(self).__name__
        if isinstance(costs_or_taxonomy, Taxonomy):
            tax = costs_or_taxonomy
            try:
                rc = ring_costs(tax, distance, transform, power)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}; pass {name}(cost_matrix(taxonomy, {distance!r}, ...)) for a "
                                 "dense cost matrix") from None
            super().__init__(tax.num_classes, weight, ignore_index, reduction)
            self.tree = TreeTensors(tax)
            # the ring costs laid out on each class's leaf segments (segment s: ring |s - K|)
            self.register_buffer("segment_costs", torch.from_numpy(rc[:, list(self.tree.ring_of_segment_list)]),
                                 persistent=False)
            self.register_buffer("costs", None)
        else:
            m = class_costs(costs_or_taxonomy, name)
            super().__init__(m.shape[0], weight, ignore_index, reduction)
            self.tree = None
            self.register_buffer("segment_costs", None)
            self.register_buffer("costs", torch.from_numpy(m).to(given_float_dtype(costs_or_taxonomy)))

    @property
    def structured(self) -> bool:
        return self.tree is not None

    fuses_reduction = True

    def _cost_rows(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``cost[t_i, :]`` for the batch, ``(M, C)`` in class order, a fresh tensor: written from the
        ring costs, or gathered from the matrix."""
        if self.tree is None:
            return self.costs.index_select(0, t).to(dtype)
        return self.tree.segment_rows(self.segment_costs, t, dtype)


class ExpectedCostLoss(_CostLoss):
    r"""Expected misclassification cost under the predicted distribution, plus cross entropy.

    .. math::

        \ell(z, t) = \sum_j \operatorname{softmax}(z)_j\, \mathrm{cost}[t, j]
            \;+\; \gamma \cdot \mathrm{CE}(z, t)

    The first term is the Bayes risk of the prediction; minimised alone it can
    collapse onto the class that is cheapest on average, hence the cross-entropy
    term (``ce_weight = γ``; 0 disables it).

    Parameters
    ----------
    costs_or_taxonomy : Taxonomy or array_like (C, C)
        A taxonomy: costs ``f(d(t, j))`` as in :func:`~taxosmooth.node_costs`,
        computed structurally on the rings of ``t`` (O(batch × classes), no
        ``(C, C)`` tensor; LCA distances only). A matrix: used as given
        (finite, ``>= 0``, zero diagonal).
    ce_weight : float, default 1.0
    distance, transform, power
        Used with a taxonomy; see :func:`~taxosmooth.cost_matrix`.
    weight, ignore_index, reduction
        As in :func:`torch.nn.functional.cross_entropy`.

    Shape
    -----
    - input: ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``
    - target: ``(N)``, ``(N, d1, ...)`` or ``()``, class indices
    - output: scalar, or the target's shape with ``reduction="none"``

    Examples
    --------
    >>> import torch, taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> loss = ts.ExpectedCostLoss(tax, ce_weight=0.0)
    >>> loss(torch.zeros(1, 4), torch.tensor([0])).item()  # (0 + 1 + 2 + 2) / 4
    1.25
    """

    def __init__(self, costs_or_taxonomy, ce_weight: float = 1.0, distance: str = "lca_height",
                 transform="identity", power: float = 1.0, weight=None, ignore_index: int = -100,
                 reduction: str = "mean"):
        super().__init__(costs_or_taxonomy, distance, transform, power, weight, ignore_index, reduction)
        self.ce_weight = check_positive(ce_weight, "ce_weight", allow_zero=True)

    def extra_repr(self) -> str:
        return f"ce_weight={self.ce_weight}, structured={self.structured}"

    def _per_sample(self, z, t, scale=None):
        return _ExpectedRow.apply(z, self._cost_rows(t, z.dtype), t, self.ce_weight, scale)
