"""Deterministic top-k: the tie rule shared by decisions and metrics.

``torch.topk`` does not say which of several equal values it returns, so two
runs (or two devices) can disagree on a tie. Every ranking in taxosmooth uses
one rule instead: order by value, and among equal values the **lowest class
index first** — the order a stable sort gives. This module implements it in
O(N·C) (one ``topk`` for the k-th value, then a pass over the ties) rather
than a full O(N·C·log C) sort.
"""

from __future__ import annotations

import torch

__all__ = ["stable_topk", "rank_of"]


def stable_topk(values: torch.Tensor, k: int, largest: bool = True) -> torch.Tensor:
    """Indices ``(N, k)`` of the k largest (or smallest) entries of each row, best first.

    Ties go to the lowest index; the result equals
    ``torch.sort(values, dim=1, descending=largest, stable=True).indices[:, :k]``.
    ``values`` must not contain NaN (callers validate).
    """
    n, c = values.shape
    if k == 1:
        # argmax/argmin return the first extreme index (documented by torch)
        idx = values.argmax(dim=1) if largest else values.argmin(dim=1)
        return idx.unsqueeze(1)
    if k >= c or n == 0:
        return torch.sort(values, dim=1, descending=largest, stable=True).indices[:, :k]
    kth = torch.topk(values, k, dim=1, largest=largest, sorted=True).values[:, -1:]
    better = values > kth if largest else values < kth
    tie = values == kth
    # keep the lowest-index ties, as many as the k-th place still needs
    room = k - better.sum(dim=1, keepdim=True)
    keep = better | (tie & (torch.cumsum(tie, dim=1) <= room))
    # exactly k kept per row; nonzero() lists them row by row in index order
    cols = keep.nonzero()[:, 1].view(n, k)
    picked = values.gather(1, cols)
    order = torch.sort(picked, dim=1, descending=largest, stable=True).indices
    return cols.gather(1, order)


def rank_of(values: torch.Tensor, index: torch.Tensor, largest: bool = True) -> torch.Tensor:
    """0-based rank ``(N,)`` of ``values[i, index[i]]`` in row ``i`` under the same tie rule.

    The entries ranked before it are those strictly better, plus the equal ones
    at a lower index. ``index`` is in the top k iff ``rank < k``.
    """
    v = values.gather(1, index.unsqueeze(1))
    better = values > v if largest else values < v
    cols = torch.arange(values.shape[1], device=values.device)
    earlier_tie = (values == v) & (cols < index.unsqueeze(1))
    return (better | earlier_tie).sum(dim=1)
