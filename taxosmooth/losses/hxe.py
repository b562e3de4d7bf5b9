"""Hierarchical cross entropy (HXE), Bertinetto et al., CVPR 2020."""

from __future__ import annotations

import numpy as np
import torch

from taxosmooth._checks import check_positive
from taxosmooth.losses._common import TreeLossBase, as_taxonomy
from taxosmooth.tree_ops import TreeTensors, ring_expand_leaf_order, ring_sum_leaf_order

__all__ = ["HXELoss", "hxe_coefficients", "hxe_node_weights", "WEIGHTINGS"]

WEIGHTINGS = ("depth", "height")

# shift of the exponentials: at most this many nats below the largest logit (e^70 · C stays finite in float32)
_SHIFT_FLOOR = 70.0
# rows whose target is further than this below the largest logit take the exact log-space path
_EXACT_GAP = 100.0


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
    path = c.class_path.copy()
    path[path < 0] = 0
    lp = lam[path]
    coef = np.diff(lp, axis=1, prepend=0.0)
    H = c.depth[c.class_node]
    coef[np.arange(coef.shape[1])[None, :] >= H[:, None]] = 0.0
    return coef


class _HierarchicalCrossEntropy(torch.autograd.Function):
    """``-Σ_l c_l log P(a_l)`` in leaf order, gradient written out.

    ``log P(a_0)`` is the log-softmax of the target itself; ``P(a_l)``, ``l >= 1``,
    are cumulative ring sums of ``e = exp(z - s)``, ``s = max(z_t, max(z) - 70)``
    (the same pass gives the log-sum-exp). Gradient:
    ``p_j Σ_l c_l - c_0 [j = t] - e_j Σ_{l >= max(k(j), 1)} c_l / E_l`` with
    ``E_l = Σ_{j under a_l} e_j`` and ``k(j)`` the ring of ``j``.
    """

    @staticmethod
    def forward(ctx, z_leaf, target_pos, coef, lengths, ring_of_segment):
        m = z_leaf.amax(dim=1, keepdim=True)
        zt = z_leaf.gather(1, target_pos.unsqueeze(1))
        shift = torch.maximum(zt, m - _SHIFT_FLOOR)  # (non-finite logits give NaN, as in cross_entropy)
        e = torch.sub(z_leaf, shift).exp_()  # <= e^70: no overflow
        shift_minus_lse = e.sum(dim=1, keepdim=True).log_().neg_()
        mass = ring_sum_leaf_order(e, lengths, ring_of_segment).cumsum_(dim=1)
        # a subtree whose mass underflowed entirely is clamped (value) and gets no gradient
        floor = torch.finfo(mass.dtype).tiny * 1e8
        log_p = mass.clamp_min(floor).log_().add_(shift_minus_lse)
        log_p[:, :1] = zt - shift - shift_minus_lse.neg()  # log p_t = z_t - lse, exactly as cross entropy
        ctx.save_for_backward(e, coef, mass, shift_minus_lse, target_pos, lengths, ring_of_segment)
        ctx.floor = floor
        gap = (m - zt).squeeze(1)  # how far the target is below the best logit (not differentiable)
        ctx.mark_non_differentiable(gap)
        return torch.linalg.vecdot(coef, log_p, dim=1).neg_(), gap

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad, _grad_gap):
        e, coef, mass, shift_minus_lse, target_pos, lengths, ring_of_segment = ctx.saved_tensors
        inv = torch.where(mass > ctx.floor, coef / mass.clamp_min(ctx.floor), torch.zeros_like(mass))
        inv[:, 0] = 0.0
        per_ring = inv.flip(1).cumsum(dim=1).flip(1)  # Σ_{l >= max(k, 1)} c_l / E_l
        g = grad.unsqueeze(1)
        scale = coef.sum(dim=1, keepdim=True) * shift_minus_lse.exp()
        # ∂/∂z_j = e_j · (scale - per_ring[k(j)]) · g, minus c_0 · g at the target
        out = ring_expand_leaf_order((scale - per_ring) * g, lengths, ring_of_segment, e.shape[1]).mul_(e)
        out.scatter_add_(1, target_pos.unsqueeze(1), -(coef[:, :1] * g))
        return out, None, None, None, None


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
    coefficients (:func:`hxe_coefficients`); ``log p_t`` is the log-softmax
    itself (exactly cross entropy's term) and ``P(a_l)``, ``l >= 1``, are
    partial sums of exact ring sums of ``exp(z - s)`` with a per-sample shift
    ``s = max(z_t, max_j z_j - 70)``, so nothing overflows; rows whose target
    lies more than 100 nats below the best logit (where a whole subtree could
    underflow) are recomputed exactly in log space
    (:meth:`TreeTensors.subtree_logsumexp`; skipped under ``torch.compile``).
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

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, weighting={self.weighting!r}, normalize={self.normalize}"

    def _per_sample(self, z, t):
        tree = self.tree
        coef = self.coefficients.to(z.dtype).index_select(0, t)
        lengths = tree.ring_lengths.index_select(0, t)
        pos = tree.class_position.index_select(0, t)
        loss, gap = _HierarchicalCrossEntropy.apply(tree.to_leaf_order(z), pos, coef, lengths, tree.ring_of_segment)
        if torch.compiler.is_compiling():
            return loss
        # A target far below the best logit can leave whole subtrees underflowing in the shared
        # shift of the fast path; recompute those (rare) rows in log space, level by level.
        far = gap > _EXACT_GAP
        if bool(far.any()):
            idx = far.nonzero().squeeze(1)
            log_q = torch.log_softmax(z.index_select(0, idx), dim=1)
            log_p = tree.gather_path(tree.subtree_logsumexp(log_q), t.index_select(0, idx))
            loss = loss.index_put((idx,), -(coef.index_select(0, idx) * log_p).sum(dim=1))
        return loss
