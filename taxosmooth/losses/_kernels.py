"""Fused host kernels shared by the losses, and their torch counterparts.

A host kernel takes ``z`` (M, C) float32/float64 CPU logits and returns the
per-row losses (already multiplied by the rows' factors) and their gradient,
written in the forward without autograd. The torch counterparts compute the
same rows with differentiable torch operations (any device, compilation,
tracing, ``torch.func``, double backward).

All of them treat ``-inf`` logits (masked classes) exactly: a class without
target mass contributes ``0 · log 0 = 0``; target mass on a ``-inf`` class
gives ``+inf``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "host_softmax",
    "host_cross_entropy",
    "host_ring0_correction",
    "ref_cross_entropy",
    "ref_ring0_log_mass",
    "host_ring0_log_mass",
]


def _col(x, like: torch.Tensor):
    """A per-row factor (float or (M,) numpy/tensor) as something that broadcasts over (M, C)."""
    if isinstance(x, float):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x).to(like.dtype).unsqueeze(1)
    return x.to(like.dtype).unsqueeze(1)


def host_softmax(z: torch.Tensor):
    """``(p, lse)``: softmax (a fresh tensor) and log-sum-exp per row, one exponential pass."""
    m = z.amax(dim=1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.sub(z, m).exp_()
    total = p.sum(dim=1, keepdim=True)
    lse = (m + total.log()).squeeze(1)
    return p.mul_(total.reciprocal_()), lse


def _masked_dot(w: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """``Σ_j w_j log_p_j`` per row with ``0 · (-inf) = 0``."""
    return torch.where(w == 0, torch.zeros_like(log_p), w * log_p).sum(dim=1)


def row_dot(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """``Σ_j a_ij b_ij`` per row of two CPU tensors, float64 numpy (one pass: numpy's einsum is a
    fused multiply-add, several times faster than ``torch.linalg.vecdot`` on the CPU)."""
    return np.einsum("ij,ij->i", a.numpy(), b.numpy()).astype(np.float64)


def host_cross_entropy(z: torch.Tensor, neg_w: torch.Tensor, row_sum):
    """``-Σ_j w_j log softmax(z)_j`` per row (float64 numpy) and its gradient ``softmax(z) · Σ_j w_j - w``.

    ``neg_w`` (M, C) holds ``-w``, the (weighted) target rows negated, a fresh tensor this kernel
    overwrites with the gradient; ``row_sum`` (float, or (M,) numpy) is ``Σ_j w_j``.
    """
    log_p = torch.log_softmax(z, dim=1)
    rows = row_dot(neg_w, log_p)
    if not np.isfinite(rows).all():
        rows = -_masked_dot(-neg_w, log_p).double().numpy()  # -inf logits without target mass: 0 · log 0 = 0
    p = log_p.exp_()
    if isinstance(row_sum, float):
        torch.add(neg_w, p, alpha=row_sum, out=neg_w)  # one pass: ω p - w
        return rows, neg_w
    return rows, torch.addcmul(neg_w, p, torch.from_numpy(row_sum).to(p.dtype).unsqueeze(1), out=neg_w)


def ref_cross_entropy(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Torch counterpart of :func:`host_cross_entropy` (rows only, differentiable in ``z``)."""
    return -_masked_dot(w, torch.log_softmax(z, dim=1))


def host_ring0_log_mass(rings, z_leaf: np.ndarray) -> np.ndarray:
    """``log Σ_{j ∈ ring 0} exp(z_j)`` per row (float64): the target's logit, or a coarse label's log-sum-exp."""
    return rings.ring0_logsumexp(z_leaf)


def host_ring0_correction(grad_leaf: np.ndarray, z_leaf: np.ndarray, rings, coef: np.ndarray,
                          lse0: np.ndarray) -> None:
    """``grad[j] -= coef · exp(z_j - lse0)`` for ``j`` in ring 0 of each row (in place, leaf order).

    The gradient of ``-coef · log Σ_{j ∈ ring 0} exp(z_j)``: at a class target
    ``-coef`` on the target's column; for a coarse label ``coef`` times the
    softmax restricted to the classes under it.
    """
    b = grad_leaf.shape[0]
    h = rings.tree._host
    if not rings.coarse:
        grad_leaf[np.arange(b), h.class_position[rings.target]] -= coef.astype(grad_leaf.dtype)
        return
    rows, cols, n = rings.ring0_cells()
    # exp(z - lse0) <= 1 on ring 0 (lse0 is the log-sum-exp of ring 0); only ring 0's cells are touched
    dt = grad_leaf.dtype
    shift = np.where(np.isfinite(lse0), lse0, 0.0).astype(dt)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(np.minimum(z_leaf[rows, cols] - np.repeat(shift, n), 0.0))
    e *= np.repeat(coef.astype(dt), n)
    grad_leaf[rows, cols] -= e  # each (row, column) once


def ref_ring0_log_mass(tree, z: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
    """Torch: ``log Σ_{classes j under node} exp(z_j)`` per row (class order ``z``), differentiable."""
    pos = tree.class_position  # (C,) leaf position of each class
    lo = tree.leaf_lo.index_select(0, node).unsqueeze(1)
    hi = tree.leaf_hi.index_select(0, node).unsqueeze(1)
    inside = (pos.unsqueeze(0) >= lo) & (pos.unsqueeze(0) < hi)
    return torch.logsumexp(torch.where(inside, z, torch.full_like(z, float("-inf"))), dim=1)
