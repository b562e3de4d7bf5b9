r"""Cost-weighted pairwise loss of the true class against every wrong one.

.. math::

    \ell(z, t) = \sum_{j \ne t} \mathrm{cost}[t, j]\; \operatorname{softplus}(z_j - z_t)

Each wrong class ``j`` is pushed below the true class with a logistic penalty scaled by how bad
confusing ``t`` with ``j`` would be. For costs that are a function of the LCA, ``cost[t, ·]`` is
constant on each ring of ``t``: one expansion of the path's ring costs per batch. A **coarse label**
``v`` counts its classes as one, with ``ζ_v = log Σ_{c ∈ v} exp(z_c)`` in place of ``z_t``.

**Probability targets** ``q`` (Mixup rows, ``label_smoothing``): every class is compared with the
target's expected logit, weighted by its expected cost,

.. math::

    \ell(z, q) = \sum_j \bar c_q(j)\, \operatorname{softplus}(z_j - \zeta_q),
    \qquad \bar c_q(j) = \sum_c q_c\, \mathrm{cost}[c, j], \quad \zeta_q = \sum_c q_c z_c,

which is the formula above for a one-hot ``q``. (The average of the class losses,
``Σ_c q_c ℓ(z, c)``, compares every pair of classes: O(C²) per sample as soon as ``q`` has a
uniform part, as label smoothing gives it.) ``c̄_q`` is one pass up and one down the tree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from taxosmooth.losses._frame import RowTarget, col, finish, fused, fused_factor, times, upstream
from taxosmooth.losses._module import check_options, sharded
from taxosmooth.losses._rows import logit_dot
from taxosmooth.losses.expected_cost import CostLoss, _run, functional_costs, target_log_mass
from taxosmooth.tree_ops import expand
from taxosmooth.tree_ops.paths import own_log_mass, own_mass
from taxosmooth.tree_ops.segments import expand_kernel
from taxosmooth.tree_ops.costs import CostTables

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from taxosmooth.distances import Source

__all__ = ["PairwiseCostLoss", "pairwise_cost_loss"]


# ----------------------------------------------------------------------------- the formula
def pairwise_rows(z: torch.Tensor, target: RowTarget, costs: CostTables, coarse: bool) -> torch.Tensor:
    """The pairwise loss of every row ``(M,)``, the rows' factors applied (``z`` class order)."""
    c = target.num_classes
    if target.kind == "prob":
        q = target.prob
        assert q is not None
        qw = q if target.class_weight is None else q * target.class_weight.to(q.dtype)
        return times(target.scale, _against(z, costs.expected(qw.to(z.dtype)), logit_dot(z, q)))
    ids = target.ids
    assert ids is not None
    if costs.structured and fused(z) and not (coarse and target.uniform is not None):
        tree = costs.tree
        assert tree is not None
        lengths, kappa = costs.on_paths(ids)
        smoothing: tuple = (None, None, 0.0)
        if target.uniform is not None:  # the smoothed target's weights and pivot in the same pass
            w = torch.full((c,), 1.0 / c, dtype=torch.float64, device=z.device) if target.class_weight is None \
                else target.class_weight / c
            mean_cost = tree.to_leaf_order(costs.expected(w.unsqueeze(0))[0])
            smoothing = (mean_cost, fused_factor(target.uniform), float(target.eps))
        pos = tree.class_position.index_select(0, ids.clamp_max(c - 1) if coarse else ids)
        # a coarse label's pivot is its subtree's log-mass: the path's own segment (a class's is its logit)
        return _PairwisePaths.apply(z, lengths, kappa, pos, fused_factor(target.label), target.reduce,
                                    *tree.leaf_permutation(), *smoothing, tree.num_rings - 1 if coarse else None)
    if costs.structured:
        tree = costs.tree
        assert tree is not None
        lengths, kappa = costs.on_paths(ids)
        zl = tree.to_leaf_order(z)
        row_costs = tree.to_class_order(expand(kappa.to(z.dtype), lengths, c))
    else:
        zl = z
        row_costs = costs.rows(ids).to(z.dtype)
    log_p = torch.log_softmax(z, 1)
    zeta = target_log_mass(z, zl, log_p, ids, costs.tree, coarse) + torch.logsumexp(z, 1).to(torch.float64) \
        if coarse else z.gather(1, ids.clamp_max(c - 1)[:, None])[:, 0].to(torch.float64)
    if target.uniform is None:
        return times(target.label, _against(z, row_costs, zeta)).to(z.dtype)
    # label smoothing: the target is (1 - ε) onehot(t) + ε / C (a probability target, see above); a coarse
    # label is no distribution: (1 - ε) ℓ(z, v) + ε ℓ(z, uniform)
    eps = target.eps
    w = torch.full((c,), 1.0 / c, dtype=torch.float64, device=z.device) if target.class_weight is None \
        else target.class_weight / c
    mean_cost = costs.expected(w.unsqueeze(0)).to(z.dtype)  # (1, C): the uniform part's expected costs
    mean_z = z.mean(1).to(torch.float64)
    label = target.label if isinstance(target.label, torch.Tensor) else torch.full_like(zeta, target.label)
    weighted = row_costs * label.to(z.dtype)[:, None] + mean_cost * target.uniform.to(z.dtype)[:, None]
    smoothed = _against(z, weighted, (1.0 - eps) * zeta + eps * mean_z)
    if not coarse:
        return smoothed.to(z.dtype)
    split = times(target.label, _against(z, row_costs, zeta)) + \
        times(target.uniform, _against(z, mean_cost.expand_as(row_costs), mean_z))
    return torch.where(ids >= c, split, smoothed).to(z.dtype)


