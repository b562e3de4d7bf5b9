"""Decisions at any node: answer a class, or a coarser node ("terrier", "dog") when the model is unsure.

Every rule starts from the **node probabilities** ``P(v) = Σ_{classes i under v} p_i``
for all nodes, one bottom-up pass, O(samples × nodes) (:func:`node_probabilities`).
Answers are **target ids** (:meth:`~taxosmooth.Taxonomy.encode`): a class keeps its
index in ``[0, C)``, an internal node has an id in ``[C, N)``.

Notation: ``n(v)`` the number of classes under ``v``; ``depth(v)`` edges from the
root; ``info(v) = log2(C / n(v))``, the information of ``v`` under a uniform prior
over the classes (0 at the root); ``LCA(i, u)`` the lowest common ancestor.

Rules (:data:`NODE_RULES`)
--------------------------
``"threshold"`` (``threshold=τ`` in ``(0, 1]``, default 0.5)
:   Among the nodes with ``P(v) > τ``, the most specific one: fewest classes
    under it, ties to the larger ``P(v)``. The root is always admissible, so
    ``τ = 1`` answers the root; for ``τ >= 0.5`` the admissible nodes form a
    path from the root and the answer is the deepest of them; as ``τ → 0`` it is
    the most probable class. Valmadre, "Hierarchical classification at
    multiple operating points", NeurIPS 2022 (jvlmdr/hiercls,
    ``infer.argmax_with_confidence``). Sweeping ``τ`` gives the operating curve
    of :func:`taxosmooth.metrics.operating_curve`.

``"max_info"``
:   The node of most information among those that hold a majority,
    ``P(v) > 1/2``: the ``"threshold"`` rule at ``τ = 1/2`` (Valmadre 2022,
    ``infer.max_info_majority_subtree``: information ``−log`` of the leaf
    fraction, decreasing in ``n(v)``).

``"crm"`` (``value="depth"`` or ``"information"``, ``excess_cost=α >= 0``, default 1)
:   Conditional risk over all nodes: ``argmin_u Σ_i p_i cost(i, u)`` with the
    cost of answering ``u`` when the class is ``i``, ``a = LCA(i, u)``,

    .. math:: \\mathrm{cost}(i, u) = \\big(\\ell(i) - \\ell(a)\\big) + \\alpha \\, \\big(\\ell(u) - \\ell(a)\\big),

    with ``ℓ`` the depth or the information. The first term is what the answer
    falls short of the true class ("deficient"), the second what it claims
    beyond their common ancestor ("excess"), Valmadre 2022's LCA metrics. A
    coarse answer above the true class costs only the steps not taken; with
    ``α = 1`` the cost is the tree distance between the answer and the class
    (edges for ``"depth"``). The expected cost telescopes along ``u``'s
    ancestors (``ℓ(root) = 0``):

    .. math:: R(u) = \\mathbb{E}[\\ell(i)] + \\alpha\\,\\ell(u) - (1 + \\alpha) \\sum_{w \\in \\mathrm{anc}(u)} P(w)\\,\\big(\\ell(w) - \\ell(\\mathrm{parent}(w))\\big),

    one top-down pass. Each step down to ``w`` pays when ``P(w) < α / (1 + α)``:
    for ``α >= 1`` the answer is the deepest node with ``P(w)`` above that level
    (``α = 1``: the tree median, the deepest node with ``P > 1/2``, like
    ``"max_info"``); for ``α < 1`` it weighs the whole path, where the threshold
    rule looks only at the last node. Karthik et al., ICLR 2021 (CRM), with costs
    over nodes.

``"f_beta"`` (``beta=β > 0``, default 1)
:   The node of largest expected hierarchical ``F_β`` (per sample, on
    ancestor-or-self sets without the root, ``|A(u)| = depth(u)``,
    ``|A(u) ∩ A(i)| = depth(LCA(u, i))``), the Bayes decision for that metric
    ("To Each Metric Its Decoding", ICML 2025):

    .. math:: \\mathbb{E}[F_\\beta(u)] = (1 + \\beta^2) \\sum_i p_i \\, \\frac{\\mathrm{depth}(\\mathrm{LCA}(u, i))}{\\beta^2 \\, \\mathrm{depth}(i) + \\mathrm{depth}(u)},

    The root scores 0; larger ``β`` weighs recall more and answers deeper.

    **Cost.** Grouping the classes by depth ``L``, with
    ``A_L(u) = Σ_{i : depth(i) = L} p_i · depth(LCA(u, i))``,

    .. math:: \\mathbb{E}[F_\\beta(u)] = (1 + \\beta^2) \\sum_L \\frac{A_L(u)}{\\beta^2 L + \\mathrm{depth}(u)},

    and each ``A_L`` is one subtree sum of the depth-``L`` class probabilities
    followed by one sum over ancestors (top-down). With ``K`` the number of
    distinct class depths (leaves at depth 0 excluded), the rule costs, per chunk
    of ``B`` samples, ``K`` subtree sums and ``K`` top-down passes over the ``N``
    nodes plus ``K`` elementwise ``(N, B)`` updates: O(B · N · K) time,
    O(B · N) memory whatever ``K``. When every class has the same depth
    (``K = 1``) it is one top-down pass, the cost of ``"crm"``; a taxonomy whose
    classes sit at 35 different depths costs about 70 such passes.

    No constant number of passes gives these scores exactly: a top-down pass
    sums over the common ancestors of ``u`` and ``i`` with a weight of the form
    ``f(u) · g(i)``, while the weight here, ``1 / (β² depth(i) + depth(u))``, is a
    Cauchy matrix in (class depth, answer depth), which has full rank ``K``; so
    ``K`` separable terms are needed. (On a caterpillar, a path of internal
    nodes with one class hanging at each depth, the scores of the path nodes are
    a product with such a matrix.)

**Ties.** ``"threshold"`` and ``"max_info"``: fewest classes, then the larger
``P``, then the deeper node (so a node with a single child never beats its
child: the two have the same classes and probability), then the lowest target
id. ``"crm"`` and ``"f_beta"``: equal risks (or scores) go to the node with
fewer classes, then the deeper one, then the lowest target id. These rules are
exact whenever the compared values are computed equal (e.g. probabilities that
are exact in binary); values that agree only to rounding (about 1e-7 relative
in float32) may fall either way: pass float64 where this matters.

Computation: in chunks of samples (bounded memory; on a CPU, small enough to
stay in cache), on the tree engine (:mod:`taxosmooth.tree_ops`). ``P`` is one
pass up the levels in the engine's node-major level order ``(nodes, samples)``
(:func:`taxosmooth.tree_ops.nodes.up`: children added directly, no prefix
sums); ``"crm"`` and ``"f_beta"`` add passes down
(:func:`~taxosmooth.tree_ops.nodes.down`). Each rule then picks its node by a
few elementwise products and reductions over the nodes. Every tie rule above is
one order of the nodes, a rank table built once per tree (fewer classes, then
deeper, then the lower target id), so the answer is the node of least rank among
the best: a 0/1 mask of the best nodes times ``N - rank``, one maximum, and no
argmin or sort. No loop over samples or nodes, only over depth levels (and,
for ``"f_beta"``, over the distinct class depths: see its cost above); torch
operations only, none that reads a value on the host, so a rule runs on any
device without synchronising and compiles as one graph. float64 stays float64,
other dtypes are computed in float32.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from taxosmooth._tensor_checks import as_probabilities
from taxosmooth.taxonomy import CompiledTree, Taxonomy
from taxosmooth.tree_ops import TreeTensors, tree_tensors
from taxosmooth.tree_ops import nodes as passes
from taxosmooth.tree_ops.ancestors import take

__all__ = ["NODE_RULES", "NODE_VALUES", "node_probabilities", "predict_node"]

#: the rules of :func:`predict_node`
NODE_RULES = ("threshold", "max_info", "crm", "f_beta")
#: the node values ``ℓ`` of the ``"crm"`` rule
NODE_VALUES = ("depth", "information")

#: elements per chunk (samples × nodes) of the node passes; on a CPU a chunk's buffers stay in a core's cache
#: (2 MiB in float32) through the ten or so passes of a rule
_CHUNK_ELEMENTS = {"cpu": 1 << 19}
_CHUNK_DEFAULT = 1 << 26


def _check_taxonomy(taxonomy, where: str) -> Taxonomy:
    if not isinstance(taxonomy, Taxonomy):
        raise TypeError(
            f"{where}: taxonomy must be a Taxonomy (decisions at nodes need the tree), got {type(taxonomy).__name__}"
        )
    return taxonomy


def chunks(num_rows: int, num_nodes: int, device: torch.device) -> Iterator[tuple[int, int]]:
    """Row ranges that keep each chunk near a fixed number of elements."""
    per = _CHUNK_ELEMENTS.get(torch.device(device).type, _CHUNK_DEFAULT)
    step = max(64, per // max(num_nodes, 1))
    for a in range(0, num_rows, step):
        yield a, min(num_rows, a + step)


class Rules(nn.Module):
    """Per-tree tables of the rules, in the engine's level order (row ``r`` is node ``level_order[r]``).

    ``rank`` orders the nodes as every tie rule does: fewer classes, then deeper, then the lower target id
    (``(leaves, -depth, target id)`` ascending); ``rank_target`` is the target id at each rank, so the answer
    of a rule is ``rank_target[min rank among its best nodes]``. Built once on the host from the compiled
    tree (:func:`rules`), kept by the tree's :meth:`~taxosmooth.tree_ops.TreeTensors.derived`.
    """

    leaves: torch.Tensor
    rank: torch.Tensor
    fewer: torch.Tensor
    first: torch.Tensor
    rank_target: torch.Tensor
    node: torch.Tensor
    depth: torch.Tensor
    info: torch.Tensor
    class_depth: torch.Tensor
    target_rows: torch.Tensor

    def __init__(self, tree: TreeTensors, c: CompiledTree) -> None:
        super().__init__()
        order = tree.level_order.cpu().numpy()
        depth = c.depth[order]
        leaves = (c.leaf_hi - c.leaf_lo)[order]
        target = c.node_target[order]
        spec = np.lexsort((target, -depth, leaves))
        rank = np.empty(len(order), dtype=np.int64)
        rank[spec] = np.arange(len(order))
        level_pos = np.empty(len(order), dtype=np.int64)
        level_pos[order] = np.arange(len(order))
        class_depth = c.depth[c.class_node]
        self.num_classes, self.num_nodes = c.num_classes, c.num_nodes
        self.root_target = int(c.node_target[0])
        self.class_depths = tuple(sorted({int(d) for d in class_depth}))
        for name, arr, dtype in (
            ("leaves", leaves, torch.int64),
            ("rank", rank, torch.int64),
            # the keys of the rules, as columns that broadcast over (N, B): fewer classes, then first in rank
            ("fewer", (c.num_classes + 1 - leaves)[:, None], torch.float64),
            ("first", (c.num_nodes - rank)[:, None], torch.float64),
            ("rank_target", target[spec], torch.int64),
            ("node", order, torch.int64),
            ("depth", depth, torch.int64),
            # information log2(C / n(v)) in float64 on the host, as the metrics compute it
            ("info", np.log2(c.num_classes / leaves), torch.float64),
            ("class_depth", class_depth, torch.int64),
            ("target_rows", level_pos[c.target_node], torch.int64),
        ):
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(arr)).to(dtype), persistent=False)


def rules(tree: TreeTensors, taxonomy: Taxonomy) -> Rules:
    """The :class:`Rules` of ``taxonomy`` on ``tree``'s device (``tree`` is ``tree_tensors(taxonomy, device)``)."""
    return tree.derived(("decision.nodes.rules",), lambda: Rules(tree, taxonomy.compiled))


