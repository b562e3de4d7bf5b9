"""A classifier whose weights are fixed class vectors (HAFrame, Liang & Davis, ICCV 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from taxosmooth._checks import check_probability
from taxosmooth._validation import check_ignore_index, check_reduction
from taxosmooth.heads._common import (
    TaxonomyHead,
    check_class_targets,
    check_class_vectors,
    check_in_features,
    check_optional_taxonomy,
    float_for,
    reduce,
)
from taxosmooth.taxonomy import Taxonomy

__all__ = ["FixedClassifier"]


class FixedClassifier(TaxonomyHead):
    """Logits ``f W^T`` with fixed class weights ``W`` (not trained), and HAFrame's mixed loss.

    Liang & Davis, ICCV 2023 ("Inducing neural collapse to a fixed
    hierarchy-aware frame for reducing mistake severity"): the weights are the
    Hierarchy-Aware Frame (:func:`taxosmooth.embeddings.haframe_weights`),
    unit vectors whose cosine similarities follow the hierarchy; the features
    ``f`` (a trainable projection of the input, or the input itself) are
    pulled towards them by

    .. math::

        \\ell = (1 - \\alpha)\\, \\mathrm{CE}(f W^\\top, y)
        + \\alpha \\sum_{c} \\big(\\cos(f, w_c) - S_{yc}\\big)^2,
        \\qquad S = W W^\\top

    the authors' ``mixed-ce-gscsl`` loss (cross entropy plus the squared
    difference between the feature's cosine to every class vector and the
    frame's own cosines from the true class), ``α = cosine_weight`` (0.5 in
    their tieredImageNet-H and FGVC-Aircraft runs, 0.4 for CIFAR-100 and
    iNaturalist-19). The logits have no bias, as in their fixed layer. Their
    network puts a small residual MLP (batch norm, PReLU) between the backbone
    and the frame; here the projection is one linear layer
    (``in_features=None``: none, put your own module in front).

    Parameters
    ----------
    in_features : int or None
        Width of the input; ``None`` when the input already has the frame's
        width (no projection).
    weights : Tensor ``(C, dim)``
        The fixed class vectors (e.g. ``haframe_weights(taxonomy)``).
    cosine_weight : float, default 0.5
        ``α`` in ``[0, 1]``; 0 is cross entropy on the fixed frame.
    bias : bool, default True
        Of the projection.
    ignore_index : int, default -100
    taxonomy : Taxonomy, optional
        The taxonomy the weights were built from (``C`` classes, in the order
        of the rows), e.g. ``FixedClassifier(512, haframe_weights(tax),
        taxonomy=tax)``. The head's ``state_dict`` then carries its
        fingerprint, and :meth:`load_state_dict` refuses a checkpoint made on
        another taxonomy (another class order, another tree) or one without a
        fingerprint (see :class:`~taxosmooth.heads.HierarchicalSoftmax`).
        Without a taxonomy the head knows only its frame, and a checkpoint's
        frame replaces it unchecked. (A checkpoint's frame always replaces the
        head's: the projection was trained against it.)
    device, dtype
        Of the projection.

    Shape
    -----
    * input: ``(N, in_features)`` (or ``(N, dim)`` without projection)
    * output: ``(N, C)`` logits.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> from taxosmooth.embeddings import haframe_weights
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> head = FixedClassifier(16, haframe_weights(tax, gamma=2.0))
    >>> x, target = torch.randn(8, 16), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    >>> head(x).shape
    torch.Size([8, 4])
    >>> loss = head.loss(x, target)
    >>> [name for name, _ in head.named_parameters()]   # only the projection trains
    ['projection.weight', 'projection.bias']
    """

    frame: torch.Tensor  # a buffer
    projection: nn.Module

    def __init__(self, in_features: int | None, weights: torch.Tensor, *, cosine_weight: float = 0.5,
                 bias: bool = True, ignore_index: int = -100, taxonomy: Taxonomy | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        w, _ = check_class_vectors(weights, "FixedClassifier", "weights")
        self.num_classes, self.dim = w.shape
        self.taxonomy = check_optional_taxonomy(taxonomy, self.num_classes, "FixedClassifier")
        self._bind_taxonomy(self.taxonomy)
        self.register_buffer("frame", w.detach().clone().to(torch.float32 if dtype is None else dtype))
        self.cosine_weight = check_probability(cosine_weight, "cosine_weight")
        self.ignore_index = check_ignore_index(ignore_index)
        if in_features is None:
            self.in_features = self.dim
            self.projection = nn.Identity()
        else:
            self.in_features = check_in_features(in_features)
            self.projection = nn.Linear(self.in_features, self.dim, bias=bias, device=device, dtype=dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``f``: the projected input ``(N, dim)``."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"FixedClassifier: input must have shape (N, {self.in_features}), got {tuple(x.shape)}")
        f = self.projection(x)
        return f.to(float_for(f))

    def _logits(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.frame.to(f.dtype).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``f W^T`` ``(N, C)``."""
        return self._logits(self.features(x))

    def loss(self, x: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """HAFrame's loss (see the class docstring), per sample, then reduced (``"mean"``, ``"sum"``, ``"none"``)."""
        reduction = check_reduction(reduction)
        f = self.features(x)
        t, valid = check_class_targets(target, x.shape[0], self.num_classes, self.ignore_index, "FixedClassifier")
        w = self.frame.to(f.dtype)
        logits = self._logits(f)
        loss = F.cross_entropy(logits, t, reduction="none")
        if self.cosine_weight > 0:
            # cos(f, w_c) from the logits: one matmul for both terms
            norms = f.norm(dim=1, keepdim=True).clamp_min(1e-12) * w.norm(dim=1)
            target_cos = self._similarity_rows(w, t)  # S[y] = w_y W^T
            sq = (logits / norms - target_cos).square().sum(1)
            loss = (1.0 - self.cosine_weight) * loss + self.cosine_weight * sq
        return reduce(loss, valid, reduction)

    def _similarity_rows(self, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Rows ``t`` of ``S = W W^T``. ``S`` is kept (per device and dtype) up to 4,096 classes in eager mode;
        with more classes, and in a compiled graph (no Python state to update), the rows are ``W[t] W^T``."""
        if self.num_classes > 4096 or torch.compiler.is_compiling():
            return w.index_select(0, t) @ w.T
        key = (w.device, w.dtype, self.frame._version, self.frame.data_ptr())  # a loaded frame is seen
        if getattr(self, "_s_key", None) != key:
            self._s, self._s_key = w @ w.T, key
        return self._s.index_select(0, t)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, classes={self.num_classes}, dim={self.dim}, cosine_weight={self.cosine_weight:g}"

