"""Metrics of how bad a classifier's mistakes are, as plain functions.

**Scores.** The ranking metrics take ``scores`` ``(N, C)`` of any kind where
higher is better — logits, probabilities, log-probabilities, or the ``-R`` of
:class:`~taxosmooth.decision.CRMClassifier` — and use only their order. Only
the calibration error needs probabilities: :func:`expected_calibration_error`
reads its input as probabilities unless ``from_logits=True`` (the same rule and
default as every decision), and :func:`report` computes it only from the
probabilities passed as ``probs=``. Inputs that require grad are detached:
metrics are not differentiable.

**Sources.** Hierarchical metrics take a ``source``: a
:class:`~taxosmooth.Taxonomy` (with ``distance=`` one of
[`DISTANCE_KINDS`][taxosmooth.distances.DISTANCE_KINDS]; computed from lowest common ancestors,
never a ``C × C`` table) or a ``(C, C)`` matrix whose entry ``[t, j]`` is the
distance of predicting ``j`` when the truth is ``t``. Metrics on ancestor sets
(hierarchical precision/recall/F1, the LCA metrics, accuracy per depth) take a
``taxonomy``.

**Rankings and ties.** The top-k predictions are the k highest scores; equal
scores are ranked by class index, lowest first (a stable sort), the same rule
as :func:`taxosmooth.decision.crm_predict`. So scoring a model by ``-R``
evaluates its CRM decisions.

**Node predictions.** Where a metric says so, ``scores`` may instead be a
LongTensor ``(N,)`` of predicted **target ids** — any node of the taxonomy, as
:func:`taxosmooth.decision.predict_node` answers.

**Coarse labels.** Every metric takes ``coarse_labels=True`` to accept target
ids ``[0, num_nodes)`` as labels (:meth:`~taxosmooth.Taxonomy.encode`); without
it an id ``>= C`` is an out-of-range error. A coarse label ``v`` means "the
true class is somewhere under ``v``", so a prediction at or below ``v`` counts
as ``v`` itself (it is truncated at ``v``): it is correct, at distance 0.
Distances are then taken between ``v`` and the prediction, from their lowest
common ancestor (see :class:`taxosmooth.metrics._pairs.PairDistances`: e.g.
``lca_height`` is ``height(LCA(v, prediction))``, ``path_length`` the tree path
between the two nodes). Each metric's docstring states its rule.

**Summable.** Each metric is a ratio of sums over samples (counts, sums of
distances, per-bin sums); :mod:`taxosmooth.metrics.modules` keeps those sums as
torchmetrics states, so metrics accumulated batch by batch, or on several
processes, equal the metric of the whole set.

All results are 0-dim float tensors (float64; float32 on MPS) on the scores'
device, except :func:`report`, which returns a dict of Python floats.
"""

from __future__ import annotations

import numbers
import re
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import torch

from taxosmooth._ranking import rank_of, stable_topk
from taxosmooth._tensor_checks import accumulate_dtype, as_probabilities, check_scores
from taxosmooth._validation import check_coarse, check_k, check_node_ids, check_target
from taxosmooth.metrics._pairs import LCA_FIELDS, PairDistances, lca_values
from taxosmooth.tree_ops.ancestors import take

if TYPE_CHECKING:
    from taxosmooth.distances import Source
    from taxosmooth.taxonomy import Taxonomy

__all__ = [
    "topk_error",
    "mistake_severity",
    "mean_hierarchical_distance_at_k",
    "min_hierarchical_distance_at_k",
    "hierarchical_precision_recall_f1",
    "hierarchical_precision",
    "hierarchical_recall",
    "hierarchical_f1",
    "lca_metrics",
    "accuracy_at_depth",
    "full_path_accuracy",
    "path_consistency",
    "expected_calibration_error",
    "report",
    "LCA_FIELDS",
]

AVERAGES = ("micro", "macro")


# ---------------------------------------------------------------------- validation
def _pairs(source, distance: str | None) -> PairDistances:
    return source if isinstance(source, PairDistances) else PairDistances(source, distance)


def _tree_pairs(taxonomy, what: str) -> PairDistances:
    pairs = _pairs(taxonomy, None)
    if pairs.taxonomy is None:
        raise TypeError(f"{what} need a Taxonomy (ancestor sets), not a distance matrix")
    return pairs


def _optional_pairs(taxonomy, coarse_labels) -> PairDistances | None:
    if check_coarse(coarse_labels) and taxonomy is None:
        raise TypeError("coarse_labels=True needs taxonomy= (the subtree under each coarse label)")
    return None if taxonomy is None else _tree_pairs(taxonomy, "coarse labels")


def _labels(target, n: int, pairs: PairDistances | None, num_classes: int, coarse_labels: bool,
            device) -> torch.Tensor:
    tax = pairs.taxonomy if pairs is not None else None
    num_nodes = tax.num_nodes if tax is not None else None
    names = tax.target_names if tax is not None else None
    return check_target(target, n, num_classes, coarse_labels=coarse_labels, num_nodes=num_nodes,
                        target_names=names).to(device)


