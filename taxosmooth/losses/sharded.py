r"""Every loss on class-sharded logits: each rank holds the columns of its classes, the loss is exact.

Rank ``r`` holds the logits of the classes ``shard_classes(taxonomy, world)[r]`` (a run of leaves in depth-first
order).

Class ids and coarse labels (without smoothing) take the **path form** of soft labels, HXE, expected cost,
tree-Wasserstein and pairwise costs, as one process does: the terms live on the ``2R - 1`` segments the target's
path cuts the leaf-order row into; each rank cuts its columns into them and one ``all_gather`` exchanges each
segment's maximum and sums (``O(batch × depth)`` numbers), from which every rank computes the loss (:class:`_Paths`;
the pairwise loss then sums each rank's terms against the target's logit in an ``all_reduce``).

Every other target (and the soft-target loss with a matrix) takes the **node form**, which serves every target
kind at once (class ids, probability rows, label smoothing: all are rows ``q`` of target mass, this rank's columns
of them):

* soft labels: ``ℓ = Σ_j s_j (lse(z) - z_j)``, ``s = (1 - mix) q + mix · Σ_i q_i/Z_i e(LCA(i, ·))`` (one pass up,
  one down: :meth:`~taxosmooth.tree_ops.TreeTensors.lca_expectation`);
* expected cost: ``ℓ = Σ_j softmax(z)_j E_j + γ CE(z, q)``, ``E_j = Σ_i q_i cost(i, j)``;
* pairwise: ``ℓ = Σ_j c̄_j softplus(z_j - ζ)``, ``c̄_j = Σ_i q_i cost(i, j)``, ``ζ = Σ_i q_i z_i``;
* tree-Wasserstein: ``ℓ = Σ_{v ≠ r} w(v) |P(v) - Q(v)| + γ CE(z, q)``;
* HXE: ``ℓ = -Σ_{v ≠ r} λ(v) T(v) (log P(v) - log P(parent(v)))``, ``T(v)`` the target mass under ``v`` (a coarse
  label ``u``: ``T(v) = [u under v]``).

The node passes run on the rank's **local tree** (the nodes whose leaves meet its shard); the nodes straddling a
cut between ranks (the boundary, ``O(depth)`` per cut) get their global values from collective 1 (an
``all_gather`` of their partial log-sum-exps and sums), and collective 2 (an ``all_reduce``) sums the rows'
local terms: two collectives of ``O(batch × boundary)`` numbers in the forward, none in the backward
(:class:`~taxosmooth.parallel.exchange.ShardedRows`).
"""

from __future__ import annotations

import math
from typing import Any
import torch
import torch.distributed as dist

from taxosmooth.losses._inputs import _ROW_SUM_TOLERANCE, _check_ids, check_mode
from taxosmooth.losses._frame import times
from taxosmooth.losses._module import register_sharded
from taxosmooth.losses.expected_cost import ExpectedCostLoss
from taxosmooth.losses.hxe import HXELoss, _from_log_masses, _path_lambda
from taxosmooth.losses.pairwise import PairwiseCostLoss, _against
from taxosmooth.losses.soft_labels import HierarchicalSoftLabelLoss, _cross_entropy, _mix, path_segments
from taxosmooth.losses.soft_target import SoftTargetCrossEntropy
from taxosmooth.losses.wasserstein import TreeWassersteinLoss, distance_segments
from taxosmooth.parallel.exchange import ShardedRows, reduce_sum
from taxosmooth.parallel.shards import ShardPlan, boundary_values, shard_plan, with_boundary
from taxosmooth.tree_ops import expand, nodes, segment_max, segment_sum
from taxosmooth.tree_ops.paths import log_masses_of_segments, ring_segments

__all__ = ["sharded_loss"]


# ------------------------------------------------------------------ the local tree and its boundary
def _own(plan: ShardPlan) -> torch.Tensor:
    """``(n, 1)``: 1 for the local nodes no other rank holds (their terms are this rank's), 0 on the boundary."""
    return (plan.local_boundary < 0).unsqueeze(1)


def _column(plan: ShardPlan, table: torch.Tensor, dtype) -> torch.Tensor:
    """A global node table ``(N,)`` on the local tree: ``(n, 1)``."""
    return table.to(dtype).index_select(0, plan.nodes).unsqueeze(1)


def _boundary_table(plan: ShardPlan, table: torch.Tensor, dtype) -> torch.Tensor:
    """A global node table on the boundary nodes: ``(1, K)``."""
    return table.to(dtype).index_select(0, plan.boundary).unsqueeze(0)


def _lse_merge(parts: torch.Tensor) -> torch.Tensor:
    """The log-sum-exp over ranks (dim 0) of partial log-sum-exps (``-inf``: nothing on that rank)."""
    return torch.logsumexp(parts, dim=0)


