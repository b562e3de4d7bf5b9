"""The cosine loss of Barz & Denzler: features trained towards fixed class vectors."""

from __future__ import annotations

import torch
from torch import nn

from taxosmooth._validation import check_ignore_index, check_reduction, check_target_ids

__all__ = ["CosineLoss"]


class CosineLoss(nn.Module):
    """``1 - cos(ψ(x), φ_y)``: the cosine loss of Barz & Denzler (WACV 2019; WACV 2020, "Deep learning on
    small datasets without pre-training using cosine loss").

    .. math::

        \\ell(x, y) = 1 - \\frac{\\psi(x) \\cdot \\varphi_y}{\\|\\psi(x)\\| \\, \\|\\varphi_y\\|}

    Their public code (``inv_correlation`` on L2-normalised outputs) computes
    the same. A cross-entropy term on a classifier of the embedding, as in
    their "+ cross entropy" variant (weight 0.1), is part of
    :class:`taxosmooth.heads.EmbeddingHead`.

    Parameters
    ----------
    embeddings : Tensor ``(C, dim)``
        The class vectors ``φ`` (e.g. :func:`taxosmooth.embeddings.class_embeddings`), non-zero rows.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` over the samples not ignored (``nan`` if there are none, as
        ``F.cross_entropy``).
    ignore_index : int, default -100
        Target value whose samples are skipped.

    Shape
    -----
    * input: ``(N, dim)`` features ``ψ(x)`` (any norm); target ``(N,)`` class indices.
    * output: scalar, or ``(N,)`` with ``reduction="none"``.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> from taxosmooth.embeddings import class_embeddings
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> phi = class_embeddings(tax, dtype=torch.float32)
    >>> loss = CosineLoss(phi)
    >>> float(loss(2 * phi[[0, 1]], torch.tensor([0, 1])))   # each feature on its class's vector
    0.0
    >>> float(loss(phi[[1]], torch.tensor([0])))             # zebra's vector for a horse: 1 - 0.5
    0.5
    """

    embeddings: torch.Tensor  # a buffer

    def __init__(self, embeddings: torch.Tensor, reduction: str = "mean", ignore_index: int = -100) -> None:
        super().__init__()
        e = torch.as_tensor(embeddings)
        if e.ndim != 2 or not e.is_floating_point():
            raise ValueError(f"CosineLoss: embeddings must be a floating (C, dim) tensor, got {tuple(e.shape)} {e.dtype}")
        norms = e.norm(dim=1)
        bad = (norms == 0) | ~torch.isfinite(norms)
        if bool(bad.any()):
            raise ValueError(f"CosineLoss: embeddings[{int(bad.nonzero()[0, 0])}] is zero or not finite; "
                             "every class needs a direction")
        self.register_buffer("embeddings", e / norms.unsqueeze(1))
        self.reduction = check_reduction(reduction)
        self.ignore_index = check_ignore_index(ignore_index)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.ndim != 2 or input.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"CosineLoss: input must have shape (N, {self.embeddings.shape[1]}), got {tuple(input.shape)}")
        t, valid = check_target_ids(target, input.shape[0], self.embeddings.shape[0], ignore_index=self.ignore_index,
                                    where="CosineLoss")
        dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
        z = nn.functional.normalize(input.to(dtype), dim=1)
        loss = 1.0 - (z * self.embeddings.to(dtype).index_select(0, t)).sum(1)
        if valid is not None:
            loss = torch.where(valid, loss, torch.zeros_like(loss))
        if self.reduction == "none":
            return loss
        if self.reduction == "sum":
            return loss.sum()
        return loss.sum() / (loss.shape[0] if valid is None else valid.sum())