def _against(z: torch.Tensor, weights: torch.Tensor, zeta: torch.Tensor) -> torch.Tensor:
    """``Σ_j weights_j softplus(z_j - ζ)`` per row (float64); a ``-inf`` ``ζ`` (all target mass on masked
    classes) gives ``+inf``, a ``-inf`` logit ``j`` adds nothing."""
    finite = zeta.clamp_min(torch.finfo(z.dtype).min).to(z.dtype)
    rows = (weights.to(z.dtype) * F.softplus(z - finite[:, None])).sum(1).to(torch.float64)
    return torch.where(torch.isneginf(zeta), torch.full_like(rows, float("inf")), rows)


class _PairwisePaths(torch.autograd.Function):
    """``factor · Σ_j κ_{s(j)} softplus(z_j - z_t)`` per row, ``κ`` ``(M, 2D + 1)`` the cost of every segment of
    the target's path (0 on the target), its gradient written out: ``∂ℓ/∂z_j = κ_j σ(z_j - z_t)`` and
    ``∂ℓ/∂z_t = -Σ_j κ_j σ(z_j - z_t)``.

    With label smoothing ``ε`` (``mean_cost`` ``(C,)`` leaf order: the uniform target's expected costs, with its
    own factor ``ufactor`` per row): ``Σ_j W_j softplus(z_j - ζ)`` with ``W = factor · κ + ufactor · mean_cost``
    and ``ζ = (1 - ε) z_t + ε mean(z)``; then ``∂ℓ/∂z_j = W_j σ_j - (Σ_k W_k σ_k) ∂ζ/∂z_j``."""

    @staticmethod
    def forward(ctx, z, lengths, kappa, pos, factor, reduce, to_leaf, to_class, mean_cost, ufactor, eps, center):
        zl = z if to_leaf is None else z.index_select(1, to_leaf)
        cost = expand_kernel(kappa.to(zl.dtype), lengths, zl.shape[1])
        e = inv_own = None
        if center is None:
            zt = zl.gather(1, pos[:, None])
        else:  # a coarse label: ζ_v = log Σ_{c ∈ v} exp(z_c), the log-mass of the path's own segment
            e, own, top = own_mass(zl, lengths, center)
            own = own.to(torch.float64)
            zt = (own.log() + top.to(torch.float64)).clamp_min(torch.finfo(zl.dtype).min).to(zl.dtype)[:, None]
            zt = zt.masked_fill(own[:, None] == 0, float("-inf"))
            inv_own = torch.where(own > 0, 1.0 / own, 0.0)
        pivot = zt
        if mean_cost is not None:  # the weights and the pivot of the smoothed target, the factors inside
            cost.mul_(col(factor, cost)).add_(col(ufactor, cost) * mean_cost.to(zl.dtype)[None, :])
            pivot = zt * (1.0 - eps) + eps * zl.mean(1, keepdim=True)
        u = zl - pivot.clamp_min(torch.finfo(zl.dtype).min)
        rows = torch.linalg.vecdot(cost, F.softplus(u), dim=1).to(torch.float64)
        rows = torch.where(torch.isneginf(pivot[:, 0]), torch.full_like(rows, float("inf")), rows)
        ctx.save_for_backward(z, u, cost, lengths, kappa, pos, factor if isinstance(factor, torch.Tensor) else None,
                              to_leaf, to_class, mean_cost, ufactor if isinstance(ufactor, torch.Tensor) else None, e,
                              inv_own)
        ctx.factor, ctx.reduce, ctx.eps, ctx.center = (factor if isinstance(factor, float) else None), reduce, eps, \
            center
        ctx.ufactor = ufactor if isinstance(ufactor, float) else None
        if mean_cost is not None:
            return (rows.sum() if reduce else rows).to(z.dtype)
        return finish(rows, factor, reduce, z.dtype)

    @staticmethod
    def backward(ctx, grad):
        z, u, cost, lengths, kappa, pos, factor, to_leaf, to_class, mean_cost, ufactor, e, inv_own = ctx.saved_tensors
        factor = ctx.factor if factor is None else factor
        ufactor = ctx.ufactor if ufactor is None else ufactor
        eps, center = ctx.eps, ctx.center
        none = (None,) * 11
        if torch.is_grad_enabled():  # a double backward: differentiate the formula
            with torch.enable_grad():
                zl = z if to_leaf is None else z.index_select(1, to_leaf)
                zeta = zl.gather(1, pos[:, None])[:, 0].to(torch.float64) if center is None \
                    else own_log_mass(zl, lengths, center)
                kappa_j = expand(kappa.to(zl.dtype), lengths, zl.shape[1])
                if mean_cost is None:
                    rows = times(factor, _against(zl, kappa_j, zeta))
                else:
                    weights = kappa_j * col(factor, kappa_j) + col(ufactor, kappa_j) * mean_cost.to(zl.dtype)[None, :]
                    rows = _against(zl, weights, (1.0 - eps) * zeta + eps * zl.mean(1).to(torch.float64))
                out = (rows.sum() if ctx.reduce else rows).to(z.dtype)
                (gz,) = torch.autograd.grad(out, z, grad, create_graph=True)
            return (gz,) + none
        scale = factor if mean_cost is None else 1.0  # with smoothing the factors are inside the weights
        gw = upstream(grad, scale, ctx.reduce, z.shape[0]).to(u.dtype)
        g = torch.sigmoid(u)
        g.mul_(cost).mul_(gw[:, None])
        total = g.sum(1, keepdim=True)
        if center is not None:  # ∂ζ_v/∂z_j = e_j / s on v's segment
            own_part = torch.zeros_like(kappa)
            own_part[:, center] = inv_own
            g.sub_(expand_kernel(own_part.to(g.dtype), lengths, g.shape[1]).mul_(e).mul_(total))
        elif mean_cost is None:
            g.scatter_add_(1, pos[:, None], -total)
        else:  # ∂ζ/∂z_j = (1 - ε) [j = t] + ε / C
            g.sub_(total * (eps / g.shape[1])).scatter_add_(1, pos[:, None], -total * (1.0 - eps))
        return (g if to_class is None else g.index_select(1, to_class),) + none


