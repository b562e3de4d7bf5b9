"""Hierarchical cross entropy (HXE), Bertinetto et al., CVPR 2020."""

from __future__ import annotations

import numpy as np
import torch

from taxosmooth._checks import check_positive
from taxosmooth.losses._common import TreeLossBase, as_taxonomy, scale_saved_gradient
from taxosmooth.tree_ops import (
    TreeTensors,
    _host_kernel,
    host_segment_layout,
    host_segment_reduce,
    segment_expand_leaf_order,
    segment_sum_leaf_order,
)

__all__ = ["HXELoss", "hxe_coefficients", "hxe_node_weights", "WEIGHTINGS"]

WEIGHTINGS = ("depth", "height")

# on the fast path every P(a_l) >= p_t >= this many times the smallest normal float: the ratios
# c_l / P(a_l) in the gradient stay far from overflow; rows whose target probability is smaller
# take the exact log-space path
_FAR_MARGIN = 2.0**40


def hxe_node_weights(taxonomy, alpha: float, weighting: str = "depth", normalize: bool = False) -> np.ndarray:
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


def hxe_coefficients(taxonomy, alpha: float, weighting: str = "depth", normalize: bool = False) -> np.ndarray:
    """Per class, the coefficient of ``-log P(a_l)`` along its path, float64 ``(C, K+1)``.

    Summation by parts of ``-Σ_{l<H} λ(a_l) [log P(a_l) - log P(a_{l+1})]``
    (``log P(root) = 0``): ``c_0 = λ(a_0)``, ``c_l = λ(a_l) - λ(a_{l-1})`` for
    ``0 < l < H``, ``c_l = 0`` for ``l >= H = depth(t)``.
    """
    lam = hxe_node_weights(taxonomy, alpha, weighting, normalize)
    c = taxonomy.compiled
    path = c.padded_path
    lp = lam[path]
    coef = np.diff(lp, axis=1, prepend=0.0)
    H = c.depth[c.class_node]
    coef[np.arange(coef.shape[1])[None, :] >= H[:, None]] = 0.0
    return coef


def _ring_terms(seg, coef, fold, spread, floor: float, s: float, log, clamp_min):
    """The per-ring arithmetic of :class:`_HierarchicalCrossEntropy`, for numpy and torch arrays alike.

    ``seg`` (B, S): segment sums of ``p = softmax(z)``; returns ``(far, terms,
    values)``: rows whose ``p_t = P(a_0)`` is below ``floor``, the terms
    ``c_l log P(a_l)`` (B, K+1) and the per-segment gradient factors
    ``s (Σ_l c_l - Σ_{l >= ring(seg)} c_l / P(a_l))`` (B, S).
    """
    mass = seg @ fold
    mass_c = clamp_min(mass, floor)
    values = (coef.sum(1)[:, None] - (coef / mass_c) @ spread) * s
    return mass[:, 0] < floor, coef * log(mass_c), values


