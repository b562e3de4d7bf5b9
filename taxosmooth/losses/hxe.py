r"""Hierarchical cross entropy (HXE): Bertinetto et al., "Making Better Mistakes", CVPR 2020, Sec. 3.1.

.. math::

    \ell(z, t) = -\sum_{l=0}^{H-1} \lambda(C^{(l)}) \log \frac{P(C^{(l)})}{P(C^{(l+1)})},
    \qquad P(v) = \sum_{j \text{ under } v} \operatorname{softmax}(z)_j

along the path ``C^(0) = t, …, C^(H) = root``. With the path's nodes ``a_d`` by depth
(``a_0`` the root) the sum telescopes to ``ℓ = Σ_{d ≥ 1} c_d (log P(root) - log P(a_d))``
with ``c_d = λ(a_d) - λ(a_{d+1})`` (``λ(a_{H+1}) = 0``): one log-mass per ancestor of the
target, computed exactly in log space (:func:`~taxosmooth.tree_ops.path_log_masses`).

Targets: a **probability** row ``p`` (or the uniform part of ``label_smoothing``) gives
``Σ_c p_c ℓ(z, c) = -Σ_{u ≠ root} a(u) log P(u)`` with ``a(u) = λ(u) T(u) - Σ_{children c}
λ(c) T(c)`` and ``T(u)`` the target mass under ``u``: subtree sums of ``p`` and the
log-masses of every node. A **coarse label** ``v`` starts the path at ``v``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import math

import numpy as np
import torch
import torch.nn.functional as F

from taxosmooth._checks import check_positive
from taxosmooth.losses._frame import RowTarget, finish, fused, fused_factor, run_loss, times, upstream
from taxosmooth.losses._module import TreeLoss, as_taxonomy, check_options, float_table, sharded
from taxosmooth.tree_ops import TreeTensors, nodes, path_log_masses, tree_tensors
from taxosmooth.tree_ops.tables import chain_top
from taxosmooth.tree_ops.paths import NEG, log_mass_gradient
from taxosmooth.tree_ops.segments import expand_kernel, host_layout, segment_max_kernel, segment_sum_kernel

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from taxosmooth.taxonomy import Taxonomy

__all__ = ["HXELoss", "hxe_loss", "hxe_node_weights", "WEIGHTINGS"]

WEIGHTINGS = ("depth", "height")


# ----------------------------------------------------------------------------- the formula
def hxe_rows(z: torch.Tensor, target: RowTarget, tree: TreeTensors, node_lambda: torch.Tensor,
             path_steps: torch.Tensor | None = None) -> torch.Tensor:
    """HXE of every row ``(M,)`` with the rows' factors applied; ``z`` ``(M, C)`` logits in class order.

    ``node_lambda`` ``(2, N)`` float64 (:func:`hxe_tables`): ``λ(u)`` of every node, and ``λ(top(u))``, the weight
    at the top of the node's chain of single-child ancestors (a path skips single-child nodes, whose
    terms vanish). ``path_steps`` ``(N, R)``: the path coefficients of every target id (:func:`path_steps_of`),
    if tabulated.
    """
    if target.kind == "prob":
        p = target.prob
        assert p is not None
        if target.class_weight is not None:
            p = p * target.class_weight.to(p.dtype)
        return times(target.scale, _node_terms(z, p, tree, node_lambda[0])).to(z.dtype)
    assert target.ids is not None
    reduce = target.reduce and target.uniform is None
    rows = _path_terms(z, target.ids, tree, node_lambda[1], path_steps, target.label, reduce)
    if target.uniform is not None:
        c = tree.num_classes
        w = torch.full((1, c), 1.0 / c, dtype=torch.float64, device=z.device) if target.class_weight is None \
            else (target.class_weight / c).unsqueeze(0)
        rows = rows + times(target.uniform, _node_terms(z, w, tree, node_lambda[0]))
    return rows.to(z.dtype)


def path_steps_of(lam: torch.Tensor) -> torch.Tensor:
    """The coefficients ``c`` of the path's log-masses, target first: ``ℓ = Σ_k λ_k (L_{k-1} - L_k) = Σ_d c_d L_d``
    with ``c_d = λ_{d+1} - λ_d`` (``λ_0 = λ_R = 0``), ``(M, R)`` → ``(M, R)`` with column ``k`` holding ``c_{R-1-k}``.

    ``lam`` ``(M, R)``: ``λ(top(a_k))`` along the path, root first (column 0 is not used)."""
    step = lam[:, 1:]
    return (F.pad(step, (0, 1)) - F.pad(step, (1, 0))).flip(1)


def _path_lambda(steps: torch.Tensor) -> torch.Tensor:
    """:func:`path_steps_of`'s inverse: ``λ`` along the path, root first (column 0 is 0)."""
    return F.pad(steps.flip(1).cumsum(1), (1, 0))[:, :-1]


