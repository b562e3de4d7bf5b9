"""Hierarchical soft labels, computed structurally (no ``(C, C)`` tensor)."""

from __future__ import annotations

import numpy as np
import torch

from taxosmooth._checks import check_positive, check_probability
from taxosmooth.distances import LCA_KINDS, check_kind, node_distance
from taxosmooth.losses._common import TreeLossBase, as_taxonomy, scale_saved_gradient, xlogy_cross_entropy
from taxosmooth.targets import max_pair_distance, resolve_scale
from taxosmooth.tree_ops import TreeTensors, _host_kernel, segment_expand_leaf_order

__all__ = ["HierarchicalSoftLabelLoss", "ring_target_weights"]


def ring_target_weights(taxonomy, beta: float, distance: str = "lca_height", scale="max", epsilon=None) -> np.ndarray:
    """Soft-target mass per class of each ring: ``q[t, k] = q_t(j)`` for every ``j`` in ring ``k`` of ``t``.

    float64 ``(C, K+1)``; row ``t`` times the ring sizes sums to 1. Equal to
    ``soft_targets(taxonomy, beta, distance, scale, epsilon)[t, j]`` for
    ``LCA(t, j) = a_k`` (see :mod:`taxosmooth.tree_ops` for rings).
    """
    beta = check_positive(beta, "beta", allow_zero=True)
    check_kind(distance)
    if distance not in LCA_KINDS:
        raise ValueError(
            f"HierarchicalSoftLabelLoss: distance {distance!r} is not a function of the LCA node, so it has no "
            "structured form here; use SoftTargetCrossEntropy(soft_targets(taxonomy, beta, "
            f"distance={distance!r})) (a dense (C, C) matrix)"
        )
    c = taxonomy.compiled
    s = resolve_scale(scale, max_pair_distance(taxonomy, distance))
    table = node_distance(taxonomy, distance)
    path = c.padded_path
    d = table[path]
    d[:, 0] = 0.0
    n = (c.leaf_hi - c.leaf_lo)[path].astype(np.float64)
    ring_size = np.diff(n, axis=1, prepend=0.0)
    # all exponents <= 0: nothing overflows; the ring containing t has e = 1
    e = np.exp(-beta * d / s)
    z = (e * ring_size).sum(axis=1, keepdims=True)
    q = e / z
    q[ring_size == 0] = 0.0
    if epsilon is not None:
        epsilon = check_probability(epsilon, "epsilon")
        q *= epsilon
        q[:, 0] += 1.0 - epsilon
    return q


class _SoftLabelCrossEntropy(torch.autograd.Function):
    """``-Σ_j Q_j log_softmax(z)_j`` per row in leaf order (or ``scale ×`` their sum), gradient built in the forward.

    ``w`` holds each ring's soft-target mass per class, laid out on the row's
    leaf segments; the rows ``-Q`` are written once from it (times ``scale``).
    Forward: one log-softmax, one dot product with ``-Q`` (every term
    ``Q_j · (-log p_j) >= 0``: no cancellation), then the log-softmax becomes
    the softmax in place and ``scale·(p - Q)``, the gradient, is written over
    ``-Q``. Backward: that gradient times the incoming one (nothing at all for
    an incoming ``1``, as in ``loss.backward()``). Two ``(M, C)`` buffers in
    all (cross entropy uses three).
    """

    @staticmethod
    def forward(ctx, z_leaf, t, segment_weights, ring_lengths, scale):
        s = 1.0 if scale is None else scale
        b, c = z_leaf.shape
        if _host_kernel(z_leaf):
            # the rows' gathers in numpy (a fraction of index_select's cost on small tables), before the
            # passes over the batch; -s·Q written first
            tn = t.numpy()
            w = (segment_weights.numpy()[tn] * -s).astype(z_leaf.detach().numpy().dtype)
            grad = torch.from_numpy(np.repeat(w.reshape(-1), ring_lengths.numpy()[tn].reshape(-1))).view(b, c)
        else:
            w = segment_weights.index_select(0, t).to(z_leaf.dtype)
            grad = segment_expand_leaf_order(w * -s, ring_lengths.index_select(0, t), c)  # -s·Q
        log_p = torch.log_softmax(z_leaf, dim=1)
        # under compile, 0·log 0 = 0 for masked (-inf) classes without target mass, fused for free; eager
        # checks the loss and recomputes such rows (TreeLossBase._nonfinite), sparing the fast path a pass
        terms = torch.where(grad == 0, 0.0, log_p) if torch.compiler.is_compiling() else log_p
        if scale is None:
            loss = torch.linalg.vecdot(grad, terms, dim=1)
        else:
            loss = torch.dot(grad.view(-1), terms.view(-1))
        torch.add(grad, log_p.exp_(), alpha=s, out=grad)  # s·(p - Q)
        ctx.save_for_backward(grad)
        ctx.fused = scale is not None
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        return scale_saved_gradient(grad, grad_loss, ctx.fused), None, None, None, None


