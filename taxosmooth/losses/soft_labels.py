r"""Hierarchical soft labels: Bertinetto et al., "Making Better Mistakes", CVPR 2020, Sec. 3.2.

.. math::

    \ell(z, t) = -\sum_j q_t(j) \log \operatorname{softmax}(z)_j
               = \operatorname{lse}(z) - \sum_j q_t(j)\, z_j,
    \qquad q_t(j) = \frac{e(\mathrm{LCA}(t, j))}{Z_t}, \quad e(u) = \exp(-\beta\, d(u) / s)

optionally mixed with the label, ``(1 - mix)·onehot + mix·q``. ``q_t`` is constant on each
ring of ``t`` (the classes with one LCA), so ``Σ_j q_t(j) z_j`` is a sum over the target's
path segments of ``q`` times the segment sums of ``z``; ``Z_t = Σ_j e(LCA(t, j))`` is one
number per target id. A **coarse label** ``v`` makes the classes under ``v`` one outcome at
distance 0 whose log-probability is ``log P(v)``. **Probability** rows and the uniform part of
``label_smoothing`` use the mixture row ``Σ_c p_c q_c``, built by one pass up (subtree sums of
``p / Z``) and one down (sums over ancestors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from taxosmooth._checks import check_positive, check_probability
from taxosmooth.distances import resolve_source
from taxosmooth.losses._frame import (RowTarget, as_rows, finish, fused, fused_factor, run_loss, scaled, sum_columns,
                                      times, upstream)
from taxosmooth.losses._module import TreeLoss, as_taxonomy, check_options, float_table, sharded
from taxosmooth.losses._rows import soft_cross_entropy
from taxosmooth.targets import resolve_scale
from taxosmooth.tree_ops import TreeTensors, path_log_masses, segment_sum, tree_tensors
from taxosmooth.tree_ops.paths import own_log_mass, own_mass, ring_segments
from taxosmooth.tree_ops.segments import expand_kernel, segment_sum_kernel

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from taxosmooth.taxonomy import Taxonomy

__all__ = ["HierarchicalSoftLabelLoss", "hierarchical_soft_label_loss", "soft_label_tables"]


# ----------------------------------------------------------------------------- the formula
def soft_label_rows(z: torch.Tensor, target: RowTarget, tree: TreeTensors, tables: torch.Tensor, mix: float,
                    coarse: bool, path_q: torch.Tensor | None = None) -> torch.Tensor:
    """Soft-label cross entropy of every row ``(M,)`` with the rows' factors applied (``z`` class order).

    ``tables`` ``(2, N)`` float64: ``e(u)`` of every node and ``1 / Z`` of every target id (:func:`soft_label_tables`);
    ``path_q`` ``(N, 2R - 1)``: the target mass on each segment of every target id's path, if tabulated.
    """
    e, inv_z = tables[0], tables[1]
    if target.kind == "prob":
        p = target.prob
        assert p is not None
        if target.class_weight is not None:
            p = p * target.class_weight.to(p.dtype)
        return times(target.scale, soft_cross_entropy(z, _mixture(p, tree, e, inv_z, mix)))
    ids = target.ids
    assert ids is not None
    zl = tree.to_leaf_order(z)
    depth = tree.num_rings - 1
    if target.columns and (coarse or not fused(z)):
        return sum_columns(lambda t: soft_label_rows(z, t, tree, tables, mix, coarse, path_q), target)
    lengths, q = _path_q(tree, ids, path_q, e, inv_z, mix)
    reduce = target.reduce and target.uniform is None
    if coarse and not fused(z):  # the classes under the target are one outcome: its log-mass, not a sum of logits
        log_p = torch.log_softmax(zl, 1)
        lp_seg = segment_sum(log_p, lengths).to(torch.float64)
        center = path_log_masses(tree, zl, lengths)[:, depth] - torch.logsumexp(zl, 1).to(torch.float64)
        lp_seg = torch.cat([lp_seg[:, :depth], center[:, None], lp_seg[:, depth + 1 :]], dim=1)
        rows = times(target.label, _cross_entropy(q, lp_seg))
    elif fused(z):
        extra = None
        if target.columns:  # further class columns of the same rows: their paths, one softmax for all
            more = [_path_q(tree, ids_k, path_q, e, inv_z, mix) for ids_k, _ in target.columns]
            extra = (torch.stack([m[0] for m in more]), torch.stack([m[1] for m in more]),
                     torch.stack([as_rows(f, z) for _, f in target.columns]))
        smoothing: tuple = (None, None)
        if target.uniform is not None:  # label smoothing's uniform part in the same pass
            c = tree.num_classes
            w = torch.full((1, c), 1.0 / c, dtype=torch.float64, device=z.device) if target.class_weight is None \
                else (target.class_weight / c).unsqueeze(0)
            smoothing = (tree.to_leaf_order(_mixture(w, tree, e, inv_z, mix)[0]), fused_factor(target.uniform))
        return _SoftLabelPaths.apply(z, lengths, q, fused_factor(target.label), target.reduce,
                                     *tree.leaf_permutation(), *smoothing, depth if coarse else None, extra)
    else:
        rows = times(target.label, _cross_entropy(q, segment_sum(torch.log_softmax(zl, 1), lengths)))
    if target.uniform is not None:
        c = tree.num_classes
        w = torch.full((1, c), 1.0 / c, dtype=torch.float64, device=z.device) if target.class_weight is None \
            else (target.class_weight / c).unsqueeze(0)
        rows = rows + times(target.uniform, soft_cross_entropy(z, _mixture(w, tree, e, inv_z, mix)[0]))
    return rows.to(z.dtype)


def _path_q(tree: TreeTensors, ids: torch.Tensor, path_q: torch.Tensor | None, e, inv_z, mix: float):
    """The segment lengths of target ids' paths and the target mass on each segment, ``(M, 2R - 1)`` both."""
    if path_q is not None:
        return tree.lengths_of(ids), path_q.index_select(0, ids)
    path, lengths = tree.paths(ids)
    return lengths, path_segments(tree, e, inv_z, mix, path, ids)


