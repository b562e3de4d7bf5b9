"""Hierarchical softmax: one softmax over the children of every internal node.

The probability of a class is the product of the conditional probabilities
along its path from the root (Morin & Bengio, AISTATS 2005, "Hierarchical
probabilistic neural network language model"; Redmon & Farhadi, CVPR 2017,
"YOLO9000", for a taxonomy of image classes):

.. math::

    P(c) = \\prod_{v \\in \\mathrm{path}(c),\\, v \\neq r} P(v \\mid \\mathrm{parent}(v)),
    \\qquad P(v \\mid u) = \\frac{\\exp s_v}{\\sum_{w \\in \\mathrm{children}(u)} \\exp s_w}

Scores. A softmax does not change when all its scores shift, so the first
child of every node has its score fixed at 0 and the linear layer holds
``K_u - 1`` scores for a node with ``K_u`` children, ``C - 1`` in all (the
parametrization of binary hierarchical softmax, one vector per internal node,
and of multinomial logistic regression with a reference class). A node with a
single child has no score (its conditional probability is 1). The family of
distributions is that of one score per child, the layout of the
``hierarchicalsoftmax`` package (R. Turnbull): its loss on our scores with a 0
for each first child equals :meth:`HierarchicalSoftmax.loss`.

Layout (internals). Scored nodes (children of a node with two or more
children) are grouped by their *scored depth* (the number of scored nodes on
their path); within a group the first children come first, then the others
by parent. The conditional log-probabilities are ``s - lse`` with one
log-sum-exp per parent (an ``index_add`` over the scores, shifted by the row
maximum where that is exact, else by the exact per-parent maximum), and
``log P`` is accumulated group by group, one gather per scored depth:
O(batch × nodes) in time and memory, no loop over nodes or samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from taxosmooth._validation import check_coarse, check_ignore_index, check_label_smoothing, check_reduction
from taxosmooth.heads._common import (
    TaxonomyHead,
    check_in_features,
    check_targets,
    check_taxonomy,
    float_for,
    index_buffer,
    internal_node_values,
    reduce,
)
from taxosmooth.taxonomy import Taxonomy

__all__ = ["HierarchicalSoftmax"]

# Largest row maximum for which one shift per row is exact: exp(-max) stays a normal number (float32 down to
# exp(-87), float64 to exp(-708)), and every parent's sum holds its first child's exp(0 - max) term.
_ROW_SHIFT_LIMIT = {torch.float32: 80.0, torch.float64: 700.0}


@dataclass(frozen=True)
class _Layout:
    """The column layout the kernels read (see the module docstring): index buffers and static block bounds.

    A frozen dataclass of tensors and tuples, so that ``torch.compile`` traces it.
    """

    segment: torch.Tensor  # (C - 1,) the parent segment of each score
    num_segments: int
    num_columns: int
    blocks: tuple  # per scored depth: (first, rest, stop) column bounds
    block_segments: tuple  # per scored depth: (g0, g1) segment bounds
    block_scores: tuple  # per scored depth: (s0, s1) score bounds
    block_parent: tuple  # per scored depth k >= 1: the column of each node's parent in block k - 1 (None at 0)


class _ConditionalLogProbabilities(torch.autograd.Function):
    """Scores ``(N, C-1)`` -> ``log P(v | parent(v))`` of every scored node ``(N, num_nodes_scored)``.

    ``lse_u = log(1 + Σ_{w child of u, not first} exp s_w)`` (the first child's
    score is 0); the first child gets ``-lse_u``, the others ``s_w - lse_u``.
    Backward: ``∂/∂s_w = g_w - p_w Σ_{children of u} g`` (the log-softmax
    Jacobian, per parent).
    """

    @staticmethod
    def forward(ctx, s, lay, row_max):
        segment = lay.segment
        e, total, shift = _shifted_exp_sums(s, segment, lay.num_segments, row_max)
        lse = total.log_().add_(shift)
        d = s - lse.index_select(1, segment)
        neg = lse.neg()
        out = torch.cat([part for (g0, g1), (s0, s1) in zip(lay.block_segments, lay.block_scores)
                         for part in (neg[:, g0:g1], d[:, s0:s1])], 1)  # per block: first children, then the rest
        ctx.save_for_backward(d)
        ctx.lay = lay
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (d,) = ctx.saved_tensors
        lay = ctx.lay
        g = torch.cat([grad[:, rest:stop] for _, rest, stop in lay.blocks], 1)
        total = torch.cat([grad[:, first:rest] for first, rest, _ in lay.blocks], 1)
        total.index_add_(1, lay.segment, g)
        return g.sub_(d.exp().mul_(total.index_select(1, lay.segment))), None, None


class _ParentLogSumExp(torch.autograd.Function):
    """``lse_u = log(1 + Σ_{w child of u, not first} exp s_w)`` for every parent ``u`` ``(N, num_segments)``.

    Backward: ``∂lse_u/∂s_w = P(w | u)``, from the saved ``exp`` terms and sums.
    """

    @staticmethod
    def forward(ctx, s, segment, num_segments, row_max):
        e, total, shift = _shifted_exp_sums(s, segment, num_segments, row_max)
        ctx.save_for_backward(e, total, segment)
        return total.log().add_(shift)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        e, total, segment = ctx.saved_tensors
        return e * (grad / total).index_select(1, segment), None, None, None


def _shifted_exp_sums(s, segment, num_segments, row_max):
    """``e = exp(s - shift)`` and ``total_u = exp(-shift) + Σ_{w in u} e_w`` (the first child's 0 included), and the shift.

    ``row_max`` given: one shift per row (exact below the limit, see ``_ROW_SHIFT_LIMIT``); else the per-parent maximum.
    """
    n = s.shape[0]
    if row_max is None:
        shift = s.new_zeros((n, num_segments)).scatter_reduce_(1, segment.expand(n, -1), s, "amax")
        e = (s - shift.index_select(1, segment)).exp_()
        total = (-shift).exp_()
    else:
        shift = row_max.clamp_min(0.0)
        e = (s - shift).exp_()
        total = (-shift).exp_().expand(n, num_segments).contiguous()
    return e, total.index_add_(1, segment, e), shift


class _PathSum(torch.autograd.Function):
    """``log P(v) = Σ`` of the conditional log-probabilities on the path, block by block; then a gather.

    Backward: the incoming gradient scattered onto the gathered columns, then
    pushed up from the deepest block to each column's parent block.
    """

    @staticmethod
    def forward(ctx, cond, lay, columns):
        out = cond.clone()
        for k in range(1, len(lay.blocks)):
            start, stop = lay.blocks[k][0], lay.blocks[k][2]
            p_start, p_stop = lay.blocks[k - 1][0], lay.blocks[k - 1][2]
            out[:, start:stop] += out[:, p_start:p_stop].index_select(1, lay.block_parent[k])
        ctx.lay, ctx.num_columns = lay, cond.shape[1]
        ctx.save_for_backward(columns)
        return out.index_select(1, columns)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (columns,) = ctx.saved_tensors
        lay = ctx.lay
        g = grad.new_zeros((grad.shape[0], ctx.num_columns)).index_add_(1, columns, grad)
        for k in range(len(lay.blocks) - 1, 0, -1):
            start, stop = lay.blocks[k][0], lay.blocks[k][2]
            p_start, p_stop = lay.blocks[k - 1][0], lay.blocks[k - 1][2]
            g[:, p_start:p_stop].index_add_(1, lay.block_parent[k], g[:, start:stop])
        return g, None, None


class HierarchicalSoftmax(TaxonomyHead):
    """A linear layer and a softmax over the children of every internal node; returns class log-probabilities.

    .. math::

        \\log P(c) = \\sum_{v \\in \\mathrm{path}(c),\\, v \\neq r} \\log P(v \\mid \\mathrm{parent}(v)),
        \\qquad P(v \\mid u) = \\operatorname{softmax}_{w \\in \\mathrm{children}(u)}(s_w)_v

    (Morin & Bengio, AISTATS 2005; Redmon & Farhadi, CVPR 2017), with scores
    ``s = x W^T + b`` for every child but the first of each node, whose score
    is 0: ``C - 1`` scores in all (see the module docstring). ``forward``
    returns ``log P`` for every class ``(N, C)``, in class order: the rows are
    log-probabilities (``logsumexp`` = 0), so any loss, decision or metric that
    takes logits takes them, and ``F.cross_entropy(head(x), target)`` is the
    negative log-likelihood ``-log P(target)``.

    :meth:`loss` is the loss of the ``hierarchicalsoftmax`` package
    (``HierarchicalSoftmaxLoss``): the sum over the nodes ``u`` on the target's
    path of ``α_u · CE_ε(u)``, the label-smoothed cross entropy of ``u``'s
    softmax over its children,

    .. math::

        \\mathrm{CE}_{\\varepsilon}(u) = -(1 - \\varepsilon_u) \\log P(v \\mid u)
        - \\frac{\\varepsilon_u}{K_u} \\sum_{w \\in \\mathrm{children}(u)} \\log P(w \\mid u)

    (``v`` the child of ``u`` on the path, ``K_u`` the number of children).
    With ``α = 1`` and ``ε = 0`` it is ``F.cross_entropy(head(x), target)``.

    Parameters
    ----------
    in_features : int
        Width of the input features, ``>= 1``.
    taxonomy : Taxonomy
        At least two classes. A node with a single child has no score (its
        conditional probability is 1).
    bias : bool, default True
    node_weights : float, mapping or array, default 1
        ``α_u``: the weight of each internal node's term in :meth:`loss` (the
        package's ``alpha``). A number for every node, a mapping
        ``{internal node name: weight}`` (the others keep 1), or an array of one
        weight per internal node in target-id order (ids ``C … N-1``, see
        :attr:`Taxonomy.target_names`). Finite and ``>= 0``.
    label_smoothing : float, mapping or array, default 0
        ``ε_u`` in ``[0, 1]``, per internal node as ``node_weights``.
    coarse_labels : bool, default False
        Let :meth:`loss` take internal nodes as targets (target ids
        ``C … N-1``, :meth:`Taxonomy.encode`): the loss of a coarse label ``v``
        is the sum of the terms from the root down to ``v`` (its
        negative log-likelihood ``-log P(v)`` with ``α = 1``, ``ε = 0``).
    ignore_index : int, default -100
        Target value whose samples :meth:`loss` skips (as in ``F.cross_entropy``).
    device, dtype
        Of the linear layer, as in ``nn.Linear``.

    Attributes
    ----------
    linear : nn.Linear
        ``in_features -> C - 1``: one row per child that is not its parent's first.
    score_targets : LongTensor ``(C - 1,)``
        Target id of the node of each score (``Taxonomy.decode`` names them).

    Shape
    -----
    * input: ``(N, in_features)``
    * output: ``(N, C)`` class log-probabilities (float32 for float16/bfloat16 input).

    The package's per-child class weights (its ``weight=``) and focal loss
    (``gamma=``) are not offered.

    Checkpoints: the ``state_dict`` carries the taxonomy's fingerprint
    (:attr:`Taxonomy.fingerprint`: classes in order, nodes, parents, edge
    weights). :meth:`load_state_dict` raises ``RuntimeError``, before it changes
    any of the head's parameters, when the checkpoint was made on another
    taxonomy — the same tree with its classes in another order, or another tree
    of the same size, whose parameters would load without a shape error and
    predict other classes — naming both fingerprints and what differs. A
    checkpoint without a fingerprint (saved before the heads stored one) is
    refused too, not accepted with a warning: nothing shows it matches, a
    warning scrolls by in a training log, and the message gives the one line
    that adds the fingerprint to a checkpoint known to be right. The same holds
    for every head of :mod:`taxosmooth.heads` that knows its taxonomy.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> import torch.nn.functional as F
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> head = HierarchicalSoftmax(16, tax)
    >>> x, target = torch.randn(8, 16), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    >>> log_p = head(x)
    >>> log_p.shape, torch.allclose(log_p.exp().sum(1), torch.ones(8))
    (torch.Size([8, 4]), True)
    >>> loss = F.cross_entropy(log_p, target)  # the negative log-likelihood
    >>> torch.allclose(loss, head.loss(x, target))
    True
    """

    # buffers (block_parent_k too, per block)
    score_targets: torch.Tensor
    segment: torch.Tensor
    class_column: torch.Tensor
    node_column: torch.Tensor
    path_scores: torch.Tensor
    path_segments: torch.Tensor
    path_score_weight: torch.Tensor
    path_lse_weight: torch.Tensor
    path_smooth_weight: torch.Tensor  # with label smoothing only

    def __init__(
        self,
        in_features: int,
        taxonomy: Taxonomy,
        *,
        bias: bool = True,
        node_weights: float | Mapping | np.ndarray = 1.0,
        label_smoothing: float | Mapping | np.ndarray = 0.0,
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
        self.coarse_labels = check_coarse(coarse_labels)
        self.ignore_index = check_ignore_index(ignore_index)
        alpha = internal_node_values(node_weights, taxonomy, "node_weights", 1.0)
        if not isinstance(label_smoothing, Mapping) and np.ndim(label_smoothing) == 0:
            label_smoothing = check_label_smoothing(label_smoothing)  # one value: the check every layer shares
        eps = internal_node_values(label_smoothing, taxonomy, "label_smoothing", 0.0, upper=1.0)
        self.smoothing = bool(np.any(eps > 0))
        lay = _layout(taxonomy)
        self.num_classes = taxonomy.num_classes
        self.num_scores = len(lay["score_node"])
        self.num_segments = lay["num_segments"]
        self.num_columns = len(lay["column_node"])
        self.blocks = lay["blocks"]
        self.block_segments = lay["block_segments"]
        self.block_scores = lay["block_scores"]
        self.linear = nn.Linear(self.in_features, self.num_scores, bias=bias, device=device, dtype=dtype)
        c = taxonomy.compiled
        column_parent = c.parent[lay["column_node"]]
        buffers = {
            "score_targets": c.node_target[lay["score_node"]],
            "segment": lay["score_segment"],
            "class_column": lay["last_column"][c.class_node],
            "node_column": lay["last_column"][c.target_node],  # target-id order; -1: no scored node on the path
        }
        for k in range(1, len(self.blocks)):
            buffers[f"block_parent_{k}"] = lay["block_parent"][k]
        # loss tables, target-id order, one entry per scored node on the path (root first), padded with 0 weights:
        # the term of the step into v under parent u is α_u (lse_u - (1-ε_u) s_v - ε_u/K_u Σ_{w in u} s_w)
        path = lay["path"][c.target_node]
        on_path = path >= 0
        node = lay["column_node"][np.where(on_path, path, 0)]
        u = c.parent[node]
        score_column = np.full(taxonomy.num_nodes, -1, dtype=np.int64)
        score_column[lay["score_node"]] = np.arange(self.num_scores)
        scored_child = on_path & (score_column[node] >= 0)  # a first child's score is 0: no entry
        buffers["path_scores"] = np.where(scored_child, score_column[node], 0)
        buffers["path_segments"] = np.where(on_path, lay["column_segment"][np.where(on_path, path, 0)], 0)
        tables = {"path_score_weight": np.where(scored_child, alpha[u] * (1.0 - eps[u]), 0.0),
                  "path_lse_weight": np.where(on_path, alpha[u], 0.0)}
        if self.smoothing:
            kids = np.bincount(column_parent, minlength=taxonomy.num_nodes).astype(np.float64)
            tables["path_smooth_weight"] = np.where(on_path, alpha[u] * eps[u] / np.maximum(kids[u], 1.0), 0.0)
        for key, value in tables.items():
            self.register_buffer(key, torch.from_numpy(value), persistent=False)
        for key, value in buffers.items():
            self.register_buffer(key, index_buffer(value), persistent=False)

    # ------------------------------------------------------------------ forward
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The scores ``s = x W^T + b`` ``(N, C - 1)``: one per child that is not its parent's first
        (:attr:`score_targets` names them; a first child's score is 0)."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"{type(self).__name__}: input must have shape (N, {self.in_features}), "
                             f"got {tuple(x.shape)}")
        return self.linear(x)

    def _lay(self) -> _Layout:
        return _Layout(
            segment=self.segment, num_segments=self.num_segments, num_columns=self.num_columns, blocks=self.blocks,
            block_segments=self.block_segments, block_scores=self.block_scores,
            block_parent=(None,) + tuple(getattr(self, f"block_parent_{k}") for k in range(1, len(self.blocks))),
        )

    def _prepare(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The scores in their compute dtype, and the row maxima when one shift per row is exact (else None)."""
        if s.ndim != 2 or s.shape[1] != self.num_scores:
            raise ValueError(f"{type(self).__name__}: scores must have shape (N, {self.num_scores}), "
                             f"got {tuple(s.shape)}")
        s = s.to(float_for(s))
        if s.device.type != "cpu" or s.shape[0] == 0 or self._force_exact or torch.compiler.is_compiling():
            return s, None
        # eager CPU only: one shift per row is exact below the limit, a choice read on the host (no device to
        # wait for); on other devices and in a compiled graph the per-parent maximum, exact everywhere
        row_max = s.detach().amax(1, keepdim=True)
        return s, (row_max if bool(row_max.max() <= _ROW_SHIFT_LIMIT[s.dtype]) else None)

    def _conditional(self, s: torch.Tensor, lay: _Layout) -> torch.Tensor:
        """``log P(v | parent)`` of every scored node (internal column layout) from the scores."""
        s, row_max = self._prepare(s)
        return _ConditionalLogProbabilities.apply(s, lay, row_max)

    _force_exact = False  # tests: the per-parent maximum on every device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class log-probabilities ``(N, C)`` in class order."""
        return self.log_probabilities_from_scores(self.scores(x))

    def log_probabilities_from_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """Class log-probabilities ``(N, C)`` from scores ``(N, C - 1)`` computed elsewhere (``forward`` without the
        linear layer: the split into a layer and a loss, as the ``hierarchicalsoftmax`` package has it)."""
        lay = self._lay()
        return _PathSum.apply(self._conditional(scores, lay), lay, self.class_column)

    def node_log_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``log P(v)`` for every node ``(N, num_nodes)`` in target-id order (classes first: ``[:, :C]`` is ``forward``).

        ``P(v)`` is the sum of the class probabilities under ``v``; the root (and a
        unary chain below it) has ``log P = 0``.
        """
        lay = self._lay()
        inside = self.node_column >= 0
        log_p = _PathSum.apply(self._conditional(self.scores(x), lay), lay, self.node_column.clamp_min(0))
        return torch.where(inside, log_p, torch.zeros_like(log_p))

    # ------------------------------------------------------------------ loss
    def loss(self, x: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The weighted, label-smoothed sum of the per-node cross entropies along each target's path.

        See the class docstring for the formula. ``reduction``: ``"mean"`` over the
        samples not ignored (the package divides the sum by the batch size:
        the same without ignored samples), ``"sum"`` or ``"none"``.
        Computed from one log-sum-exp per parent and the ``O(N · depth)`` path entries (no ``(N, C)`` tensor).
        """
        return self.loss_from_scores(self.scores(x), target, reduction)

    def loss_from_scores(self, scores: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """:meth:`loss` from scores ``(N, C - 1)`` computed elsewhere (without the linear layer)."""
        reduction = check_reduction(reduction)
        s, row_max = self._prepare(scores)
        t, valid = check_targets(target, s.shape[0], self.taxonomy, self.coarse_labels, self.ignore_index,
                                 type(self).__name__)
        lse = _ParentLogSumExp.apply(s, self.segment, self.num_segments, row_max)
        segs = self.path_segments.index_select(0, t)
        dtype = s.dtype
        per_sample = (lse.gather(1, segs) * self.path_lse_weight.index_select(0, t).to(dtype)).sum(1)
        per_sample = per_sample - (s.gather(1, self.path_scores.index_select(0, t))
                                   * self.path_score_weight.index_select(0, t).to(dtype)).sum(1)
        if self.smoothing:
            sums = s.new_zeros((s.shape[0], self.num_segments)).index_add(1, self.segment, s)
            per_sample = per_sample - (sums.gather(1, segs) * self.path_smooth_weight.index_select(0, t).to(dtype)).sum(1)
        return reduce(per_sample, valid, reduction)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, classes={self.num_classes}, scores={self.num_scores}, "
                f"softmaxes={self.num_segments}, scored depth={len(self.blocks)}")


def _layout(taxonomy: Taxonomy) -> dict:
    """Index arrays of the head (numpy; see the module docstring for the layout)."""
    c = taxonomy.compiled
    n = taxonomy.num_nodes
    parent = c.parent
    children = np.bincount(parent[1:], minlength=n)
    scored = np.zeros(n, dtype=bool)
    scored[1:] = children[parent[1:]] >= 2
    sdepth = np.zeros(n, dtype=np.int64)  # scored nodes on the path root -> v, v included
    for level in c.levels[1:]:
        sdepth[level] = sdepth[parent[level]] + scored[level]
    depth_max = int(sdepth.max())
    # segments (the parents with >= 2 children) by the scored depth of their children, then node id
    branching = np.flatnonzero(children >= 2)
    seg_depth = sdepth[branching] + 1
    seg_node = branching[np.lexsort((branching, seg_depth))]
    segment_of = np.full(n, -1, dtype=np.int64)
    segment_of[seg_node] = np.arange(len(seg_node))
    # rank of each scored node among its siblings (node ids grow along the siblings in pre-order)
    nodes = np.flatnonzero(scored)
    by_parent = np.lexsort((nodes, parent[nodes]))
    sib = nodes[by_parent]
    new = np.r_[True, parent[sib][1:] != parent[sib][:-1]]
    rank = np.zeros(n, dtype=np.int64)
    rank[sib] = np.arange(len(sib)) - np.maximum.accumulate(np.where(new, np.arange(len(sib)), 0))
    first = sib[new]  # the first child of each parent
    first_of_segment = np.empty(len(seg_node), dtype=np.int64)
    first_of_segment[segment_of[parent[first]]] = first
    rest = nodes[rank[nodes] > 0]
    score_node = rest[np.lexsort((rank[rest], segment_of[parent[rest]]))]
    score_segment = segment_of[parent[score_node]]
    seg_bounds = np.searchsorted(np.sort(seg_depth), np.arange(1, depth_max + 2))
    score_bounds = np.searchsorted(sdepth[score_node], np.arange(1, depth_max + 2))
    column_node: Any  # the blocks' node lists, then their concatenation
    column_node, blocks, block_segments, block_scores = [], [], [], []
    offset = 0
    for k in range(depth_max):
        g0, g1 = int(seg_bounds[k]), int(seg_bounds[k + 1])
        s0, s1 = int(score_bounds[k]), int(score_bounds[k + 1])
        column_node += [first_of_segment[g0:g1], score_node[s0:s1]]
        blocks.append((offset, offset + g1 - g0, offset + g1 - g0 + s1 - s0))
        block_segments.append((g0, g1))
        block_scores.append((s0, s1))
        offset = blocks[-1][2]
    column_node = np.concatenate(column_node)
    column = np.full(n, -1, dtype=np.int64)
    column[column_node] = np.arange(len(column_node))
    # last_column[v]: the column of the deepest scored node on the path to v (-1: none); path: every one
    last_column = np.full(n, -1, dtype=np.int64)
    path = np.full((n, max(depth_max, 1)), -1, dtype=np.int64)
    for level in c.levels[1:]:
        last_column[level] = np.where(scored[level], column[level], last_column[parent[level]])
        path[level] = path[parent[level]]
        s = level[scored[level]]
        path[s, sdepth[s] - 1] = column[s]
    block_parent = [None]
    for k in range(1, depth_max):
        start, _, stop = blocks[k]
        block_parent.append(last_column[parent[column_node[start:stop]]] - blocks[k - 1][0])
    return dict(num_segments=len(seg_node), score_node=score_node, score_segment=score_segment,
                column_node=column_node, column_segment=segment_of[parent[column_node]], blocks=tuple(blocks),
                block_segments=tuple(block_segments), block_scores=tuple(block_scores), last_column=last_column,
                path=path, block_parent=block_parent)
