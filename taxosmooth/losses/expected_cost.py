"""Expected misclassification cost (Bayes risk), mixed with cross entropy; the cost rows it shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from taxosmooth._checks import check_positive
from taxosmooth.costs import CostSource, resolve_costs
from taxosmooth.distances import Source
from taxosmooth.losses._base import LossTarget, TreeLossBase
from taxosmooth.losses._kernels import host_ring0_correction, host_softmax, ref_ring0_log_mass, row_dot
from taxosmooth.taxonomy import Taxonomy
from taxosmooth.tree_ops import Rings, TreeTensors

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["ExpectedCostLoss", "CostLossBase"]


def _col(x, like):
    if x is None:
        return None
    if isinstance(x, float):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x).to(like.dtype)[:, None]
    return x.to(like.dtype)[:, None]


def _host_col(x):
    """A per-row factor (float or (M,) tensor) that broadcasts over (M, R) numpy values."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).numpy()[:, None]
    return float(x)


def _host_vec(x, n: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).numpy()
    return np.full(n, float(x))


class CostLossBase(TreeLossBase):
    """A loss built on costs (:func:`~taxosmooth.costs.resolve_costs`): structured node costs on a
    taxonomy, or a dense ``(C, C)`` matrix. Rows of costs for a batch come from here."""

    # buffers: the node tables of structured costs (``tree`` set, ``costs`` None), else the dense matrix
    node_cost: torch.Tensor
    node_cost_step: torch.Tensor
    costs: torch.Tensor | None

    def __init__(self, source: Source, distance: str | None, transform: str | Callable | None, power: float,
                 weight: ArrayLike | None, ignore_index: int, reduction: str, label_smoothing: float,
                 coarse_labels: bool) -> None:
        name = type(self).__name__
        costs: CostSource = resolve_costs(source, distance, transform, power, where=name)
        tax = costs.taxonomy
        tree = TreeTensors(cast(Taxonomy, tax)) if costs.structured else None  # structured: a taxonomy's
        if coarse_labels and tax is not None and not costs.structured:
            raise ValueError(f"{name}: coarse labels need costs that are a function of the LCA node "
                             f"(distance {costs.distance!r} is not); use lca_height or lca_depth_complement")
        super().__init__(costs.num_classes, weight, ignore_index, reduction, label_smoothing, coarse_labels, tree,
                         tax if costs.structured else None)
        self.costs_source = costs
        if costs.structured:
            # structured costs come from a taxonomy
            assert tax is not None and tree is not None and costs.node_table is not None
            c = tax.compiled
            table = costs.node_table
            self._node_cost = table
            self._node_cost_step = table - np.where(c.parent >= 0, table[np.maximum(c.parent, 0)], 0.0)
            self._step_level = tree.nodes_host.table(self._node_cost_step)
            self.register_buffer("node_cost", torch.from_numpy(np.array(table)), persistent=False)
            self.register_buffer("node_cost_step", torch.from_numpy(self._node_cost_step.copy()), persistent=False)
            self.register_buffer("costs", None)
        else:
            dtype = costs.given_dtype or torch.float64
            self.register_buffer("costs", torch.from_numpy(np.array(costs.dense())).to(dtype))

    @property
    def structured(self) -> bool:
        return self.costs is None

    # ------------------------------------------------------------------ rows of costs
    def _ring_costs(self, rings):
        """``cost(v, j)`` per ring ``(B, R)``: the node cost of the ring node, 0 on ring 0."""
        table = self._node_cost if rings.host else self.node_cost
        vals = rings.gather(table)
        if rings.host:
            vals = vals.copy()
            vals[:, 0] = 0.0
            return vals
        return torch.cat([torch.zeros_like(vals[:, :1]), vals[:, 1:]], dim=1)

    def _id_rows(self, ids, omega, host: bool, dtype, rings=None):
        """``ω_i cost(t_i, ·)`` (M, C) for one target column: leaf order on the host for structured
        costs, else class order; ``rings`` the column's layout (structured costs)."""
        if self.structured:
            if host:
                omega = omega.detach().to(torch.float64).numpy() if isinstance(omega, torch.Tensor) else omega
            vals = self._ring_costs(rings)
            if isinstance(omega, float):
                vals = vals * omega
            else:
                vals = vals * (omega[:, None] if host else omega.to(vals.dtype)[:, None])
            rows = rings.expand_rings(vals, dtype if host else None)
            return rows if host else cast(TreeTensors, self.tree).to_class_order(rows).to(dtype)
        if not isinstance(dtype, torch.dtype):
            dtype = torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
        rows = cast(torch.Tensor, self.costs).index_select(0, ids).to(dtype)
        om = _col(omega, rows)
        return rows * om if om is not None else rows

    def _prob_rows(self, p, host: bool, dtype):
        """``Σ_c p_c cost(c, ·)`` for unnormalised rows ``p`` (M, C): structured or a matmul.

        Host: ``p`` numpy float64 in leaf order (structured) or class order; returns the same order.
        """
        if self.structured:
            tree = cast(TreeTensors, self.tree)
            if host:
                lay = tree.nodes_host
                mass = lay.up(p) * self._step_level
                return lay.leaves(lay.down(mass)).astype(dtype)
            mass = tree.subtree_sum(p) * self.node_cost_step.to(p.dtype)
            return tree.node_to_class(tree.accumulate_down(mass)).to(dtype)
        if host:
            return (p @ cast(torch.Tensor, self.costs).double().numpy()).astype(dtype)
        return (p @ cast(torch.Tensor, self.costs).to(p.dtype)).to(dtype)

    def _weighted_prob(self, target: LossTarget, host: bool):
        """The prob target times class weights and the row scale (M, C) float64 (host: numpy, leaf order)."""
        p: Any = cast(torch.Tensor, target.prob).to(torch.float64)  # numpy on the host
        if target.class_weight is not None:
            p = p * target.class_weight.to(torch.float64)
        om = target.omega
        p = p * (om if isinstance(om, float) else om.to(torch.float64)[:, None])
        if host:
            p = p.numpy()
            if self.structured:
                p = cast(TreeTensors, self.tree).leaf_cols(p)
        return p

    def _uniform_prob(self, target: LossTarget, host: bool):
        """``weight / C`` as one row (1, C) float64 (host: numpy, leaf order when structured)."""
        C = self.num_classes
        cw = target.class_weight
        u: Any = torch.full((1, C), 1.0 / C, dtype=torch.float64) if cw is None else (cw.to(torch.float64) / C)[None, :]
        if host:
            u = u.cpu().numpy()
            if self.structured:
                u = cast(TreeTensors, self.tree).leaf_cols(u)
            return u
        return u.to(self._table_device())

    def _table_device(self):
        return (self.node_cost if self.structured else cast(torch.Tensor, self.costs)).device

    def _leaf(self, z):
        return cast(TreeTensors, self.tree).leaf_cols(z) if self.structured else z

    def _unleaf(self, g):
        return cast(TreeTensors, self.tree).class_cols(g) if self.structured else g

    def _rings(self, target, host, ids=None):
        if not self.structured:
            return None
        return cast(TreeTensors, self.tree).rings(target.ids if ids is None else ids, host=host,
                               coarse=target.coarse if host else None)