def _path_terms(z: torch.Tensor, ids: torch.Tensor, tree: TreeTensors, top_lambda: torch.Tensor,
                path_steps: torch.Tensor | None, factor, reduce: bool) -> torch.Tensor:
    """``factor · ℓ(z, t)`` per row (summed when ``reduce`` on the fused path), float64 on the formula:
    ``Σ_{k ≥ 1} λ(top(a_k)) (L_{k-1} - L_k)`` over the target's path.

    ``a_k`` the path's nodes (the branching ancestors, then the target), ``L_k`` the log-mass under ``a_k``: the
    loss's terms ``λ(C^(l)) log P(C^(l+1)) / P(C^(l))`` vanish below a single-child node (``P`` is the same), and
    the others are one per path step. The padding repeats the target: its steps are 0.
    """
    if path_steps is not None:
        lengths, steps = tree.lengths_of(ids), path_steps.index_select(0, ids)
    else:
        path, lengths = tree.paths(ids)
        steps = path_steps_of(top_lambda.index_select(0, path.reshape(-1)).view(path.shape))
    if fused(z):
        return _HXEPaths.apply(z, lengths, steps, fused_factor(factor), reduce, *tree.leaf_permutation(),
                               tree.ring_gather, tree.ring_outside, (tree.segment_ring, tree.ring_sides))
    lam = _path_lambda(steps)
    return times(factor, _from_log_masses(path_log_masses(tree, tree.to_leaf_order(z), lengths), lam))


