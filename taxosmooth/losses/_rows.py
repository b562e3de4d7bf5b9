"""Row operations the losses share: dot products with logits that may be ``-inf``, cross entropy rows."""

from __future__ import annotations

import torch

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


def soft_cross_entropy(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``-Σ_j w_j log softmax(z)_j = Σ_j w_j · lse(z) - Σ_j w_j z_j`` per row, for target rows ``w`` ``(C,)`` or
    ``(M, C)`` (not necessarily normalised); ``0 · log 0 = 0``."""
    lse = torch.logsumexp(z, 1)
    total = w.sum() if w.dim() == 1 else w.sum(1)
    return lse * total.to(z.dtype) - logit_dot(z, w)