def path_segments(tree: TreeTensors, e: torch.Tensor, inv_z: torch.Tensor, mix: float, path: torch.Tensor,
                  ids: torch.Tensor) -> torch.Tensor:
    """The target mass on each segment of the targets' paths ``(M, 2R - 1)``: ``mix · e(a_r) / Z_t`` on ring
    ``r``, and ``1 - mix + mix / Z_t`` on the target's own subtree (one outcome)."""
    depth = tree.num_rings - 1
    iz = inv_z.index_select(0, ids)
    ring_q = mix * e.index_select(0, path[:, :depth].reshape(-1)).view(path.shape[0], depth) * iz[:, None]
    return ring_segments(torch.cat([ring_q, ((1.0 - mix) + mix * iz)[:, None]], dim=1), tree)


def _cross_entropy(q: torch.Tensor, lp_seg: torch.Tensor) -> torch.Tensor:
    """``-Σ_s q_s Σ_{j ∈ s} log p_j`` per row from the segments' sums of the log-softmax (``0 · log 0 = 0``)."""
    lp_seg = lp_seg.to(torch.float64)
    return -torch.where(q == 0, torch.zeros_like(lp_seg), q * lp_seg).sum(1)


class _SoftLabelPaths(torch.autograd.Function):
    """``factor · -Σ_s q_s Σ_{j ∈ s} log softmax(z)_j + ufactor · -Σ_j u_j log softmax(z)_j`` per row, its gradient
    written out: ``∂ℓ/∂z_j = softmax(z)_j (factor Σ_s q_s |s| + ufactor Σ u) - factor q_{s(j)} - ufactor u_j`` (one
    exponential, one expansion). ``u`` ``(C,)`` (leaf order, or ``None``): label smoothing's uniform part, the
    mixture row of the uniform target, with its own factor per row."""

    @staticmethod
    def forward(ctx, z, lengths, q, factor, reduce, to_leaf, to_class, u, ufactor, center, extra):
        zl = z if to_leaf is None else z.index_select(1, to_leaf)
        log_p = torch.log_softmax(zl, 1)
        lp_seg = segment_sum_kernel(log_p, lengths).to(torch.float64)
        e = inv_own = None
        if center is not None:  # a coarse label: its classes are one outcome, their log-mass log P(v)
            e, own, top = own_mass(zl, lengths, center)
            own = own.to(torch.float64)
            lse = zl.amax(1) - log_p.amax(1)  # log-sum-exp from the log-softmax at the row's best logit
            lp_seg[:, center] = own.log() + top.to(torch.float64) - lse.to(torch.float64)
            inv_own = torch.where(own > 0, 1.0 / own, 0.0)
        rows = _cross_entropy(q, lp_seg)
        if u is not None or extra is not None:
            rows = scaled(rows, factor)
        if u is not None:  # 0 · log 0 = 0 (nansum), u_j · log 0 = -inf: the row is +inf
            rows = rows + scaled(-torch.nansum(log_p * u.to(log_p.dtype), 1).to(torch.float64), ufactor)
        if extra is not None:  # further class columns of the same rows (a Mixup row's classes): one softmax
            more_lengths, more_q, more_factor = extra
            for k in range(more_lengths.shape[0]):
                rows = rows + scaled(_cross_entropy(more_q[k], segment_sum_kernel(log_p, more_lengths[k])),
                                     more_factor[k])
        ctx.save_for_backward(z, log_p, lengths, q, factor if isinstance(factor, torch.Tensor) else None, to_leaf,
                              to_class, u, ufactor if isinstance(ufactor, torch.Tensor) else None, e, inv_own,
                              *(extra or ()))
        ctx.factor, ctx.reduce, ctx.center = (factor if isinstance(factor, float) else None), reduce, center
        ctx.ufactor = ufactor if isinstance(ufactor, float) else None
        if u is not None or extra is not None:
            return (rows.sum() if reduce else rows).to(z.dtype)
        return finish(rows, factor, reduce, z.dtype)

    @staticmethod
    def backward(ctx, grad):
        z, log_p, lengths, q, factor, to_leaf, to_class, u, ufactor, e, inv_own, *extra = ctx.saved_tensors
        factor = ctx.factor if factor is None else factor
        ufactor = ctx.ufactor if ufactor is None else ufactor
        center = ctx.center
        none = (None,) * 10
        if torch.is_grad_enabled():  # a double backward: differentiate the formula
            with torch.enable_grad():
                zl = z if to_leaf is None else z.index_select(1, to_leaf)
                lp = torch.log_softmax(zl, 1)
                lp_seg = segment_sum(lp, lengths).to(torch.float64)
                if center is not None:
                    own = own_log_mass(zl, lengths, center) - torch.logsumexp(zl, 1).to(torch.float64)
                    lp_seg = torch.cat([lp_seg[:, :center], own[:, None], lp_seg[:, center + 1:]], dim=1)
                rows = times(factor, _cross_entropy(q, lp_seg))
                if u is not None:
                    rows = rows + times(ufactor, -torch.nansum(lp * u.to(lp.dtype), 1).to(torch.float64))
                for k in range(extra[0].shape[0] if extra else 0):
                    rows = rows + times(extra[2][k], _cross_entropy(extra[1][k], segment_sum(lp, extra[0][k])))
                out = (rows.sum() if ctx.reduce else rows).to(z.dtype)
                (gz,) = torch.autograd.grad(out, z, grad, create_graph=True)
            return (gz,) + none
        # a class's target row sums to 1: Σ_s q_s |s| = 1 - mix + mix (1 + Σ_r |ring r| e(a_r)) / Z_t
        gw = upstream(grad, factor, ctx.reduce, z.shape[0])
        total = gw
        if u is not None:
            gu = upstream(grad, ufactor, ctx.reduce, z.shape[0])
            total = gw + gu * u.sum()
        more = [upstream(grad, extra[2][k], ctx.reduce, z.shape[0]) for k in range(extra[0].shape[0])] if extra else []
        for gk in more:
            total = total + gk
        g = torch.exp(log_p).mul_(total.to(log_p.dtype)[:, None])
        qg = q * gw[:, None]
        if center is not None:  # -q_v ∂log P(v)/∂z_j = -q_v e_j / s on v's segment (its p_j part is in total)
            own = torch.zeros_like(qg)
            own[:, center] = qg[:, center] * inv_own
            qg[:, center] = 0.0
            g.sub_(expand_kernel(own.to(g.dtype), lengths, g.shape[1]).mul_(e))
        g.sub_(expand_kernel(qg.to(g.dtype), lengths, g.shape[1]))
        for k, gk in enumerate(more):
            g.sub_(expand_kernel((extra[1][k] * gk[:, None]).to(g.dtype), extra[0][k], g.shape[1]))
        if u is not None:
            g.addcmul_(gu.to(g.dtype)[:, None], u.to(g.dtype)[None, :], value=-1.0)
        return (g if to_class is None else g.index_select(1, to_class),) + none