def _check(scores, target, num_classes: int | None = None, pairs: PairDistances | None = None,
           coarse_labels: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    scores = check_scores(scores, "scores", num_classes).detach()
    return scores, _labels(target, scores.shape[0], pairs, scores.shape[1], coarse_labels, scores.device)


def _is_ids(scores) -> bool:
    if isinstance(scores, torch.Tensor):
        return not (scores.is_floating_point() or scores.is_complex() or scores.dtype == torch.bool)
    return False


def _predicted(scores, target, pairs: PairDistances, coarse_labels: bool, nodes: bool):
    """(top-1 prediction or the given node ids, labels): both target ids on the scores' device."""
    if nodes and _is_ids(scores):
        if pairs.taxonomy is None:
            raise TypeError("node predictions (target ids) need a Taxonomy, not a distance matrix")
        if scores.ndim != 1:
            raise ValueError(f"predicted target ids must have shape (N,), got shape {tuple(scores.shape)}")
        pred = check_node_ids(scores, scores.shape[0], pairs.num_nodes, "scores")
        return pred, _labels(target, pred.shape[0], pairs, pairs.num_classes, coarse_labels, pred.device)
    scores, label = _check(scores, target, pairs.num_classes, pairs, coarse_labels)
    return stable_topk(scores, 1)[:, 0], label


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` in the accumulation dtype; ``0 / 0`` is NaN."""
    dt = accumulate_dtype(num.device)
    return num.to(dt) / den.to(dt)


def _count(n: int, device) -> torch.Tensor:
    return torch.tensor(n, device=device)


def _check_bins(n_bins) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    return n_bins


def _check_average(average) -> str:
    if not isinstance(average, str) or average not in AVERAGES:
        raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")
    return average


def _check_depth(depth, pairs: PairDistances) -> int:
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
        raise TypeError(f"depth must be an int, got {depth!r}")
    assert pairs.max_depth is not None  # the metrics that take a depth need a taxonomy
    if not 0 <= int(depth) <= pairs.max_depth:
        raise ValueError(f"depth = {depth} is out of range: the taxonomy's depths are 0 to {pairs.max_depth}")
    return int(depth)


# ---------------------------------------------------------------------- sufficient statistics
# Each ``_*_stats`` returns sums over the batch; the metric is a ratio of such sums.


def _topk_stats(scores, label, ks, pairs: PairDistances | None, coarse_labels: bool) -> dict:
    total = {"total": _count(label.shape[0], scores.device)}
    if not coarse_labels:
        rank = rank_of(scores, label)
        return {f"wrong_at_{k}": (rank >= k).sum() for k in ks} | total
    top = stable_topk(scores, max(ks))
    assert pairs is not None  # coarse labels come with a taxonomy
    a, b = pairs.nodes(label.unsqueeze(1), top)
    hit = a == b  # the class lies under the label
    return {f"wrong_at_{k}": (~hit[:, :k].any(dim=1)).sum() for k in ks} | total


def _severity_stats(pred, label, pairs) -> dict:
    dt = accumulate_dtype(pred.device)
    wrong = ~pairs.correct(label, pred)
    d = pairs(label, pred, dt)
    return {"mistake_distance": torch.where(wrong, d, torch.zeros_like(d)).sum(), "mistakes": wrong.sum()}


def _hdist_stats(topk, label, pairs, k) -> dict:
    dt = accumulate_dtype(topk.device)
    d = pairs(label.unsqueeze(1), topk[:, :k], dt)  # (N, k)
    return {f"dist_mean_at_{k}": d.mean(dim=1).sum(), f"dist_min_at_{k}": d.min(dim=1).values.sum()}


def _hprf_stats(pred, label, pairs) -> dict:
    a, b = pairs.nodes(label, pred)
    values = lca_values(pairs, a, b)
    dt = accumulate_dtype(pred.device)
    depth = pairs.tree_on(pred.device).node_depth
    return {
        "ancestors_common": take(depth, pairs.ancestors(pred.device).lca(a, b)).sum(),
        "ancestors_pred": take(depth, b).sum(),
        "ancestors_true": take(depth, a).sum(),
        "sample_precision": values["depth_precision"].to(dt).sum(),
        "sample_recall": values["depth_recall"].to(dt).sum(),
        "sample_f1": values["depth_f1"].to(dt).sum(),
        "total": _count(pred.shape[0], pred.device),
    }


def _lca_stats(pred, label, pairs) -> dict:
    a, b = pairs.nodes(label, pred)
    dt = accumulate_dtype(pred.device)
    values = lca_values(pairs, a, b)
    return {f"lca_{k}": v.to(dt).sum() for k, v in values.items()} | {"total": _count(pred.shape[0], pred.device)}


def _extended_ancestor(pairs: PairDistances, nodes: torch.Tensor, depth: int) -> torch.Tensor:
    """Ancestor at ``depth``; a class shallower than ``depth`` stands for itself there; -1 for an internal node
    shallower than ``depth`` (it says nothing at that depth)."""
    anc = pairs.ancestors(nodes.device).ancestor_at_depth(nodes, depth)
    return torch.where((anc < 0) & pairs.is_leaf(nodes), nodes, anc)


def _depth_stats(pred, label, pairs, depth: int) -> dict:
    a, b = pairs.node_of(label), pairs.node_of(pred)
    truth = _extended_ancestor(pairs, a, depth)
    counted = truth >= 0  # a coarse label above this depth does not say what is right there
    right = counted & (_extended_ancestor(pairs, b, depth) == truth)
    return {f"right_at_depth_{depth}": right.sum(), f"counted_at_depth_{depth}": counted.sum()}


def _check_levels(level_preds, pairs: PairDistances, name: str = "preds") -> torch.Tensor:
    max_depth = pairs.max_depth
    assert max_depth is not None  # the path metrics need a taxonomy
    if not isinstance(level_preds, torch.Tensor):
        level_preds = torch.as_tensor(level_preds)
    if level_preds.ndim != 2 or not 1 <= level_preds.shape[1] <= max_depth:
        raise ValueError(
            f"{name} must have shape (N, L): one predicted node per depth 1 … L, L <= {max_depth} "
            f"(the taxonomy's depth), got shape {tuple(level_preds.shape)}"
        )
    ids = check_node_ids(level_preds, level_preds.shape[0], pairs.num_nodes, name, shape=tuple(level_preds.shape))
    nodes = pairs.node_of(ids)
    depth = take(pairs.tree_on(ids.device).node_depth, nodes)
    level = torch.arange(1, ids.shape[1] + 1, device=ids.device)
    ok = (depth == level) | (pairs.is_leaf(nodes) & (depth < level))
    if not ok.all():
        i, j = (int(x) for x in (~ok).nonzero()[0])
        raise ValueError(
            f"{name}[{i}, {j}] = {int(ids[i, j])} is a node of depth {int(depth[i, j])}; column {j} holds the "
            f"predictions at depth {j + 1} (a node of that depth, or a class shallower than it)"
        )
    return ids


def _full_path_stats(level_ids, label, pairs) -> dict:
    a = pairs.node_of(label)
    nodes = pairs.node_of(level_ids)
    judged = torch.zeros_like(nodes, dtype=torch.bool)
    right = torch.ones(nodes.shape[0], dtype=torch.bool, device=nodes.device)
    for j in range(nodes.shape[1]):  # one pass per depth level
        truth = _extended_ancestor(pairs, a, j + 1)
        judged[:, j] = truth >= 0
        right &= (truth < 0) | (nodes[:, j] == truth)
    counted = judged.any(dim=1)
    return {"path_right": (counted & right).sum(), "path_counted": counted.sum()}


def _consistency_stats(level_ids, pairs) -> dict:
    nodes = pairs.node_of(level_ids)
    ok = torch.ones(nodes.shape[0], dtype=torch.bool, device=nodes.device)
    for j in range(1, nodes.shape[1]):
        ok &= _extended_ancestor(pairs, nodes[:, j], j) == nodes[:, j - 1]
    return {"consistent": ok.sum(), "total": _count(nodes.shape[0], nodes.device)}


def _ece_stats(probs, label, n_bins, pairs: PairDistances | None, coarse_labels: bool) -> dict:
    dt = accumulate_dtype(probs.device)
    conf, pred = probs.max(dim=1)  # max() returns the first maximal index, like argmax
    right = cast(PairDistances, pairs).correct(label, pred) if coarse_labels else pred == label  # coarse: a taxonomy
    edges = torch.linspace(0, 1, n_bins + 1, dtype=probs.dtype, device=probs.device)[1:-1]
    bins = torch.bucketize(conf, edges)  # bin m holds m/M < conf <= (m+1)/M
    zeros = torch.zeros(n_bins, dtype=dt, device=probs.device)
    return {
        "bin_count": torch.bincount(bins, minlength=n_bins),
        "bin_confidence": zeros.index_add(0, bins, conf.to(dt)),
        "bin_correct": torch.bincount(bins, weights=right.to(dt), minlength=n_bins).to(dt),
    }


def _hprf_from(stats, average: str = "micro") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if average == "macro":
        n = stats["total"]
        return (_ratio(stats["sample_precision"], n), _ratio(stats["sample_recall"], n), _ratio(stats["sample_f1"], n))
    p = _ratio(stats["ancestors_common"], stats["ancestors_pred"])
    r = _ratio(stats["ancestors_common"], stats["ancestors_true"])
    f = torch.where((p + r) == 0, torch.zeros_like(p), 2 * p * r / (p + r))  # NaN stays NaN
    return p, r, f


def _lca_from(stats) -> dict[str, torch.Tensor]:
    return {k: _ratio(stats[f"lca_{k}"], stats["total"]) for k in LCA_FIELDS}


def _ece_from(stats) -> torch.Tensor:
    gap = (stats["bin_correct"] - stats["bin_confidence"]).abs().sum()
    return _ratio(gap, stats["bin_count"].sum())


# ---------------------------------------------------------------------- metrics
def topk_error(scores: torch.Tensor, target: torch.Tensor, k: int = 1, *, taxonomy: Taxonomy | None = None,
               coarse_labels: bool = False) -> torch.Tensor:
    """Fraction of samples whose true class is not among the k highest scores.

    .. math:: \\mathrm{err}_k = \\frac{1}{N} \\sum_n [\\mathrm{rank}_n(t_n) \\ge k]

    Ties are ranked by class index (see the module docstring), so a true class
    tied with a lower-index class at the k-th place counts as an error.
    **Coarse label** ``v``: an error when none of the k best classes lies under ``v``.

    Parameters
    ----------
    scores : Tensor (N, C)
        Any scores (higher is better).
    target : LongTensor (N,)
        Class indices in ``[0, C)`` (target ids with ``coarse_labels=True``).
    k : int, default 1
        ``1 <= k <= C``.
    taxonomy : Taxonomy, optional
        Needed with ``coarse_labels=True``.
    coarse_labels : bool, default False

    Returns
    -------
    Tensor
        0-dim, in [0, 1]; NaN for ``N = 0``.
    """
    pairs = _optional_pairs(taxonomy, coarse_labels)
    scores, label = _check(scores, target, None if pairs is None else pairs.num_classes, pairs, coarse_labels)
    k = check_k(k, scores.shape[1])
    s = _topk_stats(scores, label, (k,), pairs, coarse_labels)
    return _ratio(s[f"wrong_at_{k}"], s["total"])


def mistake_severity(scores: torch.Tensor, target: torch.Tensor, source: Source, *, distance: str | None = None,
                     coarse_labels: bool = False) -> torch.Tensor:
    """Mean distance between the top-1 prediction and the truth, over the wrong predictions only.

    .. math:: \\frac{\\sum_n [\\hat y_n \\ne t_n] \\, d(t_n, \\hat y_n)}{\\sum_n [\\hat y_n \\ne t_n]}

    Bertinetto et al., "Making Better Mistakes: Leveraging Class Hierarchies
    with Deep Networks", CVPR 2020 (with ``distance="lca_height"``, their
    "height of the lowest common ancestor").

    **No mistakes → NaN.** The mean over an empty set is undefined; 0 would
    read as "mistakes of severity 0", which is a different claim. Report it
    alongside :func:`topk_error`, which says how many mistakes there were.

    **Coarse label** ``v``: a prediction under ``v`` is right; a wrong one is at
    the distance between ``v`` and it. **Node predictions** (target ids; with a
    taxonomy): a prediction is wrong unless it is the label or under it (an
    ancestor of the label is a mistake at ``d(label, ancestor)``, e.g. the
    ancestor's height for ``lca_height``).

    Parameters
    ----------
    scores : Tensor (N, C), or LongTensor (N,) of predicted target ids
    target : LongTensor (N,)
    source : Taxonomy or Tensor (C, C)
    distance : str, optional
        The kind of distance, with a taxonomy only (default ``"lca_height"``).
    coarse_labels : bool, default False
    """
    pairs = _pairs(source, distance)
    pred, label = _predicted(scores, target, pairs, coarse_labels, nodes=True)
    s = _severity_stats(pred, label, pairs)
    return _ratio(s["mistake_distance"], s["mistakes"])


def mean_hierarchical_distance_at_k(scores: torch.Tensor, target: torch.Tensor, source: Source, k: int, *,
                                    distance: str | None = None, coarse_labels: bool = False) -> torch.Tensor:
    """Mean hierarchical distance @k: mean over samples of the *mean* distance of the k best predictions.

    .. math:: \\frac{1}{N} \\sum_n \\frac{1}{k} \\sum_{j \\in \\mathrm{top}_k(n)} d(t_n, j)

    A correct prediction among the k counts 0 (``d(t, t) = 0``). Bertinetto et
    al., CVPR 2020 ("average hierarchical distance of the top-k"). **Coarse
    label** ``v``: each of the k classes is at ``d(v, j)``, 0 under ``v``.
    :func:`min_hierarchical_distance_at_k` takes the closest of the k instead;
    for ``k = 1`` the two are equal. (Formerly ``hierarchical_distance_at_k``,
    now a deprecated alias.)

    Parameters
    ----------
    scores : Tensor (N, C)
    target : LongTensor (N,)
    source : Taxonomy or Tensor (C, C)
    k : int
        ``1 <= k <= C``.
    distance : str, optional
        With a taxonomy only (default ``"lca_height"``).
    coarse_labels : bool, default False

    Returns
    -------
    Tensor
        0-dim; NaN for ``N = 0``.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> scores = torch.tensor([[0.1, 0.5, 0.4, 0.0]])   # zebra, then whale; the truth is horse
    >>> mean_hierarchical_distance_at_k(scores, torch.tensor([0]), tax, k=2).item()   # (1 + 2) / 2
    1.5
    >>> min_hierarchical_distance_at_k(scores, torch.tensor([0]), tax, k=2).item()    # zebra, at 1
    1.0
    """
    pairs = _pairs(source, distance)
    scores, label = _check(scores, target, pairs.num_classes, pairs, coarse_labels)
    k = check_k(k, scores.shape[1])
    s = _hdist_stats(stable_topk(scores, k), label, pairs, k)
    return _ratio(s[f"dist_mean_at_{k}"], _count(scores.shape[0], scores.device))


def min_hierarchical_distance_at_k(scores: torch.Tensor, target: torch.Tensor, source: Source, k: int, *,
                                   distance: str | None = None, coarse_labels: bool = False) -> torch.Tensor:
    """Min hierarchical distance @k: mean over samples of the distance of the *closest* of the k best predictions.

    .. math:: \\frac{1}{N} \\sum_n \\min_{j \\in \\mathrm{top}_k(n)} d(t_n, j)

    0 for a sample whose true class is among its top k (for a coarse label: a
    class under it); for ``k = 1`` it equals :func:`mean_hierarchical_distance_at_k`,
    whose arguments it takes. (Formerly ``hierarchical_distance_top_k``, now a
    deprecated alias.)

    Parameters
    ----------
    scores : Tensor (N, C)
    target : LongTensor (N,)
    source : Taxonomy or Tensor (C, C)
    k : int
        ``1 <= k <= C``.
    distance : str, optional
        With a taxonomy only (default ``"lca_height"``).
    coarse_labels : bool, default False

    Returns
    -------
    Tensor
        0-dim; NaN for ``N = 0``.
    """
    pairs = _pairs(source, distance)
    scores, label = _check(scores, target, pairs.num_classes, pairs, coarse_labels)
    k = check_k(k, scores.shape[1])
    s = _hdist_stats(stable_topk(scores, k), label, pairs, k)
    return _ratio(s[f"dist_min_at_{k}"], _count(scores.shape[0], scores.device))


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3)


def hierarchical_distance_at_k(scores: torch.Tensor, target: torch.Tensor, source: Source, k: int, *,
                               distance: str | None = None, coarse_labels: bool = False) -> torch.Tensor:
    """Deprecated alias of :func:`mean_hierarchical_distance_at_k` (the mean of the k best's distances)."""
    _deprecated("hierarchical_distance_at_k", "mean_hierarchical_distance_at_k (the mean distance of the k best "
                "predictions; min_hierarchical_distance_at_k is the closest of them)")
    return mean_hierarchical_distance_at_k(scores, target, source, k, distance=distance, coarse_labels=coarse_labels)


def hierarchical_distance_top_k(scores: torch.Tensor, target: torch.Tensor, source: Source, k: int, *,
                                distance: str | None = None, coarse_labels: bool = False) -> torch.Tensor:
    """Deprecated alias of :func:`min_hierarchical_distance_at_k` (the distance of the closest of the k best)."""
    _deprecated("hierarchical_distance_top_k", "min_hierarchical_distance_at_k (the distance of the closest of the "
                "k best predictions)")
    return min_hierarchical_distance_at_k(scores, target, source, k, distance=distance, coarse_labels=coarse_labels)


def hierarchical_precision_recall_f1(scores: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, *,
                                     average: str = "micro",
                                     coarse_labels: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hierarchical precision, recall and F1 of the top-1 prediction (or of node predictions), on ancestor sets.

    Kiritchenko, Matwin and Famili, "Functional Annotation of Genes Using
    Hierarchical Text Categorization", BioLINK SIG, ISMB 2005; Kiritchenko,
    Matwin, Nock and Famili, "Learning and Evaluation in the Presence of Class
    Hierarchies", Canadian AI 2006. ``A(v)`` is the set of ancestors of ``v``
    **including** ``v`` and **excluding** the root (which every node shares);
    in a tree ``|A(v)| = depth(v)`` and ``|A(a) ∩ A(b)| = depth(LCA(a, b))``
    (edges, unweighted).

    ``average="micro"`` (default): sums over samples,

    .. math::

        hP = \\frac{\\sum_n |A(\\hat y_n) \\cap A(t_n)|}{\\sum_n |A(\\hat y_n)|}, \\quad
        hR = \\frac{\\sum_n |A(\\hat y_n) \\cap A(t_n)|}{\\sum_n |A(t_n)|}, \\quad
        hF = \\frac{2 \\, hP \\, hR}{hP + hR}

    (``hF`` is 0 when ``hP + hR = 0``; a ratio of zero sums is NaN).
    ``average="macro"``: the mean over samples of the per-sample values, F1
    included (Valmadre, NeurIPS 2022, hiercls's ``depth_precision``,
    ``depth_recall``); a per-sample ``0 / 0`` (a prediction or label at the
    root) counts as 1, a per-sample F1 with ``P + R = 0`` as 0.

    A correct prediction scores 1 on both; one that shares only the root scores
    0. **Coarse label** ``v``: ``A(v)`` is the label's set, and a prediction
    under ``v`` counts as ``v`` (precision and recall 1). **Node predictions**:
    ``A`` of the predicted node (an answer above the truth has precision 1 and
    recall below 1).

    Parameters
    ----------
    scores : Tensor (N, C), or LongTensor (N,) of predicted target ids
    target : LongTensor (N,)
    taxonomy : Taxonomy
    average : {"micro", "macro"}, default "micro"
    coarse_labels : bool, default False

    Returns
    -------
    (hP, hR, hF) : three 0-dim tensors
    """
    average = _check_average(average)
    pairs = _tree_pairs(taxonomy, "hierarchical precision/recall/F1")
    pred, label = _predicted(scores, target, pairs, coarse_labels, nodes=True)
    return _hprf_from(_hprf_stats(pred, label, pairs), average)


def hierarchical_precision(scores: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, *, average: str = "micro",
                           coarse_labels: bool = False) -> torch.Tensor:
    """Hierarchical precision ``hP``; see :func:`hierarchical_precision_recall_f1`."""
    return hierarchical_precision_recall_f1(scores, target, taxonomy, average=average, coarse_labels=coarse_labels)[0]


def hierarchical_recall(scores: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, *, average: str = "micro",
                        coarse_labels: bool = False) -> torch.Tensor:
    """Hierarchical recall ``hR``; see :func:`hierarchical_precision_recall_f1`."""
    return hierarchical_precision_recall_f1(scores, target, taxonomy, average=average, coarse_labels=coarse_labels)[1]


def hierarchical_f1(scores: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, *, average: str = "micro",
                    coarse_labels: bool = False) -> torch.Tensor:
    """Hierarchical F1 ``hF``; see :func:`hierarchical_precision_recall_f1`."""
    return hierarchical_precision_recall_f1(scores, target, taxonomy, average=average, coarse_labels=coarse_labels)[2]


def lca_metrics(scores: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, *,
                coarse_labels: bool = False) -> dict[str, torch.Tensor]:
    """The LCA metrics of Valmadre, "Hierarchical classification at multiple operating points" (NeurIPS 2022).

    Per sample, with the label ``v``, the prediction ``p`` (truncated at ``v``:
    a prediction under a coarse label counts as the label), ``a = LCA(v, p)``
    and a node value ``f``, either the depth (``depth_*``) or the information
    ``log2(C / n(u))`` of a node with ``n(u)`` classes under it (``info_*``):

    * ``exact``: ``p = v``; ``correct``: ``p`` is ``v``, an ancestor of ``v`` or under ``v``;
    * ``excess = f(p) − f(a)`` (what the prediction claims beyond the common
      ancestor), ``deficient = f(v) − f(a)`` (what it falls short of), ``dist`` their sum;
    * ``precision = f(a) / f(p)``, ``recall = f(a) / f(v)`` (``0 / 0 = 1``),
      ``f1 = 2 P R / (P + R)`` (0 when both are 0).

    Each value is the mean over samples (hiercls returns sums). ``depth_precision``,
    ``depth_recall``, ``depth_f1`` equal :func:`hierarchical_precision_recall_f1`
    with ``average="macro"``.

    Parameters
    ----------
    scores : Tensor (N, C), or LongTensor (N,) of predicted target ids
    target : LongTensor (N,)
    taxonomy : Taxonomy
    coarse_labels : bool, default False

    Returns
    -------
    dict
        The keys of :data:`LCA_FIELDS`, 0-dim tensors.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> m = lca_metrics(torch.tensor(tax.encode(["mammal", "zebra"])), torch.tensor([0, 0]), tax)
    >>> m["exact"].item(), m["correct"].item(), m["depth_recall"].item(), m["depth_precision"].item()
    (0.0, 0.5, 0.5, 0.75)
    """
    pairs = _tree_pairs(taxonomy, "the LCA metrics")
    pred, label = _predicted(scores, target, pairs, coarse_labels, nodes=True)
    return _lca_from(_lca_stats(pred, label, pairs))


def accuracy_at_depth(scores: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, depth: int, *,
                      coarse_labels: bool = False) -> torch.Tensor:
    """Accuracy at one depth of the tree: the prediction's ancestor at ``depth`` is the label's.

    With ``anc_k(u)`` the ancestor of ``u`` at depth ``k``
    (:meth:`~taxosmooth.Taxonomy.ancestor_at_depth`), extended so that a
    class shallower than ``k`` stands for itself:

    .. math:: \\mathrm{acc}_k = \\frac{\\sum_n [\\mathrm{anc}_k(\\hat y_n) = \\mathrm{anc}_k(t_n)]}{\\#\\{n : \\mathrm{anc}_k(t_n) \\text{ exists}\\}}.

    **Coarse label** shallower than ``k``: it does not say what is right at
    depth ``k``; the sample is left out of that depth (NaN when no sample
    counts). **Node predictions** shallower than ``k`` (not classes) are wrong
    at ``k``.

    Parameters
    ----------
    scores : Tensor (N, C), or LongTensor (N,) of predicted target ids
    target : LongTensor (N,)
    taxonomy : Taxonomy
    depth : int
        ``0 … max depth`` (at depth 0 every prediction is right).
    coarse_labels : bool, default False
    """
    pairs = _tree_pairs(taxonomy, "accuracy at a depth")
    depth = _check_depth(depth, pairs)
    pred, label = _predicted(scores, target, pairs, coarse_labels, nodes=True)
    s = _depth_stats(pred, label, pairs, depth)
    return _ratio(s[f"right_at_depth_{depth}"], s[f"counted_at_depth_{depth}"])


def full_path_accuracy(preds: torch.Tensor, target: torch.Tensor, taxonomy: Taxonomy, *,
                       coarse_labels: bool = False) -> torch.Tensor:
    """Fraction of samples whose per-level predictions are right at every level (a model with one head per rank).

    ``preds[:, j]`` is the node predicted at depth ``j + 1`` (a node of that
    depth, or a class shallower than it, which stands for itself below its
    depth), for ``L`` levels. A sample is right when at every level the
    prediction is the label's ancestor there. **Coarse label** ``v``: only the
    levels down to ``depth(v)`` are judged; a sample with no judged level (a
    label at the root) is left out.

    Parameters
    ----------
    preds : LongTensor (N, L)
        Target ids, one column per depth ``1 … L``.
    target : LongTensor (N,)
    taxonomy : Taxonomy
    coarse_labels : bool, default False
    """
    pairs = _tree_pairs(taxonomy, "full-path accuracy")
    ids = _check_levels(preds, pairs)
    label = _labels(target, ids.shape[0], pairs, pairs.num_classes, coarse_labels, ids.device)
    s = _full_path_stats(ids, label, pairs)
    return _ratio(s["path_right"], s["path_counted"])


def path_consistency(preds: torch.Tensor, taxonomy: Taxonomy) -> torch.Tensor:
    """Fraction of samples whose per-level predictions form one path from the root.

    ``preds`` as in :func:`full_path_accuracy`; consistent when every level's
    node is the parent of the next level's (a class shallower than a level
    repeats itself there). Needs no labels.

    Parameters
    ----------
    preds : LongTensor (N, L)
    taxonomy : Taxonomy
    """
    pairs = _tree_pairs(taxonomy, "path consistency")
    s = _consistency_stats(_check_levels(preds, pairs), pairs)
    return _ratio(s["consistent"], s["total"])


def expected_calibration_error(probs: torch.Tensor, target: torch.Tensor, n_bins: int = 15, from_logits: bool = False,
                               *, taxonomy: Taxonomy | None = None, coarse_labels: bool = False) -> torch.Tensor:
    """Expected calibration error of the top-1 confidence, with equal-width bins.

    Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural
    Networks", ICML 2017: with ``conf_n = max_j p_nj``, the prediction
    ``argmax_j p_nj`` and bins ``B_m = ((m-1)/M, m/M]``,

    .. math::

        \\mathrm{ECE} = \\sum_{m=1}^{M} \\frac{|B_m|}{N} \\, |\\mathrm{acc}(B_m) - \\mathrm{conf}(B_m)|
                     = \\frac{1}{N} \\sum_m \\Big| \\sum_{n \\in B_m} ([\\hat y_n = t_n] - \\mathrm{conf}_n) \\Big|.

    **Coarse label** ``v``: the prediction is right when it lies under ``v``.

    Parameters
    ----------
    probs : Tensor (N, C)
        Probabilities (rows sum to 1), or logits with ``from_logits=True``.
    target : LongTensor (N,)
    n_bins : int, default 15
        ``M``, as in Guo et al.
    from_logits : bool, default False
    taxonomy : Taxonomy, optional
        Needed with ``coarse_labels=True``.
    coarse_labels : bool, default False

    Returns
    -------
    Tensor
        0-dim, in [0, 1].
    """
    pairs = _optional_pairs(taxonomy, coarse_labels)
    probs = as_probabilities(_detached(probs), from_logits, None if pairs is None else pairs.num_classes)
    label = _labels(target, probs.shape[0], pairs, probs.shape[1], coarse_labels, probs.device)
    return _ece_from(_ece_stats(probs, label, _check_bins(n_bins), pairs, coarse_labels))


def _detached(x):
    return x.detach() if isinstance(x, torch.Tensor) else x


# ---------------------------------------------------------------------- everything at once
def _check_ks(k, num_classes: int) -> tuple[int, ...]:
    ks = (k,) if isinstance(k, int) and not isinstance(k, bool) else tuple(k)
    if not ks:
        raise ValueError("k must be an int or a non-empty sequence of ints")
    return tuple(sorted({1, *(check_k(x, num_classes) for x in ks)}))


def _report_stats(scores, label, pairs, ks, probs, n_bins, coarse_labels) -> dict:
    topk = stable_topk(scores, max(ks))
    top1 = topk[:, 0]
    stats = _topk_stats(scores, label, ks, pairs, coarse_labels)
    stats |= _severity_stats(top1, label, pairs)
    for k in ks:
        stats |= _hdist_stats(topk, label, pairs, k)
    if pairs.max_depth is not None:
        stats |= _hprf_stats(top1, label, pairs)
        for d in range(1, pairs.max_depth + 1):
            stats |= _depth_stats(top1, label, pairs, d)
    if probs is not None:
        stats |= _ece_stats(probs, label, n_bins, pairs, coarse_labels)
    return stats


_OLD_REPORT_KEYS = ((re.compile(r"hierarchical_distance@(\d+)"), "mean_hierarchical_distance@{}"),
                    (re.compile(r"hierarchical_distance_top(\d+)"), "min_hierarchical_distance@{}"))


class _ReportDict(dict):
    """The dict of :func:`report` (and ``HierarchicalReport.compute``): a plain dict whose former key names
    ``hierarchical_distance@{k}`` and ``hierarchical_distance_top{k}`` still read, with a DeprecationWarning that
    names the new key (``mean_hierarchical_distance@{k}``, ``min_hierarchical_distance@{k}``). They are not keys:
    iteration, ``in`` and JSON show the new names only."""

    def _renamed(self, key):
        if isinstance(key, str):
            for pattern, new in _OLD_REPORT_KEYS:
                m = pattern.fullmatch(key)
                if m and new.format(m.group(1)) in self:
                    return new.format(m.group(1))
        return None

    def _former(self, key, new: str):
        # stacklevel 3: the warning names the line of the caller of __missing__ or get
        warnings.warn(f"the report key {key!r} is deprecated; use {new!r}", DeprecationWarning, stacklevel=3)
        return dict.__getitem__(self, new)

    def __missing__(self, key):
        new = self._renamed(key)
        if new is None:
            raise KeyError(key)
        return self._former(key, new)

    def get(self, key, default=None):
        if key in self:
            return dict.__getitem__(self, key)
        new = self._renamed(key)
        return default if new is None else self._former(key, new)


def _report_from(stats, ks, max_depth: int | None) -> dict[str, torch.Tensor]:
    n = stats["total"]
    out = _ReportDict()
    for k in ks:
        out[f"top{k}_error"] = _ratio(stats[f"wrong_at_{k}"], n)
    out["mistake_severity"] = _ratio(stats["mistake_distance"], stats["mistakes"])
    for k in ks:
        out[f"mean_hierarchical_distance@{k}"] = _ratio(stats[f"dist_mean_at_{k}"], n)
        out[f"min_hierarchical_distance@{k}"] = _ratio(stats[f"dist_min_at_{k}"], n)
    if max_depth is not None:
        p, r, f = _hprf_from(stats)
        out |= {"hierarchical_precision": p, "hierarchical_recall": r, "hierarchical_f1": f}
        for d in range(1, max_depth + 1):
            out[f"accuracy_at_depth_{d}"] = _ratio(stats[f"right_at_depth_{d}"], stats[f"counted_at_depth_{d}"])
    if "bin_count" in stats:
        out["ece"] = _ece_from(stats)
    return out


def report(
    scores: torch.Tensor,
    target: torch.Tensor,
    source: Source,
    k: int | Sequence[int] = 1,
    *,
    distance: str | None = None,
    probs: torch.Tensor | None = None,
    from_logits: bool = False,
    n_bins: int = 15,
    coarse_labels: bool = False,
) -> dict[str, float]:
    """Every metric at once, as a dict of floats for logging.

    The ranking metrics use ``scores`` — any scores, e.g. logits, probabilities,
    or the ``-R`` of :class:`~taxosmooth.decision.CRMClassifier`. The
    calibration error needs probabilities: it is reported when ``probs`` is
    given (the model's probabilities, or its logits with ``from_logits=True``),
    and left out otherwise.

    Parameters
    ----------
    scores : Tensor (N, C)
    target : LongTensor (N,)
    source : Taxonomy or Tensor (C, C)
    k : int or sequence of int, default 1
        The k of the top-k error and the hierarchical distances; 1 is always included.
    distance : str, optional
        The kind of distance, with a taxonomy only (default ``"lca_height"``).
    probs : Tensor (N, C), optional
        Probabilities for the calibration error (``from_logits=True``: logits).
    from_logits : bool, default False
        Whether ``probs`` holds logits.
    n_bins : int, default 15
        Bins of the calibration error.
    coarse_labels : bool, default False
        Accept labels at internal nodes (the rules of each metric apply).

    Returns
    -------
    dict
        ``top{k}_error``, ``mistake_severity``, ``mean_hierarchical_distance@{k}``
        (:func:`mean_hierarchical_distance_at_k`), ``min_hierarchical_distance@{k}``
        (:func:`min_hierarchical_distance_at_k`) (for each k); with a Taxonomy also
        ``hierarchical_precision``, ``hierarchical_recall``,
        ``hierarchical_f1`` (micro) and ``accuracy_at_depth_{d}`` for every
        depth ``d = 1 … D``; ``ece`` when ``probs`` is given. The former key
        names ``hierarchical_distance@{k}`` and ``hierarchical_distance_top{k}``
        still read (``r["hierarchical_distance@5"]``, ``r.get(...)``) with a
        DeprecationWarning naming the new key; they are not listed.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> probs = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.1, 0.6, 0.2, 0.1]])
    >>> r = report(probs, torch.tensor([0, 2]), tax, k=2, probs=probs)
    >>> r["top1_error"], r["top2_error"], r["mistake_severity"], r["accuracy_at_depth_1"]
    (0.5, 0.0, 2.0, 0.5)
    >>> crm = ts.CRMClassifier(torch.nn.Identity(), tax)
    >>> sorted(report(crm(probs), torch.tensor([0, 2]), tax))[:3]   # CRM's -R: every ranking metric
    ['accuracy_at_depth_1', 'accuracy_at_depth_2', 'hierarchical_f1']
    """
    pairs = _pairs(source, distance)
    scores, label = _check(scores, target, pairs.num_classes, pairs, coarse_labels)
    ks = _check_ks(k, scores.shape[1])
    p = None
    if probs is not None:
        p = as_probabilities(_detached(probs), from_logits, pairs.num_classes, name="probs")
        if p.shape[0] != scores.shape[0]:
            raise ValueError(f"probs has {p.shape[0]} rows but scores has {scores.shape[0]}")
        p = p.to(scores.device)
    elif from_logits:
        raise ValueError("from_logits=True applies to probs=, which is not given (the calibration error "
                         "needs the model's probabilities or logits: pass probs=logits, from_logits=True)")
    stats = _report_stats(scores, label, pairs, ks, p, _check_bins(n_bins), coarse_labels)
    max_depth = pairs.max_depth
    return _ReportDict((name, float(v)) for name, v in _report_from(stats, ks, max_depth).items())