# ---------------------------------------------------------------------- validation
def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def check_threshold(threshold: float, name: str = "threshold") -> float:
    t = _number(threshold, name)
    if not 0 < t <= 1:
        raise ValueError(f"{name} = {threshold!r} is outside (0, 1]")
    return t


def _options(rule, threshold, beta, value, excess_cost) -> dict:
    if not isinstance(rule, str) or rule not in NODE_RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(NODE_RULES)}")
    given = {"threshold": threshold, "beta": beta, "value": value, "excess_cost": excess_cost}
    owner = {"threshold": "threshold", "beta": "f_beta", "value": "crm", "excess_cost": "crm"}
    for k, v in given.items():
        if v is not None and owner[k] != rule:
            raise ValueError(f"rule={rule!r} takes no {k}= ({k} is an option of rule={owner[k]!r})")
    out: dict[str, object] = {}
    if rule == "threshold":
        out["threshold"] = check_threshold(0.5 if threshold is None else threshold)
    elif rule == "max_info":
        out["threshold"] = 0.5
    elif rule == "crm":
        v = "depth" if value is None else value
        if not isinstance(v, str) or v not in NODE_VALUES:
            raise ValueError(f"unknown value {v!r}; choose one of {', '.join(NODE_VALUES)}")
        a = 1.0 if excess_cost is None else _number(excess_cost, "excess_cost")
        if a < 0:
            raise ValueError(f"excess_cost = {excess_cost!r} is negative; it must be >= 0")
        out |= {"value": v, "excess_cost": a}
    else:
        b = 1.0 if beta is None else _number(beta, "beta")
        if not b > 0:
            raise ValueError(f"beta = {beta!r} must be > 0")
        out["beta"] = b
    return out


