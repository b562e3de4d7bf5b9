"""Hierarchical soft labels, computed structurally (no ``(C, C)`` tensor)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from taxosmooth._checks import check_positive, check_probability
from taxosmooth.distances import resolve_source
from taxosmooth.losses._base import LossTarget, TreeLossBase, as_taxonomy
from taxosmooth.losses._kernels import (
    host_cross_entropy,
    host_ring0_correction,
    ref_cross_entropy,
    ref_ring0_log_mass,
)
from taxosmooth.targets import resolve_scale
from taxosmooth.tree_ops import Rings, TreeTensors

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from taxosmooth.taxonomy import Taxonomy

__all__ = ["HierarchicalSoftLabelLoss"]


def _host(x):
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).numpy()
    return float(x)


class HierarchicalSoftLabelLoss(TreeLossBase):
    r"""Soft-label cross entropy from tree distances, computed structurally.

    .. math::

        \ell(z, t) = -\sum_j q_t(j) \log \operatorname{softmax}(z)_j, \qquad
        q_t(j) = \frac{\exp(-\beta\, d(t, j) / s)}{\sum_k \exp(-\beta\, d(t, k) / s)}

    optionally mixed with the label, ``(1 - ε)·onehot + ε·q`` (Bertinetto et al.,
    "Making Better Mistakes", CVPR 2020, Sec. 3.2 "soft labels"). The values
    equal :class:`SoftTargetCrossEntropy` with
    :func:`~taxosmooth.soft_targets` ``(taxonomy, beta, distance, scale, epsilon)``.

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

    How: ``d(t, j)`` depends only on ``LCA(t, j)``, so ``q_t`` is constant on
    each *ring* of ``t`` (:mod:`taxosmooth.tree_ops`): the batch's target rows
    are written from ``O(depth)`` ring values per row, then one cross-entropy
    pass whose gradient ``softmax(z) - q`` is written in the forward.
    O(batch × classes) time, O(classes × depth) buffers, never a ``(C, C)``
    tensor. ``-inf`` logits (masked classes) are allowed: a class without
    target mass contributes ``0·log 0 = 0``.

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
    epsilon : float in [0, 1], optional
        Mixing with the one-hot label.
    weight, ignore_index, reduction, label_smoothing, coarse_labels
        As in :mod:`taxosmooth.losses` (``label_smoothing`` mixes the target
        with uniform before the soft labels, as ``F.cross_entropy`` does).

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

    tree: TreeTensors  # built from a taxonomy: always set
    # buffers
    node_e: torch.Tensor
    node_de: torch.Tensor
    class_inv_z: torch.Tensor

    def __init__(self, taxonomy: Taxonomy, beta: float, distance: str | None = None,
                 scale: str | float | None = "max", epsilon: float | None = None, weight: ArrayLike | None = None,
                 ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                 coarse_labels: bool = False) -> None:
        tax = as_taxonomy(taxonomy, "HierarchicalSoftLabelLoss")
        beta = check_positive(beta, "beta", allow_zero=True)
        if epsilon is not None:
            epsilon = check_probability(epsilon, "epsilon")
        src = resolve_source(tax, distance, where="HierarchicalSoftLabelLoss")
        if not src.structured:
            raise ValueError(
                f"HierarchicalSoftLabelLoss: distance {src.distance!r} is not a function of the LCA node, so it has "
                "no structured form here; use SoftTargetCrossEntropy(soft_targets(taxonomy, beta, "
                f"distance={src.distance!r})) (a dense (C, C) matrix)"
            )
        assert src.node_table is not None  # an LCA kind (checked above)
        tree = TreeTensors(tax)
        super().__init__(tax.num_classes, weight, ignore_index, reduction, label_smoothing, coarse_labels, tree, tax)
        self.beta, self.distance, self.scale, self.epsilon = beta, src.distance, scale, epsilon
        s = resolve_scale(scale, src.max_distance())
        with np.errstate(over="ignore"):
            e = np.exp(-beta * (src.node_table / s))  # <= 1, and 1 at the leaves (d = 0)
        self.mix = 1.0 if epsilon is None else float(epsilon)
        c = tax.compiled
        # normaliser of each class's row: Z_t = 1 + Σ_{k >= 1} |ring k| e(r_k)
        rings = tree.rings(torch.arange(tax.num_classes), host=True)
        ring_e = e[rings.nodes]
        z_norm = 1.0 + (rings.size[:, 1:] * ring_e[:, 1:]).sum(axis=1)
        de = e - np.where(c.parent >= 0, e[np.maximum(c.parent, 0)], 0.0)  # e(u) - e(parent(u)), root: e(root)
        self._e = e
        self._de_level = tree.nodes_host.table(de)
        self._inv_z_leaf = (1.0 / z_norm)[c.position_class]  # leaf order
        self.register_buffer("node_e", torch.from_numpy(e), persistent=False)
        self._class_q, self._class_q0 = self._ring_masses(rings, np)
        self.register_buffer("node_de", torch.from_numpy(de), persistent=False)
        self.register_buffer("class_inv_z", torch.from_numpy(1.0 / z_norm), persistent=False)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return (f"beta={self.beta}, distance={self.distance!r}, scale={self.scale!r}, epsilon={self.epsilon}"
                + (", " + base if base else ""))

    # ------------------------------------------------------------------ ring values of integer targets
    def _ring_masses(self, rings, lib):
        """Per-ring target mass per class ``q`` (B, R) (ring 0: the target class; 0 for a coarse label)
        and ``q0`` (B,), the mass of ring 0 as one outcome."""
        e = rings.gather(self._e if lib is np else self.node_e)
        z_norm = 1.0 + (rings.size[:, 1:] * e[:, 1:]).sum(1)
        q = e * (self.mix / z_norm)[:, None]
        q0 = (1.0 - self.mix) + self.mix / z_norm
        is_class = rings.target < self.num_classes
        if lib is np:
            q[:, 0] = np.where(is_class, q0, 0.0)
            return q, q0
        return torch.cat([torch.where(is_class, q0, torch.zeros_like(q0))[:, None], q[:, 1:]], dim=1), q0

    def _ring_weights(self, rings, omega, lib):
        """:meth:`_ring_masses` times the rows' factors; the classes' masses are tabulated for the host."""
        if lib is np and not rings.coarse:
            q, q0 = self._class_q[rings.target], self._class_q0[rings.target]
        else:
            q, q0 = self._ring_masses(rings, lib)
        if isinstance(omega, float):
            return q * omega, q0 * omega
        om = omega if lib is np else omega.to(q.dtype)
        return q * om[:, None], q0 * om

    # ------------------------------------------------------------------ probability targets
    def _host_prob_rows(self, p_leaf: np.ndarray) -> np.ndarray:
        """Σ_c p_c q_c (M, C) leaf order for unnormalised rows ``p`` (leaf order): structured."""
        lay = self.tree.nodes_host
        mass = lay.up(p_leaf * self._inv_z_leaf)
        mass *= self._de_level
        acc = lay.leaves(lay.down(mass))
        return (1.0 - self.mix) * p_leaf + self.mix * acc

    def _ref_prob_rows(self, p: torch.Tensor) -> torch.Tensor:
        tree = self.tree
        mass = tree.subtree_sum(p * self.class_inv_z.to(p.dtype)) * self.node_de.to(p.dtype)
        return (1.0 - self.mix) * p + self.mix * tree.node_to_class(tree.accumulate_down(mass))

    def _uniform(self, cw, dtype, host: bool):
        """The rows' uniform part ``Σ_c (weight[c] / C) q_c`` (1, C): leaf order on the host, class order in torch."""
        C = self.num_classes
        if host:
            u = np.full((1, C), 1.0 / C) if cw is None else (cw.double().numpy() / C)[None, self.tree._host.position_class]
            return self._host_prob_rows(u).astype(dtype)
        u = torch.full((1, C), 1.0 / C, dtype=torch.float64, device=self.node_e.device) if cw is None else \
            (cw.to(torch.float64) / C)[None, :]
        return self._ref_prob_rows(u)

    # ------------------------------------------------------------------ kernels
    sparse_targets = True

    def _host(self, z, target: LossTarget):
        tree = self.tree
        z_leaf = tree.leaf_cols(z)
        dt = z.numpy().dtype
        omega = target.host_omega()
        if target.kind == "prob":
            p = cast(torch.Tensor, target.prob).numpy()
            if target.class_weight is not None:
                p = p * target.class_weight.numpy()
            w = self._host_prob_rows(tree.leaf_cols(p).astype(np.float64))
            w *= omega if isinstance(omega, float) else omega[:, None]
            rows, grad = host_cross_entropy(z_leaf, torch.from_numpy((-w).astype(dt)), w.sum(1))
            return rows, tree.class_cols(grad)
        # one target column for class and coarse labels; a few for sparse probability rows (Mixup)
        parts = []
        row_sum: Any = 0.0  # a float, or (M,) per-row sums
        for ids, col_omega in target.columns():
            omega = _host(col_omega)
            rings = tree.rings(ids, host=True, coarse=target.coarse)
            q, q0 = self._ring_weights(rings, omega, np)
            parts.append((rings, -q))
            coarse = rings.target >= self.num_classes if rings.coarse else None
            if coarse is None:
                row_sum = row_sum + omega  # a class's target row sums to its factor
            else:
                row_sum = row_sum + (q[:, 1:] * rings.size[:, 1:]).sum(1) + np.where(coarse, 0.0, q0)
        neg_w = Rings.expand_sum(parts, dt)
        if not isinstance(row_sum, float):
            row_sum = np.broadcast_to(row_sum, (z.shape[0],)).astype(np.float64)
        smooth = target.host_smooth()
        if smooth is not None:
            u = self._uniform(target.class_weight, dt, host=True)
            neg_w -= u * (smooth if isinstance(smooth, float) else smooth[:, None].astype(dt))
            row_sum = row_sum + float(u.sum(dtype=np.float64)) * smooth
        coef = None
        if coarse is not None:
            # the coarse labels' own term -q0 log P(v) = -q0 (log Σ_{j ∈ v} e^{z_j} - lse): its gradient
            # q0 · softmax (added by the cross-entropy kernel through the row sum) minus q0 times the
            # softmax restricted to v (on v's classes only)
            coef = np.where(coarse, q0, 0.0)
            row_sum = row_sum + coef
        rows, grad = host_cross_entropy(z_leaf, torch.from_numpy(neg_w), row_sum)
        if coef is not None:
            zl = z_leaf.numpy()
            lse0 = rings.ring0_logsumexp(zl)
            lse = torch.logsumexp(z_leaf, dim=1).double().numpy()
            rows = rows + np.where(coef == 0, 0.0, coef * (lse - lse0))
            host_ring0_correction(grad.numpy(), zl, rings, coef, lse0)
        return rows, tree.class_cols(grad)

    def _reference(self, z, target: LossTarget):
        tree = self.tree
        if target.kind == "prob":
            prob = cast(torch.Tensor, target.prob)  # set for "prob" targets
            p = prob if target.class_weight is None else prob * target.class_weight.to(z.dtype)
            w = self._ref_prob_rows(p.to(torch.float64)).to(z.dtype)
            om = target.omega
            w = w * (om if isinstance(om, float) else om.to(z.dtype)[:, None])
            return ref_cross_entropy(z, w)
        rings = tree.rings(cast(torch.Tensor, target.ids), host=False)
        q, q0 = self._ring_weights(rings, target.omega, torch)
        w = tree.to_class_order(rings.expand_rings(q)).to(z.dtype)
        if target.smooth is not None:
            u = self._uniform(target.class_weight, z.dtype, host=False).to(z.dtype)
            sm = target.smooth
            w = w + u * (sm if isinstance(sm, float) else sm.to(z.dtype)[:, None])
        rows = ref_cross_entropy(z, w)
        coarse = rings.target >= self.num_classes
        coef = torch.where(coarse, q0, torch.zeros_like(q0)).to(z.dtype)
        log_mass = ref_ring0_log_mass(tree, z, rings.node) - torch.logsumexp(z, dim=1)
        return rows - torch.where(coef == 0, torch.zeros_like(coef), coef * log_mass)