def _dot(q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``Σ_j q_j z_j`` per row; a ``-inf`` logit counts 0 without mass and ``-inf`` with mass."""
    return torch.nansum(q * z, dim=1)


def _steps(v: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """``log P(u) - log P(parent(u))`` on node-major log-masses; 0 between two empty subtrees."""
    floored = v.clamp_min(torch.finfo(v.dtype).min / 4)
    return floored - floored.index_select(0, parent)


# ------------------------------------------------------------------ the specifications, one per loss
class _Spec:
    """A sharded loss's parts (:class:`~taxosmooth.parallel.exchange.ShardedRows`); the statistics are laid out as
    ``[lse | boundary log-sum-exps (K) | boundary sums (K × s) | row sums (r)]``."""

    lse_nodes = False  # the boundary nodes' log-sum-exps of the logits
    sums: tuple = ()  # (n, B) target-side tensors whose boundary sums are exchanged
    rows: tuple = ()  # (B,) per-row partial sums exchanged

    def __init__(self, plan: ShardPlan):
        self.plan = plan
        self.K = int(plan.boundary.shape[0])

    def _local_lse(self, z):
        return nodes.subtree_logsumexp(self.plan, z)

    check: torch.Tensor | None = None  # (B, 2): this rank's row sums of a probability target and its bad entries

    def stats(self, z):
        parts = [torch.logsumexp(z, 1, keepdim=True)]
        if self.lse_nodes:
            self.v_local = self._local_lse(z)
            parts.append(boundary_values(self.plan, self.v_local, -math.inf))
        parts += [boundary_values(self.plan, s, 0.0) for s in self.sums]
        parts += [r[:, None] for r in self.rows]
        if self.check is not None:
            parts.append(self.check.to(z.dtype))
        return torch.cat(parts, dim=1)

    def combine(self, everyone, own):
        rank = self.plan.rank
        everyone = torch.cat([everyone[:rank], own[None], everyone[rank + 1:]], dim=0)  # own slice: the graph
        K = self.K
        out = [_lse_merge(everyone[:, :, :1])]
        at = 1
        if self.lse_nodes:
            out.append(_lse_merge(everyone[:, :, at: at + K]))
            at += K
        rest = everyone[:, :, at:].sum(0)
        self.combined = torch.cat(out + [rest], dim=1).detach()
        return torch.cat(out + [rest], dim=1)

    def split(self, g):
        """``G`` as ``(lse (B,), boundary lse (B, K) or None, [boundary sums (B, K)], [row sums (B,)])``."""
        K = self.K
        lse = g[:, 0]
        at = 1
        v_b = None
        if self.lse_nodes:
            v_b, at = g[:, at: at + K], at + K
        sums = []
        for _ in self.sums:
            sums.append(g[:, at: at + K])
            at += K
        rows = [g[:, at + i] for i in range(len(self.rows))]
        return lse, v_b, sums, rows

    def replicated(self, g):
        return torch.zeros_like(g[:, 0])


class _SoftCE(_Spec):
    """Soft cross entropy ``Σ_j s_j (lse - z_j)`` against target rows ``s`` (local columns, given)."""

    def __init__(self, plan, s):
        super().__init__(plan)
        self.s = s

    def local(self, z, g):
        lse = g[:, 0]
        return lse * self.s.sum(1) - _dot(self.s, z)


class _SoftLabels(_Spec):
    def __init__(self, plan, q, e, inv_z, mix):
        super().__init__(plan)
        self.q, self.mix = q, mix
        e_nodes = e.index_select(0, plan.nodes)
        step = e_nodes - e.index_select(0, plan.node_parent) * (plan.nodes > 0)
        self.step = (step * mix).to(q.dtype).unsqueeze(1)
        self.up = nodes.up(plan, nodes.place(plan, q, scale=inv_z.index_select(0, plan.class_ids)))
        self.sums = (self.up,)

    def local(self, z, g):
        lse, _, (u_b,), _ = self.split(g)
        spread = nodes.classes_of(self.plan, nodes.down(self.plan, with_boundary(self.plan, self.up, u_b) * self.step))
        s = spread if self.mix == 1.0 else spread + (1.0 - self.mix) * self.q
        return lse * s.sum(1) - _dot(s, z)


class _ExpectedCost(_Spec):
    def __init__(self, plan, q, node_step, gamma):
        super().__init__(plan)
        self.q, self.gamma = q, gamma
        self.step = _column(plan, node_step, q.dtype)
        self.up = nodes.up(plan, nodes.place(plan, q))
        self.sums = (self.up,)

    def _expected(self, g):
        _, _, (u_b,), _ = self.split(g)
        return nodes.classes_of(self.plan, nodes.down(self.plan, with_boundary(self.plan, self.up, u_b) * self.step))

    def local(self, z, g):
        lse = g[:, 0]
        expected = self._expected(g)
        p = torch.exp(z - lse[:, None])
        rows = (p * expected).sum(1)
        if self.gamma:
            rows = rows + self.gamma * (lse * self.q.sum(1) - _dot(self.q, z))
        return rows


class _Pairwise(_Spec):
    def __init__(self, plan, q_cost, q_logit, node_step):
        super().__init__(plan)
        self.q_logit = q_logit
        self.step = _column(plan, node_step, q_cost.dtype)
        self.up = nodes.up(plan, nodes.place(plan, q_cost))
        self.sums = (self.up,)

    def stats(self, z):
        self.rows = (_dot(self.q_logit, z),)
        return super().stats(z)

    def _expected(self, g):
        _, _, (u_b,), _ = self.split(g)
        return nodes.classes_of(self.plan, nodes.down(self.plan, with_boundary(self.plan, self.up, u_b) * self.step))

    def local(self, z, g):
        zeta = self.split(g)[3][0]
        cbar = self._expected(g)
        finite = zeta.clamp_min(torch.finfo(z.dtype).min)
        u = z - finite[:, None]
        terms = torch.where(cbar == 0, torch.zeros_like(u), cbar * torch.nn.functional.softplus(u))
        rows = terms.sum(1)
        return torch.where(torch.isneginf(zeta), torch.full_like(rows, math.inf), rows)


class _DenseExpectedCost(_ExpectedCost):
    """Expected cost with a dense cost matrix, class targets: ``E_j = Σ_i q_i M[i, j]`` of this rank's columns from
    the target's row of ``M`` (every rank holds ``M``), no node pass."""

    def __init__(self, plan, q, expected, gamma):
        _Spec.__init__(self, plan)
        self.q, self.gamma, self.expected = q, gamma, expected

    def _expected(self, g):
        return self.expected


class _DensePairwise(_Pairwise):
    """The pairwise loss with a dense cost matrix, class targets (see :class:`_DenseExpectedCost`)."""

    def __init__(self, plan, q_logit, expected):
        _Spec.__init__(self, plan)
        self.q_logit, self.expected = q_logit, expected

    def _expected(self, g):
        return self.expected


def _through_matrix(q: torch.Tensor, matrix: torch.Tensor, plan: ShardPlan, group) -> torch.Tensor:
    """This rank's columns of ``q @ M`` for target rows ``q`` held by columns across the ranks: each rank's share
    ``q_r · M[rows_r, :]`` summed by one ``all_reduce`` of ``N × C`` numbers (a dense matrix is ``C × C`` on every
    rank already). The target is a constant: no gradient flows to it."""
    m = matrix.to(device=q.device, dtype=q.dtype)
    out = q.detach() @ m.index_select(0, plan.class_ids)
    dist.all_reduce(out, group=group)
    return out.index_select(1, plan.class_ids)


def _dense_expected(mod, plan, z, ids, row_w, counted, eps, C) -> torch.Tensor:
    """``Σ_i q_i M[i, j]`` for this rank's columns ``j``, ``q = (1 - ε) w[t] onehot(t) + ε w / C`` (counted rows)."""
    m = mod.costs.matrix.to(device=z.device, dtype=z.dtype).index_select(1, plan.class_ids)  # (C, C_rank)
    factor = torch.ones_like(z[:, 0]) if row_w is None else row_w
    if counted is not None:
        factor = factor * counted
    expected = m.index_select(0, ids.clamp_max(C - 1)) * (factor * (1.0 - eps))[:, None]
    if eps:
        w_all = torch.ones(C, dtype=z.dtype, device=z.device) if mod.weight is None else \
            mod.weight[:C].to(device=z.device, dtype=z.dtype)
        expected = expected + eps * ((w_all / C) @ m) * (torch.ones_like(z[:, :1]) if counted is None
                                                        else counted[:, None])
    return expected


class _Wasserstein(_Spec):
    lse_nodes = True

    def __init__(self, plan, q_unit, q_ce, mass, edge, gamma):
        super().__init__(plan)
        self.q_unit, self.q_ce, self.gamma = q_unit, q_ce, gamma
        self.edge = _column(plan, edge, q_unit.dtype)
        self.edge_b = _boundary_table(plan, edge, q_unit.dtype)
        self.target_up = nodes.up(plan, nodes.place(plan, q_unit))
        self.sums = (self.target_up,)
        self.mass_local = mass  # (B,) this rank's part of Σ_c q_c w_c

    def _local_lse(self, z):  # the boundary's log-masses only: P of the local nodes comes from one pass up
        return nodes.subtree_logsumexp(self.plan, z)

    def stats(self, z):
        self.rows = (self.mass_local,)
        return super().stats(z)

    def local(self, z, g):
        lse, _, _, (mass,) = self.split(g)
        p = torch.exp(z - lse[:, None])
        diff = nodes.up(self.plan, nodes.place(self.plan, p - self.q_unit))
        w1 = (diff.abs() * self.edge * _own(self.plan)).sum(0)
        rows = mass * w1
        if self.gamma:
            rows = rows + self.gamma * (lse * self.q_ce.sum(1) - _dot(self.q_ce, z))
        return rows

    def replicated(self, g):
        lse, v_b, (t_b,), (mass,) = self.split(g)
        p_b = torch.exp(v_b - lse[:, None])
        return mass * ((p_b - t_b).abs() * self.edge_b).sum(1)


class _HXE(_Spec):
    lse_nodes = True

    def __init__(self, plan, lam, mass_local, mass_boundary):
        """``mass_local`` ``(n, B)``: the target mass under each local node (this rank's part at the boundary when
        ``mass_boundary`` is None, whose boundary sums are then exchanged; else the global ``(B, K)``)."""
        super().__init__(plan)
        self.lam = _column(plan, lam, mass_local.dtype)
        self.lam_b = _boundary_table(plan, lam, mass_local.dtype)
        self.mass_local, self.mass_boundary = mass_local, mass_boundary
        self.sums = (mass_local,) if mass_boundary is None else ()

    def _masses(self, g):
        lse, v_b, sums, _ = self.split(g)
        t_b = sums[0] if self.mass_boundary is None else self.mass_boundary
        return lse, v_b, t_b

    def local(self, z, g):
        _, v_b, t_b = self._masses(g)
        plan = self.plan
        v = with_boundary(plan, self.v_local_for(z), v_b)
        t = with_boundary(plan, self.mass_local, t_b)
        coef = t * self.lam * _own(plan)
        terms = torch.where(coef == 0, torch.zeros_like(v), coef * _steps(v, plan.level_parent))
        rows = -terms.sum(0)
        dead = ((coef > 0) & torch.isneginf(v)).any(0)
        return torch.where(dead, torch.full_like(rows, math.inf), rows)

    def v_local_for(self, z):
        return self.v_local if getattr(self, "_z", None) is z else self._local_lse(z)

    def stats(self, z):
        self._z = z
        return super().stats(z)

    def replicated(self, g):
        _, v_b, t_b = self._masses(g)
        coef = t_b * self.lam_b
        steps = _steps(v_b.t(), self.plan.boundary_parent).t()
        terms = torch.where(coef == 0, torch.zeros_like(steps), coef * steps)
        root = self.plan.boundary == 0
        terms = terms.masked_fill(root.unsqueeze(0), 0.0)
        rows = -terms.sum(1)
        dead = ((coef > 0) & torch.isneginf(v_b) & ~root.unsqueeze(0)).any(1)
        return torch.where(dead, torch.full_like(rows, math.inf), rows)


# ------------------------------------------------------------------ class ids on their paths
class _Paths(_Spec):
    """Class ids (and coarse labels) on their targets' paths, as one process computes them: every term of the loss
    lives on the ``2R - 1`` segments that the target's path cuts the leaf-order row into, so the rank cuts its
    columns into the same segments and exchanges, per segment, its maximum ``m_r`` and the sum ``s_r`` of
    ``exp(z - m_r)`` (and of ``exp(z - m_r) w`` or of ``z`` where a loss needs them): ``O(batch × depth)`` numbers,
    ``O(batch × C_rank)`` work, no node pass. Every term is then computed from the global segments by every rank
    (:meth:`replicated`); nothing is local.
    """

    has_local = False  # every term is replicated: no collective 2

    def __init__(self, plan: ShardPlan, tree, ids: torch.Tensor, factor: torch.Tensor | None, weighted=None,
                 z_sums: bool = False):
        super().__init__(plan)
        self.tree, self.factor, self.weighted, self.z_sums = tree, factor, weighted, z_sums
        full = tree.lengths_of(ids)  # (B, S) on the whole leaf-order row
        ends = full.cumsum(1)
        starts = ends - full
        self.full = full
        self.lengths = ends.clamp(plan.lo, plan.hi) - starts.clamp(plan.lo, plan.hi)  # this rank's part
        self.S = int(full.shape[1])

    def stats(self, z):
        lengths, width = self.lengths, z.shape[1]
        m = segment_max(z.detach(), lengths)  # -inf: no column of the segment here
        e = torch.exp(z - expand(torch.nan_to_num(m, neginf=0.0), lengths, width))
        parts = [m, segment_sum(e, lengths)]
        if self.weighted is not None:
            parts.append(segment_sum(e * self.weighted, lengths))
        if self.z_sums:
            parts.append(segment_sum(z, lengths))
        return torch.cat(parts, dim=1)

    def combine(self, everyone, own):
        rank, S = self.plan.rank, self.S
        everyone = torch.cat([everyone[:rank], own[None], everyone[rank + 1:]], dim=0)  # own slice: the graph
        m = everyone[:, :, :S].detach()
        top = torch.nan_to_num(m.amax(0), neginf=0.0)  # each segment's global maximum (0 where empty)
        scale = torch.exp(m - top)  # a rank's sums to the global maximum's scale (0 where it has none)
        out = [top] + [(everyone[:, :, k * S:(k + 1) * S] * scale).sum(0)
                       for k in range(1, 2 + (self.weighted is not None))]
        if self.z_sums:
            out.append(everyone[:, :, -S:].sum(0))
        g = torch.cat(out, dim=1)
        self.combined = g.detach()
        return g

    def part(self, g, k: int) -> torch.Tensor:
        return g[:, k * self.S:(k + 1) * self.S]

    def log_masses(self, g) -> torch.Tensor:
        """``L`` ``(B, R)`` float64: the log-mass under each node of the path (root first, the target last)."""
        return log_masses_of_segments(self.tree, self.part(g, 1), self.part(g, 0))

    def probabilities(self, g, k: int, lse: torch.Tensor) -> torch.Tensor:
        """Part ``k``'s sums as shares of the softmax: ``(B, S)`` float64 (0 on an empty segment, whatever
        ``lse``)."""
        sums = self.part(g, k).to(torch.float64)
        power = self.part(g, 0).to(torch.float64) - lse[:, None]
        # an empty segment: exp(-inf) = 0 (its maximum stands at 0, so exp(0 - lse) could be inf, and 0 · inf NaN)
        return sums * torch.exp(torch.where(sums == 0, torch.full_like(power, -math.inf), power))

    def local(self, z, g):
        return torch.zeros_like(g[:, 0])

    def scaled(self, rows: torch.Tensor) -> torch.Tensor:
        return rows if self.factor is None else times(self.factor, rows)  # 0 · inf = 0: a row of weight 0


class _PathHXE(_Paths):
    """``Σ_{k ≥ 1} λ(top(a_k)) (L_{k-1} - L_k)`` along the target's path (:func:`taxosmooth.losses.hxe.hxe_rows`)."""

    def __init__(self, plan, tree, ids, factor, lam):
        super().__init__(plan, tree, ids, factor)
        self.lam = lam

    def replicated(self, g):
        return self.scaled(_from_log_masses(self.log_masses(g), self.lam))


class _PathSoftLabels(_Paths):
    """``-Σ_s q_s Σ_{j ∈ s} log p_j = Σ_s q_s (|s| lse - Σ_{j ∈ s} z_j)`` on the target's segments."""

    def __init__(self, plan, tree, ids, factor, q, coarse: bool):
        super().__init__(plan, tree, ids, factor, z_sums=True)
        self.q, self.coarse = q, coarse

    def replicated(self, g):
        L = self.log_masses(g)
        lse = L[:, 0]
        lp_seg = g[:, -self.S:].to(torch.float64) - self.full.to(torch.float64) * lse[:, None]
        if self.coarse:  # the classes under a coarse label are one outcome: its log-mass
            depth = self.S // 2
            lp_seg = torch.cat([lp_seg[:, :depth], (L[:, -1] - lse)[:, None], lp_seg[:, depth + 1:]], dim=1)
        return self.scaled(_cross_entropy(self.q, lp_seg))


class _PathRisk(_Paths):
    """``Σ_j p_j (κ_{s(j)} + w_j) + γ (lse - z_t)``: the expected cost (``w = 0``) and the tree-Wasserstein distance
    to a class (``κ`` from the weighted depths, ``w`` the classes' own), as :class:`~taxosmooth.losses.expected_cost.
    _RiskPaths` computes them in one process."""

    def __init__(self, plan, tree, ids, factor, kappa, w_local, gamma, outside=None):
        super().__init__(plan, tree, ids, factor, weighted=w_local)
        self.kappa, self.gamma, self.outside = kappa, gamma, outside

    def replicated(self, g):
        L = self.log_masses(g)
        lse = L[:, 0]
        risk = (self.kappa * self.probabilities(g, 1, lse)).sum(1)
        if self.weighted is not None:
            w = self.probabilities(g, 2, lse)
            risk = risk + (w if self.outside is None else w * self.outside).sum(1)
        if self.gamma:
            risk = risk + self.gamma * (lse - L[:, -1])
        return self.scaled(risk)


class _PathPairwise(_Paths):
    """``Σ_j κ_{s(j)} softplus(z_j - ζ)``, ``ζ = L_t`` the target's log-mass (a class: its logit): ``ζ`` from
    collective 1, each rank's terms summed by collective 2."""

    has_local = True

    def __init__(self, plan, tree, ids, factor, kappa):
        super().__init__(plan, tree, ids, factor)
        self.kappa = kappa

    def local(self, z, g):
        zeta = self.log_masses(g)[:, -1]
        cost = expand(self.kappa.to(z.dtype), self.lengths, z.shape[1])
        return self.scaled(_against(z, cost, zeta))

    def replicated(self, g):
        return torch.zeros_like(g[:, 0])


def _path_spec(mod, plan, z, ids, factor, coarse: bool):
    """The path form of ``mod`` for class ids without smoothing, or ``None`` (then the node form)."""

    if isinstance(mod, HXELoss):
        tree = mod.tree
        if mod.path_steps is not None:
            lam = _path_lambda(mod.path_steps.index_select(0, ids))
        else:
            path = tree.paths(ids).path
            lam = mod.node_lambda[1].index_select(0, path.reshape(-1)).view(path.shape)
        return _PathHXE(plan, tree, ids, factor, lam)
    if isinstance(mod, HierarchicalSoftLabelLoss):
        tree = mod.tree
        if mod.path_q is not None:
            q = mod.path_q.index_select(0, ids)
        else:
            q = path_segments(tree, mod.tables[0], mod.tables[1], _mix(mod.mix), tree.paths(ids).path, ids)
        return _PathSoftLabels(plan, tree, ids, factor, q, coarse)
    if isinstance(mod, ExpectedCostLoss) and mod.costs.tree is not None:
        lengths, kappa = mod.costs.on_paths(ids)
        return _PathRisk(plan, mod.costs.tree, ids, factor, kappa, None, float(mod.ce_weight))
    if isinstance(mod, PairwiseCostLoss) and mod.costs.tree is not None:
        lengths, kappa = mod.costs.on_paths(ids)
        return _PathPairwise(plan, mod.costs.tree, ids, factor, kappa)
    if isinstance(mod, TreeWassersteinLoss):
        tree = mod.tree
        w_local = mod.leaf_wd.index_select(0, torch.arange(plan.lo, plan.hi, device=z.device)).to(z.dtype)
        if not coarse:  # Σ_j p_j (wd(t) - 2 wd(LCA(t, j)) + wd(j))
            kappa = mod.path_wd.index_select(0, ids) if mod.path_wd is not None else \
                distance_segments(tree, mod.tables, tree.paths(ids).path)
            return _PathRisk(plan, tree, ids, factor, kappa, w_local, float(mod.ce_weight))
        # Σ_{j not under v} p_j (wd(j) + reach(v) - 2 wd(LCA(v, j))) (wasserstein._distance_to_target)
        path = tree.paths(ids).path
        depth = tree.num_rings - 1
        wd, reach = mod.tables[0], mod.tables[1]
        ring_wd = wd.index_select(0, path[:, :depth].reshape(-1)).view(path.shape[0], depth)
        r = reach.index_select(0, path[:, depth])
        kappa = ring_segments(torch.cat([r[:, None] - 2.0 * ring_wd, torch.zeros_like(r[:, None])], dim=1), tree)
        outside = torch.ones(2 * depth + 1, dtype=torch.float64, device=z.device)
        outside[depth] = 0.0  # nothing under the target costs anything
        return _PathRisk(plan, tree, ids, factor, kappa, w_local, float(mod.ce_weight), outside)
    return None


# ------------------------------------------------------------------ the frame
def _plan_for(mod, z: torch.Tensor, group) -> ShardPlan:
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    compiled = mod._compiled
    plan = shard_plan(compiled, world, rank, mod.shard_slack)
    key = (world, rank, str(z.device))
    cache = mod.__dict__.setdefault("_shard_plans", {})
    if key not in cache:
        cache[key] = plan.to(z.device)
    return cache[key]


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x if x.dim() == 2 else x.movedim(1, -1).reshape(-1, x.shape[1])


def sharded_loss(mod, input, target) -> torch.Tensor:
    """The loss of module ``mod`` (built with ``process_group=``) on this rank's columns ``input``."""
    from torch.distributed.tensor import DTensor

    name = type(mod).__name__
    group = mod.process_group
    if isinstance(input, DTensor):
        input, group = _from_dtensor(input, name)
    if not isinstance(input, torch.Tensor) or input.dim() < 2:
        raise ValueError(f"{name}: with process_group the input is this rank's columns (N, C_rank) or "
                         f"(N, C_rank, d1, ...), got {type(input).__name__} of shape "
                         f"{tuple(getattr(input, 'shape', ()))}")
    compute = torch.float32 if input.dtype in (torch.float16, torch.bfloat16) else input.dtype
    plan = _plan_for(mod, input, group)
    mode = check_mode(input.device)
    _agree(mod, input, target, plan, group, name, mode)
    z = _flat(input).to(compute)
    C = plan.num_classes
    w = None if mod.weight is None else mod.weight.to(device=z.device, dtype=torch.float64)
    w_local = None if w is None else w[:C].index_select(0, plan.class_ids).to(compute)
    eps = mod.label_smoothing
    prob = target.is_floating_point()
    coarse = False
    check = None
    if prob:
        p = _flat(target).to(compute)
        if mode != "off":
            check = torch.stack([torch.nan_to_num(p, nan=0.0, posinf=0.0).sum(1),
                                 (~torch.isfinite(p) | (p < 0)).sum(1).to(compute)], dim=1)
        out_shape = (input.shape[0],) + tuple(input.shape[2:])
        valid = None
        row_w = None
        if eps:
            p = p * (1.0 - eps) + eps / C
        q_unit = p
        q = p if w_local is None else p * w_local
        denom: Any = float(z.shape[0])
        counted = None
    else:
        num_targets = mod.num_targets
        flat = _check_ids(z, target.reshape(-1), C, num_targets, mod.ignore_index, name, tuple(target.shape), mode,
                          getattr(mod, "num_nodes", None))
        ids, valid = flat.ids, flat.valid
        out_shape = tuple(target.shape)
        safe = ids if valid is None else torch.where(valid, ids, torch.zeros_like(ids))
        counted = None if valid is None else valid.to(compute)
        coarse = mod.coarse_labels and num_targets > C
        if w is None:
            row_w = None
        elif coarse:
            row_w = mod.tree.target_means(w[:C]).index_select(0, safe).to(compute) if w.shape[0] == C else \
                w.index_select(0, safe).to(compute)
        else:
            row_w = w.index_select(0, safe).to(compute)
        factor = torch.ones_like(safe, dtype=compute) if row_w is None else row_w
        if counted is not None:
            factor = factor * counted
        denom = factor.sum()
        path_spec = None if eps else _path_spec(mod, plan, z, safe, factor, coarse)
        if path_spec is not None:
            return _finish(mod, input, path_spec, z, group, None, plan, name, factor, out_shape, denom, False)
        onehot = _local_onehot(plan, safe, z, mod, coarse)
        label = factor[:, None] * (1.0 - eps)
        q = onehot * label
        uniform = None
        if eps:
            base = (torch.ones_like(z[0]) if w_local is None else w_local) / C
            uniform = (counted[:, None] if counted is not None else torch.ones_like(z[:, :1])) * eps * base
            q = q + uniform
        q_unit = onehot * (1.0 - eps) + eps / C  # the unweighted target row (tree-Wasserstein)
        p = None
    spec = _spec_for(mod, plan, z, q, q_unit, prob, eps, w_local, row_w if not prob else None, counted, coarse,
                     safe if not prob else None, C, group)
    keep = None if prob else (factor if not eps else counted)  # with smoothing, a row of weight 0 still counts
    return _finish(mod, input, spec, z, group, check, plan, name, keep, out_shape, denom, prob)


def _finish(mod, input, spec, z, group, check, plan, name, keep, out_shape, denom, prob) -> torch.Tensor:
    """The exchange, the probability rows' check, and the reduction, in the compute dtype (float32 for half
    inputs, as the one-process losses). ``keep`` ``(M,)``: rows that count (a row of factor 0 is 0, never
    ``0 · inf``), or ``None``."""
    spec.check = check
    rows = ShardedRows.apply(z, spec, group)
    if check is not None:
        _check_sums(spec.combined[:, -2:], name, plan, input.dtype, check_mode(input.device))
    if not prob and keep is not None:
        rows = torch.where(keep != 0, rows, torch.zeros_like(rows))
    reduction = mod.reduction
    if reduction == "none":
        return rows.reshape(out_shape)
    total = rows.sum()
    if reduction == "mean":
        if isinstance(denom, torch.Tensor):  # nothing counted: nan, with a zero gradient (as cross_entropy)
            empty = denom == 0
            total = torch.where(empty, total * 0.0 + math.nan, total / torch.where(empty, torch.ones_like(denom),
                                                                                     denom))
        else:
            total = total / denom
    return total


def _check_sums(sums: torch.Tensor, name: str, plan: ShardPlan, dtype, mode: str) -> None:
    """Probability rows across the ranks: finite, >= 0, summing to 1 (every rank sees the same sums: the same
    error on every rank). ``"device"`` checks: an asynchronous assertion, no host synchronisation."""
    tol = _ROW_SUM_TOLERANCE.get(dtype, 1e-5)
    if mode == "device":
        ok = (sums[:, 1] == 0).all() & ((sums[:, 0] - 1).abs() <= tol).all()
        torch._assert_async(ok, f"{name}: a probability target is negative, not finite, or its row does not sum to "
                                f"1 across the {plan.world} ranks")
        return
    bad = sums[:, 1] > 0
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name}: row {row} of the probability target has a negative or non-finite entry on some "
                         "rank; probabilities must be finite and >= 0")
    off = (sums[:, 0] - 1).abs() > tol
    if bool(off.any()):
        row = int(off.nonzero()[0, 0])
        raise ValueError(f"{name}: the target probabilities of row {row} sum to {float(sums[row, 0]):.7g} across the "
                         f"{plan.world} ranks, not 1 (tolerance {tol:g})")