def _from_log_masses(log_mass: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``Σ_{k ≥ 1} λ_k (L_{k-1} - L_k)`` per row; ``+inf`` where the target's own subtree has no mass (a step
    between two empty subtrees counts 0; a NaN stays NaN)."""
    floored = log_mass.clamp_min(NEG)
    rows = (lam[:, 1:] * (floored[:, :-1] - floored[:, 1:])).sum(1)
    return rows.masked_fill(torch.isneginf(log_mass[:, -1]), float("inf"))


class _RingIndex(NamedTuple):
    """The index tensors of a tree's paths that :func:`path_log_masses` reads (a fused function gets these, not the
    whole module)."""

    segment_ring: torch.Tensor
    ring_sides: torch.Tensor

    @property
    def num_rings(self) -> int:
        return self.ring_sides.shape[1]


class _HXEPaths(torch.autograd.Function):
    """``factor · Σ_d c_d L_d`` per row, ``L`` the log-masses along the path (target first), its gradient written
    out.

    Forward: the segments' maxima, ``e = exp(z - max)`` in one buffer, its segment sums; from the target's own
    segment outward one cumulative log-sum-exp over the segments gives ``L`` (every ring adds its two
    segments). Backward: ``∂ℓ/∂z_j = e_j Σ_{d ≤ r(j)} c_d exp(max_s - L_d)`` for ``j`` in segment ``s`` of ring
    ``r(j)``: one ``(S, R)`` product per row (every exponent ``<= 0``: a segment lies under each such node), one
    expansion, one product. A second derivative differentiates the formula instead.
    """

    @staticmethod
    def forward(ctx, z, lengths, steps, factor, reduce, to_leaf, to_class, ring_gather, ring_outside, rings):
        zl = z if to_leaf is None else z.index_select(1, to_leaf)
        layout = host_layout(lengths, zl.shape[1])
        shift = segment_max_kernel(zl, lengths, layout).nan_to_num_(nan=float("nan"), neginf=0.0)
        e = expand_kernel(shift, lengths, zl.shape[1])
        torch.sub(zl, e, out=e).exp_()
        # log 0 = -inf: an empty segment adds nothing
        log_seg = segment_sum_kernel(e, lengths, layout).to(torch.float64).log_().add_(shift)
        log_mass = torch.logcumsumexp(log_seg.index_select(1, ring_gather), dim=1)[:, ::2]
        floored = log_mass.clamp_min(NEG)
        rows = (steps * floored).sum(1).masked_fill(torch.isneginf(log_mass[:, 0]), float("inf"))
        ctx.save_for_backward(z, e, shift, floored, lengths, steps, factor if isinstance(factor, torch.Tensor)
                              else None, to_leaf, to_class, ring_outside, *rings)
        ctx.factor, ctx.reduce = (factor if isinstance(factor, float) else None), reduce
        return finish(rows, factor, reduce, z.dtype)

    @staticmethod
    def backward(ctx, grad):
        z, e, shift, floored, lengths, steps, factor, to_leaf, to_class, ring_outside, *rings = ctx.saved_tensors
        factor = ctx.factor if factor is None else factor
        none = (None,) * 9
        if torch.is_grad_enabled():  # a double backward: differentiate the formula
            with torch.enable_grad():
                zl = z if to_leaf is None else z.index_select(1, to_leaf)
                rows = times(factor, _from_log_masses(path_log_masses(_RingIndex(*rings), zl, lengths),
                                                        _path_lambda(steps)))
                out = (rows.sum() if ctx.reduce else rows).to(z.dtype)
                (gz,) = torch.autograd.grad(out, z, grad, create_graph=True)
            return (gz,) + none
        grad_l = steps * upstream(grad, factor, ctx.reduce, z.shape[0])[:, None]
        if ring_outside is not None:
            # exp(max_s - L_d) where segment s lies under the path's node d, else 0; a subtree without mass (L
            # floored) overflows, and its rows (+inf) get no gradient
            ratio = (shift[:, :, None] - floored[:, None, :]).masked_fill_(ring_outside, -math.inf).exp_()
            g = torch.bmm(ratio, grad_l[:, :, None])[:, :, 0].nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        else:  # long paths: the sums over the path in log space, root first
            g = log_mass_gradient(_RingIndex(*rings), grad_l.flip(1), floored.flip(1), shift)
        g = expand_kernel(g.to(e.dtype), lengths, e.shape[1]).mul_(e)
        return (g if to_class is None else g.index_select(1, to_class),) + none


def _node_terms(z: torch.Tensor, p: torch.Tensor, tree: TreeTensors, node_lambda: torch.Tensor) -> torch.Tensor:
    """``Σ_c p_c ℓ(z, c) = -Σ_{u ≠ root} λ(u) T(u) (log P(u) - log P(parent(u)))`` per row for target rows ``p``
    ``(M or 1, C)``, ``T`` the target mass under each node; in node-major level order, ``z``'s dtype.

    A step between two subtrees without mass counts 0; target mass on a ``-inf`` class makes the row ``+inf``.
    """
    mass = nodes.up(tree, nodes.place(tree, p.to(z.dtype)), overwrite=True)
    coef = mass * nodes.column(tree, node_lambda, z.dtype)
    dead = (torch.isneginf(z) & (p > 0)).any(1)
    if fused(z) and not coef.requires_grad and coef.shape[1] == 1:
        # one target row for every row (label smoothing's uniform part): the steps telescope into one product,
        # -Σ_u a(u) L(u) with a(u) = coef(u) - Σ_{children c} coef(c), the same for every row
        a = coef[:, 0].index_add(0, tree.level_parent, coef[:, 0], alpha=-1.0)
        if torch.compiler.is_compiling():
            rows = _FixedSteps.apply(nodes.subtree_logsumexp(tree, z), a)
        else:
            rows = _UniformSteps.apply(z, a, tree.class_level_pos, tree.level_parent_local, tree.level_is_leaf,
                                       tree.level_offsets, tree.level_inner)
        return rows.masked_fill(dead, float("inf"))
    log_mass = nodes.subtree_logsumexp(tree, z)
    if fused(z) and not coef.requires_grad:
        rows = _NodeSteps.apply(log_mass, coef, tree.level_parent)
    else:
        rows = _node_steps(log_mass, coef, tree.level_parent)
    return rows.masked_fill(dead, float("inf"))


def _node_steps(log_mass: torch.Tensor, coef: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """``-Σ_u coef(u) (L(u) - L(parent(u)))`` per column of node-major ``(N, B)`` log-masses (the root is its own
    parent: its step is 0); a subtree without mass has a floored log-mass, so a step between two counts 0."""
    floored = log_mass.clamp_min(torch.finfo(log_mass.dtype).min / 4)
    return -(coef * (floored - floored.index_select(0, parent))).sum(0)


class _NodeSteps(torch.autograd.Function):
    """:func:`_node_steps`, its gradient written out: ``∂/∂L(v) = -coef(v) [v ≠ root] + Σ_{children c} coef(c)``."""

    @staticmethod
    def forward(ctx, log_mass, coef, parent):
        ctx.save_for_backward(log_mass, coef, parent)
        return _node_steps(log_mass, coef, parent)

    @staticmethod
    def backward(ctx, grad):
        log_mass, coef, parent = ctx.saved_tensors
        g = torch.zeros_like(coef).index_add_(0, parent[1:], coef[1:])
        g[1:] -= coef[1:]
        g = g * grad  # differentiable in grad: a double backward goes through
        return torch.where(torch.isneginf(log_mass), torch.zeros_like(g), g), None, None


class _UniformSteps(torch.autograd.Function):
    """``-Σ_u a(u) L(u)`` per row with ``L`` the subtree log-masses of ``z`` and one coefficient column ``a`` for
    every row (:class:`_FixedSteps` on :func:`~taxosmooth.tree_ops.nodes.subtree_logsumexp`, in one function):
    the backward starts the top-down pass from ``-a ⊗ grad`` in its own buffer. A ``-inf`` logit gets no
    gradient; a second derivative differentiates the formula."""

    @staticmethod
    def forward(ctx, z, a, class_level_pos, parent, is_leaf, offsets, inner):
        lev = nodes.place(nodes._LevelIndex(class_level_pos, parent, is_leaf, offsets), z, float("-inf"))
        lev = nodes._lse_levels(lev, parent, offsets, inner)
        ctx.save_for_backward(z, a, lev, class_level_pos, parent, is_leaf)
        ctx.offsets, ctx.inner = offsets, inner
        return -torch.mv(lev.clamp_min(torch.finfo(lev.dtype).min / 4).t(), a)

    @staticmethod
    def backward(ctx, grad):
        z, a, lev, class_level_pos, parent, is_leaf = ctx.saved_tensors
        none = (None,) * 6
        if torch.is_grad_enabled():  # a double backward: differentiate the formula
            index = nodes._LevelIndex(class_level_pos, parent, is_leaf, ctx.offsets)
            with torch.enable_grad():
                log_mass = nodes._formula_lse(index, z)
                rows = _node_steps_fixed(log_mass, a)
                (gz,) = torch.autograd.grad(rows, z, grad, create_graph=True)
            return (gz,) + none
        g = nodes._lse_gradient(torch.outer(-a, grad), lev, class_level_pos, parent, ctx.offsets, own=True)
        return (g.masked_fill(torch.isneginf(z), 0.0),) + none


def _node_steps_fixed(log_mass: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``-Σ_u a(u) L(u)`` per column, ``L`` floored (a formula: differentiable to any order)."""
    floored = log_mass.clamp_min(torch.finfo(log_mass.dtype).min / 4)
    return -(floored * a[:, None]).sum(0)


