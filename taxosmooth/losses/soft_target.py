r"""Cross entropy against probability targets, or against the rows of any soft-target matrix.

.. math::

    \ell(z, p) = -\sum_j p_j \log \operatorname{softmax}(z)_j

Without a matrix this is timm's ``SoftTargetCrossEntropy`` (and, for integer targets,
:func:`torch.nn.functional.cross_entropy`); with a soft-target matrix ``Q`` an integer target ``t``
means the row ``Q_t`` and a probability target ``p`` the mixture ``p Q``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from taxosmooth._checks import as_numpy
from taxosmooth.distances import given_float_dtype
from taxosmooth.losses._frame import RowTarget, run_loss, times
from taxosmooth.losses._module import TreeLoss, check_options, sharded
from taxosmooth.losses._rows import soft_cross_entropy

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["SoftTargetCrossEntropy", "soft_target_cross_entropy", "check_target_matrix"]


# ----------------------------------------------------------------------------- the formula
def soft_target_rows(z: torch.Tensor, target: RowTarget, matrix: torch.Tensor | None) -> torch.Tensor:
    """Soft-target cross entropy of every row ``(M,)``, the rows' factors applied (``z`` class order)."""
    c = target.num_classes
    q = None if matrix is None else matrix.to(device=z.device, dtype=z.dtype)
    if target.kind == "prob":
        p = target.prob
        assert p is not None
        if target.class_weight is not None:
            p = p * target.class_weight.to(p.dtype)
        return times(target.scale, soft_cross_entropy(z, p if q is None else p @ q)).to(z.dtype)
    ids = target.ids
    assert ids is not None
    if q is None:
        rows = torch.logsumexp(z, 1) - z.gather(1, ids[:, None])[:, 0]  # -log softmax(z)_t
    else:
        rows = soft_cross_entropy(z, q.index_select(0, ids))
    rows = times(target.label, rows.to(torch.float64))
    if target.uniform is not None:
        w = torch.full((c,), 1.0 / c, dtype=z.dtype, device=z.device) if target.class_weight is None \
            else (target.class_weight / c).to(z.dtype)
        rows = rows + times(target.uniform, soft_cross_entropy(z, w if q is None else w @ q))
    return rows.to(z.dtype)


def check_target_matrix(matrix: torch.Tensor | ArrayLike) -> torch.Tensor:
    """A copy of a ``(C, C)`` soft-target matrix (finite, >= 0, rows summing to 1) in its own dtype.

    A floating-point tensor or array keeps its dtype (bfloat16 included); anything else becomes
    float32. Rows may sum to 1 within the precision of that dtype (a float16 matrix made by
    :func:`~taxosmooth.soft_targets` is accepted).
    """
    dtype = given_float_dtype(matrix) or torch.float32
    if isinstance(matrix, torch.Tensor) and matrix.dtype == torch.bfloat16:
        matrix = matrix.float()  # numpy has no bfloat16
    q = as_numpy(matrix, "matrix")
    if q.ndim != 2 or q.shape[0] != q.shape[1] or q.shape[0] == 0:
        raise ValueError(f"matrix must be a non-empty square soft-target matrix (C, C), got shape {tuple(q.shape)}")
    bad = ~np.isfinite(q) | (q < 0)
    if bad.any():
        i, j = (int(a) for a in np.argwhere(bad)[0])
        raise ValueError(f"matrix[{i}, {j}] = {q[i, j]}; soft targets must be finite and >= 0")
    sums = q.sum(axis=1)
    tol = {torch.float16: 4e-3, torch.bfloat16: 3e-2}.get(dtype, 1e-4)  # float64 too: values often float32's
    off = np.flatnonzero(np.abs(sums - 1.0) > tol)
    if off.size:
        i = int(off[0])
        raise ValueError(f"row {i} of matrix sums to {sums[i]}; each row must be a distribution (sum 1, "
                         f"tolerance {tol:g} for {dtype})")
    return torch.from_numpy(q.copy()).to(dtype)