def _mixture(p: torch.Tensor, tree: TreeTensors, e: torch.Tensor, inv_z: torch.Tensor, mix: float) -> torch.Tensor:
    """``Σ_c p_c q_c`` for rows ``p`` ``(M, C)`` (class order, not necessarily normalised): structured.

    ``q_c(j) = Σ_{u ancestor of j and of c} (e(u) - e(parent(u))) / Z_c``: subtree sums of ``p / Z``,
    times the steps of ``e``, summed over every class's ancestors.
    """
    step = e - e.index_select(0, tree.parent) * (torch.arange(e.shape[0], device=e.device) > 0)
    spread = tree.lca_expectation(p, step * mix, scale=inv_z[: tree.num_classes])
    return spread if mix == 1.0 else spread + (1.0 - mix) * p


# ----------------------------------------------------------------------------- the tables
def soft_label_tables(taxonomy: Taxonomy, beta: float, distance: str | None = None,
                      scale: str | float | None = "max") -> np.ndarray:
    """``(2, N)`` float64: ``e(u) = exp(-β d(u) / s)`` of every node (node-id order) and ``1 / Z_v`` of every
    target id, ``Z_v = 1 + Σ_{j not under v} e(LCA(v, j))`` (a class: the row sum of ``exp(-β d(t, ·) / s)``)."""
    beta = check_positive(beta, "beta", allow_zero=True)
    src = resolve_source(taxonomy, distance, where="HierarchicalSoftLabelLoss")
    if not src.structured:
        raise ValueError(
            f"HierarchicalSoftLabelLoss: distance {src.distance!r} is not a function of the LCA node, so it has "
            "no structured form here; use SoftTargetCrossEntropy(soft_targets(taxonomy, beta, "
            f"distance={src.distance!r})) (a dense (C, C) matrix)"
        )
    assert src.node_table is not None
    s = resolve_scale(scale, src.max_distance())
    with np.errstate(over="ignore"):
        e = np.exp(-beta * (src.node_table / s))  # <= 1, and 1 at the leaves (d = 0)
    c = taxonomy.compiled
    size = (c.leaf_hi - c.leaf_lo).astype(np.float64)
    # F(v) = Σ over the strict ancestors a of v of |ring of a| e(a), one level at a time from the root
    f = np.zeros(c.num_nodes)
    for d in range(1, len(c.levels)):
        lv = c.levels[d]
        par = c.parent[lv]
        f[lv] = f[par] + (size[par] - size[lv]) * e[par]
    inv_z = 1.0 / (1.0 + f)
    return np.stack([e, inv_z[c.target_node]])


