"""A head that maps features onto fixed class vectors (Barz & Denzler, WACV 2019), trained with the cosine loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from taxosmooth._checks import check_positive
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
from taxosmooth.embeddings import class_embeddings
from taxosmooth.taxonomy import Taxonomy

__all__ = ["EmbeddingHead"]


class EmbeddingHead(TaxonomyHead):
    """A linear projection onto the unit sphere of the class vectors; scores are cosine similarities.

    Barz & Denzler, WACV 2019 ("Hierarchy-based image embeddings for semantic
    image retrieval"): the image embedding ``ψ(x) = W x + b`` is trained so
    that its direction matches the vector ``φ_y`` of its class
    (:func:`taxosmooth.embeddings.class_embeddings`, whose dot products are the
    class similarities ``1 - d/max d``), with the loss

    .. math::

        \\ell = 1 - \\cos(\\psi(x), \\varphi_y)
        \\; + \\; \\lambda \\, \\mathrm{CE}(\\mathrm{fc}(\\mathrm{BN}(\\mathrm{ReLU}(\\psi(x)))), y)

    where the second term (``ce_weight = λ``; they used 0.1, default here 0:
    off) is their extra softmax classifier on the embedding (ReLU, batch
    normalisation, a linear layer, as in their code). ``forward`` returns the
    cosine similarity of ``ψ(x)`` to every class vector ``(N, C)``: its argmax
    is their nearest-class-embedding rule, and the scores rank classes for
    retrieval and top-k metrics. They lie in ``[-1, 1]``, so their softmax is
    nearly flat: for probabilities (CRM, calibration) use
    :meth:`classifier_logits` (needs ``ce_weight > 0``).

    Parameters
    ----------
    in_features : int
        Width of the input features, ``>= 1``.
    embeddings : Tensor ``(C, dim)`` or Taxonomy
        The class vectors; a taxonomy is turned into
        ``class_embeddings(taxonomy)`` (``lca_height``) and is the head's taxonomy.
    ce_weight : float, default 0
        ``λ`` above, ``>= 0``.
    bias : bool, default True
    ignore_index : int, default -100
    taxonomy : Taxonomy, optional
        The taxonomy that class vectors given as a tensor were built from
        (``C`` classes, in the order of the rows). The head's ``state_dict``
        then carries its fingerprint, and :meth:`load_state_dict` refuses a
        checkpoint made on another taxonomy (another class order, another
        tree) or one without a fingerprint (see
        :class:`~taxosmooth.heads.HierarchicalSoftmax`). Without a taxonomy the
        head knows only its class vectors, and a checkpoint's vectors replace
        them unchecked.
    device, dtype
        Of the layers.

    Shape
    -----
    * input: ``(N, in_features)``
    * output: ``(N, C)`` cosine similarities.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> head = EmbeddingHead(16, tax, ce_weight=0.1)
    >>> x, target = torch.randn(8, 16), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    >>> head(x).shape, head.classifier_logits(x).shape
    (torch.Size([8, 4]), torch.Size([8, 4]))
    >>> loss = head.loss(x, target)
    """

    class_vectors: torch.Tensor  # a buffer

    def __init__(self, in_features: int, embeddings: torch.Tensor | Taxonomy, *, ce_weight: float = 0.0,
                 bias: bool = True, ignore_index: int = -100, taxonomy: Taxonomy | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features = check_in_features(in_features)
        if isinstance(embeddings, Taxonomy):
            if taxonomy is not None and taxonomy != embeddings:
                raise ValueError("EmbeddingHead: embeddings is a taxonomy and taxonomy= is another one; pass one "
                                 "(class vectors as a tensor with taxonomy=, or the taxonomy alone)")
            taxonomy, embeddings = embeddings, class_embeddings(embeddings)
        e, norms = check_class_vectors(embeddings, "EmbeddingHead", "embeddings")
        self.num_classes, self.dim = e.shape
        self.taxonomy = check_optional_taxonomy(taxonomy, self.num_classes, "EmbeddingHead")
        self._bind_taxonomy(self.taxonomy)
        self.register_buffer("class_vectors", (e / norms.unsqueeze(1)).to(torch.float32 if dtype is None else dtype))
        self.ce_weight = check_positive(ce_weight, "ce_weight", allow_zero=True)
        self.ignore_index = check_ignore_index(ignore_index)
        self.projection = nn.Linear(self.in_features, self.dim, bias=bias, device=device, dtype=dtype)
        self.classifier = None
        if self.ce_weight > 0:
            self.classifier = nn.Sequential(nn.ReLU(), nn.BatchNorm1d(self.dim, device=device, dtype=dtype),
                                            nn.Linear(self.dim, self.num_classes, device=device, dtype=dtype))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``ψ(x)``, the unnormalised embedding ``(N, dim)``."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"EmbeddingHead: input must have shape (N, {self.in_features}), got {tuple(x.shape)}")
        return self.projection(x)

    def _cosine(self, z: torch.Tensor) -> torch.Tensor:
        z = F.normalize(z.to(float_for(z)), dim=1)
        return z @ self.class_vectors.to(z.dtype).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine similarity to each class vector ``(N, C)``."""
        return self._cosine(self.embed(x))

    def classifier_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the cross-entropy branch ``(N, C)`` (only with ``ce_weight > 0``)."""
        if self.classifier is None:
            raise RuntimeError("EmbeddingHead: there is no classifier branch; build the head with ce_weight > 0")
        return self.classifier(self.embed(x))

    def loss(self, x: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """``1 - cos(ψ(x), φ_y) + ce_weight · CE``, per sample, then reduced (``"mean"``, ``"sum"``, ``"none"``)."""
        reduction = check_reduction(reduction)
        z = self.embed(x)
        t, valid = check_class_targets(target, x.shape[0], self.num_classes, self.ignore_index, "EmbeddingHead")
        cos = self._cosine(z).gather(1, t.unsqueeze(1)).squeeze(1)
        loss = 1.0 - cos
        if self.classifier is not None:
            logits = self.classifier(z)
            loss = loss + self.ce_weight * F.cross_entropy(logits.to(loss.dtype), t, reduction="none")
        return reduce(loss, valid, reduction)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, classes={self.num_classes}, dim={self.dim}, ce_weight={self.ce_weight:g}"