class _HierarchicalCrossEntropy(torch.autograd.Function):
    """``-Σ_l c_l log P(a_l)`` per row in leaf order (or ``scale ×`` their sum), gradient built in the forward.

    ``p = softmax(z)``; ``P(a_l)`` are the cumulative ring sums of ``p`` (exact
    segment sums of non-negative terms; ``P(a_0) = p_t``), clamped below at
    ``floor``. Gradient, one value per ring times ``p``:
    ``∂ℓ/∂z_j = p_j (Σ_l c_l - Σ_{l >= k(j)} c_l / P(a_l))`` with ``k(j)`` the
    ring of ``j`` (at the target, ``p_t · c_0 / p_t`` is ``c_0`` to rounding).
    The small per-ring steps are two constant 0/1 matrices: ``fold`` (segments
    → cumulative ring sums) and ``spread`` (``[l >= ring(s)]``), in float64
    numpy on the CPU and in torch elsewhere (:func:`_ring_terms`). The
    gradient is written in the forward over ``p``, so the backward only
    scales it (nothing at all for an incoming ``1``). Also returns which rows
    have ``p_t`` below ``floor`` (not differentiable): they are left to the
    caller, with gradient 0 and, in the summed form, loss 0.
    """

    @staticmethod
    def forward(ctx, z_leaf, t, coefficients, ring_lengths, ring_starts, fold, spread, floor, scale):
        s = 1.0 if scale is None else scale
        b, c = z_leaf.shape
        if _host_kernel(z_leaf) and b > 0:
            # everything that depends on the targets alone first, then the passes over the batch
            tn = t.numpy()
            lengths = ring_lengths.numpy()[tn]
            layout = host_segment_layout(ring_starts.numpy()[tn], lengths, c)
            coef = coefficients.numpy()[tn]
            p = torch.softmax(z_leaf, dim=1)
            pn = p.numpy()
            far, terms, values = _ring_terms(host_segment_reduce(pn, layout), coef, fold.numpy(), spread.numpy(),
                                             floor, s, np.log, np.maximum)
            np.multiply(pn, np.repeat(values.astype(pn.dtype).reshape(-1), lengths.reshape(-1)).reshape(b, c), out=pn)
            if scale is None:
                loss = torch.from_numpy(terms.sum(1)).neg_().to(p.dtype)
            else:
                if far.any():
                    pn[far] = 0.0
                    terms[far] = 0.0
                loss = torch.from_numpy(np.asarray(-s * terms.sum(), dtype=pn.dtype))
            far = torch.from_numpy(far)
        else:
            p = torch.softmax(z_leaf, dim=1)
            lengths = ring_lengths.index_select(0, t)
            far, terms, values = _ring_terms(segment_sum_leaf_order(p, lengths), coefficients.index_select(0, t)
                                             .to(p.dtype), fold.to(p.dtype), spread.to(p.dtype), floor, s, torch.log,
                                             torch.clamp_min)
            p.mul_(segment_expand_leaf_order(values, lengths, c))
            if scale is None:
                loss = -terms.sum(1)
            else:
                if not torch.compiler.is_compiling() and bool(far.any()):
                    p.masked_fill_(far.unsqueeze(1), 0.0)
                    terms = terms.masked_fill(far.unsqueeze(1), 0.0)
                loss = -s * terms.sum()
        ctx.save_for_backward(p)
        ctx.fused = scale is not None
        ctx.mark_non_differentiable(far)
        return loss, far

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss, _grad_far):
        (grad,) = ctx.saved_tensors
        return scale_saved_gradient(grad, grad_loss, ctx.fused), *(None,) * 8


