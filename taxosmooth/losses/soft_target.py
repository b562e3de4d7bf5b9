"""Cross entropy against probability targets, or against the rows of any soft-target matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from taxosmooth._checks import as_numpy
from taxosmooth.distances import given_float_dtype
from taxosmooth.losses._base import LossTarget, TreeLossBase
from taxosmooth.losses._kernels import host_cross_entropy, ref_cross_entropy

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["SoftTargetCrossEntropy", "check_target_matrix"]


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
    tol = {torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float64: 1e-9}.get(dtype, 1e-4)
    off = np.flatnonzero(np.abs(sums - 1.0) > tol)
    if off.size:
        i = int(off[0])
        raise ValueError(f"row {i} of matrix sums to {sums[i]}; each row must be a distribution (sum 1, "
                         f"tolerance {tol:g} for {dtype})")
    return torch.from_numpy(q.copy()).to(dtype)


class SoftTargetCrossEntropy(TreeLossBase):
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

    supports_coarse = False
    matrix: torch.Tensor | None  # a buffer

    @property
    def sparse_targets(self) -> bool:  # type: ignore[override]  # the base's class constant, per instance here
        # with a matrix, Mixup rows gather a few rows instead of a matmul
        return self.matrix is not None

    def __init__(self, matrix: torch.Tensor | ArrayLike | None = None,
                 weight: torch.Tensor | np.ndarray | Sequence[float] | None = None, ignore_index: int = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        if matrix is None:
            num_classes = None
            q = None
        else:
            q = check_target_matrix(matrix)
            num_classes = q.shape[0]
        if num_classes is None:
            if weight is None:
                num_classes = -1  # any width: set per call
            else:
                num_classes = len(weight)
        super().__init__(max(num_classes, 0), weight, ignore_index, reduction, label_smoothing)
        self._any_width = num_classes == -1
        self.register_buffer("matrix", q)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        what = "matrix" if self.matrix is not None else "probability targets"
        return f"{what}{', ' + base if base else ''}"

    def _loss(self, input, target, weight, ignore_index, reduction, label_smoothing):
        if self._any_width and isinstance(input, torch.Tensor) and input.dim() >= 1:
            self.num_classes = self.num_targets = int(input.shape[0 if input.dim() == 1 else 1])
        return super()._loss(input, target, weight, ignore_index, reduction, label_smoothing)

    # ------------------------------------------------------------------ the target rows
    def _rows(self, z: torch.Tensor, target: LossTarget) -> torch.Tensor:
        """Weighted target rows ``W`` (M, C): every term of the loss is ``-W_j log softmax(z)_j``."""
        w: Any  # the rows: a tensor (None before the first sparse column)
        C = z.shape[1]
        q = None if self.matrix is None else self.matrix.to(device=z.device, dtype=z.dtype)
        cw = None if target.class_weight is None else target.class_weight.to(z.dtype)
        if target.kind == "prob":
            prob = cast(torch.Tensor, target.prob)  # set for "prob" targets
            p = prob if cw is None else prob * cw
            w = p if q is None else p @ q
            return w * _col(target.omega, z)
        if target.kind == "sparse":  # a few rows of the matrix (Mixup) instead of a (B, C) @ (C, C) product
            q = cast(torch.Tensor, q)  # sparse targets come with a matrix
            w = None
            for ids, om in target.columns():
                part = q.index_select(0, ids) * om.to(z.dtype).unsqueeze(1)
                w = part if w is None else w + part
            if target.smooth is not None:
                u = torch.full((1, C), 1.0 / C, dtype=z.dtype, device=z.device) if cw is None else (cw / C).unsqueeze(0)
                w = w + (u @ q) * target.smooth.to(z.dtype).unsqueeze(1)
            return w
        ids = cast(torch.Tensor, target.ids)
        if q is None:
            w = (ids.unsqueeze(1) == torch.arange(C, device=ids.device)).to(z.dtype)  # one-hot, vmap-safe
        else:
            w = q.index_select(0, ids)
        w = w * _col(target.omega, z)
        if target.smooth is not None:
            u = torch.full((1, C), 1.0 / C, dtype=z.dtype, device=z.device) if cw is None else (cw / C).unsqueeze(0)
            if q is not None:
                u = u @ q
            w = w + u * _col(target.smooth, z)
        return w

    def _host(self, z, target: LossTarget):
        w = self._rows(z, target)
        row_sum = w.sum(1).double().numpy()
        return host_cross_entropy(z, w.neg_(), row_sum)

    def _reference(self, z, target: LossTarget):
        return ref_cross_entropy(z, self._rows(z, target))


def _col(x, like: torch.Tensor):
    if isinstance(x, float):
        return x
    return x.to(like.dtype).unsqueeze(1)