class _FixedSteps(torch.autograd.Function):
    """:func:`_node_steps` for a coefficient column shared by every row, telescoped: ``-Σ_u a(u) L(u)`` (one
    matrix-vector product; ``∂/∂L = -a``, 0 where a subtree has no mass, as :class:`_NodeSteps`). With the floor
    for ``L = -inf`` the identity is exact; such a subtree holds target mass only in a row that is ``+inf``."""

    @staticmethod
    def forward(ctx, log_mass, a):
        ctx.save_for_backward(log_mass, a)
        floored = log_mass.clamp_min(torch.finfo(log_mass.dtype).min / 4)
        return -torch.mv(floored.t(), a)

    @staticmethod
    def backward(ctx, grad):
        log_mass, a = ctx.saved_tensors
        g = -a[:, None] * grad[None, :]  # differentiable in grad: a double backward goes through
        return torch.where(torch.isneginf(log_mass), torch.zeros_like(g), g), None


# ----------------------------------------------------------------------------- node weights
def hxe_node_weights(taxonomy: Taxonomy, alpha: float, weighting: str = "depth",
                     normalize: bool = False) -> np.ndarray:
    """``λ(v)`` for every node (float64, node-id order).

    ``weighting="depth"``: ``λ(v) = exp(-α·depth(v))`` (the public reference code);
    ``"height"``: ``λ(v) = exp(-α·height(v))`` (the paper's formula). With
    ``normalize=True`` divided by ``Σ_v λ(v)`` over all nodes, root included
    (the reference code's ``get_exponential_weighting(..., normalize=True)``).
    """
    alpha = check_positive(alpha, "alpha", allow_zero=True)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {normalize!r}")
    c = taxonomy.compiled
    level = c.depth if weighting == "depth" else c.height
    lam = np.exp(-alpha * level.astype(np.float64))
    if normalize:
        lam = lam / np.sum(lam)
    return lam