# ---------------------------------------------------------------------- the rules on one chunk, level order (N, B)
def node_mass(tree: TreeTensors, p: torch.Tensor) -> torch.Tensor:
    """``P(v) = Σ_{classes i under v} p_i``: class probabilities ``(B, C)`` → the engine's level order ``(N, B)``."""
    return passes.up(tree, passes.place(tree, p), overwrite=True)


#: integers up to these are exact in each dtype: the rules' keys (< nodes) must be
_EXACT_INTEGERS = {torch.float32: 2**24, torch.float64: 2**53}


def _key_dtype(r: Rules, dtype: torch.dtype) -> torch.dtype:
    """The dtype of the rules' keys: the values' own while the integer keys (<= nodes) are exact in it."""
    return dtype if r.num_nodes <= _EXACT_INTEGERS.get(dtype, 0) else torch.float64


def _least_rank(best: torch.Tensor, r: Rules) -> torch.Tensor:
    """Target id of the node of least rank among ``best`` ``(N, B)`` (1 where a node is among the best, else 0;
    overwritten): the tie rule as one product and one reduction (``first = N - rank`` > 0)."""
    top = best.mul_(r.first.to(best.dtype)).amax(0)
    return take(r.rank_target, (r.num_nodes - top).long().clamp_(0, r.num_nodes - 1))


