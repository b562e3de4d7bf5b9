r"""Expected misclassification cost (Bayes risk) under the predicted distribution, plus cross entropy.

.. math::

    \ell(z, t) = \sum_j \operatorname{softmax}(z)_j\, \mathrm{cost}[t, j] \;+\; \gamma \cdot \mathrm{CE}(z, t)

For costs that are a function of the LCA (``cost[t, j] = κ(LCA(t, j))``) the first term is
``Σ_r κ(a_r)·P(ring r)``: the softmax's mass on each ring of the target, one segment sum per
batch. A **coarse label** ``v`` costs nothing under ``v`` and its cross entropy is
``-log P(v)``. **Probability** rows (and the uniform part of ``label_smoothing``) give
``Σ_c p_c ℓ(z, c)``: the expected costs ``Σ_c p_c cost[c, j]`` of every class, one pass up and
one down (:class:`~taxosmooth.tree_ops.costs.CostTables`), plus ``γ`` times the soft cross entropy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from taxosmooth._checks import check_positive
from taxosmooth.costs import resolve_costs
from taxosmooth.losses._frame import (RowTarget, as_rows, finish, fused, fused_factor, run_loss, scaled, sum_columns,
                                      times, upstream)
from taxosmooth.losses._module import TreeLoss, check_options, sharded
from taxosmooth.losses._rows import soft_cross_entropy
from taxosmooth.taxonomy import Taxonomy
from taxosmooth.tree_ops import TreeTensors, path_log_masses, segment_sum, tree_tensors
from taxosmooth.tree_ops.costs import CostTables
from taxosmooth.tree_ops.paths import own_log_mass, own_mass, ring_segments
from taxosmooth.tree_ops.segments import expand_kernel, segment_sum_kernel

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from taxosmooth.distances import Source

__all__ = ["ExpectedCostLoss", "expected_cost_loss", "CostLoss", "cost_tables", "target_log_mass"]


# ----------------------------------------------------------------------------- the formula
def expected_cost_rows(z: torch.Tensor, target: RowTarget, costs: CostTables, gamma: float,
                       coarse: bool) -> torch.Tensor:
    """Expected cost (+ ``γ`` cross entropy) of every row ``(M,)``, the rows' factors applied (``z`` class order)."""
    c = target.num_classes
    tree = costs.tree
    if target.kind == "prob":
        log_p = torch.log_softmax(z, 1)
        q = target.prob
        assert q is not None
        if target.class_weight is not None:
            q = q * target.class_weight.to(q.dtype)
        risk = (log_p.exp() * costs.expected(q)).sum(1)
        return times(target.scale, risk + gamma * soft_cross_entropy(z, q) if gamma else risk)
    ids = target.ids
    assert ids is not None
    if target.columns and (tree is None or coarse or not fused(z)):
        return sum_columns(lambda t: expected_cost_rows(z, t, costs, gamma, coarse), target)
    if tree is not None and fused(z):
        lengths, kappa = costs.on_paths(ids)
        # a coarse label's cross entropy is its subtree's log-mass: the path's own segment (a class's is its logit)
        center = tree.num_rings - 1 if coarse else None
        smoothing: tuple = (None, None, None)
        if target.uniform is not None:  # label smoothing's uniform part in the same pass
            w = torch.full((c,), 1.0 / c, dtype=torch.float64, device=z.device) if target.class_weight is None \
                else target.class_weight / c
            u = costs.expected(w.unsqueeze(0))[0]
            smoothing = (tree.to_leaf_order(u), tree.to_leaf_order(w), fused_factor(target.uniform))
        pos = tree.class_position.index_select(0, ids.clamp_max(c - 1) if coarse else ids)
        extra = None
        if target.columns:  # further class columns of the same rows: their paths, one softmax for all
            paths = [costs.on_paths(ids_k) for ids_k, _ in target.columns]
            extra = (torch.stack([lk for lk, _ in paths]), torch.stack([kk for _, kk in paths]),
                     torch.stack([tree.class_position.index_select(0, ids_k) for ids_k, _ in target.columns]),
                     torch.stack([as_rows(f, z) for _, f in target.columns]))
        return _RiskPaths.apply(z, lengths, kappa, pos, None, float(gamma), fused_factor(target.label), target.reduce,
                                *tree.leaf_permutation(), *smoothing, center, extra)
    log_p = torch.log_softmax(z, 1)
    if tree is not None:
        zl = tree.to_leaf_order(z)
        lengths, kappa = costs.on_paths(ids)
        risk = (kappa * segment_sum(tree.to_leaf_order(log_p.exp()), lengths).to(torch.float64)).sum(1)
    else:
        zl = z
        risk = (log_p.exp() * costs.rows(ids).to(z.dtype)).sum(1)
    rows = risk
    if gamma:
        rows = rows + gamma * -target_log_mass(z, zl, log_p, ids, tree, coarse)
    rows = times(target.label, rows)
    if target.uniform is not None:
        w = torch.full((c,), 1.0 / c, dtype=torch.float64, device=z.device) if target.class_weight is None \
            else target.class_weight / c
        uniform = log_p.exp() @ costs.expected(w.unsqueeze(0))[0].to(z.dtype)
        if gamma:
            uniform = uniform + gamma * soft_cross_entropy(z, w)
        rows = rows + times(target.uniform, uniform)
    return rows.to(z.dtype)