def host_expected_row(z, rows, ce_coef=None, rings=None, positions=None, ce_rows=None, ce_terms=None, softmax=None):
    """``Σ_j p_j R_j + Σ_terms c·(-log P(ring 0)) - Σ_j G_j log p_j`` per row and its gradient.

    ``z`` (M, C) in the order of ``rows`` (leaf order with rings); ``rows`` ``R``
    (M, C) a fresh tensor (overwritten with the gradient). The cross entropy of
    integer targets comes as terms ``(coef (M,) float64, rings or None,
    positions (M,) or None)``: ``ce_terms`` (several target columns) or one given
    by ``ce_coef``, ``rings``, ``positions``; its ring 0 is that of ``rings``
    (a coarse label's classes) or, for class targets, the column ``positions``.
    ``ce_rows`` ``G`` (M, C) or None: the cross entropy of dense target rows.
    ``softmax``: ``host_softmax(z)`` if the caller has it. Returns float64
    numpy rows and the gradient.
    """
    if ce_terms is None:
        ce_terms = [] if ce_coef is None else [(ce_coef, rings, positions)]
    p, lse = host_softmax(z) if softmax is None else softmax
    risk = row_dot(p, rows)
    out = risk
    # ∂/∂z_j = p_j (R_j - risk + Σ c) - Σ c [j in ring 0] e^{z_j - lse0}: the first part in one pass
    total = sum(c for c, _, _ in ce_terms) if ce_terms else 0.0
    grad = rows.sub_(torch.from_numpy(risk - total).to(rows.dtype).unsqueeze(1)).mul_(p)
    if ce_terms:
        zl = z.numpy()
        g = grad.numpy()
        lse_np = lse.double().numpy()
        arange = np.arange(zl.shape[0])
        for coef, col_rings, col_positions in ce_terms:
            if col_rings is not None:
                lse0 = col_rings.ring0_logsumexp(zl)
            else:
                lse0 = zl[arange, col_positions].astype(np.float64)
            out = out + np.where(coef == 0, 0.0, coef * (lse_np - lse0))
            if col_rings is not None:
                host_ring0_correction(g, zl, col_rings, coef, lse0)
            else:
                np.subtract.at(g, (arange, col_positions), coef.astype(g.dtype))
    if ce_rows is not None:
        log_p = z - lse.unsqueeze(1)  # exact, also where p underflows; -inf logits masked below
        log_p = torch.where(ce_rows == 0, torch.zeros_like(log_p), log_p)
        out = out - row_dot(ce_rows, log_p)
        grad += p * ce_rows.sum(1, keepdim=True) - ce_rows
    return out, grad