def _local_onehot(plan: ShardPlan, ids: torch.Tensor, z: torch.Tensor, mod, coarse: bool) -> torch.Tensor:
    """This rank's columns of the one-hot rows of class ids ``(B, C_r)`` (a coarse label: zeros, its mass lives at
    its node)."""
    pos = mod._class_position.to(z.device).index_select(0, ids.clamp_max(plan.num_classes - 1)) - plan.lo
    inside = (pos >= 0) & (pos < plan.width)
    if coarse:
        inside = inside & (ids < plan.num_classes)
    out = torch.zeros_like(z)
    return out.scatter(1, pos.clamp(0, max(plan.width - 1, 0))[:, None], inside.to(z.dtype)[:, None])


def _spec_for(mod, plan, z, q, q_unit, prob, eps, w_local, row_w, counted, coarse, ids, C, group):
    name = type(mod).__name__
    if coarse and not isinstance(mod, HXELoss):  # the path form (no smoothing) takes them
        raise NotImplementedError(f"{name}: coarse labels with label_smoothing and process_group are supported by "
                                  "HXELoss only (without smoothing, by every loss built on a taxonomy)")
    if isinstance(mod, HierarchicalSoftLabelLoss):
        tables = mod.tables
        return _SoftLabels(plan, q, tables[0], tables[1][:C], _mix(mod.mix))
    if isinstance(mod, SoftTargetCrossEntropy):
        if mod.matrix is None:
            return _SoftCE(plan, q)
        if prob:  # the target rows p @ M: every rank's share of them summed by one more all-reduce
            return _SoftCE(plan, _through_matrix(q, mod.matrix, plan, group))
        m = mod.matrix.to(device=z.device, dtype=z.dtype)
        cols = m.index_select(1, plan.class_ids)
        rows_of = cols.index_select(0, ids.clamp_max(C - 1))
        factor = torch.ones_like(z[:, 0]) if row_w is None else row_w
        if counted is not None:
            factor = factor * counted
        s = rows_of * (factor * (1.0 - eps))[:, None]
        if eps:  # the smoothed target (1 - ε) onehot + ε w / C, through the matrix
            w_all = torch.ones(C, dtype=z.dtype, device=z.device) if mod.weight is None else \
                mod.weight[:C].to(device=z.device, dtype=z.dtype)
            base = (w_all / C) @ cols
            s = s + eps * base * (torch.ones_like(z[:, :1]) if counted is None else counted[:, None])
        return _SoftCE(plan, s)
    if isinstance(mod, (ExpectedCostLoss, PairwiseCostLoss)):
        if mod.costs.node_step is None:
            assert mod.costs.matrix is not None  # costs without a node table are a dense matrix
            if prob:  # the expected costs q @ M: every rank's share of them summed by one more all-reduce
                expected = _through_matrix(q, mod.costs.matrix, plan, group)
            else:
                expected = _dense_expected(mod, plan, z, ids, row_w, counted, eps, C)
            if isinstance(mod, ExpectedCostLoss):
                return _DenseExpectedCost(plan, q, expected, float(mod.ce_weight))
            return _DensePairwise(plan, q_unit, expected)
        if isinstance(mod, ExpectedCostLoss):
            return _ExpectedCost(plan, q, mod.costs.node_step, float(mod.ce_weight))
        # pairwise: the costs take the weighted target, the reference logit ζ the unweighted one
        return _Pairwise(plan, q, q_unit, mod.costs.node_step)
    if isinstance(mod, TreeWassersteinLoss):
        tables = mod.tables
        if prob:
            mass = q.sum(1)  # this rank's part of Σ_c p_c w_c
            return _Wasserstein(plan, q_unit, q, mass, tables[2], float(mod.ce_weight))
        # a class target: the row weighs (1 - ε) w[t] + ε mean(w); the transport is to the unweighted row
        factor = torch.ones_like(z[:, 0]) if row_w is None else row_w
        mean_w = 1.0 if mod.weight is None else mod.weight[:C].to(device=z.device, dtype=z.dtype).mean()  # no host read
        mass = factor * (1.0 - eps) + eps * mean_w
        if counted is not None:
            mass = mass * counted
        mass = mass * (1.0 if plan.rank == 0 else 0.0)  # a replicated number: counted once in the sum
        return _Wasserstein(plan, q_unit, q, mass, tables[2], float(mod.ce_weight))
    if isinstance(mod, HXELoss):
        lam = mod.node_lambda[0]
        if coarse:
            return _coarse_hxe(plan, lam, ids, mod, z, row_w, counted, eps, w_local, C)
        t = nodes.up(plan, nodes.place(plan, q))
        return _HXE(plan, lam, t, None)
    raise TypeError(f"{name} has no class-sharded form")