class _RiskPaths(torch.autograd.Function):
    """``factor · (Σ_j p_j (κ_{s(j)} + w_j) - γ log p_t) + ufactor · (Σ_j p_j u_j - γ Σ_j v_j log p_j)`` per row,
    ``p = softmax(z)``, ``κ`` ``(M, 2R - 1)`` per segment of the target's path, ``w``, ``u``, ``v`` ``(C,)`` per class
    (leaf order; ``None``: 0).

    The expected cost (``w = 0``) and the tree-Wasserstein distance to a class (``κ`` from the weighted depths,
    ``w`` the classes' own) with their cross entropy; the second term is label smoothing's uniform part (``u`` the
    uniform target's expected costs, ``v`` its class weights), its own factor per row. Gradient written out:
    ``∂ℓ/∂z_j = p_j (factor (κ_{s(j)} + w_j - risk + γ) + ufactor (u_j - urisk + γ Σ v)) - γ (factor [j = t] +
    ufactor v_j)``."""

    @staticmethod
    def forward(ctx, z, lengths, kappa, pos, w, gamma, factor, reduce, to_leaf, to_class, u, v, ufactor, center,
                extra):
        zl = z if to_leaf is None else z.index_select(1, to_leaf)
        log_p = torch.log_softmax(zl, 1)
        p = torch.exp(log_p)
        risk = (kappa * segment_sum_kernel(p, lengths).to(torch.float64)).sum(1)
        if w is not None:
            risk = risk + (p @ w.to(p.dtype)[:, None])[:, 0].to(torch.float64)  # a matrix product: BLAS also compiled
        e = inv_own = None
        if not gamma:
            rows = risk
        elif center is None:
            rows = risk - gamma * log_p.gather(1, pos[:, None])[:, 0].to(torch.float64)
        else:  # a coarse label: -log P(v), the log-mass of the path's own segment
            e, own, top = own_mass(zl, lengths, center)
            own = own.to(torch.float64)
            lse = zl.amax(1) - log_p.amax(1)  # log-sum-exp from the log-softmax at the row's best logit
            log_own = own.log() + top.to(torch.float64) - lse.to(torch.float64)
            rows = risk - gamma * log_own
            inv_own = torch.where(own > 0, 1.0 / own, 0.0)
        if u is not None or extra is not None:
            rows = scaled(rows, factor)
        urisk = None
        if u is not None:
            urisk = (p @ u.to(p.dtype)[:, None])[:, 0].to(torch.float64)
            urows = urisk
            if gamma:  # 0 · log 0 = 0 (nansum), v_j · log 0 = -inf: the row is +inf
                urows = urows - gamma * torch.nansum(log_p * v.to(p.dtype), 1).to(torch.float64)
            rows = rows + scaled(urows, ufactor)
        more_risk = None
        if extra is not None:  # further class columns of the same rows (a Mixup row's classes): one softmax
            more_lengths, more_kappa, more_pos, more_factor = extra
            more_risk = torch.stack([(more_kappa[k] * segment_sum_kernel(p, more_lengths[k]).to(torch.float64)).sum(1)
                                     for k in range(more_lengths.shape[0])])
            more_rows = more_risk
            if gamma:
                more_rows = more_rows - gamma * log_p.gather(1, more_pos.t()).t().to(torch.float64)
            rows = rows + torch.where(more_factor == 0, 0.0, more_rows * more_factor).sum(0)
        ctx.save_for_backward(z, p, lengths, kappa, pos, w, risk, factor if isinstance(factor, torch.Tensor) else None,
                              to_leaf, to_class, u, v, urisk, ufactor if isinstance(ufactor, torch.Tensor) else None,
                              e, inv_own, more_risk, *(extra or ()))
        ctx.gamma, ctx.reduce, ctx.center = gamma, reduce, center
        ctx.factor = factor if isinstance(factor, float) else None
        ctx.ufactor = ufactor if isinstance(ufactor, float) else None
        if u is not None or extra is not None:
            return (rows.sum() if reduce else rows).to(z.dtype)
        return finish(rows, factor, reduce, z.dtype)

    @staticmethod
    def backward(ctx, grad):
        z, p, lengths, kappa, pos, w, risk, factor, to_leaf, to_class, u, v, urisk, ufactor, e, inv_own, more_risk, \
            *extra = ctx.saved_tensors
        factor = ctx.factor if factor is None else factor
        ufactor = ctx.ufactor if ufactor is None else ufactor
        gamma, center = ctx.gamma, ctx.center
        none = (None,) * 14
        if torch.is_grad_enabled():  # a double backward: differentiate the formula
            with torch.enable_grad():
                zl = z if to_leaf is None else z.index_select(1, to_leaf)
                log_q = torch.log_softmax(zl, 1)
                q = torch.exp(log_q)
                rows = (kappa * segment_sum(q, lengths).to(torch.float64)).sum(1)
                if w is not None:
                    rows = rows + (q @ w.to(q.dtype)).to(torch.float64)
                if gamma and center is None:
                    rows = rows - gamma * log_q.gather(1, pos[:, None])[:, 0].to(torch.float64)
                elif gamma:
                    rows = rows - gamma * (own_log_mass(zl, lengths, center) - torch.logsumexp(zl, 1).to(torch.float64))
                rows = times(factor, rows)
                if u is not None:
                    urows = (q @ u.to(q.dtype)).to(torch.float64)
                    if gamma:
                        urows = urows - gamma * torch.nansum(log_q * v.to(q.dtype), 1).to(torch.float64)
                    rows = rows + times(ufactor, urows)
                for k in range(extra[0].shape[0] if extra else 0):
                    more = (extra[1][k] * segment_sum(q, extra[0][k]).to(torch.float64)).sum(1)
                    if gamma:
                        more = more - gamma * log_q.gather(1, extra[2][k][:, None])[:, 0].to(torch.float64)
                    rows = rows + times(extra[3][k], more)
                out = (rows.sum() if ctx.reduce else rows).to(z.dtype)
                (gz,) = torch.autograd.grad(out, z, grad, create_graph=True)
            return (gz,) + none
        gw = upstream(grad, factor, ctx.reduce, z.shape[0])
        per_row = (gamma - risk) * gw
        if u is not None:
            gu = upstream(grad, ufactor, ctx.reduce, z.shape[0])
            per_row = per_row + gu * ((gamma * v.sum() if gamma else 0.0) - urisk)
        g = expand_kernel((kappa * gw[:, None] + per_row[:, None]).to(p.dtype), lengths, p.shape[1])
        more = [upstream(grad, extra[3][k], ctx.reduce, z.shape[0]) for k in range(extra[0].shape[0])] if extra else []
        for k, gk in enumerate(more):
            step = extra[1][k] * gk[:, None] + ((gamma - more_risk[k]) * gk)[:, None]
            g.add_(expand_kernel(step.to(p.dtype), extra[0][k], p.shape[1]))
        if w is not None:
            g.addcmul_(gw.to(p.dtype)[:, None], w.to(p.dtype)[None, :])
        if u is not None:
            g.addcmul_(gu.to(p.dtype)[:, None], u.to(p.dtype)[None, :])
        g.mul_(p)
        if gamma and center is None:
            g.scatter_add_(1, pos[:, None], (-gamma * gw).to(g.dtype)[:, None])
        elif gamma:  # -γ ∂log P(v)/∂z_j = -γ (e_j / s - p_j) on v's segment (the p_j part is in the row's γ)
            own = torch.zeros_like(kappa)
            own[:, center] = -gamma * gw * inv_own
            g.add_(expand_kernel(own.to(g.dtype), lengths, g.shape[1]).mul_(e))
        if gamma:
            if u is not None:
                g.addcmul_(gu.to(p.dtype)[:, None], v.to(p.dtype)[None, :], value=-gamma)
            for k, gk in enumerate(more):
                g.scatter_add_(1, extra[2][k][:, None], (-gamma * gk).to(g.dtype)[:, None])
        return (g if to_class is None else g.index_select(1, to_class),) + none