def _threshold(P: torch.Tensor, r: Rules, tau: float) -> torch.Tensor:
    if tau >= 1:
        # a sum that rounds above 1 counts as 1: nothing but the root passes τ = 1
        return torch.full((P.shape[1],), r.root_target, dtype=torch.int64, device=P.device)
    # Among P > τ (and the root), fewest classes, then the larger min(P, 1), then the rank. For τ >= 1/2 the
    # admissible nodes form a path and this is its deepest node; written generally, it also holds for rows whose
    # sums round above 1 (two disjoint nodes above 1/2), without a branch on the values. Masks are 0/1 numbers
    # and selections products (a select with a mask costs several times a product on a CPU).
    key = torch.gt(P, tau, out=torch.empty_like(P, dtype=_key_dtype(r, P.dtype)))
    key[0] = 1  # the root (row 0) is always an admissible answer
    key.mul_(r.fewer.to(key.dtype))  # C + 1 - n(v) > 0 on the admissible nodes, 0 elsewhere
    cand = key.eq_(key.amax(0))  # the admissible nodes with the fewest classes
    # min(P, 1) == min(best, 1) for a candidate (P <= best) iff P >= min(best, 1): sums that round above 1 tie
    # at 1, without clamping the whole chunk
    tmp = torch.empty_like(cand)
    best = torch.mul(cand, P, out=tmp).amax(0).clamp_(max=1.0)
    return _least_rank(torch.ge(P, best, out=tmp).mul_(cand), r)