class HierarchicalSoftLabelLoss(TreeLossBase):
    r"""Soft-label cross entropy from tree distances, computed structurally.

    .. math::

        \ell(z, t) = -\sum_j q_t(j) \log \operatorname{softmax}(z)_j, \qquad
        q_t(j) = \frac{\exp(-\beta\, d(t, j) / s)}{\sum_k \exp(-\beta\, d(t, k) / s)}

    optionally mixed with the label, ``(1 - ε)·onehot + ε·q`` (Bertinetto et al.,
    "Making Better Mistakes", CVPR 2020, Sec. 3.2 "soft labels"). The values
    equal :class:`SoftTargetCrossEntropy` with
    :func:`~taxosmooth.soft_targets` ``(taxonomy, beta, distance, scale, epsilon)``.

    How: ``d(t, j)`` depends only on ``LCA(t, j)``, so ``q_t`` is constant on
    each *ring* ``subtree(a_k) \ subtree(a_{k-1})`` of the ancestors ``a_k`` of
    ``t``: the batch's target rows are written once from ``O(depth)`` ring
    weights per row (:func:`~taxosmooth.tree_ops.segment_expand_leaf_order`).
    The loss is one dot product of those rows with the log-softmax (exact,
    every term ``>= 0``), and the gradient ``softmax(z) - q_t`` is formed in the
    forward over the same buffer, so the backward only scales it. Two
    ``(batch, C)`` buffers, O(batch × classes) time, O(classes × depth)
    buffers, never a ``(C, C)`` tensor.

    ``-inf`` logits (masked classes) are allowed: a class without target mass
    contributes ``0·log 0 = 0`` (value and gradient finite); target mass on a
    ``-inf`` class makes the loss ``+inf``. A NaN or ``+inf`` logit raises
    ``ValueError`` naming it (see :func:`taxosmooth.losses.set_checks`: one host
    synchronisation per check on a GPU).

    Parameters
    ----------
    taxonomy : Taxonomy
    beta : float
        Inverse temperature, ``>= 0`` (0: uniform targets; large: one-hot, i.e.
        plain cross entropy).
    distance : {"lca_height", "lca_depth_complement"}, default "lca_height"
        ``"path_length"`` is not a function of the LCA node: use
        ``SoftTargetCrossEntropy(soft_targets(taxonomy, beta, "path_length"))``.
    scale : "max", None or float, default "max"
        Distances are divided by ``s``: their maximum over class pairs (as the
        reference code does), 1, or the number given.
    epsilon : float in [0, 1], optional
        Mixing with the one-hot label.
    weight, ignore_index, reduction
        As in :func:`torch.nn.functional.cross_entropy`.

    Shape
    -----
    - input: ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``
    - target: ``(N)``, ``(N, d1, ...)`` or ``()``, class indices
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

    def __init__(self, taxonomy, beta: float, distance: str = "lca_height", scale="max", epsilon=None,
                 weight=None, ignore_index: int = -100, reduction: str = "mean"):
        tax = as_taxonomy(taxonomy, "HierarchicalSoftLabelLoss")
        q = ring_target_weights(tax, beta, distance, scale, epsilon)
        super().__init__(tax.num_classes, weight, ignore_index, reduction)
        self.beta, self.distance, self.scale, self.epsilon = float(beta), distance, scale, epsilon
        self.tree = TreeTensors(tax)
        # the ring weights laid out on the leaf segments of each class's rings (segment s: ring |s - K|)
        self.register_buffer("segment_weights", torch.from_numpy(q[:, list(self.tree.ring_of_segment_list)]),
                             persistent=False)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, distance={self.distance!r}, scale={self.scale!r}, epsilon={self.epsilon}"

    fuses_reduction = True

    def _per_sample(self, z, t, scale=None):
        tree = self.tree
        return _SoftLabelCrossEntropy.apply(tree.to_leaf_order(z), t, self.segment_weights, tree.ring_lengths, scale)

    def _exact_per_sample(self, z, t):
        # -Σ_j Q_j log p_j with 0·log 0 = 0 (masked classes), by autograd: finite gradients there too
        tree = self.tree
        w = self.segment_weights.index_select(0, t).to(z.dtype)
        q = segment_expand_leaf_order(w, tree.ring_lengths.index_select(0, t), z.shape[1])
        return xlogy_cross_entropy(q, tree.to_leaf_order(z))
