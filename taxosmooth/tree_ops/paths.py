"""What the losses compute on the paths of a batch of targets (see :mod:`taxosmooth.tree_ops.tables`).

A path of ``D + 1`` nodes cuts each leaf-order row into ``S = 2D + 1`` segments;
segment ``s`` belongs to ring ``s`` (``s < D``, left part), ``D`` (the target's
own subtree) or ``2D - s`` (``s > D``, right part). Per-ring values ``(B, D + 1)``
become per-segment values ``(B, S)`` by :func:`ring_segments`, and a
``(B, C)`` row by :func:`~taxosmooth.tree_ops.segments.expand`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from taxosmooth.tree_ops.segments import expand, expand_kernel, segment_max, segment_max_kernel, segment_sum, \
    segment_sum_kernel

__all__ = ["ring_segments", "path_log_masses", "log_masses_of_segments", "log_mass_gradient", "own_mass", "own_log_mass",
           "NEG",
           "TRIANGLE_RINGS"]

#: a stand-in for log(0) in float64 whose gradients stay finite (exp(NEG - x) = 0 for any finite x)
NEG = -1e300


def ring_segments(values: torch.Tensor, tree) -> torch.Tensor:
    """Per-ring values ``(B, R)`` → per-segment values ``(B, 2R - 1)`` on ``tree``'s paths."""
    return values.index_select(1, tree.segment_ring)


