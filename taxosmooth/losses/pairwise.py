"""Cost-weighted pairwise loss of the true class against every wrong one."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from taxosmooth.losses._common import scale_saved_gradient
from taxosmooth.losses.expected_cost import _CostLoss


class _PairwiseCost(torch.autograd.Function):
    """``Σ_j row_j softplus(z_j - z_t)`` (``row_t = 0``), gradient written out in the forward:
    ``row_j σ(z_j - z_t)`` for ``j ≠ t`` and minus their sum at ``t`` (times ``scale`` with
    ``scale``, when the loss is ``scale ×`` the sum over rows)."""

    @staticmethod
    def forward(ctx, z, rows, target, scale):
        u = z - z.gather(1, target.unsqueeze(1))
        if scale is None:
            loss = torch.linalg.vecdot(rows, F.softplus(u), dim=1)
        else:
            loss = torch.dot(rows.view(-1), F.softplus(u).view(-1)).mul_(scale)
            rows.mul_(scale)  # a scratch copy
        d = u.sigmoid_().mul_(rows)
        d.scatter_add_(1, target.unsqueeze(1), -d.sum(dim=1, keepdim=True))
        ctx.save_for_backward(d)
        ctx.fused = scale is not None
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (d,) = ctx.saved_tensors
        return scale_saved_gradient(d, grad, ctx.fused), None, None, None


__all__ = ["PairwiseCostLoss"]


class PairwiseCostLoss(_CostLoss):
    r"""Pairwise ranking loss weighted by misclassification cost.

    .. math::

        \ell(z, t) = \sum_{j \ne t} \mathrm{cost}[t, j]\; \operatorname{softplus}(z_j - z_t)

    Each wrong class ``j`` is pushed below the true class with a logistic
    penalty scaled by how bad confusing ``t`` with ``j`` would be; a correct
    class costs 0 so ``j = t`` drops out.

    Parameters
    ----------
    costs_or_taxonomy : Taxonomy or array_like (C, C)
        As in :class:`ExpectedCostLoss` (structured with a taxonomy).
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
    >>> round(ts.PairwiseCostLoss(tax)(torch.zeros(1, 4), torch.tensor([0])).item(), 4)  # (1 + 2 + 2) log 2
    3.4657
    """

    def __init__(self, costs_or_taxonomy, distance: str = "lca_height", transform="identity", power: float = 1.0,
                 weight=None, ignore_index: int = -100, reduction: str = "mean"):
        super().__init__(costs_or_taxonomy, distance, transform, power, weight, ignore_index, reduction)

    def extra_repr(self) -> str:
        return f"structured={self.structured}"

    def _per_sample(self, z, t, scale=None):
        return _PairwiseCost.apply(z, self._cost_rows(t, z.dtype), t, scale)