def target_log_mass(z: torch.Tensor, z_leaf: torch.Tensor, log_p: torch.Tensor, ids: torch.Tensor,
                    tree: TreeTensors | None, coarse: bool) -> torch.Tensor:
    """``log P(t)`` per row: the log-softmax at a class, the exact log-mass of the classes under a coarse label."""
    if not coarse:
        return log_p.gather(1, ids[:, None])[:, 0].to(torch.float64)
    assert tree is not None
    _, lengths = tree.paths(ids)
    return path_log_masses(tree, z_leaf, lengths)[:, -1] - torch.logsumexp(z, 1).to(torch.float64)


# ----------------------------------------------------------------------------- the costs of a source
def cost_tables(source: Source, distance: str | None, transform, power: float, *, where: str,
                coarse_labels: bool, tree: TreeTensors | None = None) -> tuple[CostTables, Taxonomy | None]:
    """The :class:`CostTables` of a cost source (structured for an LCA distance of a taxonomy) and its taxonomy.

    ``tree``: the taxonomy's :class:`TreeTensors` if the caller has them (else built here).
    """
    costs = resolve_costs(source, distance, transform, power, where=where)
    tax = costs.taxonomy
    if coarse_labels and tax is not None and not costs.structured:
        raise ValueError(f"{where}: coarse labels need costs that are a function of the LCA node "
                         f"(distance {costs.distance!r} is not); use lca_height or lca_depth_complement")
    return CostTables.from_source(costs, tree, torch.float64), tax


