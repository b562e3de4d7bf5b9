"""Row operations the losses share: dot products with logits that may be ``-inf``, cross entropy rows."""

from __future__ import annotations

import torch

from taxosmooth.tree_ops import is_functorch_wrapped

__all__ = ["logit_dot", "soft_cross_entropy"]


def logit_dot(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``Σ_j w_j z_j`` per row, where a ``-inf`` logit counts ``0`` without weight and ``-inf`` with any.

    ``z`` ``(M, C)``; ``w`` ``(C,)`` (the same for every row) or ``(M, C)``, ``>= 0``. A masked class (a
    ``-inf`` logit) that holds target mass makes the row ``-inf`` (its cross entropy ``+inf``, as in
    :func:`torch.nn.functional.cross_entropy`); one without mass is left out (``0 · log 0 = 0``).
    """
    w = w.to(z.dtype)
    finite = z.clamp_min(torch.finfo(z.dtype).min)
    masked = torch.isneginf(z).to(z.dtype)
    if w.dim() == 1:
        dot, hit = finite @ w, masked @ (w > 0).to(z.dtype)
    else:
        dot, hit = (finite * w).sum(1), (masked * (w > 0).to(z.dtype)).sum(1)
    return torch.where(hit > 0, torch.full_like(dot, float("-inf")), dot)


def _formula(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    lse = torch.logsumexp(z, 1)
    total = w.sum() if w.dim() == 1 else w.sum(1)
    return lse * total.to(z.dtype) - logit_dot(z, w)


class _SoftCrossEntropy(torch.autograd.Function):
    """``lse(z) Σ_j w_j - Σ_j w_j z_j`` per row, the gradient written out: ``softmax(z) Σ_j w_j - w``."""

    @staticmethod
    def forward(ctx, z, w):
        lse = torch.logsumexp(z, 1)
        total = w.sum(-1)
        dot = torch.nansum(z * w, 1)  # a -inf logit: 0 without weight (nan, dropped), -inf with weight
        ctx.save_for_backward(z, w, lse, total)
        return lse * total - dot

    @staticmethod
    def backward(ctx, grad):
        z, w, lse, total = ctx.saved_tensors
        if torch.is_grad_enabled():  # a double backward: differentiate the formula
            with torch.enable_grad():
                (gz,) = torch.autograd.grad(_formula(z, w), z, grad, create_graph=True)
            return gz, None
        g = torch.exp(z - lse[:, None]).mul_((total * grad)[:, None])
        return g.sub_(w * grad[:, None]), None


def soft_cross_entropy(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``-Σ_j w_j log softmax(z)_j = Σ_j w_j · lse(z) - Σ_j w_j z_j`` per row, for target rows ``w`` ``(C,)`` or
    ``(M, C)`` (not necessarily normalised); ``0 · log 0 = 0``. In ``z``'s dtype."""
    if w.requires_grad or is_functorch_wrapped(z) or is_functorch_wrapped(w):
        return _formula(z, w)
    return _SoftCrossEntropy.apply(z, w.to(z.dtype))
