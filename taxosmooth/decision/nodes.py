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

Computation: in chunks of samples (bounded memory), ``P`` by the exact level
sums of the compiled tree, then a few masked reductions per chunk; no loop over
samples or nodes, only over depth levels (and, for ``"f_beta"``, over the
distinct class depths: see its cost above). Any device; float64 stays float64,
other dtypes are computed in float32.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator

import numpy as np
import torch

from taxosmooth._tensor_checks import as_probabilities
from taxosmooth._tree_index import TreeIndex, take, tree_index
from taxosmooth.taxonomy import Taxonomy

__all__ = ["NODE_RULES", "NODE_VALUES", "node_probabilities", "predict_node"]

#: the rules of :func:`predict_node`
NODE_RULES = ("threshold", "max_info", "crm", "f_beta")
#: the node values ``ℓ`` of the ``"crm"`` rule
NODE_VALUES = ("depth", "information")

_BIG = torch.iinfo(torch.int64).max
_BIG32 = torch.iinfo(torch.int32).max
#: elements per chunk (samples × nodes) of the node passes
_CHUNK_ELEMENTS = {"cpu": 1 << 22}
_CHUNK_DEFAULT = 1 << 26


def _check_taxonomy(taxonomy, where: str) -> TreeIndex:
    if not isinstance(taxonomy, Taxonomy):
        raise TypeError(
            f"{where}: taxonomy must be a Taxonomy (decisions at nodes need the tree), got {type(taxonomy).__name__}"
        )
    return tree_index(taxonomy)


