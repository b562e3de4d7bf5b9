"""Cross entropy against a row of any soft-target matrix."""

from __future__ import annotations

import numpy as np
import torch

from taxosmooth._checks import as_numpy
from taxosmooth.losses._common import TreeLossBase, given_float_dtype, xlogy_cross_entropy

__all__ = ["SoftTargetCrossEntropy", "soft_target_per_sample", "check_target_matrix"]


def check_target_matrix(targets) -> torch.Tensor:
    """A copy of a ``(C, C)`` soft-target matrix (finite, >= 0, rows summing to 1) in its own dtype.

    A floating-point tensor or array keeps its dtype; anything else becomes float32.
    """
    dtype = given_float_dtype(targets)
    q = as_numpy(targets, "targets")
    if q.ndim != 2 or q.shape[0] != q.shape[1] or q.shape[0] == 0:
        raise ValueError(f"targets must be a non-empty square matrix (C, C), got shape {tuple(q.shape)}")
    bad = ~np.isfinite(q) | (q < 0)
    if bad.any():
        i, j = (int(a) for a in np.argwhere(bad)[0])
        raise ValueError(f"targets[{i}, {j}] = {q[i, j]}; soft targets must be finite and >= 0")
    sums = q.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > 1e-4)
    if off.size:
        i = int(off[0])
        raise ValueError(f"row {i} of targets sums to {sums[i]}; each row must be a distribution (sum 1)")
    return torch.from_numpy(q.copy()).to(dtype)


def soft_target_per_sample(z: torch.Tensor, t: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``-Σ_j targets[t, j] · log_softmax(z)_j`` per row of ``z`` (M, C), in ``z``'s dtype."""
    q = targets.index_select(0, t).to(dtype=z.dtype, device=z.device)
    if torch.compiler.is_compiling():  # 0·log 0 = 0 for masked classes, fused under compile
        return xlogy_cross_entropy(q, z)
    return -(q * torch.log_softmax(z, dim=1)).sum(dim=1)


class SoftTargetCrossEntropy(TreeLossBase):
    r"""Cross entropy against row ``target`` of a soft-target matrix.

    .. math::

        \ell(z, t) = -\sum_{j} Q_{t j} \log \operatorname{softmax}(z)_j

    The dense reference for :class:`HierarchicalSoftLabelLoss` (pass
    ``soft_targets(taxonomy, beta)``), and the way to use any distance that is
    not a function of the LCA node (e.g. ``"path_length"``) or a user matrix.
    Memory: the ``(C, C)`` matrix, plus one ``(batch, C)`` gather per call.

    Parameters
    ----------
    targets : array_like or Tensor (C, C)
        Row ``t`` is the target distribution for class ``t`` (finite, ``>= 0``,
        rows sum to 1). Stored as a buffer (in ``state_dict``) in its own
        dtype (a float64 matrix stays float64; lists become float32); the loss is
        computed in the input's compute dtype. ``-inf`` logits are allowed: a
        class without target mass contributes ``0·log 0 = 0``; target mass on a
        ``-inf`` class makes the loss ``+inf``. A NaN or ``+inf`` logit raises
        ``ValueError`` naming it (:func:`taxosmooth.losses.set_checks`).
    weight : Tensor (C,), optional
        Class weights, as in :func:`torch.nn.functional.cross_entropy`.
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}, default "mean"

    Shape
    -----
    - input: ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``
    - target: ``(N)``, ``(N, d1, ...)`` or ``()``, class indices
    - output: scalar, or the target's shape with ``reduction="none"``

    Examples
    --------
    >>> import torch, taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> loss = ts.SoftTargetCrossEntropy(ts.soft_targets(tax, beta=4.0))
    >>> loss(torch.zeros(2, 4), torch.tensor([0, 2])).item()  # uniform prediction: log 4
    1.3862943649291992
    """

    def __init__(self, targets, weight=None, ignore_index: int = -100, reduction: str = "mean"):
        q = check_target_matrix(targets)
        super().__init__(q.shape[0], weight, ignore_index, reduction)
        self.register_buffer("targets", q)

    def _per_sample(self, z, t):
        return soft_target_per_sample(z, t, self.targets)

    def _exact_per_sample(self, z, t):
        return xlogy_cross_entropy(self.targets.index_select(0, t).to(z.dtype), z)