# ----------------------------------------------------------------------------- the functional core
def pairwise_cost_loss(input: torch.Tensor, target: torch.Tensor, source: Source, distance: str | None = None,
                       transform: str | Callable | None = "identity", power: float = 1.0,
                       weight: ArrayLike | None = None, ignore_index: int = -100, reduction: str = "mean",
                       label_smoothing: float = 0.0, coarse_labels: bool = False) -> torch.Tensor:
    """Cost-weighted pairwise loss; see :class:`PairwiseCostLoss`."""
    if not isinstance(coarse_labels, bool):
        raise TypeError(f"coarse_labels must be a bool, got {coarse_labels!r}")
    device = input.device if isinstance(input, torch.Tensor) else None
    costs = functional_costs(source, distance, transform, power, device, "pairwise_cost_loss", coarse_labels)
    n_targets = costs.tree.num_nodes if (coarse_labels and costs.tree is not None) else costs.num_classes
    weight, ignore_index, reduction, label_smoothing = check_options(
        "pairwise_cost_loss", costs.num_classes, n_targets, weight, ignore_index, reduction, label_smoothing)
    return _run("PairwiseCostLoss", lambda z, t: pairwise_rows(z, t, costs, coarse_labels), input, target, costs,
                weight, ignore_index, reduction, label_smoothing, coarse_labels)