def hxe_tables(taxonomy: Taxonomy, alpha: float, weighting: str = "depth", normalize: bool = False) -> np.ndarray:
    """``(2, N)`` float64: ``λ(u)`` (:func:`hxe_node_weights`) and ``λ(top(u))`` of every node."""
    lam = hxe_node_weights(taxonomy, alpha, weighting, normalize)
    return np.stack([lam, lam[chain_top(taxonomy)]])


# ----------------------------------------------------------------------------- the functional core
def path_steps_table(tree: TreeTensors, node_lambda: torch.Tensor) -> torch.Tensor | None:
    """:func:`path_steps_of` of every target id's path ``(N, R)`` (``None`` where paths are searched)."""
    return tree.per_target(
        lambda path, ids: path_steps_of(node_lambda[1].index_select(0, path.reshape(-1)).view(path.shape)))


def _run(input, target, tree: TreeTensors, node_lambda, path_steps, weight, ignore_index, reduction,
         label_smoothing, coarse_labels: bool) -> torch.Tensor:
    num_targets = tree.num_nodes if coarse_labels else tree.num_classes
    return run_loss(lambda z, t: hxe_rows(z, t, tree, node_lambda, path_steps), input, target, name="HXELoss",
                    num_classes=tree.num_classes, num_targets=num_targets, num_nodes=tree.num_nodes, weight=weight,
                    ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
                    target_weights=tree.target_means if coarse_labels else None, linear_in_target=True)


def hxe_loss(input: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, alpha: float, weighting: str = "depth",
             normalize: bool = False, weight: ArrayLike | None = None, ignore_index: int = -100,
             reduction: str = "mean", label_smoothing: float = 0.0, coarse_labels: bool = False) -> torch.Tensor:
    """Hierarchical cross entropy; see :class:`HXELoss` for the formula, targets and shapes.

    The taxonomy's tensors and ``λ`` are built once per (taxonomy, options, device) and kept.
    """
    tax = as_taxonomy(taxonomy, "hxe_loss")
    if not isinstance(coarse_labels, bool):
        raise TypeError(f"coarse_labels must be a bool, got {coarse_labels!r}")
    tree = tree_tensors(tax, input.device if isinstance(input, torch.Tensor) else None)
    num_targets = tax.num_nodes if coarse_labels else tax.num_classes
    weight, ignore_index, reduction, label_smoothing = check_options(
        "hxe_loss", tax.num_classes, num_targets, weight, ignore_index, reduction, label_smoothing)
    alpha = check_positive(alpha, "alpha", allow_zero=True)
    lam = tree.derived(("hxe", alpha, weighting, normalize),
                       lambda: float_table(hxe_tables(tax, alpha, weighting, normalize)))
    on_paths = tree.derived(("hxe steps", alpha, weighting, normalize), lambda: path_steps_table(tree, lam))
    return _run(input, target, tree, lam, on_paths, weight, ignore_index, reduction, label_smoothing, coarse_labels)


