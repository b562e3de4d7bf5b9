r"""Exact Wasserstein-1 distance under the tree metric (plus cross entropy).

.. math::

    W_1(p, q) = \sum_{v \ne r} w(v)\, \lvert P(v) - Q(v) \rvert \;(+\; \gamma \cdot \mathrm{CE}(z, q))

``p = softmax(z)``; ``P(v)``, ``Q(v)`` the masses of ``p`` and of the target under ``v``; ``w(v)``
the length of the edge above ``v``. On a tree this closed form is the optimal-transport distance for
the path metric (Evans & Matsen 2012; Le et al., NeurIPS 2019). For a **class** ``t`` the plan moves
everything to ``t``: ``W_1 = Σ_j p_j d(t, j) = Σ_j p_j wd(j) + Σ_r P(ring r)(wd(t) - 2 wd(a_r))`` with
``wd`` the weighted depth: one segment sum per batch. A **coarse label** ``v``: the distance to the
nearest distribution on the classes under ``v``, ``Σ_{j ∉ v} p_j (d(v, j) + h_min(v))``. **Probability**
rows and ``label_smoothing`` take the exact ``W_1`` to the target (not linear in it): subtree sums of both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from taxosmooth._checks import check_positive
from taxosmooth.losses._frame import RowTarget, fused, fused_factor, run_loss, times
from taxosmooth.losses._module import TreeLoss, as_taxonomy, check_options, float_table, sharded
from taxosmooth.losses._rows import soft_cross_entropy
from taxosmooth.tree_ops import TreeTensors, nodes, segment_sum, tree_tensors
from taxosmooth.tree_ops.paths import ring_segments
from taxosmooth.losses.expected_cost import _RiskPaths, target_log_mass

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from taxosmooth.taxonomy import Taxonomy

__all__ = ["TreeWassersteinLoss", "tree_wasserstein_loss", "wasserstein_tables"]


# ----------------------------------------------------------------------------- the formula
def wasserstein_rows(z: torch.Tensor, target: RowTarget, tree: TreeTensors, tables: torch.Tensor, gamma: float,
                     coarse: bool, path_wd: torch.Tensor | None = None,
                     leaf_wd: torch.Tensor | None = None) -> torch.Tensor:
    """``W_1`` (+ ``γ`` cross entropy) of every row ``(M,)``, the rows' factors applied (``z`` class order).

    ``tables`` ``(3, N)`` float64 (:func:`wasserstein_tables`): the weighted depth ``wd``, ``wd`` of the
    shallowest class under every node (``reach``), and the edge lengths ``w``; ``path_wd`` ``(N, 2R - 1)``:
    ``wd(t) - 2 wd(a_r)`` on every segment of every target id's path, if tabulated; ``leaf_wd`` ``(C,)`` the
    classes' weighted depths in leaf order.
    """
    c = target.num_classes
    ids = target.ids
    if target.kind != "prob" and target.uniform is None and not coarse and fused(z):
        # to a class: Σ_j p_j (wd(t) - 2 wd(LCA(t, j)) + wd(j)), the first two constant on each ring of t
        assert ids is not None
        if path_wd is not None:
            lengths, per_segment = tree.lengths_of(ids), path_wd.index_select(0, ids)
        else:
            path, lengths = tree.paths(ids)
            per_segment = distance_segments(tree, tables, path)
        if leaf_wd is None:
            leaf_wd = tables[0].index_select(0, tree.leaf_node_ids)
        return _RiskPaths.apply(z, lengths, per_segment, tree.class_position.index_select(0, ids), leaf_wd,
                                float(gamma), fused_factor(target.label), target.reduce, *tree.leaf_permutation(),
                                None, None, None, None, None)
    log_p = torch.log_softmax(z, 1)
    p = log_p.exp()
    if target.kind == "prob":
        q = target.prob
        assert q is not None
        mass = q.sum(1) if target.class_weight is None else (q * target.class_weight.to(q.dtype)).sum(1)
        rows = mass.to(torch.float64) * _w1(p, q, tree, tables[2])
        if gamma:
            qw = q if target.class_weight is None else q * target.class_weight.to(q.dtype)
            rows = rows + gamma * soft_cross_entropy(z, qw)
        return times(target.scale, rows).to(z.dtype)
    assert ids is not None
    zl = tree.to_leaf_order(z)
    if target.uniform is None or coarse:
        rows = _distance_to_target(p, ids, tree, tables)
        if gamma:
            rows = rows + gamma * -target_log_mass(z, zl, log_p, ids, tree, coarse)
        if target.uniform is None:
            return times(target.label, rows).to(z.dtype)
    # label smoothing: the exact W1 to (1 - ε) onehot(t) + ε / C for a class (weighted by the target's
    # expected weight), (1 - ε) · the coarse distance + ε · W1 to uniform for a coarse label; cross
    # entropy as for every loss
    eps = target.eps
    w = torch.full((c,), 1.0 / c, dtype=torch.float64, device=z.device) if target.class_weight is None \
        else target.class_weight / c
    mean_w = float(c) * w.mean() if target.class_weight is not None else 1.0
    ce_u = gamma * soft_cross_entropy(z, w) if gamma else torch.zeros_like(p[:, 0])
    q = torch.full_like(p, eps / c)
    pos = ids.clamp_max(c - 1)[:, None]
    q = q.scatter_add(1, pos, torch.full(pos.shape, 1.0 - eps, dtype=q.dtype, device=q.device))
    smoothed = times(target.label + target.uniform * mean_w, _w1(p, q, tree, tables[2]))
    if gamma:
        smoothed = smoothed + times(target.label, gamma * -target_log_mass(z, zl, log_p, ids.clamp_max(c - 1), tree,
                                                                                   False))
        smoothed = smoothed + times(target.uniform, ce_u)
    if not coarse:
        return smoothed.to(z.dtype)
    uniform = torch.full((1, c), 1.0 / c, dtype=p.dtype, device=z.device).expand_as(p)
    coarse_rows = times(target.label, rows) + times(target.uniform * mean_w, _w1(p, uniform, tree, tables[2]))
    if gamma:
        coarse_rows = coarse_rows + times(target.uniform, ce_u)
    return torch.where(ids >= c, coarse_rows, smoothed).to(z.dtype)


def distance_segments(tree: TreeTensors, tables: torch.Tensor, path: torch.Tensor) -> torch.Tensor:
    """``wd(t) - 2 wd(a_r)`` on every segment of targets' paths ``(M, 2R - 1)`` (ring ``r``; the last ring's node
    is the target itself)."""
    ring_wd = tables[0].index_select(0, path.reshape(-1)).view(path.shape)
    return ring_segments(ring_wd[:, -1:] - 2.0 * ring_wd, tree)


def _distance_to_target(p: torch.Tensor, ids: torch.Tensor, tree: TreeTensors, tables: torch.Tensor) -> torch.Tensor:
    """``Σ_{j ∉ v} p_j (wd(j) + reach(v) - 2 wd(LCA(v, j)))`` per row (a class: ``Σ_j p_j d(t, j)``), float64."""
    wd, reach = tables[0], tables[1]
    path, lengths = tree.paths(ids)
    depth = tree.num_rings - 1
    pl = tree.to_leaf_order(p)
    leaf_wd = wd.index_select(0, tree.class_node).index_select(0, tree.position_class).to(p.dtype)
    ring_wd = wd.index_select(0, path[:, :depth].reshape(-1)).view(path.shape[0], depth)
    r = reach.index_select(0, path[:, depth])
    per_ring = torch.cat([r[:, None] - 2.0 * ring_wd, torch.zeros_like(r[:, None])], dim=1)
    outside = torch.ones(2 * depth + 1, dtype=torch.float64, device=p.device)
    outside[depth] = 0.0  # nothing under the target costs anything
    mass = segment_sum(pl, lengths).to(torch.float64)
    mass_wd = segment_sum(pl * leaf_wd, lengths).to(torch.float64)
    return (ring_segments(per_ring, tree) * mass + mass_wd * outside).sum(1)


def _w1(p: torch.Tensor, q: torch.Tensor, tree: TreeTensors, edge: torch.Tensor) -> torch.Tensor:
    """``Σ_v w(v) |P(v) - Q(v)|`` per row for rows ``p``, ``q`` ``(M, C)`` (class order; ``q`` may be ``(1, C)``), in
    ``p``'s dtype: one pass up of ``p - q`` (level order)."""
    if fused(p) and not torch.compiler.is_compiling():
        return _TreeW1.apply(p, q, tree.class_level_pos, tree.level_parent_local, tree.level_offsets,
                             nodes.column(tree, edge, p.dtype))
    return _w1_formula(p, q, tree, edge)


