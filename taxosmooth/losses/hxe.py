"""Hierarchical cross entropy (HXE), Bertinetto et al., CVPR 2020."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from taxosmooth._checks import check_positive
from taxosmooth.losses._base import LossTarget, TreeLossBase, as_taxonomy
from taxosmooth.tree_ops import Rings, TreeTensors

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from taxosmooth.taxonomy import Taxonomy

__all__ = ["HXELoss", "hxe_node_weights", "WEIGHTINGS"]

WEIGHTINGS = ("depth", "height")

# a row's subtree masses P(u) >= this many times the smallest normal float keep the ratios a(u) / P(u) of
# the probability-target kernel far from overflow; rows with a smaller one (a subtree with target mass
# some 60 nats below the best logit in float32) are computed exactly in log space instead
_FAR_MARGIN = 2.0**40


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


class HXELoss(TreeLossBase):
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

    How: by summation by parts ``ℓ = -Σ_k c_k log P(r_k)`` over the target's
    ring nodes (its branching ancestors, :mod:`taxosmooth.tree_ops`), each
    ``log P(r_k)`` a log-sum-exp of the rings inside it, every ring shifted by
    its own maximum: exact in log space, so a target far below the best logit
    loses nothing. The gradient is one value per ring segment times
    ``exp(z - max)``, written in the forward (the backward only scales it).
    Probability targets take a node-level pass (subtree sums of ``p`` and of the
    prediction). O(batch × classes), no ``(C, C, depth)`` tensor.

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

    tree: TreeTensors  # built from a taxonomy: always set
    # buffers
    node_lambda: torch.Tensor
    node_lambda_top: torch.Tensor

    def __init__(self, taxonomy: Taxonomy, alpha: float, weighting: str = "depth", normalize: bool = False,
                 weight: ArrayLike | None = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0, coarse_labels: bool = False) -> None:
        tax = as_taxonomy(taxonomy, "HXELoss")
        lam = hxe_node_weights(tax, alpha, weighting, normalize)
        tree = TreeTensors(tax)
        super().__init__(tax.num_classes, weight, ignore_index, reduction, label_smoothing, coarse_labels, tree, tax)
        self.alpha, self.weighting, self.normalize = float(alpha), weighting, normalize
        self._lam = lam
        self._lam_top = lam[tree._host.top]  # λ(top(u)): the coefficient sums of ring nodes telescope to it
        self._lam_level = tree.nodes_host.table(lam)
        self._internal_level = tree.nodes_host.table(~tax.compiled.is_leaf)
        self.register_buffer("node_lambda", torch.from_numpy(lam), persistent=False)
        self.register_buffer("node_lambda_top", torch.from_numpy(self._lam_top.copy()), persistent=False)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return (f"alpha={self.alpha}, weighting={self.weighting!r}, normalize={self.normalize}"
                + (", " + base if base else ""))

    # ------------------------------------------------------------------ coefficients
    def _coefficients(self, rings, omega):
        """``c_k = λ(top(r_k)) - λ(top(r_{k-1}))`` (``c_0 = λ(top(r_0))``) times the rows' factors (B, R)."""
        if rings.host:
            lt = rings.gather(self._lam_top)
            coef = lt.copy()
            coef[:, 1:] -= lt[:, :-1]
            return coef * (omega if isinstance(omega, float) else omega[:, None])
        lt = rings.gather(self.node_lambda_top)
        coef = torch.cat([lt[:, :1], lt[:, 1:] - lt[:, :-1]], dim=1)
        return coef * (omega if isinstance(omega, float) else omega.to(coef.dtype)[:, None])

    def _node_targets(self, target: LossTarget, host: bool):
        """The target mass under every node, ``T`` (M, N), for probability or smoothed targets
        (host: level order, see :class:`~taxosmooth.tree_ops.NodeLayout`; torch: node-id order)."""
        tree = self.tree
        cw = target.class_weight
        C = self.num_classes
        if host:
            lay = tree.nodes_host
            if target.kind == "prob":
                p: Any = cast(torch.Tensor, target.prob).double().numpy()  # numpy here, torch below
                if cw is not None:
                    p = p * cw.double().numpy()
                return lay.up(tree.leaf_cols(p)) * _host_col(target.omega)
            node = tree._host.target_node[cast(torch.Tensor, target.ids).numpy()][:, None]
            u: Any = lay.order[None, :]  # numpy here, torch below
            anc = ((u <= node) & (node < tree._host.subtree_end[lay.order][None, :])).astype(np.float64)
            w = np.full((1, C), 1.0 / C) if cw is None else tree.leaf_cols((cw.double().numpy() / C)[None, :])
            return anc * _host_col(target.omega) + lay.up(w) * _host_col(target.smooth)
        if target.kind == "prob":
            p = cast(torch.Tensor, target.prob).to(torch.float64)
            if cw is not None:
                p = p * cw.to(torch.float64)
            return tree.subtree_sum(p) * _ref_col(target.omega)
        anc = tree.ancestor_indicator(tree.target_node.index_select(0, cast(torch.Tensor, target.ids)), host=False)
        u = torch.full((1, C), 1.0 / C, dtype=torch.float64, device=anc.device) if cw is None else \
            (cw.to(torch.float64) / C)[None, :]
        return anc * _ref_col(target.omega) + tree.subtree_sum(u) * _ref_col(target.smooth)

    # ------------------------------------------------------------------ host kernels
    sparse_targets = True

    def _host(self, z, target: LossTarget):
        if target.kind in ("index", "sparse"):
            rows, grad = self._host_rings(z, target)
            if target.smooth is None:
                return rows, grad
            # label smoothing or a probability floor: the loss is linear in the target, so the uniform
            # part is one more term with the same node weights for every row
            rows_u, grad_u = self._host_uniform(z, target)
            return rows + rows_u, grad + grad_u
        return self._host_nodes(z, self._node_targets(target, host=True), target)

    def _host_uniform(self, z, target: LossTarget):
        """``smooth · Σ_c (weight[c] / C) · ℓ(z, c)`` per row: ``-Σ_u a(u) log P(u)`` with one node
        vector ``a`` for the whole batch (``a(u) = λ(u) U(u) - Σ_{children c} λ(c) U(c)``, ``U(u)`` the
        uniform mass under ``u``), as :meth:`_host_nodes` with a target that is the same in every row."""
        tree = self.tree
        lay = tree.nodes_host
        C = self.num_classes
        cw = target.class_weight
        w = np.full((1, C), 1.0 / C) if cw is None else tree.leaf_cols((cw.double().numpy() / C)[None, :])
        u_nodes = lay.up(w)  # (1, N) level order
        lam_u = u_nodes * self._lam_level
        a = (lam_u - lay.children_sum(lam_u))[0]
        a[0] = 0.0  # the root: log P(root) = 0
        sm = np.asarray(target.host_smooth(), dtype=np.float64)
        sm_rows: Any = float(sm) if sm.ndim == 0 else sm  # a float, or (M,)
        smc: Any = sm_rows if sm.ndim == 0 else sm[:, None]
        p_t, lse_t = _softmax(z)
        p = p_t.numpy()
        pl = tree.leaf_cols(p)
        s = lay.up(pl.astype(np.float64))
        wi = np.flatnonzero((a != 0) & self._internal_level)
        s_w = s[:, wi]
        far = (s_w < np.finfo(p.dtype).tiny * _FAR_MARGIN).any(axis=1)
        a_leaf = a[lay.leaf_pos]
        nz = np.flatnonzero(a_leaf)
        zl = tree.leaf_cols(z.double().numpy())
        lse = lse_t.double().numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            # leaves: log p_j = z_j - lse exactly; classes without uniform weight (weight 0) skipped
            leaf_term = zl @ a_leaf - lse * a_leaf.sum() if len(nz) == C else zl[:, nz] @ a_leaf[nz] - lse * a_leaf.sum()
            rows = -(np.log(s_w) @ a[wi] + leaf_term) * sm_rows
            ratio = np.zeros_like(s)
            ratio[:, wi] = a[wi] / s_w
            d = lay.leaves(lay.down(ratio))
            grad_leaf = (pl * (a.sum() - d) - a_leaf[None, :]) * smc  # rows that underflow: redone below
        grad = tree.class_cols(torch.from_numpy(grad_leaf.astype(p.dtype)))
        if far.any():
            t_nodes = np.broadcast_to(u_nodes * smc, s.shape)
            rows, grad = self._exact_rows(z, lay.to_node_order(t_nodes), rows, grad, far)
        return rows, grad

    def _host_rings(self, z, target: LossTarget):
        """Class and coarse targets (and the few classes of sparse probability rows):
        ``-Σ_k c_k log P(r_k)`` from ring sums of the softmax.

        In linear space first (one softmax, one segment sum and one expansion per target column);
        rows where a weighted ``P(r_k)`` underflows (a target far below the best logit) are
        recomputed exactly in log space (:meth:`_host_rings_exact`).
        """
        tree = self.tree
        zl = tree.leaf_cols(z)
        p = torch.softmax(zl, dim=1)
        pn = p.numpy()
        tiny = np.finfo(pn.dtype).tiny * _FAR_MARGIN
        rows: Any  # 0.0, then the (M,) row losses
        far: Any  # None, then (M,) bool
        rows, far, columns, parts = 0.0, None, [], []
        for ids, omega in target.columns():
            rings = tree.rings(ids, host=True, coarse=target.coarse)
            coef = self._coefficients(rings, _host_col1(omega))
            mass = np.cumsum(rings.ring_sums(rings.sum(pn).astype(np.float64)), axis=1)  # P(r_k)
            live = coef != 0
            col_far = (live & (mass < tiny)).any(axis=1)
            far = col_far if far is None else far | col_far
            safe = np.where(live, mass, 1.0)
            rows = rows - (np.where(live, coef, 0.0) * np.log(safe)).sum(1)
            # ∂ℓ/∂z_j = p_j (Σ_l c_l - Σ_{l >= ring(j)} c_l / P(r_l)): a reverse cumulative sum over the rings
            tail = np.cumsum((coef / safe)[:, ::-1], axis=1)[:, ::-1]
            parts.append((rings, coef.sum(1)[:, None] - tail))
            columns.append((rings, coef))
        pn *= Rings.expand_sum(parts, pn.dtype)
        if far.any():
            idx = np.flatnonzero(far)
            zf = zl.numpy()[idx]
            exact_rows, exact_grad = 0.0, 0.0
            for rings, coef in columns:
                r, g = self._host_rings_exact(zf, rings.take(idx), coef[idx])
                exact_rows, exact_grad = exact_rows + r, exact_grad + g
            rows[idx] = exact_rows
            pn[idx] = exact_grad
        return rows, tree.class_cols(p)

    def _host_rings_exact(self, zl: np.ndarray, rings, coef: np.ndarray):
        """The ring kernel in log space: every ring shifted by its own maximum (leaf order, numpy)."""
        tree = self.tree
        e, m, ring_lse = rings.logsumexp(zl)
        lse_path = np.logaddexp.accumulate(ring_lse, axis=1)  # log Σ e^z over the subtree of r_k
        lse = lse_path[:, -1]
        live = coef != 0
        rows = -np.where(live, coef * (lse_path - lse[:, None]), 0.0).sum(1)
        # Σ_{l >= k} c_l exp(lse_k - lse_l) by a reverse recurrence with factors <= 1
        R = coef.shape[1]
        h = coef.copy()
        if R > 1:
            ratio = np.where(np.isfinite(lse_path[:, 1:]), np.exp(lse_path[:, :-1] - lse_path[:, 1:]), 0.0)
            for k in range(R - 2, -1, -1):
                h[:, k] += ratio[:, k] * h[:, k + 1]
        ring = list(tree.ring_of_segment_list)
        alive = np.isfinite(m)
        ms = np.where(alive, m, 0.0)
        f = np.exp(ms - lse[:, None]) * coef.sum(1)[:, None] - np.exp(ms - lse_path[:, ring]) * h[:, ring]
        e *= rings.expand(np.where(alive, f, 0.0).astype(e.dtype))
        return rows, e

    def _host_nodes(self, z, t_nodes: np.ndarray, target: LossTarget):
        """Node-level kernel for node target masses ``T`` (M, N), level order: probability and smoothed
        targets. ``ℓ = -Σ_u a(u) log P(u)`` with ``a(u) = λ(u) T(u) - Σ_{children c} λ(c) T(c)``; the
        leaves' ``log P`` is the exact log-softmax, the internal nodes' the log of subtree sums, and rows
        where a weighted subtree's mass underflows are recomputed in log space."""
        tree = self.tree
        lay = tree.nodes_host
        p_t, lse_t = _softmax(z)
        p = p_t.numpy()
        pl = tree.leaf_cols(p)
        lam_t = t_nodes * self._lam_level
        a = lam_t - lay.children_sum(lam_t)
        a[:, 0] = 0.0  # the root (first in level order): log P(root) = 0
        s = lay.up(pl.astype(np.float64))
        internal = self._internal_level
        weighted = (a != 0) & internal[None, :]
        far = (weighted & (s < np.finfo(p.dtype).tiny * _FAR_MARGIN)).any(axis=1)
        log_s = np.log(np.where(internal[None, :], s, 1.0))
        leaf_cols = lay.leaf_pos
        log_s[:, leaf_cols] = tree.leaf_cols(z.double().numpy()) - lse_t.double().numpy()[:, None]  # exact
        rows = -np.where(a == 0, 0.0, a * log_s).sum(1)
        ratio = np.where(weighted, a / np.where(weighted, s, 1.0), 0.0)
        d = lay.leaves(lay.down(ratio))
        grad_leaf = pl * (a.sum(1)[:, None] - d) - lay.leaves(a)
        grad = tree.class_cols(torch.from_numpy(grad_leaf.astype(p.dtype)))
        if far.any():
            rows, grad = self._exact_rows(z, lay.to_node_order(t_nodes), rows, grad, far)
        return rows, grad

    def _exact_rows(self, z, t_nodes, rows, grad, far):
        """Rows whose target mass sits on a subtree whose probability underflows: log space, by autograd."""
        idx = torch.from_numpy(np.flatnonzero(far))
        zf = z.index_select(0, idx).detach().requires_grad_(True)
        with torch.enable_grad():
            r = self._ref_nodes(zf, torch.from_numpy(t_nodes[far]))
            (g,) = torch.autograd.grad(r.sum(), zf)
        rows = rows.copy()
        rows[far] = r.detach().double().numpy()
        grad[idx] = g.to(grad.dtype)
        return rows, grad

    # ------------------------------------------------------------------ torch formulation
    def _reference(self, z, target: LossTarget):
        if target.kind == "index" and target.smooth is None:
            tree = self.tree
            rings = tree.rings(cast(torch.Tensor, target.ids), host=False)
            coef = self._coefficients(rings, target.omega).to(z.dtype)
            log_p = tree.subtree_logsumexp(torch.log_softmax(z, dim=1)).gather(1, rings.nodes)
            return -torch.where(coef == 0, torch.zeros_like(log_p), coef * log_p).sum(1)
        return self._ref_nodes(z, self._node_targets(target, host=False))

    def _ref_nodes(self, z, t_nodes: torch.Tensor):
        tree = self.tree
        lam_t = t_nodes.to(torch.float64) * self.node_lambda.to(device=z.device)
        a = (lam_t - tree.children_sum(lam_t)).to(z.dtype)
        a = torch.cat([torch.zeros_like(a[:, :1]), a[:, 1:]], dim=1)  # log P(root) = 0
        log_p = tree.subtree_logsumexp(torch.log_softmax(z, dim=1))
        return -torch.where(a == 0, torch.zeros_like(log_p), a * log_p).sum(1)


def _softmax(z):
    m = z.amax(dim=1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.sub(z, m).exp_()
    total = p.sum(dim=1, keepdim=True)
    lse = (m + total.log()).squeeze(1)
    return p.mul_(total.reciprocal_()), lse


def _host_col1(x):
    """A per-row factor as a float or a float64 (M,) numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).numpy()
    return float(x)


def _host_col(x):
    if x is None:
        return 0.0
    if isinstance(x, float):
        return x
    return x.detach().double().numpy()[:, None]


def _ref_col(x):
    if x is None:
        return 0.0
    if isinstance(x, float):
        return x
    return x.to(torch.float64)[:, None]