class SoftTargetCrossEntropy(TreeLoss):
    r"""Cross entropy against probability targets, or against row ``target`` of a soft-target matrix.

    .. math::

        \ell(z, p) = -\sum_j p_j \log \operatorname{softmax}(z)_j

    Built **without** a matrix it is timm's ``SoftTargetCrossEntropy``: the
    target is a probability row ``p`` per sample (Mixup, CutMix); integer
    targets are one-hot rows (then it equals
    :func:`torch.nn.functional.cross_entropy`, ``label_smoothing`` included).

    Built **with** a soft-target matrix ``Q`` (e.g.
    ``soft_targets(taxonomy, beta)``, any distance, or a user matrix), an
    integer target ``t`` means the row ``Q_t``, and a probability target ``p``
    the mixture ``Σ_c p_c Q_c``: the dense reference of
    :class:`HierarchicalSoftLabelLoss`. Memory: the ``(C, C)`` matrix.

    ``-inf`` logits are allowed: a class without target mass contributes
    ``0·log 0 = 0``; target mass on a ``-inf`` class makes the loss ``+inf``.

    Parameters
    ----------
    matrix : array_like or Tensor (C, C), optional
        Row ``t`` is the target distribution for class ``t`` (finite, ``>= 0``,
        rows sum to 1 within the matrix's precision). Stored as a buffer (in
        ``state_dict``) in its own dtype (lists become float32); the loss is
        computed in the input's compute dtype.
    weight : Tensor (C,), optional
        Class weights: the term of class ``j`` counts ``weight[j]``, and an
        integer target ``t`` weighs its sample by ``weight[t]``, as in
        :func:`torch.nn.functional.cross_entropy`.
    ignore_index : int, default -100
        Integer targets only.
    reduction : {"mean", "sum", "none"}, default "mean"
    label_smoothing : float in [0, 1], default 0.0
        The target becomes ``(1 - ε)·target + ε/C`` first (before ``matrix``).

    Shape
    -----
    - input: ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``
    - target: ``(N)``, ``(N, d1, ...)`` or ``()`` class indices, or probabilities
      with the input's shape
    - output: scalar, or the target's shape (``(N, d1, ...)``) with ``reduction="none"``

    Examples
    --------
    >>> import torch, taxosmooth as ts
    >>> mixed = torch.tensor([[0.7, 0.3, 0.0, 0.0]])          # Mixup of horse and zebra
    >>> ts.SoftTargetCrossEntropy()(torch.zeros(1, 4), mixed).item()  # uniform prediction: log 4
    1.3862943649291992
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> loss = ts.SoftTargetCrossEntropy(ts.soft_targets(tax, beta=4.0))
    >>> round(loss(torch.zeros(2, 4), torch.tensor([0, 2])).item(), 5)  # any target row: log 4
    1.38629
    """

    matrix: torch.Tensor | None  # a buffer

    def __init__(self, matrix: torch.Tensor | ArrayLike | None = None,
                 weight: torch.Tensor | np.ndarray | Sequence[float] | None = None, ignore_index: int = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0, process_group=None,
                 shard_slack: float = 0.02) -> None:
        q = None if matrix is None else check_target_matrix(matrix)
        if q is not None:
            num_classes = q.shape[0]
        else:
            num_classes = -1 if weight is None else len(weight)  # -1: any width, set per call
        super().__init__(max(num_classes, 0), weight, ignore_index, reduction, label_smoothing)
        self._any_width = num_classes == -1
        self.register_buffer("matrix", q)
        self.shard(process_group, None, shard_slack)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        what = "matrix" if self.matrix is not None else "probability targets"
        return f"{what}{', ' + base if base else ''}"

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.process_group is not None:
            return sharded(self, input, target)
        return _run(input, target, self.matrix, self.num_classes, self._any_width, self.weight, self.ignore_index,
                    self.reduction, self.label_smoothing)


# ----------------------------------------------------------------------------- the functional core
def _run(input, target, matrix, num_classes: int, any_width: bool, weight, ignore_index, reduction,
         label_smoothing) -> torch.Tensor:
    if any_width and isinstance(input, torch.Tensor) and input.dim() >= 1:
        num_classes = int(input.shape[0 if input.dim() == 1 else 1])
    return run_loss(lambda z, t: soft_target_rows(z, t, matrix), input, target, name="SoftTargetCrossEntropy",
                    num_classes=num_classes, num_targets=num_classes, num_nodes=None, weight=weight,
                    ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)


def soft_target_cross_entropy(input: torch.Tensor, target: torch.Tensor,
                              matrix: torch.Tensor | ArrayLike | None = None, weight: ArrayLike | None = None,
                              ignore_index: int = -100, reduction: str = "mean",
                              label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross entropy against probability targets, or rows of ``matrix`` (C, C); see :class:`SoftTargetCrossEntropy`.

    A matrix is validated on every call: build the module once for a training loop.
    """
    q = None if matrix is None else check_target_matrix(matrix)
    if q is not None:
        c = q.shape[0]
    elif isinstance(input, torch.Tensor) and input.dim() >= 1:
        c = int(input.shape[0 if input.dim() == 1 else 1])
    else:
        c = 0
    weight, ignore_index, reduction, label_smoothing = check_options(
        "soft_target_cross_entropy", c, c, weight, ignore_index, reduction, label_smoothing)
    return _run(input, target, q, c, False, weight, ignore_index, reduction, label_smoothing)