def _coarse_hxe(plan, lam, ids, mod, z, row_w, counted, eps, w_local, C):
    """HXE of coarse labels (and classes): ``T(v) = [target under v]``, on the local tree and the boundary."""
    lo_t = mod._leaf_lo.to(z.device)
    hi_t = mod._leaf_hi.to(z.device)
    node = mod._target_node.to(z.device).index_select(0, ids)
    t_lo, t_hi = lo_t.index_select(0, node), hi_t.index_select(0, node)
    n_lo, n_hi = lo_t.index_select(0, plan.nodes), hi_t.index_select(0, plan.nodes)
    factor = torch.ones_like(z[:, 0]) if row_w is None else row_w
    if counted is not None:
        factor = factor * counted
    under = ((n_lo[:, None] <= t_lo[None]) & (t_hi[None] <= n_hi[:, None])).to(z.dtype) * (factor * (1 - eps))[None]
    b_under = ((plan.boundary_lo[None] <= t_lo[:, None]) & (t_hi[:, None] <= plan.boundary_hi[None])).to(z.dtype)
    b_under = b_under * (factor * (1 - eps))[:, None]
    if eps:  # the uniform part: Σ_c (w_c / C) over the classes under each node (w = 1 without weights)
        if w_local is None:
            size = (n_hi - n_lo).to(z.dtype)
            b_size = (plan.boundary_hi - plan.boundary_lo).to(z.dtype)
        else:  # the class weights in leaf order, summed over each node's leaf range (float64 prefix sums)
            w = mod.weight[:C].to(device=z.device, dtype=torch.float64)
            leaf_w = torch.zeros_like(w).index_copy(0, mod._class_position.to(z.device), w)
            acc = torch.cat([leaf_w.new_zeros(1), leaf_w.cumsum(0)])
            size = (acc.index_select(0, n_hi) - acc.index_select(0, n_lo)).to(z.dtype)
            b_size = (acc.index_select(0, plan.boundary_hi) - acc.index_select(0, plan.boundary_lo)).to(z.dtype)
        c = torch.ones_like(factor) if counted is None else counted
        under = under + eps * size[:, None] / C * c[None]
        b_under = b_under + eps * b_size[None] / C * c[:, None]
    return _HXE(plan, lam, under, b_under)