class CostLoss(TreeLoss):
    """A loss built on costs: structured node costs on a taxonomy, or a dense ``(C, C)`` matrix."""

    def __init__(self, source: Source, distance: str | None, transform, power: float, weight, ignore_index: int,
                 reduction: str, label_smoothing: float, coarse_labels: bool) -> None:
        name = type(self).__name__
        costs, tax = cost_tables(source, distance, transform, power, where=name, coarse_labels=coarse_labels)
        structured_tax = tax if costs.structured else None
        super().__init__(costs.num_classes, weight, ignore_index, reduction, label_smoothing, coarse_labels,
                         structured_tax.num_nodes if structured_tax is not None else None, structured_tax)
        self.costs = costs
        self._cost_taxonomy = structured_tax

    @property
    def structured(self) -> bool:
        return self.costs.structured

    @property
    def tree(self) -> TreeTensors | None:
        """The taxonomy's tensors of structured costs (``None`` for a matrix)."""
        return self.costs.tree


# ----------------------------------------------------------------------------- the functional core
def _run(name: str, rows, input, target, costs: CostTables, weight, ignore_index, reduction, label_smoothing,
         coarse_labels: bool) -> torch.Tensor:
    tree = costs.tree
    n_nodes = tree.num_nodes if tree is not None else None
    return run_loss(rows, input, target, name=name, num_classes=costs.num_classes,
                    num_targets=n_nodes if (coarse_labels and n_nodes is not None) else costs.num_classes,
                    num_nodes=n_nodes, weight=weight, ignore_index=ignore_index, reduction=reduction,
                    label_smoothing=label_smoothing,
                    target_weights=tree.target_means if (coarse_labels and tree is not None) else None,
                    linear_in_target=name == "ExpectedCostLoss",  # the pairwise loss is not: ζ = Σ_c p_c z_c
                    shared_columns=name == "ExpectedCostLoss")


def functional_costs(source, distance, transform, power, device, where: str, coarse_labels: bool) -> CostTables:
    """The cost tables of a functional call: built once per (taxonomy, options, device) for a taxonomy."""
    if isinstance(source, Taxonomy) and not callable(transform):
        tree = tree_tensors(source, device)
        key = ("costs", distance, transform, float(power) if isinstance(power, (int, float)) else power, coarse_labels)
        return tree.derived(key, lambda: cost_tables(source, distance, transform, power, where=where,
                                                     coarse_labels=coarse_labels, tree=tree)[0])
    return cost_tables(source, distance, transform, power, where=where, coarse_labels=coarse_labels)[0].to(device)


