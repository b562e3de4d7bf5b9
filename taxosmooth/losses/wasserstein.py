"""Exact Wasserstein-1 distance under the tree metric."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from taxosmooth._checks import check_positive
from taxosmooth.losses._base import LossTarget, TreeLossBase, as_taxonomy
from taxosmooth.losses._kernels import host_softmax, ref_ring0_log_mass
from taxosmooth.losses.expected_cost import host_expected_row, ref_expected_row
from taxosmooth.tree_ops import Rings, TreeTensors

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from taxosmooth.taxonomy import Taxonomy

__all__ = ["TreeWassersteinLoss"]


def _vec(x, n: int, host: bool, device=None):
    """A per-row factor (float or (M,) tensor) as a float64 (M,) numpy array (host) or tensor."""
    if host:
        if isinstance(x, float):
            return np.full(n, x)
        return x.detach().double().cpu().numpy()
    if isinstance(x, float):
        return torch.full((n,), x, dtype=torch.float64, device=device)
    return x.to(torch.float64)


class TreeWassersteinLoss(TreeLossBase):
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

    How: for a class or coarse label the rows of distances are written ring by
    ring (O(batch × classes)), then one expected-cost pass. A batch of
    probability rows that are zero outside at most four classes each (Mixup or
    CutMix of class labels) is exact from those classes' rings: ``Q`` is zero
    off their paths, so with ``|P - Q| = P + Q - 2 min(P, Q)`` only the ring
    nodes enter (O(batch × classes)); other probability rows take one
    pass of subtree sums (O(batch × nodes)).

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

    sparse_targets = True

    tree: TreeTensors  # built from a taxonomy: always set
    # buffers
    node_wdepth: torch.Tensor
    node_reach: torch.Tensor
    node_edge: torch.Tensor
    leaf_wdepth: torch.Tensor

    def __init__(self, taxonomy: Taxonomy, ce_weight: float = 1.0, weight: ArrayLike | None = None,
                 ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                 coarse_labels: bool = False) -> None:
        tax = as_taxonomy(taxonomy, "TreeWassersteinLoss")
        tree = TreeTensors(tax)
        super().__init__(tax.num_classes, weight, ignore_index, reduction, label_smoothing, coarse_labels, tree, tax)
        self.ce_weight = check_positive(ce_weight, "ce_weight", allow_zero=True)
        c = tax.compiled
        wd = c.weighted_depth
        # wd(v) + h_min(v): the weighted depth of the shallowest class below v
        reach = -tree.host_subtree_max(-wd[c.leaf_node][None, :])[0]
        edge = c.weight.copy()
        edge[0] = 0.0
        self._wd, self._reach, self._edge = wd, reach, edge
        self._edge_level = tree.nodes_host.table(edge)
        self._leaf_wd = wd[c.leaf_node]
        self.register_buffer("node_wdepth", torch.from_numpy(wd.copy()), persistent=False)
        self.register_buffer("node_reach", torch.from_numpy(reach.copy()), persistent=False)
        self.register_buffer("node_edge", torch.from_numpy(edge), persistent=False)
        self.register_buffer("leaf_wdepth", torch.from_numpy(self._leaf_wd.copy()), persistent=False)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return f"ce_weight={self.ce_weight}" + (", " + base if base else "")

    # ------------------------------------------------------------------ pieces
    def _distance_rows(self, rings, omega, dtype):
        """``ω (d(v, j) + h_min(v))`` outside ring 0, 0 inside (M, C): leaf order (host) or class order (torch)."""
        host = rings.host
        wd = rings.gather(self._wd if host else self.node_wdepth)
        reach = rings.gather(self._reach if host else self.node_reach)
        vals = reach[:, :1] - 2.0 * wd  # j on ring k >= 1: wd(j) + reach(v) - 2 wd(r_k)
        if host:
            # a class target's ring 0 is the class itself: wd(t) + reach(t) - 2 wd(t) = 0 exactly
            om = omega if isinstance(omega, float) else omega[:, None]
            rows = rings.expand_rings((vals * om).astype(dtype))
            rows += (self._leaf_wd[None, :] * (om if isinstance(om, float) else om)).astype(dtype)
            if rings.coarse:  # the classes under a coarse label cost nothing
                ring0: Any = np.zeros(vals.shape, dtype=dtype)  # numpy here, torch below
                ring0[:, 0] = 1.0
                rows *= 1 - rings.expand_rings(ring0)
            return torch.from_numpy(rows)
        zero = torch.zeros_like(vals[:, :1])
        vals = torch.cat([zero, vals[:, 1:]], dim=1)
        ring0 = torch.cat([torch.ones_like(zero), torch.zeros_like(vals[:, 1:])], dim=1)
        rows = rings.expand_rings(vals) + self.leaf_wdepth.to(vals.dtype)
        rows = torch.where(rings.expand_rings(ring0) > 0, torch.zeros_like(rows), rows)
        om = omega if isinstance(omega, float) else omega.to(rows.dtype)[:, None]
        return self.tree.to_class_order(rows * om).to(dtype)

    def _host_w1(self, p_leaf: np.ndarray, q_leaf: np.ndarray, factor: np.ndarray):
        """``factor · W1(p, q)`` per row and its gradient w.r.t. the logits (leaf order, numpy)."""
        lay = self.tree.nodes_host
        s = lay.up(p_leaf.astype(np.float64))
        diff = s - lay.up(q_leaf)
        v = np.sign(diff) * self._edge_level
        rows = (np.abs(diff) * self._edge_level).sum(1) * factor
        g = lay.leaves(lay.down(v))
        g -= (v * s).sum(1)[:, None]
        return rows, p_leaf * g * factor[:, None]

    def _ref_w1(self, z, q, factor):
        tree = self.tree
        s = tree.subtree_sum(torch.softmax(z, dim=1))
        t = tree.subtree_sum(q.to(z.dtype))
        return ((s - t).abs() * self.node_edge.to(z.dtype)).sum(1) * factor.to(z.dtype)

    def _uniform(self, cw, device=None):
        C = self.num_classes
        u = torch.full((C,), 1.0 / C, dtype=torch.float64, device=device)
        return u if cw is None else cw.to(torch.float64) / C

    def _mean_weight(self, cw) -> float:
        return 1.0 if cw is None else float(cw.sum()) / self.num_classes

    def _coarse_rows(self, ids: torch.Tensor):
        """(M,) bool: rows whose target is an internal node (all False without coarse labels)."""
        return ids >= self.num_classes if self.coarse_labels else torch.zeros_like(ids, dtype=torch.bool)

    # ------------------------------------------------------------------ host kernel
    def _host(self, z, target: LossTarget):
        n = z.shape[0]
        if target.kind == "index" and target.smooth is None:
            return self._host_ids(z, target, np.arange(n))
        if target.kind == "sparse":
            if target.smooth is None:
                return self._host_sparse(z, target)
            target = target.dense()  # a floor puts mass under every node: one pass of subtree sums
        rows = np.zeros(n)
        grad = torch.zeros_like(z)
        if target.kind == "prob":
            parts = [("prob", np.arange(n))]
        else:
            coarse = self._coarse_rows(cast(torch.Tensor, target.ids)).numpy()
            parts = [("smoothed", np.flatnonzero(~coarse)), ("coarse", np.flatnonzero(coarse))]
        for kind, idx in parts:
            if idx.size == 0:
                continue
            r, g = self._host_part(z[idx], _subset(target, idx, n), kind)
            rows[idx] = r
            grad[idx] = g
        return rows, grad

    def _host_ids(self, z, target: LossTarget, idx):
        tree = self.tree
        h = tree._host
        zl = tree.leaf_cols(z)
        rings = tree.rings(cast(torch.Tensor, target.ids), host=True, coarse=target.coarse)
        rows_d = self._distance_rows(rings, target.host_omega(), z.numpy().dtype)
        coef = self.ce_weight * _vec(target.omega, z.shape[0], True) if self.ce_weight else None
        out, grad = host_expected_row(zl, rows_d, coef, rings, None)
        return out, tree.class_cols(grad)

    def _host_sparse(self, z, target: LossTarget):
        """Probability rows on a few classes (Mixup, CutMix): exact ``W_1`` from the classes' rings.

        With ``Q`` zero off the targets' ancestors and ``|P - Q| = P + Q - 2 min(P, Q)``,
        ``W_1 = Σ_j p_j wd(j) + Σ_i q_i wd(c_i) - 2 Σ_{v ∈ anc} w(v) min(P(v), Q(v))``. Along a path,
        ``P`` and ``Q`` change only at branching ancestors, the ring nodes, so the last sum runs over
        the rings of each target class (each ring node once) with the segment length
        ``wd(r_k) - wd(r_{k+1})``. Written as expected costs ``R_j`` (``Σ_j p_j R_j`` is the value and
        ``p ⊙ (R - ⟨p, R⟩)`` the gradient; at a tie ``P = Q`` the subgradient ``sign 0 = 0``, as in the
        dense pass), plus the cross entropy of each target column.
        """
        tree = self.tree
        h = tree._host
        n = z.shape[0]
        dt = z.numpy().dtype
        zl = tree.leaf_cols(z)
        ids = cast(torch.Tensor, target.ids)
        values = cast(torch.Tensor, target.values).numpy()  # q at the target classes (no floor on this path)
        omegas = target.omega.numpy()  # (M, k): values · class weight · scale
        factor = omegas.sum(1)
        pos = h.class_position[ids.numpy()]  # (M, k) leaf positions
        softmax = host_softmax(zl)
        pn = softmax[0].numpy()
        wd = self._wd
        # R_j = factor · (wd(j) - 2 Σ_{ring nodes above j, P < Q} seg) + a constant per row, kept apart
        # (it moves the value, not the gradient): Σ_i q_i wd(c_i) - 2 Σ_{P >= Q} seg · Q
        extra = (values * self._leaf_wd[pos]).sum(1)
        parts, ce_terms = [], []
        for col in range(ids.shape[1]):
            rings = tree.rings(ids[:, col], host=True, coarse=False)
            lo, hi = h.leaf_lo[rings.nodes], h.leaf_hi[rings.nodes]  # (M, R)
            inside = (pos[:, None, :] >= lo[:, :, None]) & (pos[:, None, :] < hi[:, :, None])  # (M, R, k)
            Q = (inside * values[:, None, :]).sum(2)
            nd = wd[rings.nodes]
            seg = np.zeros_like(nd)
            seg[:, :-1] = nd[:, :-1] - nd[:, 1:]
            if col:
                seg *= ~inside[:, :, :col].any(2)  # each ring node once: not if an earlier class is under it
            P = np.cumsum(rings.ring_sums(rings.sum(pn)), axis=1, dtype=np.float64)
            ind = (P < Q) + 0.5 * (P == Q)
            extra -= 2.0 * (seg * (1.0 - ind) * Q).sum(1)
            below = np.cumsum((seg * ind)[:, ::-1], axis=1)[:, ::-1]  # Σ over the ring nodes above class j
            parts.append((rings, -2.0 * below))
            if self.ce_weight:
                ce_terms.append((self.ce_weight * omegas[:, col], None, pos[:, col]))
        rows = Rings.expand_sum(parts, dt)
        rows += self._leaf_wd.astype(dt)
        rows *= factor[:, None].astype(dt)
        out, grad = host_expected_row(zl, torch.from_numpy(rows), ce_terms=ce_terms, softmax=softmax)
        return out + factor * extra, tree.class_cols(grad)

    def _host_part(self, z, target: LossTarget, kind: str):
        tree = self.tree
        h = tree._host
        n, C = z.shape
        dt = z.numpy().dtype
        gamma = self.ce_weight
        cw = target.class_weight
        if kind == "coarse":  # (1 - ε)·distance to v  +  ε·W1(p, uniform), cross entropy alike
            rows, grad = self._host_ids(z, _without_smoothing(target), None)
            zl = tree.leaf_cols(z)
            sm = _vec(target.smooth, n, True)
            p, _ = host_softmax(zl)
            u = np.full((1, C), 1.0 / C)
            r2, g2 = self._host_w1(p.numpy(), u, sm * self._mean_weight(cw))
            ce = None
            if gamma:
                uw = self._uniform(cw).numpy()[h.position_class]
                ce = torch.from_numpy((gamma * sm[:, None] * uw[None, :]).astype(dt))
                r3, g3 = host_expected_row(zl, torch.zeros_like(zl), ce_rows=ce)
                r2 = r2 + r3
                g2 = g2 + g3.numpy()
            g2 = torch.from_numpy(g2.astype(dt))
            return rows + r2, grad + (tree.class_cols(g2))
        zl = tree.leaf_cols(z)
        ce_rows: Any  # set with gamma
        coef = ce_rows = rings = None
        if kind == "prob":
            q: Any = cast(torch.Tensor, target.prob).to(torch.float64)  # numpy below
            pw = q if cw is None else q * cw.to(torch.float64)
            om = _vec(target.omega, n, True)
            factor = om * pw.sum(1).numpy()
            if gamma:
                ce_rows = gamma * pw.numpy() * om[:, None]
            q = q.numpy()
        else:  # class targets, smoothed: exact W1 to (1 - ε) onehot + ε / C
            q, factor = self._smoothed(target, True, n)
            if gamma:
                coef = gamma * _vec(target.omega, n, True)
                ce_rows = gamma * _vec(target.smooth, n, True)[:, None] * self._uniform(cw).numpy()[None, :]
                rings = tree.rings(cast(torch.Tensor, target.ids), host=True, coarse=target.coarse)
        q = tree.leaf_cols(q)
        if ce_rows is not None:
            ce_rows = tree.leaf_cols(ce_rows)
        p, _ = host_softmax(zl)
        rows, g = self._host_w1(p.numpy(), q, factor)
        if gamma:
            r2, g2 = host_expected_row(zl, torch.zeros_like(zl), coef, rings,
                                       ce_rows=torch.from_numpy(ce_rows.astype(dt)))
            rows = rows + r2
            g = g + g2.numpy()
        grad = torch.from_numpy(np.ascontiguousarray(g.astype(dt)))
        return rows, tree.class_cols(grad)

    def _smoothed(self, target: LossTarget, host: bool, n: int):
        """Class targets with label smoothing: the rows ``(1 - ε) onehot + ε / C`` (M, C) float64 and the
        rows' factor ``ω + smooth · mean weight`` (the target's expected weight times the scale)."""
        eps = self.label_smoothing
        C = self.num_classes
        ids = cast(torch.Tensor, target.ids)
        q = torch.full((n, C), eps / C, dtype=torch.float64, device=ids.device)
        q.scatter_add_(1, ids[:, None], torch.full_like(q[:, :1], 1.0 - eps))
        factor = _vec(target.omega, n, host, ids.device) + _vec(target.smooth, n, host, ids.device) * \
            self._mean_weight(target.class_weight)
        return (q.numpy() if host else q), factor

    # ------------------------------------------------------------------ torch formulation
    def _reference(self, z, target: LossTarget):
        if target.kind == "prob":
            return self._ref_part(z, target, "prob")
        if target.smooth is None:
            return self._ref_ids(z, target)
        coarse = self._coarse_rows(cast(torch.Tensor, target.ids))
        smoothed = self._ref_part(z, target, "smoothed")
        if not self.coarse_labels:
            return smoothed
        return torch.where(coarse, self._ref_part(z, target, "coarse"), smoothed)

    def _ref_ids(self, z, target: LossTarget):
        tree = self.tree
        rings = tree.rings(cast(torch.Tensor, target.ids), host=False)
        rows_d = self._distance_rows(rings, target.omega, z.dtype)
        if not self.ce_weight:
            return ref_expected_row(z, rows_d)
        return ref_expected_row(z, rows_d, self.ce_weight * _vec(target.omega, z.shape[0], False, z.device),
                                ref_ring0_log_mass(tree, z, rings.node))

    def _ref_part(self, z, target: LossTarget, kind: str):
        n, C = z.shape
        gamma = self.ce_weight
        cw = target.class_weight
        if kind == "coarse":
            rows = self._ref_ids(z, _without_smoothing(target))
            sm = _vec(target.smooth, n, False, z.device)
            u = torch.full((n, C), 1.0 / C, dtype=torch.float64, device=z.device)
            rows = rows + self._ref_w1(z, u, sm * self._mean_weight(cw))
            if gamma:
                ce = (gamma * sm[:, None] * self._uniform(cw, z.device)[None, :]).to(z.dtype)
                rows = rows + ref_expected_row(z, torch.zeros_like(z), ce_rows=ce)
            return rows
        if kind == "prob":
            q = cast(torch.Tensor, target.prob).to(torch.float64)
            pw = q if cw is None else q * cw.to(torch.float64)
            om = _vec(target.omega, n, False, z.device)
            rows = self._ref_w1(z, q, om * pw.sum(1))
            if gamma:
                rows = rows + ref_expected_row(z, torch.zeros_like(z), ce_rows=(gamma * pw * om[:, None]).to(z.dtype))
            return rows
        # coarse rows are computed by the other part
        ids = cast(torch.Tensor, target.ids).clamp_max(self.num_classes - 1)
        safe = LossTarget(kind="index", omega=target.omega, ids=ids, smooth=target.smooth, class_weight=cw)
        q, factor = self._smoothed(safe, False, n)
        rows = self._ref_w1(z, q, factor)
        if gamma:
            ce = (gamma * _vec(target.smooth, n, False, z.device)[:, None] * self._uniform(cw, z.device)[None, :])
            rows = rows + ref_expected_row(z, torch.zeros_like(z),
                                           gamma * _vec(target.omega, n, False, z.device).to(z.dtype),
                                           z.gather(1, ids[:, None])[:, 0], ce.to(z.dtype))
        return rows


def _subset(target: LossTarget, idx: np.ndarray, n: int) -> LossTarget:
    t = torch.from_numpy(idx)

    def pick(x):
        if x is None or isinstance(x, float):
            return x
        return x.index_select(0, t)

    return LossTarget(kind=target.kind, omega=pick(target.omega), ids=pick(target.ids), smooth=pick(target.smooth),
                      prob=pick(target.prob), class_weight=target.class_weight, coarse=target.coarse)


def _without_smoothing(target: LossTarget) -> LossTarget:
    return LossTarget(kind="index", omega=target.omega, ids=target.ids, smooth=None, class_weight=target.class_weight,
                      coarse=True)