def path_log_masses(tree, x_leaf: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``L[b, d] = log Σ exp(x[b, j])`` over the classes ``j`` under the path's node at depth ``d``: ``(B, D + 1)``.

    ``x_leaf`` ``(B, C)`` in leaf order, ``lengths`` the paths' segments ``(B, 2D + 1)``. Exact in log space:
    every segment is shifted by its own maximum (one :func:`segment_max`, one :func:`expand`), summed
    (:func:`segment_sum`, float64 from there on), and the segments are gathered from the target's subtree
    outward by one cumulative log-sum-exp. A subtree far below the row's best logit keeps every digit; a
    subtree whose classes are all ``-inf`` is ``-inf``. float64; differentiable to any order in ``x_leaf``
    (with finite gradients also where a mass is 0).
    """
    b, width = x_leaf.shape
    shift = torch.nan_to_num(segment_max(x_leaf.detach(), lengths), neginf=0.0)
    e = torch.exp(x_leaf - expand(shift, lengths, width))
    return log_masses_of_segments(tree, segment_sum(e, lengths), shift)


def own_mass(x_leaf: torch.Tensor, lengths: torch.Tensor, center: int):
    """For a function that writes its own gradient: the mass of one segment of every row (a coarse label's own
    subtree, segment ``center``), in log space without autograd.

    Returns ``(e, s, m)``: ``e = exp(x - max of its segment)`` ``(B, C)``, the segment's sum of ``e`` ``(B,)`` and its
    maximum ``(B,)`` (0 where empty or all ``-inf``), so that the log-mass is ``log s + m`` (exact far below the
    row's best logit) and its gradient ``e_j / s`` on the segment.
    """
    shift = segment_max_kernel(x_leaf, lengths).nan_to_num_(nan=float("nan"), neginf=0.0)
    e = expand_kernel(shift, lengths, x_leaf.shape[1])
    torch.sub(x_leaf, e, out=e).exp_()
    return e, segment_sum_kernel(e, lengths)[:, center], shift[:, center]


def own_log_mass(x_leaf: torch.Tensor, lengths: torch.Tensor, center: int) -> torch.Tensor:
    """:func:`own_mass` as a formula: ``log Σ exp(x_j)`` over segment ``center`` of every row ``(B,)`` float64,
    ``-inf`` where it is empty; differentiable to any order (finite gradients where the mass is 0)."""
    # every segment shifted by its own maximum: another segment far above this one must not overflow
    shift = torch.nan_to_num(segment_max(x_leaf.detach(), lengths), neginf=0.0)
    e = torch.exp(x_leaf - expand(shift, lengths, x_leaf.shape[1]))
    s = segment_sum(e, lengths)[:, center].to(torch.float64)
    empty = s == 0
    return (torch.log(torch.where(empty, torch.ones_like(s), s))
            + shift[:, center].to(torch.float64)).masked_fill(empty, -math.inf)


def log_masses_of_segments(tree, sums: torch.Tensor, shift: torch.Tensor, differentiable: bool = True) -> torch.Tensor:
    """``L`` ``(B, R)`` float64 from segment sums ``(B, 2R - 1)`` of ``exp(x - shift)``, ``shift`` the segments'
    maxima (0 where empty): the log-mass under each node of the path, ``-inf`` where it is 0.

    ``differentiable=False`` (a fused forward, which writes its own gradient): a log per segment, one per ring,
    one cumulative log-sum-exp. Otherwise masses of 0 are ``NEG`` while the rings are gathered (finite
    gradients of every order; ``logcumsumexp``'s second derivative is NaN where a gradient is 0) and the rings
    are added one log-sum-exp at a time.
    """
    s = sums.to(torch.float64)
    if not differentiable:
        log_seg = F.pad(s.log_().add_(shift), (0, 1), value=float("-inf"))
        sides = log_seg.index_select(1, tree.ring_sides.reshape(-1)).view(s.shape[0], 2, tree.num_rings)
        return torch.logcumsumexp(torch.logsumexp(sides, dim=1), dim=1).flip(1)
    # a non-empty segment with a finite maximum has s >= 1 (its maximum contributes exp(0)); s == 0: empty or -inf
    log_seg = (torch.log(s.clamp_min(1.0)) + shift.to(torch.float64)).masked_fill(s == 0, NEG)
    padded = torch.cat([log_seg, torch.full_like(log_seg[:, :1], NEG)], dim=1)
    # each ring's two segments (the target's subtree has one: its partner is the padding column); logsumexp, not
    # logaddexp, whose second derivative overflows at NEG
    sides = padded.index_select(1, tree.ring_sides.reshape(-1)).view(-1, 2, tree.num_rings)
    ring = torch.logsumexp(sides, dim=1)
    running = [ring[:, 0]]
    for k in range(1, ring.shape[1]):
        running.append(torch.logsumexp(torch.stack([running[-1], ring[:, k]]), dim=0))
    out = torch.stack(running[::-1], dim=1)
    return out.masked_fill(out < NEG / 2, float("-inf"))


def log_mass_gradient(tree, grad_l: torch.Tensor, log_mass: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """The gradient of a function of ``L = path log-masses`` with respect to the segments' shifted exponentials.

    ``grad_l`` ``(B, R)``: ``∂f/∂L_d``; ``log_mass`` the ``L`` of :func:`log_masses_of_segments`; ``shift``
    ``(B, 2R - 1)`` the segments' shifts. Returns ``g`` ``(B, 2R - 1)`` float64 such that
    ``∂f/∂x_j = exp(x_j - shift_s) · g_s`` for ``j`` in segment ``s`` of ring ``r``:
    ``g_s = exp(shift_s - L_r) Σ_{d ≤ r} ∂f/∂L_d exp(L_r - L_d)``, every exponent ``<= 0`` (the masses are
    nested). The sum is a triangular ``(R, R)`` product per row for short paths, and two cumulative
    log-sum-exps (one per sign) for long ones, so nothing overflows at any depth.
    """
    with torch.no_grad():
        L = log_mass.clamp_min(NEG)
        R = L.shape[1]
        if R <= TRIANGLE_RINGS:
            ratio = (L[:, :, None] - L[:, None, :]).exp_().tril_()  # exp(L_r - L_d) for d <= r
            t = torch.bmm(ratio, grad_l[:, :, None])[:, :, 0]
        else:
            signed = torch.stack([grad_l.clamp_min(0.0), (-grad_l).clamp_min(0.0)])
            running = torch.exp(torch.logcumsumexp(torch.log(signed) - L, dim=2) + L)
            t = running[0] - running[1]
        at = torch.stack([L, t]).index_select(2, tree.segment_ring)
        g = torch.exp(shift.to(torch.float64) - at[0]).mul_(at[1])
        return g.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


#: paths up to this many rings sum their gradient with an (R, R) product per row, longer ones in log space
TRIANGLE_RINGS = 64
