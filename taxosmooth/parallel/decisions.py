r"""Decisions and rankings on class-sharded scores: each rank holds its shard's columns, every rank gets the answer.

* :func:`topk`: the ``k`` best classes of every row (global class ids, ties to the lower class id, as
  :func:`torch.sort` with ``stable=True``), one ``all_gather`` of ``k`` candidates per rank: what every ranking
  metric of :mod:`taxosmooth.metrics` needs (pass the ids, or ``topk``'s top-1 ids as predictions);
* :func:`node_probabilities`: ``P(v) = Σ_{classes i under v} p_i`` for the nodes of this rank's local tree (its
  shard's classes and their ancestors, as target ids), the boundary nodes summed over the ranks (one ``all_gather``);
* :func:`predict_node` (``rule="threshold"``): among the nodes with ``P(v) > τ``, the most specific one (fewest
  classes, then larger ``P(v)``, then deeper, then lower id), as :func:`taxosmooth.decision.predict_node`;
* :func:`crm_predict`: ``argmin_j Σ_i p_i cost(i, j)`` (Karthik et al., ICLR 2021): for costs of the LCA node,
  the expected costs by one pass up and one down the local tree (:meth:`~taxosmooth.tree_ops.TreeTensors.lca_expectation`);
  for a dense cost matrix (e.g. the path length), each rank's share ``p_r · cost[rows_r, :]`` summed by one
  ``all_reduce`` of ``N × C`` numbers; the ``k`` best by :func:`topk`.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from taxosmooth.parallel.exchange import gather_stats
from taxosmooth.parallel.shards import ShardPlan, boundary_values, shard_plan, with_boundary
from taxosmooth.taxonomy import Taxonomy
from taxosmooth.tree_ops import nodes

__all__ = ["topk", "node_probabilities", "predict_node", "crm_predict"]


def _plan(taxonomy: Taxonomy, group, slack: float, device) -> ShardPlan:
    return shard_plan(taxonomy, dist.get_world_size(group), dist.get_rank(group), slack).to(device)


def _local(scores: torch.Tensor, plan: ShardPlan, name: str) -> torch.Tensor:
    if scores.dim() != 2 or scores.shape[1] != plan.width:
        raise ValueError(f"{name}: expected this rank's columns ({plan.width} classes of shard {plan.rank} of "
                         f"{plan.world}), got shape {tuple(scores.shape)}")
    return scores


def topk(scores: torch.Tensor, k: int, taxonomy: Taxonomy, process_group=None, *, largest: bool = True,
         slack: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best classes of each row of class-sharded ``scores`` ``(N, C_rank)``: ``(values, class ids)``, each
    ``(N, k)``, the same on every rank (ties to the lower class id)."""
    group = process_group if process_group is not None else dist.group.WORLD
    plan = _plan(taxonomy, group, slack, scores.device)
    scores = _local(scores, plan, "topk")
    if not 1 <= k <= plan.num_classes:
        raise ValueError(f"k must be in [1, {plan.num_classes}], got {k}")
    n, width = scores.shape
    sign = 1.0 if largest else -1.0
    key = scores.to(torch.float64) * sign
    ids = plan.class_ids.to(scores.device).expand(n, width)
    kk = min(k, width)
    order = torch.sort(ids, dim=1, stable=True).indices  # class-id order first: the sort below keeps it on ties
    by_id = key.gather(1, order)
    best = torch.sort(by_id, dim=1, descending=True, stable=True).indices[:, :kk]
    cand = order.gather(1, best)
    vals, cids = key.gather(1, cand), ids.gather(1, cand)
    if kk < k:  # pad: never chosen
        pad = k - kk
        vals = torch.cat([vals, vals.new_full((n, pad), -math.inf)], dim=1)
        cids = torch.cat([cids, cids.new_full((n, pad), plan.num_classes)], dim=1)
    everyone = gather_stats(torch.cat([vals, cids.to(torch.float64)], dim=1), group)  # (world, N, 2k)
    all_vals = everyone[:, :, :k].permute(1, 0, 2).reshape(n, -1)
    all_ids = everyone[:, :, k:].permute(1, 0, 2).reshape(n, -1)
    order = torch.sort(all_ids, dim=1, stable=True).indices
    pick = torch.sort(all_vals.gather(1, order), dim=1, descending=True, stable=True).indices[:, :k]
    chosen = order.gather(1, pick)
    return (all_vals.gather(1, chosen) * sign).to(scores.dtype), all_ids.gather(1, chosen).to(torch.int64)


def _probabilities(scores, plan, from_logits, group):
    """Local probabilities (global softmax when ``from_logits``), and ``P`` on the local tree ``(n, N)`` with the
    boundary summed over the ranks (one collective)."""
    x = scores.to(torch.float64) if scores.dtype == torch.float64 else scores.float()
    lse_local = torch.logsumexp(x, 1, keepdim=True) if from_logits else x.new_zeros((x.shape[0], 1))
    p_local_shift = torch.exp(x - lse_local) if from_logits else x
    up = nodes.up(plan, nodes.place(plan, p_local_shift))
    stats = torch.cat([lse_local, boundary_values(plan, up, 0.0)], dim=1)
    everyone = gather_stats(stats, group)
    if from_logits:  # each rank's sums were taken with its own shift: rescale to the global softmax
        lse = torch.logsumexp(everyone[:, :, 0], dim=0)
        scale = torch.exp(everyone[:, :, :1] - lse[None, :, None])
        boundary = (everyone[:, :, 1:] * scale).sum(0)
        own = torch.exp(lse_local[:, 0] - lse)
        p = p_local_shift * own[:, None]
        up = up * own[None]
    else:
        boundary = everyone[:, :, 1:].sum(0)
        p = x
    return p, with_boundary(plan, up, boundary)