# ----------------------------------------------------------------------------- the functional core
def path_q_table(tree: TreeTensors, tables: torch.Tensor, mix: float) -> torch.Tensor | None:
    """:func:`path_segments` of every target id ``(N, 2R - 1)`` (``None`` where paths are searched)."""
    return tree.per_target(lambda path, ids: path_segments(tree, tables[0], tables[1], mix, path, ids))


def _run(input, target, tree: TreeTensors, tables, mix, path_q, weight, ignore_index, reduction, label_smoothing,
         coarse_labels: bool) -> torch.Tensor:
    num_targets = tree.num_nodes if coarse_labels else tree.num_classes
    return run_loss(lambda z, t: soft_label_rows(z, t, tree, tables, mix, coarse_labels, path_q), input, target,
                    name="HierarchicalSoftLabelLoss", num_classes=tree.num_classes, num_targets=num_targets,
                    num_nodes=tree.num_nodes, weight=weight, ignore_index=ignore_index, reduction=reduction,
                    label_smoothing=label_smoothing, target_weights=tree.target_means if coarse_labels else None,
                    linear_in_target=True, shared_columns=True)


def _mix(mix) -> float:
    return 1.0 if mix is None else check_probability(mix, "mix")


def hierarchical_soft_label_loss(input: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, beta: float,
                                 distance: str | None = None, scale: str | float | None = "max",
                                 mix: float | None = None, weight: ArrayLike | None = None,
                                 ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                                 coarse_labels: bool = False) -> torch.Tensor:
    """Structured soft-label cross entropy; see :class:`HierarchicalSoftLabelLoss`.

    The taxonomy's tensors and tables are built once per (taxonomy, options, device) and kept.
    """
    tax = as_taxonomy(taxonomy, "hierarchical_soft_label_loss")
    if not isinstance(coarse_labels, bool):
        raise TypeError(f"coarse_labels must be a bool, got {coarse_labels!r}")
    tree = tree_tensors(tax, input.device if isinstance(input, torch.Tensor) else None)
    weight, ignore_index, reduction, label_smoothing = check_options(
        "hierarchical_soft_label_loss", tax.num_classes, tax.num_nodes if coarse_labels else tax.num_classes,
        weight, ignore_index, reduction, label_smoothing)
    beta = check_positive(beta, "beta", allow_zero=True)
    if scale is not None and not isinstance(scale, str):
        scale = check_positive(scale, "scale")
    tables = tree.derived(("soft_labels", beta, distance, scale),
                          lambda: float_table(soft_label_tables(tax, beta, distance, scale)))
    m = _mix(mix)
    path_q = tree.derived(("soft_labels paths", beta, distance, scale, m), lambda: path_q_table(tree, tables, m))
    return _run(input, target, tree, tables, m, path_q, weight, ignore_index, reduction, label_smoothing,
                coarse_labels)