# ----------------------------------------------------------------------------- the module
class PairwiseCostLoss(CostLoss):
    r"""Pairwise ranking loss weighted by misclassification cost.

    .. math::

        \ell(z, t) = \sum_{j \ne t} \mathrm{cost}[t, j]\; \operatorname{softplus}(z_j - z_t)

    Each wrong class ``j`` is pushed below the true class with a logistic
    penalty scaled by how bad confusing ``t`` with ``j`` would be; a correct
    class costs 0 so ``j = t`` drops out.

    Targets:

    * a **class** ``t``: the formula above;
    * **probabilities** ``q`` (Mixup, CutMix; also class targets with
      ``label_smoothing``, whose target is ``(1 - ε) onehot(t) + ε/C``): every
      class is compared with the target's expected logit ``ζ_q = Σ_c q_c z_c``,
      weighted by its expected cost ``c̄_q(j) = Σ_c q_c cost[c, j]``:
      ``ℓ = Σ_j c̄_q(j) softplus(z_j - ζ_q)`` — the formula above for a one-hot
      ``q``. (The average of the class losses ``Σ_c q_c ℓ(z, c)`` would compare
      every pair of classes, O(C²) per sample with any uniform part.)
      O(batch × classes), structured costs O(batch × nodes);
    * a **coarse label** ``v``: the classes under ``v`` count as one, with the
      log-sum-exp of their logits ``ζ_v = log Σ_{c ∈ v} exp(z_c)`` in place of
      ``z_t``: ``ℓ = Σ_{j ∉ v} cost(LCA(v, j)) softplus(z_j - ζ_v)``; with
      ``label_smoothing`` ``(1 - ε) ℓ(z, v) + ε ℓ(z, uniform)``.

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

    def __init__(self, source: Source, distance: str | None = None, transform: str | Callable | None = "identity",
                 power: float = 1.0, weight: ArrayLike | None = None, ignore_index: int = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0, coarse_labels: bool = False, process_group=None,
                 shard_slack: float = 0.02) -> None:
        super().__init__(source, distance, transform, power, weight, ignore_index, reduction, label_smoothing,
                         coarse_labels)
        self.shard(process_group, self._cost_taxonomy, shard_slack)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return f"structured={self.structured}" + (", " + base if base else "")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.process_group is not None:
            return sharded(self, input, target)
        return _run("PairwiseCostLoss", lambda z, t: pairwise_rows(z, t, self.costs, self.coarse_labels), input,
                    target, self.costs, self.weight, self.ignore_index, self.reduction, self.label_smoothing,
                    self.coarse_labels)