def _from_dtensor(x, name):
    from torch.distributed.tensor import Shard

    placements = x.placements
    if len(placements) != 1 or not isinstance(placements[0], Shard) or placements[0].dim != 1:
        raise ValueError(f"{name}: a DTensor input must be sharded on the class dimension (placements "
                         f"[Shard(1)]), got {list(placements)}")
    return x.to_local(), x.device_mesh.get_group()


def _agree(mod, input, target, plan, group, name, mode) -> None:
    """Every rank checks its shard's width and the batch; in "full" mode the ranks agree first (one small
    collective) so that a mistake on one rank is an error on every rank, never a hang."""
    width = input.shape[1]
    rows = input.shape[0] * math.prod(input.shape[2:])
    bad = 0.0 if width == plan.width else 1.0
    if target.is_floating_point() and tuple(target.shape) != tuple(input.shape):
        bad = 2.0
    if mode == "full":
        # a NaN or +inf logit in a counted row of this rank's columns (the one-process loss names it too)
        where = None
        if not bad and input.is_floating_point():
            z = _flat(input)
            wrong = torch.isnan(z) | (z == math.inf)
            if not target.is_floating_point():
                wrong &= (target.reshape(-1) != mod.ignore_index).unsqueeze(1)
            if bool(wrong.any()):
                where = tuple(int(i) for i in wrong.nonzero()[0])
        dtype = torch.float64 if input.device.type == "cpu" else torch.float32
        info = torch.tensor([bad, float(rows), -float(rows), 0.0 if where is None else plan.rank + 1.0], dtype=dtype,
                            device=input.device)
        dist.all_reduce(info, op=dist.ReduceOp.MAX, group=group)
        worst, top, neg_low, holder = (float(v) for v in info)
        if holder and not worst and top == -neg_low:
            if where is not None:
                row, col = where
                raise ValueError(f"{name} (rank {plan.rank} of {plan.world}): row {row} of this rank's logits is "
                                 f"{float(_flat(input)[row, col])} at column {col} (class "
                                 f"{int(plan.class_ids[col])}); logits must be finite or -inf")
            raise ValueError(f"{name} (rank {plan.rank} of {plan.world}): a logit of rank {int(holder) - 1} is NaN or "
                             "+inf; logits must be finite or -inf")
        if worst or top != -neg_low:
            raise ValueError(
                f"{name} (rank {plan.rank} of {plan.world}): the ranks' inputs disagree with the shards of "
                f"shard_classes(taxonomy, {plan.world}, slack={mod.shard_slack}): this rank holds {width} columns, "
                f"its shard {plan.width}; {'a probability target must have the input shape; ' if worst == 2 else ''}"
                f"batch sizes {int(-neg_low)} to {int(top)}"
            )
    elif bad:
        raise ValueError(f"{name} (rank {plan.rank} of {plan.world}): this rank holds {width} columns, its shard of "
                         f"shard_classes(taxonomy, {plan.world}, slack={mod.shard_slack}) {plan.width}")


register_sharded(sharded_loss)
