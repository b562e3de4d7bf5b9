"""Exact Wasserstein-1 distance under the tree metric."""

from __future__ import annotations

import numpy as np
import torch

from taxosmooth._checks import check_positive
from taxosmooth.losses._common import TreeLossBase, as_taxonomy
from taxosmooth.tree_ops import TreeTensors

__all__ = ["TreeWassersteinLoss"]


class TreeWassersteinLoss(TreeLossBase):
    r"""Wasserstein-1 distance between the prediction and the label under the tree metric.

    .. math::

        W_1(p, \delta_t) = \sum_{v \ne r} w(v)\, \lvert P(v) - Q(v) \rvert
        \;(+\; \gamma \cdot \mathrm{CE}(z, t))

    with ``p = softmax(z)``, ``P(v)`` / ``Q(v)`` the mass of ``p`` / of the
    one-hot label under node ``v``, ``w(v)`` the length of the edge above ``v``
    (1 unless the taxonomy is weighted). On a tree this closed form *is* the
    optimal-transport distance for the path metric (Evans & Matsen 2012;
    Le et al., "Tree-Sliced Variants of Wasserstein Distances", NeurIPS 2019),
    so no solver is needed.

    How: for a one-hot label, with ``a_k`` the ancestors of ``t``, ``R_k`` the
    predicted mass on ring ``k`` and ``wd`` the weighted depth,
    ``W_1 = Σ_k R_k (wd(t) - wd(a_k)) + Σ_k Σ_{j ∈ ring k} p_j (wd(j) - wd(a_k))``:
    mass above the path plus mass off the path, every term ``>= 0`` (no
    cancellation). O(batch × classes) time, O(classes × depth) buffers.

    Parameters
    ----------
    taxonomy : Taxonomy
    ce_weight : float, default 0.0
        Optional cross-entropy term ``γ``, as in :class:`ExpectedCostLoss`.
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
    >>> ts.TreeWassersteinLoss(tax)(torch.zeros(1, 4), torch.tensor([0])).item()  # (0 + 2 + 4 + 4) / 4
    2.5
    """

    def __init__(self, taxonomy, ce_weight: float = 0.0, weight=None, ignore_index: int = -100,
                 reduction: str = "mean"):
        tax = as_taxonomy(taxonomy, "TreeWassersteinLoss")
        super().__init__(tax.num_classes, weight, ignore_index, reduction)
        self.ce_weight = check_positive(ce_weight, "ce_weight", allow_zero=True)
        c = tax.compiled
        path = c.class_path.copy()
        path[path < 0] = 0
        wd_path = c.weighted_depth[path]  # (C, K+1)
        self.tree = TreeTensors(tax)
        self.register_buffer("path_wdepth", torch.from_numpy(wd_path), persistent=False)
        self.register_buffer("class_wdepth", torch.from_numpy(np.ascontiguousarray(wd_path[:, 0])), persistent=False)

    def extra_repr(self) -> str:
        return f"ce_weight={self.ce_weight}"

    def _per_sample(self, z, t):
        log_p = torch.log_softmax(z, dim=1)
        p = log_p.exp()
        wd = self.class_wdepth.to(z.dtype)
        wd_path = self.path_wdepth.to(z.dtype).index_select(0, t)  # wd(a_k)
        both = self.tree.ring_sum(torch.cat([p, p * wd], dim=0), torch.cat([t, t]))
        mass, mass_wd = both.chunk(2, dim=0)
        above = (mass * (wd_path[:, :1] - wd_path)).sum(dim=1)
        off_path = (mass_wd - mass * wd_path).sum(dim=1)
        loss = above + off_path
        if self.ce_weight == 0.0:
            return loss
        return loss - self.ce_weight * log_p.gather(1, t.unsqueeze(1)).squeeze(1)