def _w1_formula(p: torch.Tensor, q: torch.Tensor, tree, edge: torch.Tensor) -> torch.Tensor:
    diff = nodes.up(tree, nodes.place(tree, p - q.to(p.dtype)), overwrite=True)
    return (diff.abs() * nodes.column(tree, edge, p.dtype)).sum(0)


class _TreeW1(torch.autograd.Function):
    """:func:`_w1` in one buffer, its gradient written out: ``∂/∂p_j = Σ_{v ancestor of j} w(v) sign(P(v) - Q(v))``
    (one pass down of the signs) and the opposite for ``q``. A second derivative differentiates the formula."""

    @staticmethod
    def forward(ctx, p, q, class_level_pos, parent, offsets, edge):
        lev = p.new_zeros((edge.shape[0], p.shape[0]))
        lev.index_copy_(0, class_level_pos, torch.sub(p.t(), q.t().to(p.dtype), out=p.new_empty(p.shape[::-1])))
        nodes._up_levels(lev, parent, offsets)
        signed = torch.sign(lev).mul_(edge)
        rows = lev.abs_().mul_(edge).sum(0)  # torch's cascaded sum: float32 keeps its digits over 10⁵ nodes
        ctx.save_for_backward(p, q, class_level_pos, parent, edge, signed)
        ctx.offsets = offsets
        return rows

    @staticmethod
    def backward(ctx, grad):
        p, q, class_level_pos, parent, edge, signed = ctx.saved_tensors
        none = (None,) * 4
        if torch.is_grad_enabled():  # a double backward: differentiate the formula
            index = nodes._LevelIndex(class_level_pos, parent, None, ctx.offsets)
            with torch.enable_grad():
                diff = nodes.up(index, nodes.place(index, p - q.to(p.dtype)))
                rows = (diff.abs() * edge).sum(0)
                wrt = [t for t in (p, q) if t.requires_grad]
                grads = iter(torch.autograd.grad(rows, wrt, grad, create_graph=True))
            return (next(grads) if p.requires_grad else None, next(grads) if q.requires_grad else None) + none
        g = nodes._down_levels(signed * grad, parent, ctx.offsets).index_select(0, class_level_pos).t()
        gq = None
        if ctx.needs_input_grad[1]:
            gq = -g if q.shape[0] == g.shape[0] else -g.sum(0, keepdim=True)
            gq = gq.to(q.dtype)
        return (g if ctx.needs_input_grad[0] else None, gq) + none


