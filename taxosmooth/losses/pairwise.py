"""Cost-weighted pairwise loss of the true class against every wrong one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F

from taxosmooth.losses._base import LossTarget
from taxosmooth.losses._kernels import host_ring0_correction, ref_ring0_log_mass
from taxosmooth.losses.expected_cost import CostLossBase
from taxosmooth.tree_ops import TreeTensors

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from taxosmooth.distances import Source

__all__ = ["PairwiseCostLoss"]

#: elements of (pairs, C) blocks evaluated at once for probability targets
_BLOCK = 1 << 22


class PairwiseCostLoss(CostLossBase):
    r"""Pairwise ranking loss weighted by misclassification cost.

    .. math::

        \ell(z, t) = \sum_{j \ne t} \mathrm{cost}[t, j]\; \operatorname{softplus}(z_j - z_t)

    Each wrong class ``j`` is pushed below the true class with a logistic
    penalty scaled by how bad confusing ``t`` with ``j`` would be; a correct
    class costs 0 so ``j = t`` drops out.

    Targets:

    * a **class** ``t``: the formula above;
    * **probabilities** ``p``: ``Σ_c p_c ℓ(z, c)``. Each class with target mass
      costs one pass over the classes: Mixup and CutMix rows (two classes) cost
      about twice a class target, while a dense row (``label_smoothing``, whose
      uniform part touches every class) costs O(C²) per sample — evaluated in
      blocks, never as a ``(C, C)`` tensor, but slow for large ``C``;
    * a **coarse label** ``v``: the classes under ``v`` count as one, with the
      log-sum-exp of their logits ``ζ_v = log Σ_{c ∈ v} exp(z_c)`` in place of
      ``z_t``: ``ℓ = Σ_{j ∉ v} cost(LCA(v, j)) softplus(z_j - ζ_v)``.

    Parameters
    ----------
    source : Taxonomy or array_like (C, C)
        As in :class:`ExpectedCostLoss` (structured with a taxonomy and an LCA distance).
    distance, transform, power
        See :func:`~taxosmooth.cost_matrix` (``distance`` with a taxonomy only).
    weight, ignore_index, reduction, label_smoothing, coarse_labels
        As in :mod:`taxosmooth.losses`.

    Shape
    -----
    - input: ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``
    - target: ``(N)``, ``(N, d1, ...)`` or ``()`` ids, or probabilities with the input's shape
    - output: scalar, or the target's shape with ``reduction="none"``

    Examples
    --------
    >>> import torch, taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> round(ts.PairwiseCostLoss(tax)(torch.zeros(1, 4), torch.tensor([0])).item(), 4)  # (1 + 2 + 2) log 2
    3.4657
    """

    sparse_targets = True

    def __init__(self, source: Source, distance: str | None = None, transform: str | Callable | None = "identity",
                 power: float = 1.0, weight: ArrayLike | None = None, ignore_index: int = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0, coarse_labels: bool = False) -> None:
        super().__init__(source, distance, transform, power, weight, ignore_index, reduction, label_smoothing,
                         coarse_labels)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return f"structured={self.structured}" + (", " + base if base else "")

    # ------------------------------------------------------------------ integer targets
    def _host_ids(self, z, target: LossTarget):
        zl = self._leaf(z)
        rings = self._rings(target, True)
        w = self._id_rows(target.ids, target.omega, True, z.numpy().dtype, rings)
        w = w if isinstance(w, torch.Tensor) else torch.from_numpy(w)
        znp = zl.numpy()
        if rings is not None:
            zeta = rings.ring0_logsumexp(znp)
        else:
            zeta = znp[np.arange(znp.shape[0]), cast(torch.Tensor, target.ids).numpy()].astype(np.float64)
        u = zl - torch.from_numpy(zeta).to(zl.dtype).unsqueeze(1)
        rows = torch.linalg.vecdot(w, F.softplus(u), dim=1).double()
        d = u.sigmoid_().mul_(w)
        total = d.sum(dim=1).double().numpy()
        g = d.numpy()
        if rings is not None:
            host_ring0_correction(g, znp, rings, total, zeta)
        else:
            g[np.arange(g.shape[0]), cast(torch.Tensor, target.ids).numpy()] -= total.astype(g.dtype)
        return rows.numpy(), self._unleaf(d)

    def _ref_ids(self, z, target: LossTarget):
        rings = self._rings(target, False)
        w = self._id_rows(target.ids, target.omega, False, z.dtype, rings)
        zeta = ref_ring0_log_mass(self.tree, z, rings.node) if rings is not None else \
            z.gather(1, cast(torch.Tensor, target.ids)[:, None])[:, 0]
        return (w * F.softplus(z - zeta[:, None])).sum(1)

    # ------------------------------------------------------------------ dense targets, by pairs
    def _pair_pass(self, z, weights: torch.Tensor, grad_rows=None):
        """``Σ_c weights[i, c] Σ_j cost[c, j] softplus(z_j - z_c)`` per row ``i``, or (``grad_rows`` (M,)
        given) its vector-Jacobian product with ``grad_rows``.

        Only the pairs ``(i, c)`` with a nonzero weight are evaluated, in blocks of about
        ``_BLOCK`` elements, so memory stays O(block) whatever ``C``; the work is
        O(pairs × C). Plain torch operations: the vector-Jacobian product is
        itself differentiable (double backward).
        """
        n, C = z.shape
        rows_i, cls = weights.nonzero(as_tuple=True)
        out = z.new_zeros(n) if grad_rows is None else torch.zeros_like(z)
        step = max(1, _BLOCK // max(C, 1))
        for a in range(0, rows_i.shape[0], step):
            ri, ci = rows_i[a : a + step], cls[a : a + step]
            cost = self._cost_rows_of(ci, z.dtype)
            zi = z.index_select(0, ri)
            u = zi - zi.gather(1, ci[:, None])
            w = weights[ri, ci].to(z.dtype)
            if grad_rows is None:
                out = out.index_add(0, ri, (cost * F.softplus(u)).sum(1) * w)
                continue
            s = cost * torch.sigmoid(u) * (w * grad_rows.to(z.dtype).index_select(0, ri))[:, None]
            s = s.scatter_add(1, ci[:, None], -s.sum(1, keepdim=True))
            out = out.index_add(0, ri, s)
        return out

    def _cost_rows_of(self, classes: torch.Tensor, dtype) -> torch.Tensor:
        if not self.structured:
            return cast(torch.Tensor, self.costs).index_select(0, classes).to(dtype)
        rings = cast(TreeTensors, self.tree).rings(classes, host=False)
        return cast(TreeTensors, self.tree).to_class_order(rings.expand_rings(self._ring_costs(rings))).to(dtype)

    def _dense_weights(self, target: LossTarget, device) -> torch.Tensor | None:
        """The rows' class weights of the dense part (M, C): probability targets, or the uniform part."""
        cw = target.class_weight
        if target.kind == "prob":
            p = cast(torch.Tensor, target.prob).to(torch.float64)
            p = p if cw is None else p * cw.to(torch.float64)
            om = target.omega
            return p * (om if isinstance(om, float) else om.to(torch.float64)[:, None])
        if target.smooth is None:
            return None
        C = self.num_classes
        u = torch.full((C,), 1.0 / C, dtype=torch.float64, device=device) if cw is None else \
            cw.to(torch.float64) / C
        sm = target.smooth
        n = cast(torch.Tensor, target.ids).shape[0]
        sm = torch.full((n,), sm, dtype=torch.float64, device=device) if isinstance(sm, float) else \
            sm.to(torch.float64)
        return sm[:, None] * u[None, :]

    # ------------------------------------------------------------------ kernels
    def _host(self, z, target: LossTarget):
        if target.kind == "index":
            rows, grad = self._host_ids(z, target)
        elif target.kind == "sparse":  # Mixup rows: one pass over the classes per target class
            rows, grad = np.zeros(z.shape[0]), torch.zeros_like(z)
            for ids, omega in target.columns():
                col = LossTarget(kind="index", omega=omega, ids=ids, class_weight=target.class_weight, coarse=False)
                r, g = self._host_ids(z, col)
                rows += r
                grad += g
        else:
            rows, grad = np.zeros(z.shape[0]), torch.zeros_like(z)
        dense = self._dense_weights(target, z.device)
        if dense is not None:
            rows = rows + self._pair_pass(z, dense).double().numpy()
            grad = grad + self._pair_pass(z, dense, torch.ones(z.shape[0], dtype=z.dtype))
        return rows, grad

    def _reference(self, z, target: LossTarget):
        rows = self._ref_ids(z, target) if target.kind == "index" else z.new_zeros(z.shape[0])
        dense = self._dense_weights(target, z.device)
        if dense is not None:
            rows = rows + _PairRows.apply(z, dense, self)
        return rows


class _PairRows(torch.autograd.Function):
    """The dense part of :class:`PairwiseCostLoss` without an autograd graph of its ``(pairs, C)`` blocks:
    the backward recomputes them block by block (plain torch operations, so twice differentiable)."""

    @staticmethod
    def forward(z, weights, loss):
        return loss._pair_pass(z, weights)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, weights, loss = inputs
        ctx.save_for_backward(z, weights)
        ctx.loss = loss

    @staticmethod
    def backward(ctx, grad_rows):
        z, weights = ctx.saved_tensors
        return ctx.loss._pair_pass(z, weights, grad_rows), None, None