# ----------------------------------------------------------------------------- the module
class HierarchicalSoftLabelLoss(TreeLoss):
    r"""Soft-label cross entropy from tree distances, computed structurally.

    .. math::

        \ell(z, t) = -\sum_j q_t(j) \log \operatorname{softmax}(z)_j, \qquad
        q_t(j) = \frac{\exp(-\beta\, d(t, j) / s)}{\sum_k \exp(-\beta\, d(t, k) / s)}

    optionally mixed with the label, ``(1 - mix)·onehot + mix·q`` (Bertinetto et al.,
    "Making Better Mistakes", CVPR 2020, Sec. 3.2 "soft labels"). The values
    equal :class:`SoftTargetCrossEntropy` with
    :func:`~taxosmooth.soft_targets` ``(taxonomy, beta, distance, scale, mix)``.

    Targets:

    * a **class** ``t``: the formula above;
    * **probabilities** ``p`` (Mixup): ``Σ_c p_c ℓ(z, c)`` = cross entropy
      against ``Σ_c p_c q_c``, built structurally (subtree sums of ``p``);
    * a **coarse label** ``v`` (``coarse_labels=True``): the classes under ``v``
      are one outcome at distance 0, the others at ``d(v, j) = d(LCA(v, j))``:
      ``ℓ = -q_v(v) log P(v) - Σ_{j ∉ v} q_v(j) log softmax(z)_j`` with
      ``P(v) = Σ_{j ∈ v} softmax(z)_j``, so the split of the mass under ``v``
      does not matter; with large ``β`` it is the partial-label likelihood
      ``-log P(v)`` (Cour, Sapp and Taskar, "Learning from Partial Labels",
      JMLR 2011).

    ``mix`` and ``label_smoothing`` are two different mixtures: ``mix`` blends the
    label with the hierarchy's soft targets (the paper's soft labels), and
    ``label_smoothing`` blends the target with the uniform distribution first,
    as :func:`torch.nn.functional.cross_entropy` does.

    How: ``q_t`` is constant on each ring of ``t`` (the classes with one LCA), so
    the loss is a log-sum-exp minus ``q`` times one segment sum of the logits
    per batch: O(batch × classes), never a ``(C, C)`` tensor. ``-inf`` logits
    (masked classes) are allowed: a class without target mass contributes
    ``0·log 0 = 0``.

    Parameters
    ----------
    taxonomy : Taxonomy
    beta : float
        Inverse temperature, ``>= 0`` (0: uniform targets; large: one-hot, i.e.
        plain cross entropy). :func:`~taxosmooth.beta_for_mass` picks it from
        the mass wanted on the true class.
    distance : {"lca_height", "lca_depth_complement"}, optional
        Default ``"lca_height"``. ``"path_length"`` is not a function of the LCA
        node: use ``SoftTargetCrossEntropy(soft_targets(taxonomy, beta, "path_length"))``.
    scale : "max", None or float, default "max"
        Distances are divided by ``s``: their maximum over class pairs (as the
        reference code does), 1, or the number given.
    mix : float in [0, 1], optional
        Weight of the soft targets against the one-hot label (``None``: 1, the
        soft targets alone).
    weight, ignore_index, reduction, label_smoothing, coarse_labels
        As in :mod:`taxosmooth.losses`.

    Shape
    -----
    - input: ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``
    - target: ``(N)``, ``(N, d1, ...)`` or ``()`` ids, or probabilities with the input's shape
    - output: scalar, or the target's shape with ``reduction="none"``

    Examples
    --------
    >>> import torch, taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> loss = ts.HierarchicalSoftLabelLoss(tax, beta=4.0)
    >>> z = torch.tensor([[3.0, 2.0, -1.0, -1.0]])
    >>> bool(loss(z, torch.tensor([0])) < loss(z, torch.tensor([2])))  # horse ≈ zebra is a small mistake
    True
    """

    tables: torch.Tensor  # buffers
    path_q: torch.Tensor | None

    def __init__(self, taxonomy: Taxonomy, beta: float, distance: str | None = None,
                 scale: str | float | None = "max", mix: float | None = None, weight: ArrayLike | None = None,
                 ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                 coarse_labels: bool = False, process_group=None,
                 shard_slack: float = 0.02) -> None:
        tax = as_taxonomy(taxonomy, "HierarchicalSoftLabelLoss")
        tables = soft_label_tables(tax, beta, distance, scale)
        super().__init__(tax.num_classes, weight, ignore_index, reduction, label_smoothing, coarse_labels,
                         tax.num_nodes, tax)
        self.beta, self.distance, self.scale = float(beta), resolve_source(tax, distance).distance, scale
        self.mix = mix if mix is None else _mix(mix)
        self.tree = TreeTensors(tax)
        self.register_buffer("tables", float_table(tables), persistent=False)
        self.register_buffer("path_q", path_q_table(self.tree, self.tables, _mix(self.mix)), persistent=False)
        self.shard(process_group, tax, shard_slack)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return (f"beta={self.beta}, distance={self.distance!r}, scale={self.scale!r}, mix={self.mix}"
                + (", " + base if base else ""))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.process_group is not None:
            return sharded(self, input, target)
        return _run(input, target, self.tree, self.tables, _mix(self.mix), self.path_q, self.weight,
                    self.ignore_index, self.reduction, self.label_smoothing, self.coarse_labels)