# ----------------------------------------------------------------------------- the tables
def wasserstein_tables(taxonomy: Taxonomy) -> np.ndarray:
    """``(3, N)`` float64: the weighted depth of every node, that of the shallowest class under it, and the
    length of the edge above it (0 at the root)."""
    c = taxonomy.compiled
    wd = c.weighted_depth
    # the shallowest class under v: the minimum over its children's, level by level from the deepest
    reach = np.where(c.is_leaf, wd, np.inf)
    for d in range(len(c.levels) - 1, 0, -1):
        lv = c.levels[d]
        np.minimum.at(reach, c.parent[lv], reach[lv])
    edge = c.weight.copy()
    edge[0] = 0.0
    return np.stack([wd, reach, edge])


# ----------------------------------------------------------------------------- the functional core
def path_wd_table(tree: TreeTensors, tables: torch.Tensor) -> torch.Tensor | None:
    """:func:`distance_segments` of every target id (``None`` where paths are searched)."""
    return tree.per_target(lambda path, ids: distance_segments(tree, tables, path))


def _run(input, target, tree: TreeTensors, tables, path_wd, leaf_wd, gamma, weight, ignore_index, reduction,
         label_smoothing, coarse_labels: bool) -> torch.Tensor:
    num_targets = tree.num_nodes if coarse_labels else tree.num_classes
    return run_loss(lambda z, t: wasserstein_rows(z, t, tree, tables, gamma, coarse_labels, path_wd, leaf_wd), input,
                    target, name="TreeWassersteinLoss", num_classes=tree.num_classes, num_targets=num_targets,
                    num_nodes=tree.num_nodes, weight=weight, ignore_index=ignore_index, reduction=reduction,
                    label_smoothing=label_smoothing, target_weights=tree.target_means if coarse_labels else None)


def tree_wasserstein_loss(input: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, ce_weight: float = 1.0,
                          weight: ArrayLike | None = None, ignore_index: int = -100, reduction: str = "mean",
                          label_smoothing: float = 0.0, coarse_labels: bool = False) -> torch.Tensor:
    """Exact tree Wasserstein-1 (plus cross entropy); see :class:`TreeWassersteinLoss`."""
    tax = as_taxonomy(taxonomy, "tree_wasserstein_loss")
    if not isinstance(coarse_labels, bool):
        raise TypeError(f"coarse_labels must be a bool, got {coarse_labels!r}")
    tree = tree_tensors(tax, input.device if isinstance(input, torch.Tensor) else None)
    weight, ignore_index, reduction, label_smoothing = check_options(
        "tree_wasserstein_loss", tax.num_classes, tax.num_nodes if coarse_labels else tax.num_classes, weight,
        ignore_index, reduction, label_smoothing)
    gamma = check_positive(ce_weight, "ce_weight", allow_zero=True)
    tables = tree.derived(("wasserstein",), lambda: float_table(wasserstein_tables(tax)))
    path_wd = tree.derived(("wasserstein paths",), lambda: path_wd_table(tree, tables))
    leaf_wd = tree.derived(("wasserstein leaves",), lambda: tables[0].index_select(0, tree.leaf_node_ids))
    return _run(input, target, tree, tables, path_wd, leaf_wd, gamma, weight, ignore_index, reduction,
                label_smoothing, coarse_labels)