def _best_by(score: torch.Tensor, r: Rules, largest: bool) -> torch.Tensor:
    """The rule's answer: the least rank among the nodes of best ``score`` (overwritten)."""
    best = score.amax(0) if largest else score.amin(0)
    kd = _key_dtype(r, score.dtype)
    is_best = score.eq_(best) if kd == score.dtype else torch.eq(score, best, out=torch.empty_like(score, dtype=kd))
    return _least_rank(is_best, r)


def _crm(P: torch.Tensor, r: Rules, tree: TreeTensors, value: str, alpha: float) -> torch.Tensor:
    ell = (r.depth if value == "depth" else r.info).to(P.dtype)
    step = ell - ell.index_select(0, tree.level_parent)  # 0 at the root (its own parent), whose ℓ is 0
    gain = passes.down(tree, P.mul_(step[:, None]), overwrite=True)
    risk = gain.mul_(-(1 + alpha)).add_(alpha * ell[:, None])  # α ℓ(u) - (1 + α) gain = R(u) - E[ℓ(i)]
    return _best_by(risk, r, largest=False)


def _f_beta(p: torch.Tensor, r: Rules, tree: TreeTensors, beta: float) -> torch.Tensor:
    b2 = beta * beta
    depth = r.depth.to(p.dtype)[:, None]
    score = None
    for L in r.class_depths:
        if L == 0:
            continue  # a single-node tree: the root is the only answer
        # the classes at depth L alone (all of them when they share one depth): K passes up and K down
        scale = None if len(r.class_depths) == 1 else r.class_depth == L
        PL = passes.up(tree, passes.place(tree, p, scale=scale), overwrite=True)
        PL[0] = 0  # |A(u) ∩ A(i)| counts the ancestors below the root
        term = passes.down(tree, PL, overwrite=True).div_(b2 * L + depth)
        score = term if score is None else score.add_(term)
    assert score is not None  # a tree of two or more nodes has a class below the root
    return _best_by(score, r, largest=True)


def decide(tree: TreeTensors, r: Rules, p: torch.Tensor, rule: str, opts: dict) -> torch.Tensor:
    """The answers (target ids ``(B,)``) of one chunk of probabilities ``(B, C)``: torch operations only, no
    host read; ``opts`` from the option check of :func:`predict_node`."""
    if rule == "f_beta":
        return _f_beta(p, r, tree, opts["beta"])
    P = node_mass(tree, p)
    if rule == "crm":
        return _crm(P, r, tree, opts["value"], opts["excess_cost"])
    return _threshold(P, r, opts["threshold"])