# ----------------------------------------------------------------------------- the module
class HXELoss(TreeLoss):
    r"""Hierarchical cross entropy.

    .. math::

        \ell(z, t) = -\sum_{l=0}^{H-1} \lambda(C^{(l)})
            \log \frac{P(C^{(l)})}{P(C^{(l+1)})}, \qquad
        P(v) = \sum_{j \text{ under } v} \operatorname{softmax}(z)_j

    along the path ``C^(0) = t, …, C^(H) = root`` (Bertinetto et al., "Making
    Better Mistakes", CVPR 2020, Sec. 3.1).

    Targets:

    * a **class** ``t``: the formula above;
    * **probabilities** ``p`` (Mixup): ``Σ_c p_c ℓ(z, c) = -Σ_{u ≠ root} λ(u) T(u)
      log(P(u) / P(parent(u)))`` with ``T(u) = Σ_{c under u} p_c``;
    * a **coarse label** ``v`` (``coarse_labels=True``): the path starts at
      ``v``: ``ℓ = -Σ_{l} λ(C^{(l)}) log(P(C^{(l)}) / P(C^{(l+1)}))`` from
      ``C^(0) = v``, so only ``P(v)`` and the masses above it matter; with
      ``alpha = 0`` (and ``normalize=False``) it is the partial-label
      likelihood ``-log P(v)``.

    Weighting conventions
    ---------------------
    * ``weighting="depth"`` (default): ``λ(v) = exp(-α·depth(v))``. This is what
      the public reference code implements (``get_exponential_weighting``:
      "each edge is weighted according to its distance from the root") and what
      produced the paper's published results: larger ``α`` moves the weight
      towards the coarse decisions near the root.
    * ``weighting="height"``: ``λ(v) = exp(-α·height(v))``, the formula as
      printed in the paper. On a tree with all leaves at one depth this runs the
      opposite way (leaf terms weigh most).
    * ``normalize=True`` divides every ``λ`` by ``Σ_v λ(v)`` over all nodes, root
      included, as the reference code does; ``weighting="depth",
      normalize=True`` reproduces it. The default ``normalize=False`` keeps the
      loss on the scale of cross entropy, independent of the tree's size, and
      makes ``alpha=0`` exactly :func:`torch.nn.functional.cross_entropy`
      (the terms telescope to ``-log p_t``; with ``label_smoothing`` too).

    How: the ``log P`` of the target's ancestors are log-sum-exps of the
    target's path segments in depth-first order, each segment shifted by its
    own maximum (exact for a target any distance below the best logit):
    O(batch × classes), a handful of operations per batch, no ``(C, C, depth)``
    tensor. Probability rows and label smoothing take the log-masses of every
    node (one pass per level, O(batch × nodes)).

    Parameters
    ----------
    taxonomy : Taxonomy
    alpha : float, ``>= 0``
    weighting : {"depth", "height"}, default "depth"
    normalize : bool, default False
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
    >>> z, t = torch.randn(3, 4), torch.tensor([0, 1, 3])
    >>> torch.allclose(ts.HXELoss(tax, alpha=0.0)(z, t), torch.nn.functional.cross_entropy(z, t))
    True
    """

    node_lambda: torch.Tensor  # buffers
    path_steps: torch.Tensor | None

    def __init__(self, taxonomy: Taxonomy, alpha: float, weighting: str = "depth", normalize: bool = False,
                 weight: ArrayLike | None = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0, coarse_labels: bool = False, process_group=None,
                 shard_slack: float = 0.02) -> None:
        tax = as_taxonomy(taxonomy, "HXELoss")
        lam = hxe_tables(tax, alpha, weighting, normalize)
        super().__init__(tax.num_classes, weight, ignore_index, reduction, label_smoothing, coarse_labels,
                         tax.num_nodes, tax)
        self.alpha, self.weighting, self.normalize = float(alpha), weighting, normalize
        self.tree = TreeTensors(tax)
        self.register_buffer("node_lambda", float_table(lam), persistent=False)
        self.register_buffer("path_steps", path_steps_table(self.tree, self.node_lambda), persistent=False)
        self.shard(process_group, tax, shard_slack)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return (f"alpha={self.alpha}, weighting={self.weighting!r}, normalize={self.normalize}"
                + (", " + base if base else ""))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.process_group is not None:
            return sharded(self, input, target)
        return _run(input, target, self.tree, self.node_lambda, self.path_steps, self.weight, self.ignore_index,
                    self.reduction, self.label_smoothing, self.coarse_labels)