def ref_expected_row(z, rows, ce_coef=None, log_mass0=None, ce_rows=None):
    """Torch counterpart of :func:`host_expected_row` (class order)."""
    log_p = torch.log_softmax(z, dim=1)
    out = (log_p.exp() * rows).sum(1)
    if ce_coef is not None:
        coef = ce_coef.to(z.dtype) if isinstance(ce_coef, torch.Tensor) else ce_coef
        lm = log_mass0 - torch.logsumexp(z, dim=1)
        out = out - (torch.where(coef == 0, torch.zeros_like(lm), coef * lm) if isinstance(coef, torch.Tensor)
                     else coef * lm)
    if ce_rows is not None:
        out = out - torch.where(ce_rows == 0, torch.zeros_like(log_p), ce_rows * log_p).sum(1)
    return out


class ExpectedCostLoss(CostLossBase):
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

    sparse_targets = True

    def __init__(self, source: Source, ce_weight: float = 1.0, distance: str | None = None,
                 transform: str | Callable | None = "identity", power: float = 1.0, weight: ArrayLike | None = None,
                 ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                 coarse_labels: bool = False) -> None:
        super().__init__(source, distance, transform, power, weight, ignore_index, reduction, label_smoothing,
                         coarse_labels)
        self.ce_weight = check_positive(ce_weight, "ce_weight", allow_zero=True)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return f"ce_weight={self.ce_weight}, structured={self.structured}" + (", " + base if base else "")

    def _host(self, z, target: LossTarget):
        rows: Any  # the (M, C) cost rows (None before the first target column)
        zl = self._leaf(z)
        dt = z.numpy().dtype
        gamma = self.ce_weight
        if target.kind == "prob":
            p = self._weighted_prob(target, host=True)
            rows = torch.from_numpy(self._prob_rows(p, True, dt))
            ce_rows = torch.from_numpy((gamma * p).astype(dt)) if gamma else None
            out, grad = host_expected_row(zl, rows, ce_rows=ce_rows)
            return out, self._unleaf(grad)
        rows, ce_terms, parts = None, [], []
        for ids, omega in target.columns():
            rings = self._rings(target, True, ids)
            if rings is not None:  # structured: the columns' ring costs, expanded together below
                parts.append((rings, self._ring_costs(rings) * _host_col(omega)))
            else:
                part = self._id_rows(ids, omega, True, dt, rings)
                rows = part if rows is None else rows.add_(part)
            if gamma:
                om = _host_vec(omega, z.shape[0])
                # class targets' ring 0 is their own column; a coarse label's is the classes under it
                coarse = rings is not None and rings.coarse
                positions = None if coarse else (cast(TreeTensors, self.tree)._host.class_position[ids.numpy()]
                                                 if self.structured else ids.numpy())
                ce_terms.append((gamma * om, rings if coarse else None, positions))
        if parts:
            rows = torch.from_numpy(Rings.expand_sum(parts, dt))
        ce_rows = None
        if target.smooth is not None:
            u = self._uniform_prob(target, host=True)
            sm = target.host_smooth()
            smc = sm if isinstance(sm, float) else sm[:, None]
            rows += torch.from_numpy((self._prob_rows(u, True, np.float64) * smc).astype(dt))
            if gamma:
                ce_rows = torch.from_numpy((gamma * u * smc).astype(dt))
                if ce_rows.shape[0] != rows.shape[0]:
                    ce_rows = ce_rows.expand_as(rows).contiguous()
        out, grad = host_expected_row(zl, rows, ce_rows=ce_rows, ce_terms=ce_terms)
        return out, self._unleaf(grad)

    def _reference(self, z, target: LossTarget):
        gamma = self.ce_weight
        if target.kind == "prob":
            p = self._weighted_prob(target, host=False)
            rows = self._prob_rows(p, False, z.dtype)
            return ref_expected_row(z, rows, ce_rows=(gamma * p).to(z.dtype) if gamma else None)
        rings = self._rings(target, False)
        rows = self._id_rows(target.ids, target.omega, False, z.dtype, rings)
        ce_rows = None
        if target.smooth is not None:
            u = self._uniform_prob(target, host=False)
            sm = target.smooth
            smc = sm if isinstance(sm, float) else sm.to(torch.float64)[:, None]
            rows = rows + (self._prob_rows(u, False, torch.float64) * smc).to(z.dtype)
            if gamma:
                ce_rows = (gamma * u * smc).to(z.dtype).expand_as(rows)
        coef = log_mass0 = None
        if gamma:
            om = target.omega
            coef = gamma * (om if isinstance(om, float) else om)
            node = rings.node if rings is not None else None
            log_mass0 = ref_ring0_log_mass(self.tree, z, node) if node is not None else \
                z.gather(1, cast(torch.Tensor, target.ids)[:, None]).squeeze(1)
        return ref_expected_row(z, rows, coef, log_mass0, ce_rows)