def _segmented_max(values: torch.Tensor, segment: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Inclusive running maximum within runs of equal ``segment`` (sorted), by doubling steps: O(R log L)."""
    v, seg = (values.flip(0), segment.flip(0)) if reverse else (values, segment)
    out = v.clone()
    longest = int(torch.unique_consecutive(seg, return_counts=True)[1].max()) if seg.numel() else 0
    shift = 1
    while shift < longest:
        same = seg[shift:] == seg[:-shift]
        out = torch.cat([out[:shift], torch.where(same, torch.maximum(out[shift:], out[:-shift]), out[shift:])])
        shift *= 2
    return out.flip(0) if reverse else out


def threshold_steps(P: torch.Tensor, r: Rules, p_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The prediction sequence of the threshold rule on a chunk ``P`` ``(N, B)`` (the engine's level order).

    As ``τ`` falls from 1 the answer moves from the root through the **records**:
    the nodes ``v`` (root excluded) whose probability beats that of every node with
    fewer classes, ``P(v) > max{P(u) : n(u) < n(v)}``, and that come first among the
    nodes with as many classes (largest ``P``, then deepest, then lowest target id).
    ``v`` is the answer for ``τ`` in ``[next record's P, P(v))``; records with more
    classes have larger ``P``.

    Every record holds at least the largest class probability ``p_max`` (the
    classes are the nodes with fewest classes), and a node below ``p_max`` never
    blocks one above it; so only the few **candidates** ``P(v) >= p_max`` (the
    ancestors of the most probable class, mostly) are examined: one comparison
    pass over the chunk, then, per sample and in the fixed order (classes
    ascending, depth descending, target id ascending), a running maximum (the
    first condition) and a maximum within equal class counts (the second).
    Their number depends on the values: this is for the operating curves, not a
    decision pass.

    Parameters
    ----------
    P : Tensor (N, B)
    r : the rule tables of the tree (:func:`rules`)
    p_max : Tensor (B,)
        The largest class probability of each sample.

    Returns ``(sample, node, value)`` for every record (compiled node ids, ``value``
    = ``min(P, 1)``), by sample, and within a sample from the most specific record to the least.
    """
    cand = P >= p_max.to(P.dtype)[None, :]
    cand[0] = False  # the root: every sample's first answer, handled by the caller
    row, sample = cand.nonzero(as_tuple=True)
    if row.numel() == 0:
        return sample, row, P.new_zeros(0)
    value = take(P.reshape(-1), row * P.shape[1] + sample).clamp(max=1.0)
    order = torch.sort(sample * P.shape[0] + take(r.rank, row)).indices
    row, sample, value = take(row, order), take(sample, order), take(value, order)
    leaves = take(r.leaves, row)
    # first condition: above every earlier candidate of the sample (fewer classes, or as many and first in order)
    running = _segmented_max(value, sample)
    before = torch.cat([value.new_full((1,), -math.inf), running[:-1]])
    before = torch.where(torch.cat([sample.new_ones(1, dtype=torch.bool), sample[1:] != sample[:-1]]), -math.inf, before)
    # second condition: at least every later candidate with as many classes
    group = sample * (r.num_classes + 1) + leaves
    later = _segmented_max(value, group, reverse=True)
    record = (value > before) & (value >= later) & (value > 0)
    keep = record.nonzero()[:, 0]
    return take(sample, keep), take(r.node, take(row, keep)), take(value, keep)


# ---------------------------------------------------------------------- public
def node_probabilities(probs: torch.Tensor, taxonomy: Taxonomy, from_logits: bool = False) -> torch.Tensor:
    """Probability of every node, ``P(v) = Σ_{classes i under v} p_i``, in target-id order.

    Parameters
    ----------
    probs : Tensor (N, C)
        Class probabilities (rows in ``[0, 1]`` that sum to 1), or logits with
        ``from_logits=True``.
    taxonomy : Taxonomy
    from_logits : bool, default False
        Apply a softmax to ``probs`` first.

    Returns
    -------
    Tensor (N, num_nodes)
        Column ``v`` is ``P`` of target id ``v`` (:meth:`~taxosmooth.Taxonomy.encode`):
        the first ``C`` columns are the class probabilities themselves, then the
        internal nodes in depth-first order. Exact level sums (children added
        directly), O(N · nodes); float64 for float64 input, float32 otherwise;
        on the input's device; differentiable.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> P = node_probabilities(torch.tensor([[0.5, 0.25, 0.125, 0.125]]), tax)
    >>> dict(zip(tax.target_names, P[0].tolist()))
    {'horse': 0.5, 'zebra': 0.25, 'whale': 0.125, 'shark': 0.125, 'animal': 1.0, 'mammal': 0.75, 'sea': 0.25}
    """
    tax = _check_taxonomy(taxonomy, "node_probabilities")
    p = as_probabilities(probs, from_logits, tax.num_classes)
    tree = tree_tensors(tax, p.device)
    rows = rules(tree, tax).target_rows  # level rows of the target ids
    if p.requires_grad:
        return passes.up(tree, passes.place(tree, p)).index_select(0, rows).t().contiguous()
    out = p.new_empty((p.shape[0], tree.num_nodes))
    for a, b in chunks(p.shape[0], tree.num_nodes, p.device):
        out[a:b] = node_mass(tree, p[a:b]).index_select(0, rows).t()
    return out


def predict_node(
    probs: torch.Tensor,
    taxonomy: Taxonomy,
    rule: str = "threshold",
    *,
    threshold: float | None = None,
    beta: float | None = None,
    value: str | None = None,
    excess_cost: float | None = None,
    from_logits: bool = False,
) -> torch.Tensor:
    """Answer a node of the taxonomy for each sample: a class, or a coarser node when unsure.

    The rules, their formulas and references, and the tie rules are in the
    module docstring (:mod:`taxosmooth.decision.nodes`). The rules want
    calibrated probabilities: fit a temperature on held-out logits first
    (:func:`taxosmooth.calibration.fit_temperature`).

    Parameters
    ----------
    probs : Tensor (N, C)
        Class probabilities, or logits with ``from_logits=True``.
    taxonomy : Taxonomy
    rule : {"threshold", "max_info", "crm", "f_beta"}, default "threshold"
    threshold : float in (0, 1], default 0.5
        ``"threshold"`` only: the answer is the most specific node with ``P > threshold``.
    beta : float > 0, default 1
        ``"f_beta"`` only.
    value : {"depth", "information"}, default "depth"
        ``"crm"`` only: what a step down the tree is worth.
    excess_cost : float >= 0, default 1
        ``"crm"`` only: the cost of a unit of value claimed beyond the common
        ancestor with the truth, relative to a unit short of the true class.
    from_logits : bool, default False

    Returns
    -------
    LongTensor (N,)
        Target ids (:meth:`~taxosmooth.Taxonomy.decode` names them), on the input's device.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> p = torch.tensor([[0.45, 0.35, 0.1, 0.1], [0.9, 0.05, 0.05, 0.0]])
    >>> tax.decode(predict_node(p, tax))               # torn between horse and zebra: "mammal"
    ['mammal', 'horse']
    >>> tax.decode(predict_node(p, tax, threshold=0.95))
    ['animal', 'animal']
    >>> tax.decode(predict_node(p, tax, "f_beta", beta=4.0))
    ['horse', 'horse']
    """
    opts = _options(rule, threshold, beta, value, excess_cost)
    tax = _check_taxonomy(taxonomy, "predict_node")
    p = as_probabilities(probs, from_logits, tax.num_classes).detach()
    out = torch.zeros(p.shape[0], dtype=torch.int64, device=p.device)
    if tax.num_nodes == 1:
        return out
    tree = tree_tensors(tax, p.device)
    r = rules(tree, tax)
    for a, b in chunks(p.shape[0], tree.num_nodes, p.device):
        out[a:b] = decide(tree, r, p[a:b], rule, opts)
    return out


def __dir__() -> list[str]:
    return list(__all__)
