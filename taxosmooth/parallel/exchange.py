"""The two collectives of a class-sharded loss, and the autograd function that needs none in its backward.

A sharded loss is computed as

    G = combine(all_gather(h_r(z_r)))                  (collective 1: O(batch × boundary) numbers)
    ℓ = rep(G) + all_reduce_r(local_r(z_r, G))         (collective 2: O(batch × boundary) numbers)

``h_r`` are a rank's partial statistics of the boundary nodes (log-sum-exps, sums), ``G`` their combination
(the same on every rank), ``local_r`` the terms of the nodes and classes rank ``r`` alone holds, ``rep`` the
terms of the boundary nodes (computed by every rank from ``G``). The gradient of rank ``r``'s columns is
``∂local_r/∂z_r + (∂rep/∂G + Σ_r' ∂local_r'/∂G) ∂G/∂z_r``; the sum over ranks in the middle is computed in
the forward and travels in collective 2 beside the loss's partial sums, so the backward is local (as in
Megatron-LM's vocabulary-parallel cross entropy, whose gradient ``softmax - onehot`` is local too).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["gather_stats", "reduce_sum", "ShardedRows"]


def gather_stats(h: torch.Tensor, group) -> torch.Tensor:
    """Every rank's ``(B, K)`` statistics: ``(world, B, K)`` (one all-gather into one tensor)."""
    world = dist.get_world_size(group)
    out = h.new_empty((world * h.shape[0],) + tuple(h.shape[1:]))
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, h.contiguous(), group=group)
    return out.view((world,) + tuple(h.shape))


def reduce_sum(x: torch.Tensor, group) -> torch.Tensor:
    """The sum over ranks of ``x`` (one ``all_reduce``), a new tensor."""
    out = x.contiguous().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
    return out


class ShardedRows(torch.autograd.Function):
    """The rows ``(B,)`` of a sharded loss described by ``spec`` (see the module docstring), for this rank's
    logits ``z`` ``(B, C_r)``; the backward is local. ``spec`` provides ``stats(z) -> (B, K)``, ``combine(all,
    own) -> G`` (``all`` the gathered ``(world, B, K)``, ``own`` this rank's ``h`` with its graph), ``local(z, G)
    -> (B,)`` and ``replicated(G) -> (B,)``; each row depends on its own row of ``G`` only."""

    @staticmethod
    def forward(ctx, z, spec, group):
        with torch.enable_grad():
            zl = z.detach().requires_grad_()
            h = spec.stats(zl)
            everyone = gather_stats(h.detach(), group)
            g = spec.combine(everyone, h)
            gd = g.detach().requires_grad_()
            local = spec.local(zl, gd)
            rep = spec.replicated(gd)
            d_local = d_rep = None
            if local.requires_grad:
                (d_local,) = torch.autograd.grad(local.sum(), gd, retain_graph=True, allow_unused=True)
            if rep.requires_grad:
                (d_rep,) = torch.autograd.grad(rep.sum(), gd, retain_graph=True, allow_unused=True)
        d_local = torch.zeros_like(gd) if d_local is None else d_local
        d_rep = torch.zeros_like(gd) if d_rep is None else d_rep
        packed = torch.cat([local.detach()[:, None].to(gd.dtype), d_local], dim=1)
        if getattr(spec, "has_local", True):  # a loss with every term replicated needs no collective 2
            packed = reduce_sum(packed, group)
        ctx.zl, ctx.g, ctx.local = zl, g, local
        ctx.d_g = d_rep + packed[:, 1:]
        return (rep.detach() + packed[:, 0].to(rep.dtype)).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():
            raise RuntimeError("a class-sharded loss has no second derivative (double backward)")
        zl, g, local = ctx.zl, ctx.g, ctx.local
        grad = grad.to(local.dtype)
        with torch.enable_grad():
            outs, grads = ([local], [grad]) if local.requires_grad else ([], [])
            if g.requires_grad:
                outs.append(g)
                grads.append(ctx.d_g * grad.to(ctx.d_g.dtype)[:, None])
            (gz,) = torch.autograd.grad(outs, zl, grads, allow_unused=True) if outs else (None,)
        ctx.zl = ctx.g = ctx.local = ctx.d_g = None
        return (torch.zeros_like(zl) if gz is None else gz), None, None
