"""Per-level heads: one linear classifier per depth of the taxonomy, trained with a weighted sum of cross entropies.

The classes of the head at depth ``d`` are the nodes at depth ``d``; a class
shallower than ``d`` (unbalanced trees) stands for itself at every deeper
level, so that each class has one label at every level and every level's
labels partition the classes. This is the per-level ("multi-head") classifier
of Chang et al., CVPR 2021 ("Your 'Flamingo' is my 'Bird': fine-grained, or
not") and Garg et al., ECCV 2022 ("Learning hierarchy aware features for
reducing mistake severity", HAF), trained with the sum of the per-level cross
entropies.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from taxosmooth._validation import check_coarse, check_ignore_index, check_reduction
from taxosmooth.heads._common import (
    TaxonomyHead,
    check_in_features,
    check_targets,
    check_taxonomy,
    float_for,
    index_buffer,
    reduce,
)
from taxosmooth.taxonomy import Taxonomy

__all__ = ["LevelwiseHead"]

COMBINE = ("sum", "finest")


class LevelwiseHead(TaxonomyHead):
    """One linear head per depth; class scores combined along each class's path.

    For each selected depth ``d`` a linear layer gives logits ``z_d`` over the
    nodes at depth ``d`` (and the classes shallower than ``d``, each standing
    for itself: see the module docstring). ``forward`` returns, for every class
    ``c``,

    .. math::

        \\mathrm{score}(c) = \\sum_{d \\in \\mathrm{depths}} \\log \\operatorname{softmax}(z_d)_{a_d(c)}

    with ``a_d(c)`` the ancestor of ``c`` at depth ``d`` (``c`` itself when
    ``depth(c) < d``): the log of the product of the per-level probabilities of
    the class's path, so ``softmax(score)`` is ``P(c) ∝ Π_d p_d(a_d(c))``, a
    product of the level experts. With ``combine="finest"`` the score is the
    deepest level's log-softmax alone, which is how Flamingo (Chang et al.,
    CVPR 2021) and HAF (Garg et al., ECCV 2022) predict the fine class; with a
    single level, both are that level's log-softmax. The scores are logits for
    any loss, decision (CRM) or metric.

    :meth:`loss` is ``Σ_d weights[d] · CE(z_d, a_d(target))``, the weighted
    sum of the per-level cross entropies (each a mean over the batch).

    Parameters
    ----------
    in_features : int
        Width of the input features, ``>= 1``.
    taxonomy : Taxonomy
        At least two classes.
    depths : sequence of int, optional
        The depths that get a head, each in ``1 … D`` (``D``: the largest class
        depth; depth 0 is the root, a single node), without repeats. Default:
        every depth ``1 … D``.
    weights : sequence of float, optional
        The weight of each level's cross entropy in :meth:`loss`, one per
        depth, finite and ``>= 0``. Default: all 1.
    combine : {"sum", "finest"}, default "sum"
        How ``forward`` turns the levels into class scores (see above).
    bias : bool, default True
    coarse_labels : bool, default False
        Let :meth:`loss` take internal nodes as targets (target ids ``>= C``):
        a coarse label at depth ``k`` is a label for the levels ``d <= k`` and
        no label for the deeper ones (they do not count it).
    ignore_index : int, default -100
        Target value whose samples :meth:`loss` skips.
    device, dtype
        Of the linear layer.

    Attributes
    ----------
    depths : tuple of int
    level_targets_ids : list of LongTensor
        ``level_targets_ids[i]``: the target ids (:meth:`Taxonomy.decode`) of the
        classes of level ``depths[i]``, in the order of that head's logits.

    Shape
    -----
    * input: ``(N, in_features)``
    * output: ``(N, C)`` class scores (float32 for float16/bfloat16 input).

    The ``state_dict`` carries the taxonomy's fingerprint, and a checkpoint made
    on another taxonomy (or without a fingerprint) is refused, as for
    :class:`HierarchicalSoftmax`.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> head = LevelwiseHead(16, tax)             # depth 1 (mammal, sea) and depth 2 (the classes)
    >>> x, target = torch.randn(8, 16), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    >>> head(x).shape
    torch.Size([8, 4])
    >>> loss = head.loss(x, target)               # CE at depth 1 + CE at depth 2
    >>> tax.decode(head.level_targets(target[:2]))
    [['mammal', 'horse'], ['mammal', 'zebra']]
    """

    weights: torch.Tensor  # a buffer (and level_label_i, level_ids_i per level)

    def __init__(
        self,
        in_features: int,
        taxonomy: Taxonomy,
        depths: Sequence[int] | None = None,
        weights: Sequence[float] | None = None,
        *,
        combine: str = "sum",
        bias: bool = True,
        coarse_labels: bool = False,
        ignore_index: int = -100,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.in_features = check_in_features(in_features)
        self.taxonomy = check_taxonomy(taxonomy, name)
        self._bind_taxonomy(taxonomy)
        self.depths = _check_depths(depths, taxonomy.max_depth)
        if combine not in COMBINE:
            raise ValueError(f"combine must be one of {', '.join(map(repr, COMBINE))}, got {combine!r}")
        self.combine = combine
        w = _check_weights(weights, len(self.depths))
        self.register_buffer("weights", torch.from_numpy(w), persistent=False)
        self.coarse_labels = check_coarse(coarse_labels)
        self.ignore_index = check_ignore_index(ignore_index)
        self.num_classes = taxonomy.num_classes
        c = taxonomy.compiled
        leaf = c.is_leaf
        sizes = []
        for i, d in enumerate(self.depths):
            # the nodes at depth d, and the classes above it standing for themselves (node-id order)
            nodes = np.flatnonzero((c.depth == d) | (leaf & (c.depth < d)))
            position = np.full(taxonomy.num_nodes, -1, dtype=np.int64)
            position[nodes] = np.arange(len(nodes))
            # label of every target id at this level: its ancestor at depth d, or itself if it is a shallower class
            ids = np.arange(taxonomy.num_nodes)
            anc = taxonomy.ancestor_at_depth(ids, d)
            own = leaf[c.target_node] & (c.depth[c.target_node] < d)
            label_node = np.where(own, c.target_node, np.where(anc >= 0, c.target_node[np.maximum(anc, 0)], -1))
            label = np.where(label_node >= 0, position[np.maximum(label_node, 0)], -1)
            self.register_buffer(f"level_label_{i}", index_buffer(label), persistent=False)
            self.register_buffer(f"level_ids_{i}", index_buffer(c.node_target[nodes]), persistent=False)
            sizes.append(len(nodes))
        self.level_sizes = tuple(sizes)
        self.linear = nn.Linear(self.in_features, sum(sizes), bias=bias, device=device, dtype=dtype)

    @property
    def level_targets_ids(self) -> list[torch.Tensor]:
        return [getattr(self, f"level_ids_{i}") for i in range(len(self.depths))]

    def _labels(self, i: int) -> torch.Tensor:
        return getattr(self, f"level_label_{i}")

    # ------------------------------------------------------------------ forward
    def level_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The logits of each level's head, ``[(N, level_sizes[i]) for each depth]``."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"{type(self).__name__}: input must have shape (N, {self.in_features}), "
                             f"got {tuple(x.shape)}")
        z = self.linear(x)
        z = z.to(float_for(z))
        # torch.split takes a tuple of sizes; its stub says a list
        return list(torch.split(z, self.level_sizes, dim=1))  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(N, C)`` in class order (see the class docstring)."""
        levels = self.level_logits(x)
        c = self.num_classes
        chosen = range(len(levels)) if self.combine == "sum" else [len(levels) - 1]
        out = None
        for i in chosen:
            part = torch.log_softmax(levels[i], 1).index_select(1, self._labels(i)[:c])
            out = part if out is None else out + part
        assert out is not None  # at least one level
        return out

    def level_predictions(self, x: torch.Tensor) -> torch.Tensor:
        """The argmax of each level's head as target ids ``(N, len(depths))`` (one column per depth).

        Each level decides alone, so a row need not be one path; compare with
        :meth:`level_targets` for per-level accuracy, or check that each column's
        node lies under the previous one for path consistency.
        """
        cols = [ids.index_select(0, z.argmax(1)) for z, ids in zip(self.level_logits(x), self.level_targets_ids)]
        return torch.stack(cols, 1)

    def level_targets(self, target: torch.Tensor) -> torch.Tensor:
        """The label of each target at each level, as target ids ``(N, len(depths))``.

        A class shallower than a level is its own label there; a coarse label
        (target id ``>= C``) above a level has none (``-1``).
        """
        t, _ = check_targets(target, len(target), self.taxonomy, True, None, type(self).__name__)
        cols = []
        for i, ids in enumerate(self.level_targets_ids):
            label = self._labels(i).index_select(0, t)
            cols.append(torch.where(label >= 0, ids.index_select(0, label.clamp_min(0)), label))
        return torch.stack(cols, 1)

    # ------------------------------------------------------------------ loss
    def loss(self, x: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """``Σ_d weights[d] · CE_d``, the weighted sum of the per-level cross entropies.

        ``reduction="mean"``: each ``CE_d`` is the mean over the samples that have
        a label at depth ``d`` (all of them, unless coarse labels or ignored
        samples), as ``F.cross_entropy`` averages; a level without any counts 0.
        ``"sum"``: the sum over samples and levels; ``"none"``: per sample,
        ``Σ_d weights[d] · CE_d(sample)``.
        """
        reduction = check_reduction(reduction)
        levels = self.level_logits(x)
        t, valid = check_targets(target, x.shape[0], self.taxonomy, self.coarse_labels, self.ignore_index,
                                 type(self).__name__)
        weights = self.weights.to(levels[0].dtype)
        per_sample = levels[0].new_zeros(x.shape[0])
        total = levels[0].new_zeros(())
        for i, z in enumerate(levels):
            label = self._labels(i).index_select(0, t)
            has = label >= 0 if valid is None else (label >= 0) & valid
            nll = -torch.log_softmax(z, 1).gather(1, label.clamp_min(0).unsqueeze(1)).squeeze(1)
            nll = torch.where(has, nll, torch.zeros_like(nll))
            if reduction == "mean":
                total = total + weights[i] * nll.sum() / has.sum().clamp_min(1)
            else:
                per_sample = per_sample + weights[i] * nll
        if reduction == "mean":
            return total
        return reduce(per_sample, valid, reduction)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, depths={self.depths}, level_sizes={self.level_sizes}, combine={self.combine!r}"


def _check_depths(depths, max_depth: int) -> tuple[int, ...]:
    if depths is None:
        return tuple(range(1, max_depth + 1))
    if isinstance(depths, (str, bytes)) or not isinstance(depths, Sequence) and not hasattr(depths, "__iter__"):
        raise TypeError(f"depths must be a sequence of ints in 1 … {max_depth}, got {depths!r}")
    out = []
    for i, d in enumerate(depths):
        if isinstance(d, bool) or not isinstance(d, (numbers.Integral, np.integer)):
            raise TypeError(f"depths[{i}] must be an int in 1 … {max_depth}, got {d!r}")
        if not 1 <= int(d) <= max_depth:
            root = " (depth 0 is the root: a single node, nothing to classify)" if d == 0 else ""
            raise ValueError(f"depths[{i}] = {d} is outside the tree: depths must be in 1 … {max_depth} "
                             f"(the largest class depth){root}")
        if d in out:
            raise ValueError(f"depths[{i}] = {d} is repeated; give each depth once")
        out.append(int(d))
    if not out:
        raise ValueError(f"depths is empty; give at least one depth in 1 … {max_depth}")
    return tuple(out)


def _check_weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n, dtype=np.float64)
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().cpu().numpy()
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"weights must be a sequence of {n} numbers (one per depth), got {weights!r}") from None
    if w.shape != (n,):
        raise ValueError(f"weights must hold one number per depth ({n}), got shape {tuple(w.shape)}")
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"weights[{i}] = {w[i]} must be finite and >= 0")
    return w