class HXELoss(TreeLossBase):
    r"""Hierarchical cross entropy.

    .. math::

        \ell(z, t) = -\sum_{l=0}^{H-1} \lambda(C^{(l)})
            \log \frac{P(C^{(l)})}{P(C^{(l+1)})}, \qquad
        P(v) = \sum_{j \text{ under } v} \operatorname{softmax}(z)_j

    along the path ``C^(0) = t, …, C^(H) = root`` (Bertinetto et al., "Making
    Better Mistakes", CVPR 2020, Sec. 3.1).

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
      (the terms telescope to ``-log p_t``).

    How: by summation by parts ``ℓ = -Σ_l c_l log P(a_l)`` with per-class
    coefficients (:func:`hxe_coefficients`); ``P(a_l)`` are partial sums of
    exact ring sums (segment sums of non-negative terms) of ``p = softmax(z)``,
    ``P(a_0) = p_t``. The gradient is one value per ring times ``p``, written
    in the forward over one buffer (the backward only scales it). Rows whose
    target probability is below ``2^40`` times the smallest normal float (a
    target about 60 nats below the rest in float32; there ``p_t``, and perhaps
    whole subtrees, underflow) are recomputed exactly in log space
    (:meth:`TreeTensors.subtree_logsumexp`; under ``torch.compile``, which
    cannot branch on data, every row is computed both ways and the exact value
    selected, so compiled and eager agree at the price of the exact pass).
    A NaN or ``+inf`` logit raises ``ValueError`` naming it; ``-inf`` logits
    (masked classes) are allowed (see :func:`taxosmooth.losses.set_checks`:
    validation costs host synchronisations on a GPU).
    O(batch × classes); no ``(C, C, depth)`` tensor.

    Parameters
    ----------
    taxonomy : Taxonomy
    alpha : float, ``>= 0``
    weighting : {"depth", "height"}, default "depth"
    normalize : bool, default False
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
    >>> z, t = torch.randn(3, 4), torch.tensor([0, 1, 3])
    >>> torch.allclose(ts.HXELoss(tax, alpha=0.0)(z, t), torch.nn.functional.cross_entropy(z, t))
    True
    """

    def __init__(self, taxonomy, alpha: float, weighting: str = "depth", normalize: bool = False,
                 weight=None, ignore_index: int = -100, reduction: str = "mean"):
        tax = as_taxonomy(taxonomy, "HXELoss")
        coef = hxe_coefficients(tax, alpha, weighting, normalize)
        super().__init__(tax.num_classes, weight, ignore_index, reduction)
        self.alpha, self.weighting, self.normalize = float(alpha), weighting, normalize
        self.tree = TreeTensors(tax)
        self.register_buffer("coefficients", torch.from_numpy(coef), persistent=False)
        # segment s of a class's ring layout belongs to ring |s - K|; fold[s, k] = [|s - K| <= k] turns
        # segment sums into the cumulative ring sums P(a_k), spread[l, s] = [l >= |s - K|] the other way
        K = self.tree.max_depth
        ring = np.abs(np.arange(2 * K + 1) - K)
        level = np.arange(K + 1)
        self.register_buffer("_fold", torch.from_numpy((ring[:, None] <= level[None, :]).astype(np.float32)),
                             persistent=False)
        self.register_buffer("_spread", torch.from_numpy((level[:, None] >= ring[None, :]).astype(np.float32)),
                             persistent=False)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, weighting={self.weighting!r}, normalize={self.normalize}"

    fuses_reduction = True

    def _per_sample(self, z, t, scale=None):
        tree = self.tree
        floor = torch.finfo(z.dtype).tiny * _FAR_MARGIN
        args = (self.coefficients, tree.ring_lengths, tree.ring_starts, self._fold, self._spread, floor)
        if torch.compiler.is_compiling():
            # no data-dependent branch: both paths for every row, the exact one where p_t is far below
            loss, far = _HierarchicalCrossEntropy.apply(tree.to_leaf_order(z), t, *args, None)
            # other rows reach the exact path detached: whatever its backward makes of them is dropped, not
            # multiplied by 0 (0 · inf would be nan)
            z_far = torch.where(far.unsqueeze(1), z, z.detach())
            log_p = tree.gather_path(tree.subtree_logsumexp(torch.log_softmax(z_far, dim=1)), t)
            coef = self.coefficients.index_select(0, t).to(z.dtype)
            loss = torch.where(far, -(coef * log_p).sum(dim=1), loss)
            return loss if scale is None else loss.sum() * scale
        loss, far = _HierarchicalCrossEntropy.apply(tree.to_leaf_order(z), t, *args, scale)
        # A target far below the best logit leaves p_t, and perhaps whole subtrees, underflowing
        # (or denormal); recompute those (rare) rows in log space, level by level.
        if far.numpy().any() if far.device.type == "cpu" else bool(far.any()):
            idx = far.nonzero().squeeze(1)
            log_q = torch.log_softmax(z.index_select(0, idx), dim=1)
            t_far = t.index_select(0, idx)
            log_p = tree.gather_path(tree.subtree_logsumexp(log_q), t_far)
            exact = -(self.coefficients.index_select(0, t_far).to(z.dtype) * log_p).sum(dim=1)
            # the kernel counted these rows as 0 in the summed form
            loss = loss + exact.sum() * scale if scale is not None else loss.index_put((idx,), exact)
        return loss