def expected_cost_loss(input: torch.Tensor, target: torch.Tensor, source: Source, ce_weight: float = 1.0,
                       distance: str | None = None, transform: str | Callable | None = "identity", power: float = 1.0,
                       weight: ArrayLike | None = None, ignore_index: int = -100, reduction: str = "mean",
                       label_smoothing: float = 0.0, coarse_labels: bool = False) -> torch.Tensor:
    """Expected cost plus cross entropy; see :class:`ExpectedCostLoss`."""
    if not isinstance(coarse_labels, bool):
        raise TypeError(f"coarse_labels must be a bool, got {coarse_labels!r}")
    device = input.device if isinstance(input, torch.Tensor) else None
    costs = functional_costs(source, distance, transform, power, device, "expected_cost_loss", coarse_labels)
    n_targets = costs.tree.num_nodes if (coarse_labels and costs.tree is not None) else costs.num_classes
    weight, ignore_index, reduction, label_smoothing = check_options(
        "expected_cost_loss", costs.num_classes, n_targets, weight, ignore_index, reduction, label_smoothing)
    gamma = check_positive(ce_weight, "ce_weight", allow_zero=True)
    return _run("ExpectedCostLoss", lambda z, t: expected_cost_rows(z, t, costs, gamma, coarse_labels), input, target,
                costs, weight, ignore_index, reduction, label_smoothing, coarse_labels)


# ----------------------------------------------------------------------------- the module
class ExpectedCostLoss(CostLoss):
    r"""Expected misclassification cost under the predicted distribution, plus cross entropy.

    .. math::

        \ell(z, t) = \sum_j \operatorname{softmax}(z)_j\, \mathrm{cost}[t, j]
            \;+\; \gamma \cdot \mathrm{CE}(z, t)

    The first term is the Bayes risk of the prediction; minimised alone it can
    collapse onto the class that is cheapest on average, hence the cross-entropy
    term (``ce_weight = γ``, 1 by default as for every cost loss; 0 disables it).

    Targets:

    * a **class** ``t``: the formula above;
    * **probabilities** ``p``: ``Σ_c p_c ℓ(z, c)``, i.e. the costs
      ``Σ_c p_c cost[c, j]`` (structurally: subtree sums of ``p``) plus
      ``γ`` times the soft-target cross entropy;
    * a **coarse label** ``v``: predicting a class under ``v`` costs nothing,
      any other class ``j`` costs ``cost(LCA(v, j))``, and the cross entropy
      becomes ``-log P(v)``: ``ℓ = Σ_{j ∉ v} softmax(z)_j cost(LCA(v, j)) - γ log P(v)``.

    Parameters
    ----------
    source : Taxonomy or array_like (C, C)
        A taxonomy: costs ``f(d(t, j))`` as in :func:`~taxosmooth.cost_matrix`,
        computed structurally on the rings of ``t`` for the LCA distances
        (O(batch × classes), no ``(C, C)`` tensor). A matrix: distances
        (finite, ``>= 0``, zero diagonal), the cost matrix itself with the
        default ``transform`` and ``power``.
    ce_weight : float, default 1.0
    distance : str, optional
        Tree distance, with a taxonomy only (default ``"lca_height"``).
    transform, power
        See :func:`~taxosmooth.cost_matrix`.
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
    >>> loss = ts.ExpectedCostLoss(tax, ce_weight=0.0)
    >>> loss(torch.zeros(1, 4), torch.tensor([0])).item()  # (0 + 1 + 2 + 2) / 4
    1.25
    """

    def __init__(self, source: Source, ce_weight: float = 1.0, distance: str | None = None,
                 transform: str | Callable | None = "identity", power: float = 1.0, weight: ArrayLike | None = None,
                 ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                 coarse_labels: bool = False, process_group=None,
                 shard_slack: float = 0.02) -> None:
        super().__init__(source, distance, transform, power, weight, ignore_index, reduction, label_smoothing,
                         coarse_labels)
        self.ce_weight = check_positive(ce_weight, "ce_weight", allow_zero=True)
        self.shard(process_group, self._cost_taxonomy, shard_slack)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return f"ce_weight={self.ce_weight}, structured={self.structured}" + (", " + base if base else "")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.process_group is not None:
            return sharded(self, input, target)
        return _run("ExpectedCostLoss",
                    lambda z, t: expected_cost_rows(z, t, self.costs, self.ce_weight, self.coarse_labels), input,
                    target, self.costs, self.weight, self.ignore_index, self.reduction, self.label_smoothing,
                    self.coarse_labels)