def node_probabilities(scores: torch.Tensor, taxonomy: Taxonomy, process_group=None, *, from_logits: bool = False,
                       slack: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target ids (n,), P (N, n))``: the probability of every node of this rank's local tree (its shard's classes
    and their ancestors, as target ids, the order of :func:`taxosmooth.decision.node_probabilities`), each the sum
    over all classes under it, whichever rank holds them."""
    group = process_group if process_group is not None else dist.group.WORLD
    plan = _plan(taxonomy, group, slack, scores.device)
    _, P = _probabilities(_local(scores, plan, "node_probabilities"), plan, from_logits, group)
    target = torch.as_tensor(taxonomy.compiled.node_target, device=scores.device).index_select(0, plan.nodes)
    return target, P.t()


def predict_node(scores: torch.Tensor, taxonomy: Taxonomy, process_group=None, *, threshold: float = 0.5,
                 from_logits: bool = False, slack: float = 0.02) -> torch.Tensor:
    """The threshold rule of :func:`taxosmooth.decision.predict_node` on class-sharded scores: target ids ``(N,)``,
    the same on every rank."""
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    group = process_group if process_group is not None else dist.group.WORLD
    plan = _plan(taxonomy, group, slack, scores.device)
    _, P = _probabilities(_local(scores, plan, "predict_node"), plan, from_logits, group)
    c = taxonomy.compiled
    dev = scores.device
    leaves = torch.as_tensor(c.leaf_hi - c.leaf_lo, device=dev).index_select(0, plan.nodes).to(torch.float64)
    depth = torch.as_tensor(c.depth, device=dev).index_select(0, plan.nodes).to(torch.float64)
    target = torch.as_tensor(c.node_target, device=dev).index_select(0, plan.nodes).to(torch.float64)
    P = P.to(torch.float64).clamp(max=1.0)
    adm = (P > threshold) if threshold < 1 else torch.zeros_like(P, dtype=torch.bool)
    adm[0] = True  # the root (level position 0) is always admissible
    # the best candidate by (fewest leaves, larger P, deeper, lower target id): lexicographic, one column each
    inf = torch.full_like(P, math.inf)
    key = [torch.where(adm, leaves[:, None].expand_as(P), inf), torch.where(adm, -P, inf),
           torch.where(adm, -depth[:, None].expand_as(P), inf), torch.where(adm, target[:, None].expand_as(P), inf)]
    best = _lexmin(key)  # (N,) level positions
    mine = torch.stack([k.gather(0, best[None])[0] for k in key], dim=1)  # (N, 4)
    everyone = gather_stats(mine, group)  # (world, N, 4)
    pick = _lexmin([everyone[:, :, i] for i in range(4)])
    return everyone[:, :, 3].gather(0, pick[None])[0].to(torch.int64)


def _dense_probabilities(scores: torch.Tensor, from_logits: bool, group) -> torch.Tensor:
    """This rank's columns of the probabilities (the global softmax of logits: one all-gather of the row
    log-sum-exps)."""
    x = scores.to(torch.float64) if scores.dtype == torch.float64 else scores.float()
    if not from_logits:
        return x
    lse = torch.logsumexp(gather_stats(torch.logsumexp(x, 1, keepdim=True), group)[:, :, 0], dim=0)
    return torch.exp(x - lse[:, None])


def _lexmin(keys: list[torch.Tensor]) -> torch.Tensor:
    """The index along dim 0 of the lexicographically smallest column of ``keys`` (each ``(M, N)``)."""
    cand = torch.ones_like(keys[0], dtype=torch.bool)
    for k in keys:
        masked = torch.where(cand, k, torch.full_like(k, math.inf))
        cand = cand & (masked == masked.amin(0, keepdim=True))
    return cand.to(torch.int8).argmax(0)


def crm_predict(scores: torch.Tensor, taxonomy: Taxonomy, process_group=None, k: int = 1, *,
                from_logits: bool = False, distance: str | None = None, transform="identity", power: float = 1.0,
                slack: float = 0.02) -> torch.Tensor:
    """:func:`taxosmooth.decision.crm_predict` on class-sharded scores: class ids ``(N,)`` (``(N, k)`` for
    ``k > 1``), the same on every rank (a dense cost matrix costs one ``all_reduce`` of ``N × C`` numbers)."""
    from taxosmooth.costs import resolve_costs

    group = process_group if process_group is not None else dist.group.WORLD
    plan = _plan(taxonomy, group, slack, scores.device)
    costs = resolve_costs(taxonomy, distance, transform, power, where="crm_predict")
    if costs.node_table is None:  # a dense cost matrix (path length, a transform): the risks by one all-reduce
        local = _local(scores, plan, "crm_predict")
        p = _dense_probabilities(local, from_logits, group)
        cost = torch.as_tensor(costs.dense(), device=scores.device, dtype=p.dtype)
        partial = p @ cost.index_select(0, plan.class_ids)  # (N, C): this rank's classes' share of every risk
        dist.all_reduce(partial, group=group)
        risk = partial.index_select(1, plan.class_ids)
        ids = topk(risk, k, taxonomy, group, largest=False, slack=slack)[1]
        return ids[:, 0] if k == 1 else ids
    p, P = _probabilities(_local(scores, plan, "crm_predict"), plan, from_logits, group)
    table = torch.as_tensor(costs.node_table, device=scores.device, dtype=P.dtype)
    parent = plan.node_parent
    step = table.index_select(0, plan.nodes) - table.index_select(0, parent) * (plan.nodes > 0)
    risk = nodes.classes_of(plan, nodes.down(plan, P * step[:, None]))
    ids = topk(risk, k, taxonomy, group, largest=False, slack=slack)[1]
    return ids[:, 0] if k == 1 else ids