def chunks(num_rows: int, num_nodes: int, device: torch.device) -> Iterator[tuple[int, int]]:
    """Row ranges that keep each chunk near a fixed number of elements."""
    per = _CHUNK_ELEMENTS.get(torch.device(device).type, _CHUNK_DEFAULT)
    step = max(64, per // max(num_nodes, 1))
    for a in range(0, num_rows, step):
        yield a, min(num_rows, a + step)


class _Static:
    """Per-tree, per-device tensors of the rules (compiled node order)."""

    def __init__(self, tree: TreeIndex, device):
        t = tree.tensors(device)
        depth = tree.depth_np
        leaves = tree.leaves_np
        target = tree.node_target_np
        n = tree.num_nodes
        # ranks used to break ties by one argmin: (depth desc, target id asc) and (leaves asc, depth desc, id asc)
        deep = np.lexsort((target, -depth))
        spec = np.lexsort((target, -depth, leaves))
        deep_rank = np.empty(n, dtype=np.int64)
        deep_rank[deep] = np.arange(n)
        spec_rank = np.empty(n, dtype=np.int64)
        spec_rank[spec] = np.arange(n)
        self.leaves = t["leaves"]
        self.depth = t["depth"]
        self.info = t["info"]
        self.parent = t["parent"]
        self.node_target = t["node_target"]
        self.deep_rank = torch.from_numpy(deep_rank).to(device)
        self.deep_rank32 = self.deep_rank.to(torch.int32)
        self.leaves32 = self.leaves.to(torch.int32)
        self.spec_rank = torch.from_numpy(spec_rank).to(device)
        # class depths for f_beta
        cdepth = depth[np.asarray(tree.class_node_np)]
        self.class_depths = sorted(set(int(d) for d in cdepth))
        self.class_depth = torch.from_numpy(cdepth).to(device)


def _static(tree: TreeIndex, device) -> _Static:
    cache = tree.__dict__.setdefault("_node_rules", {})  # lives and dies with the cached TreeIndex
    key = str(torch.device(device))
    if key not in cache:
        cache[key] = _Static(tree, device)
    return cache[key]


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


# ---------------------------------------------------------------------- the rules on one chunk, node-major (N, B)
def _threshold(P: torch.Tensor, s: _Static, tau: float) -> torch.Tensor:
    if tau >= 1:
        # a sum that rounds above 1 counts as 1: nothing but the root passes τ = 1
        return torch.zeros(P.shape[1], dtype=torch.int64, device=P.device)
    adm = P > tau
    adm[0] = True  # the root (node 0) is always an admissible answer
    if tau >= 0.5:
        # P > 1/2: the admissible nodes form a path from the root (two disjoint subtrees cannot both hold more
        # than half), and the most specific of them is the deepest. Rows whose probabilities sum a little above
        # 1 can break the path; they take the general rule below.
        node = torch.where(adm, s.deep_rank32[:, None], _BIG32).argmin(0)
        path = adm.sum(0) == take(s.depth, node) + 1
        if bool(path.all()):
            return node
        rest = (~path).nonzero()[:, 0]
        node[rest] = _threshold_general(P[:, rest], adm[:, rest], s)
        return node
    return _threshold_general(P, adm, s)


def _threshold_general(P: torch.Tensor, adm: torch.Tensor, s: _Static) -> torch.Tensor:
    P = P.clamp(max=1.0)  # equal when rounding puts sums above 1
    n = s.leaves32[:, None]
    fewest = torch.where(adm, n, _BIG32).amin(0)
    cand = adm & (n == fewest)
    best = torch.where(cand, P, -1.0).amax(0)
    cand &= P == best
    return torch.where(cand, s.deep_rank32[:, None], _BIG32).argmin(0)


def _best_by(score: torch.Tensor, s: _Static, largest: bool) -> torch.Tensor:
    best = score.amax(0) if largest else score.amin(0)
    return torch.where(score == best, s.spec_rank[:, None], _BIG).argmin(0)


def _crm(P: torch.Tensor, s: _Static, tree: TreeIndex, value: str, alpha: float) -> torch.Tensor:
    ell = (s.depth if value == "depth" else s.info).to(P.dtype)
    step = ell - take(ell, s.parent)  # 0 at the root (parent[root] = root), whose depth and information are 0
    gain = tree.accumulate_down_t(P * step[:, None])
    risk = alpha * ell[:, None] - (1 + alpha) * gain  # R(u) - E[ℓ(i)]
    return _best_by(risk, s, largest=False)


def _f_beta(p: torch.Tensor, P: torch.Tensor, s: _Static, tree: TreeIndex, beta: float) -> torch.Tensor:
    b2 = beta * beta
    depth = s.depth.to(P.dtype)[:, None]
    score = torch.zeros_like(P)
    for L in s.class_depths:
        if L == 0:
            continue  # a single-node tree: the root is the only answer
        if len(s.class_depths) == 1:
            PL = P
        else:
            PL = tree.subtree_sum_t(p * (s.class_depth == L).to(p.dtype))
        PL = PL.clone() if PL is P else PL
        PL[0] = 0  # |A(u) ∩ A(i)| counts the ancestors below the root
        score += tree.accumulate_down_t(PL) / (b2 * L + depth)
    return _best_by(score, s, largest=True)


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


def threshold_steps(P: torch.Tensor, s: _Static, p_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The prediction sequence of the threshold rule on a chunk ``P`` ``(N, B)`` (node-major, compiled order).

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

    Parameters
    ----------
    P : Tensor (N, B)
    s : the rule tensors of the tree
    p_max : Tensor (B,)
        The largest class probability of each sample.

    Returns ``(sample, node, value)`` for every record (compiled node ids, ``value``
    = ``min(P, 1)``), by sample, and within a sample from the most specific record to the least.
    """
    cand = P >= p_max.to(P.dtype)[None, :]
    cand[0] = False  # the root: every sample's first answer, handled by the caller
    node, sample = cand.nonzero(as_tuple=True)
    if node.numel() == 0:
        return sample, node, P.new_zeros(0)
    value = take(P.reshape(-1), node * P.shape[1] + sample).clamp(max=1.0)
    order = torch.sort(sample * P.shape[0] + take(s.spec_rank, node)).indices
    node, sample, value = take(node, order), take(sample, order), take(value, order)
    leaves = take(s.leaves, node)
    # first condition: above every earlier candidate of the sample (fewer classes, or as many and first in order)
    running = _segmented_max(value, sample)
    before = torch.cat([value.new_full((1,), -math.inf), running[:-1]])
    before = torch.where(torch.cat([sample.new_ones(1, dtype=torch.bool), sample[1:] != sample[:-1]]), -math.inf, before)
    # second condition: at least every later candidate with as many classes
    group = sample * (s.leaves.max() + 1) + leaves
    later = _segmented_max(value, group, reverse=True)
    record = (value > before) & (value >= later) & (value > 0)
    keep = record.nonzero()[:, 0]
    return take(sample, keep), take(node, keep), take(value, keep)


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
    tree = _check_taxonomy(taxonomy, "node_probabilities")
    p = as_probabilities(probs, from_logits, tree.num_classes)
    target_node = tree.tensors(p.device)["target_node"]
    if p.requires_grad:
        return tree.subtree_sum_t(p).T.index_select(1, target_node)
    out = p.new_empty((p.shape[0], tree.num_nodes))
    for a, b in chunks(p.shape[0], tree.num_nodes, p.device):
        out[a:b] = tree.subtree_sum_t(p[a:b]).index_select(0, target_node).T
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
    tree = _check_taxonomy(taxonomy, "predict_node")
    p = as_probabilities(probs, from_logits, tree.num_classes).detach()
    out = torch.zeros(p.shape[0], dtype=torch.int64, device=p.device)
    if tree.num_nodes == 1:
        return out
    s = _static(tree, p.device)
    for a, b in chunks(p.shape[0], tree.num_nodes, p.device):
        P = tree.subtree_sum_t(p[a:b]).to(p.device)
        if rule in ("threshold", "max_info"):
            node = _threshold(P, s, opts["threshold"])
        elif rule == "crm":
            node = _crm(P, s, tree, opts["value"], opts["excess_cost"])
        else:
            node = _f_beta(p[a:b], P, s, tree, opts["beta"])
        out[a:b] = take(s.node_target, node)
    return out


def __dir__() -> list[str]:
    return list(__all__)