# ----------------------------------------------------------------------------- the module
class TreeWassersteinLoss(TreeLoss):
    r"""Wasserstein-1 distance between the prediction and the target under the tree metric.

    .. math::

        W_1(p, q) = \sum_{v \ne r} w(v)\, \lvert P(v) - Q(v) \rvert
        \;(+\; \gamma \cdot \mathrm{CE}(z, q))

    with ``p = softmax(z)``, ``P(v)`` / ``Q(v)`` the mass of ``p`` / of the
    target under node ``v``, ``w(v)`` the length of the edge above ``v`` (1
    unless the taxonomy is weighted). On a tree this closed form *is* the
    optimal-transport distance for the path metric (Evans & Matsen 2012;
    Le et al., "Tree-Sliced Variants of Wasserstein Distances", NeurIPS 2019),
    so no solver is needed; the test suite checks it against a linear program.

    Targets:

    * a **class** ``t``: the plan moves all of ``p`` to ``t``:
      ``W_1 = Σ_j p_j d(t, j)`` with the (weighted) path length ``d``;
    * **probabilities** ``q`` (Mixup; also class targets with
      ``label_smoothing``): the exact ``W_1(p, q)`` above (not linear in ``q``);
    * a **coarse label** ``v``: the distance to the nearest distribution on
      the classes under ``v`` — mass inside ``v`` stays, the rest travels to
      ``v`` and down to its shallowest class —
      ``Σ_{j ∉ v} p_j (d(v, j) + h_min(v))``, ``d(v, j)`` the path length from
      node ``v`` and ``h_min(v)`` the (weighted) depth of the shallowest class
      below ``v``; with ``label_smoothing`` it is ``(1 - ε)·`` that
      ``+ ε·W_1(p, uniform)``.

    With class weights, a sample counts the target's expected class weight
    (``weight[t]`` for a class).

    How: for a class or coarse label, the softmax's mass on each ring of the
    target (one segment sum per batch), O(batch × classes); probability rows
    and label smoothing take one pass of subtree sums of both distributions,
    O(batch × nodes).

    Parameters
    ----------
    taxonomy : Taxonomy
    ce_weight : float, default 1.0
        The cross-entropy term ``γ``, as in :class:`ExpectedCostLoss` (both
        cost losses add it by default: alone they can collapse onto a
        cheap-on-average class); 0 gives the pure distance.
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
    >>> ts.TreeWassersteinLoss(tax, ce_weight=0.0)(torch.zeros(1, 4), torch.tensor([0])).item()  # (0+2+4+4)/4
    2.5
    """

    tables: torch.Tensor  # buffers
    path_wd: torch.Tensor | None
    leaf_wd: torch.Tensor

    def __init__(self, taxonomy: Taxonomy, ce_weight: float = 1.0, weight: ArrayLike | None = None,
                 ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                 coarse_labels: bool = False, process_group=None,
                 shard_slack: float = 0.02) -> None:
        tax = as_taxonomy(taxonomy, "TreeWassersteinLoss")
        super().__init__(tax.num_classes, weight, ignore_index, reduction, label_smoothing, coarse_labels,
                         tax.num_nodes, tax)
        self.ce_weight = check_positive(ce_weight, "ce_weight", allow_zero=True)
        self.tree = TreeTensors(tax)
        self.register_buffer("tables", float_table(wasserstein_tables(tax)), persistent=False)
        self.register_buffer("path_wd", path_wd_table(self.tree, self.tables), persistent=False)
        # the classes' weighted depths in leaf order, a buffer: a gather in the step would be fused into the
        # compiled loop over every (sample, class)
        self.register_buffer("leaf_wd", self.tables[0].index_select(0, self.tree.leaf_node_ids), persistent=False)
        self.shard(process_group, tax, shard_slack)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return f"ce_weight={self.ce_weight}" + (", " + base if base else "")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.process_group is not None:
            return sharded(self, input, target)
        return _run(input, target, self.tree, self.tables, self.path_wd, self.leaf_wd, self.ce_weight, self.weight,
                    self.ignore_index, self.reduction, self.label_smoothing, self.coarse_labels)
