"""Metrics of how bad a classifier's mistakes are, as plain functions.

Every function takes ``scores`` ``(N, C)`` — logits or probabilities: only
their ranking counts, except for the calibration error — and integer
``target`` ``(N,)``. Hierarchical metrics also take a ``source``: a
:class:`~taxosmooth.Taxonomy` (with ``distance=`` one of
:data:`~taxosmooth.DISTANCE_KINDS`; computed from lowest common ancestors,
never a ``C × C`` table) or a ``(C, C)`` matrix whose entry ``[t, j]`` is the
distance of predicting ``j`` when the truth is ``t``.

**Rankings and ties.** The top-k predictions are the k highest scores; equal
scores are ranked by class index, lowest first (a stable sort), the same rule
as :func:`taxosmooth.decision.crm_predict`. So scoring a model by ``-R`` (the
negative expected costs, see :class:`taxosmooth.decision.CRMClassifier`)
evaluates its CRM decisions.

**Summable.** Each metric is a ratio of sums over samples (counts, sums of
source, per-bin sums); :mod:`taxosmooth.metrics.modules` keeps those sums as
torchmetrics states, so metrics accumulated batch by batch, or on several
processes, equal the metric of the whole set.

All results are 0-dim float tensors (float64; float32 on MPS) on the scores'
device, except :func:`report`, which returns a dict of Python floats.
"""

from __future__ import annotations

import torch

from taxosmooth._ranking import rank_of, stable_topk
from taxosmooth._tensor_checks import (
    accumulate_dtype,
    as_probabilities,
    check_k,
    check_scores,
    check_target,
)
from taxosmooth.metrics._pairs import PairDistances

__all__ = [
    "topk_error",
    "mistake_severity",
    "hierarchical_distance_at_k",
    "hierarchical_distance_top_k",
    "hierarchical_precision_recall_f1",
    "hierarchical_precision",
    "hierarchical_recall",
    "hierarchical_f1",
    "expected_calibration_error",
    "report",
]


# ---------------------------------------------------------------------- validation
def _pairs(source, distance: str) -> PairDistances:
    return source if isinstance(source, PairDistances) else PairDistances(source, distance)


def _check(scores, target, num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    scores = check_scores(scores, "scores", num_classes)
    target = check_target(target, scores.shape[0], scores.shape[1])
    return scores, target.to(scores.device)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` in the accumulation dtype; ``0 / 0`` is NaN."""
    dt = accumulate_dtype(num.device)
    return num.to(dt) / den.to(dt)


# ---------------------------------------------------------------------- sufficient statistics
# Each ``_*_stats`` returns sums over the batch; the metric is a ratio of such sums.


def _topk_stats(scores, target, ks) -> dict:
    rank = rank_of(scores, target)
    return {f"wrong_at_{k}": (rank >= k).sum() for k in ks} | {"total": torch.tensor(target.shape[0], device=scores.device)}


def _severity_stats(top1, target, pairs) -> dict:
    dt = accumulate_dtype(top1.device)
    wrong = top1 != target
    d = pairs(target, top1, dt)
    return {"mistake_distance": torch.where(wrong, d, torch.zeros_like(d)).sum(), "mistakes": wrong.sum()}


def _hdist_stats(topk, target, pairs, k) -> dict:
    dt = accumulate_dtype(topk.device)
    d = pairs(target.unsqueeze(1), topk[:, :k], dt)  # (N, k)
    return {f"dist_mean_at_{k}": d.mean(dim=1).sum(), f"dist_min_at_{k}": d.min(dim=1).values.sum()}


def _hprf_stats(top1, target, pairs) -> dict:
    if pairs.taxonomy is None:
        raise TypeError("hierarchical precision/recall/F1 need a Taxonomy (ancestor sets), not a distance matrix")
    _, lca_depth = pairs.lca(target, top1)
    return {
        "ancestors_common": lca_depth.sum(),
        "ancestors_pred": pairs.class_depth(top1).sum(),
        "ancestors_true": pairs.class_depth(target).sum(),
    }


def _ece_stats(probs, target, n_bins) -> dict:
    dt = accumulate_dtype(probs.device)
    conf, pred = probs.max(dim=1)  # max() returns the first maximal index, like argmax
    edges = torch.linspace(0, 1, n_bins + 1, dtype=probs.dtype, device=probs.device)[1:-1]
    bins = torch.bucketize(conf, edges)  # bin m holds m/M < conf <= (m+1)/M
    zeros = torch.zeros(n_bins, dtype=dt, device=probs.device)
    return {
        "bin_count": torch.bincount(bins, minlength=n_bins),
        "bin_confidence": zeros.index_add(0, bins, conf.to(dt)),
        "bin_correct": torch.bincount(bins, weights=(pred == target).to(dt), minlength=n_bins).to(dt),
    }


def _hprf_from(stats) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p = _ratio(stats["ancestors_common"], stats["ancestors_pred"])
    r = _ratio(stats["ancestors_common"], stats["ancestors_true"])
    f = torch.where((p + r) == 0, torch.zeros_like(p), 2 * p * r / (p + r))  # NaN stays NaN
    return p, r, f


def _ece_from(stats) -> torch.Tensor:
    gap = (stats["bin_correct"] - stats["bin_confidence"]).abs().sum()
    return _ratio(gap, stats["bin_count"].sum())


def _check_bins(n_bins) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    return n_bins


# ---------------------------------------------------------------------- metrics
def topk_error(scores, target, k: int = 1) -> torch.Tensor:
    """Fraction of samples whose true class is not among the k highest scores.

    .. math:: \\mathrm{err}_k = \\frac{1}{N} \\sum_n [\\mathrm{rank}_n(t_n) \\ge k]

    Ties are ranked by class index (see the module docstring), so a true class
    tied with a lower-index class at the k-th place counts as an error.

    Parameters
    ----------
    scores : Tensor (N, C)
        Logits or probabilities.
    target : LongTensor (N,)
        Class indices in ``[0, C)``.
    k : int, default 1
        ``1 <= k <= C``.

    Returns
    -------
    Tensor
        0-dim, in [0, 1]; NaN for ``N = 0``.
    """
    scores, target = _check(scores, target)
    k = check_k(k, scores.shape[1])
    s = _topk_stats(scores, target, (k,))
    return _ratio(s[f"wrong_at_{k}"], s["total"])


def mistake_severity(scores, target, source, *, distance: str | None = None) -> torch.Tensor:
    """Mean distance between the top-1 prediction and the truth, over the wrong predictions only.

    .. math:: \\frac{\\sum_n [\\hat y_n \\ne t_n] \\, d(t_n, \\hat y_n)}{\\sum_n [\\hat y_n \\ne t_n]}

    Bertinetto et al., "Making Better Mistakes: Leveraging Class Hierarchies
    with Deep Networks", CVPR 2020 (with ``distance="lca_height"``, their
    "height of the lowest common ancestor").

    **No mistakes → NaN.** The mean over an empty set is undefined; 0 would
    read as "mistakes of severity 0", which is a different claim. Report it
    alongside :func:`topk_error`, which says how many mistakes there were.

    Parameters
    ----------
    scores : Tensor (N, C)
    target : LongTensor (N,)
    source : Taxonomy or Tensor (C, C)
    distance : str, optional
        The kind of distance, with a taxonomy only (default ``"lca_height"``).
    """
    pairs = _pairs(source, distance)
    scores, target = _check(scores, target, pairs.num_classes)
    s = _severity_stats(stable_topk(scores, 1)[:, 0], target, pairs)
    return _ratio(s["mistake_distance"], s["mistakes"])


def hierarchical_distance_at_k(scores, target, source, k: int, *, distance: str | None = None) -> torch.Tensor:
    """Average hierarchical distance @k: mean over samples of the mean distance of the k best predictions.

    .. math:: \\frac{1}{N} \\sum_n \\frac{1}{k} \\sum_{j \\in \\mathrm{top}_k(n)} d(t_n, j)

    A correct prediction among the k counts 0 (``d(t, t) = 0``). Bertinetto et
    al., CVPR 2020 ("average hierarchical distance of the top-k").

    Parameters
    ----------
    scores : Tensor (N, C)
    target : LongTensor (N,)
    source : Taxonomy or Tensor (C, C)
    k : int
        ``1 <= k <= C``.
    distance : str, optional
        With a taxonomy only (default ``"lca_height"``).
    """
    pairs = _pairs(source, distance)
    scores, target = _check(scores, target, pairs.num_classes)
    k = check_k(k, scores.shape[1])
    s = _hdist_stats(stable_topk(scores, k), target, pairs, k)
    return _ratio(s[f"dist_mean_at_{k}"], torch.tensor(scores.shape[0], device=scores.device))


def hierarchical_distance_top_k(scores, target, source, k: int, *, distance: str | None = None) -> torch.Tensor:
    """Mean over samples of the distance of the *closest* of the k best predictions.

    .. math:: \\frac{1}{N} \\sum_n \\min_{j \\in \\mathrm{top}_k(n)} d(t_n, j)

    0 for a sample whose true class is among its top k; for ``k = 1`` it
    equals :func:`hierarchical_distance_at_k`. Arguments as there.
    """
    pairs = _pairs(source, distance)
    scores, target = _check(scores, target, pairs.num_classes)
    k = check_k(k, scores.shape[1])
    s = _hdist_stats(stable_topk(scores, k), target, pairs, k)
    return _ratio(s[f"dist_min_at_{k}"], torch.tensor(scores.shape[0], device=scores.device))


def hierarchical_precision_recall_f1(scores, target, taxonomy) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hierarchical precision, recall and F1 of the top-1 prediction, on ancestor sets.

    Kiritchenko, Matwin and Famili, "Functional Annotation of Genes Using
    Hierarchical Text Categorization", BioLINK SIG, ISMB 2005; Kiritchenko,
    Matwin, Nock and Famili, "Learning and Evaluation in the Presence of Class
    Hierarchies", Canadian AI 2006. With ``A(c)`` the set of ancestors of class
    ``c`` **including** ``c`` and **excluding** the root (which every class
    shares), micro-averaged over samples:

    .. math::

        hP = \\frac{\\sum_n |A(\\hat y_n) \\cap A(t_n)|}{\\sum_n |A(\\hat y_n)|}, \\quad
        hR = \\frac{\\sum_n |A(\\hat y_n) \\cap A(t_n)|}{\\sum_n |A(t_n)|}, \\quad
        hF = \\frac{2 \\, hP \\, hR}{hP + hR}.

    In a tree ``|A(c)| = depth(c)`` and ``|A(a) ∩ A(b)| = depth(LCA(a, b))``
    (edges, unweighted). A correct prediction scores 1 on both; a prediction
    that shares only the root scores 0. ``hF`` is 0 when ``hP + hR = 0``.

    Parameters
    ----------
    scores : Tensor (N, C)
    target : LongTensor (N,)
    taxonomy : Taxonomy

    Returns
    -------
    (hP, hR, hF) : three 0-dim tensors
    """
    pairs = _pairs(taxonomy, None)
    scores, target = _check(scores, target, pairs.num_classes)
    return _hprf_from(_hprf_stats(stable_topk(scores, 1)[:, 0], target, pairs))


def hierarchical_precision(scores, target, taxonomy) -> torch.Tensor:
    """Hierarchical precision ``hP``; see :func:`hierarchical_precision_recall_f1`."""
    return hierarchical_precision_recall_f1(scores, target, taxonomy)[0]


def hierarchical_recall(scores, target, taxonomy) -> torch.Tensor:
    """Hierarchical recall ``hR``; see :func:`hierarchical_precision_recall_f1`."""
    return hierarchical_precision_recall_f1(scores, target, taxonomy)[1]


def hierarchical_f1(scores, target, taxonomy) -> torch.Tensor:
    """Hierarchical F1 ``hF``; see :func:`hierarchical_precision_recall_f1`."""
    return hierarchical_precision_recall_f1(scores, target, taxonomy)[2]


def expected_calibration_error(probs, target, n_bins: int = 15, from_logits: bool = False) -> torch.Tensor:
    """Expected calibration error of the top-1 confidence, with equal-width bins.

    Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural
    Networks", ICML 2017: with ``conf_n = max_j p_nj``, the prediction
    ``argmax_j p_nj`` and bins ``B_m = ((m-1)/M, m/M]``,

    .. math::

        \\mathrm{ECE} = \\sum_{m=1}^{M} \\frac{|B_m|}{N} \\, |\\mathrm{acc}(B_m) - \\mathrm{conf}(B_m)|
                     = \\frac{1}{N} \\sum_m \\Big| \\sum_{n \\in B_m} ([\\hat y_n = t_n] - \\mathrm{conf}_n) \\Big|.

    Parameters
    ----------
    probs : Tensor (N, C)
        Probabilities (rows sum to 1), or logits with ``from_logits=True``.
    target : LongTensor (N,)
    n_bins : int, default 15
        ``M``, as in Guo et al.
    from_logits : bool, default False

    Returns
    -------
    Tensor
        0-dim, in [0, 1].
    """
    probs = as_probabilities(probs, from_logits)
    target = check_target(target, probs.shape[0], probs.shape[1]).to(probs.device)
    return _ece_from(_ece_stats(probs, target, _check_bins(n_bins)))


# ---------------------------------------------------------------------- everything at once
def _check_ks(k, num_classes: int) -> tuple[int, ...]:
    ks = (k,) if isinstance(k, int) and not isinstance(k, bool) else tuple(k)
    if not ks:
        raise ValueError("k must be an int or a non-empty sequence of ints")
    return tuple(sorted({1, *(check_k(x, num_classes) for x in ks)}))


def _report_stats(scores, target, pairs, ks, probs, n_bins) -> dict:
    topk = stable_topk(scores, max(ks))
    top1 = topk[:, 0]
    stats = _topk_stats(scores, target, ks)
    stats |= _severity_stats(top1, target, pairs)
    for k in ks:
        stats |= _hdist_stats(topk, target, pairs, k)
    if pairs.taxonomy is not None:
        stats |= _hprf_stats(top1, target, pairs)
    stats |= _ece_stats(probs, target, n_bins)
    return stats


def _report_from(stats, ks) -> dict[str, torch.Tensor]:
    n = stats["total"]
    out = {}
    for k in ks:
        out[f"top{k}_error"] = _ratio(stats[f"wrong_at_{k}"], n)
    out["mistake_severity"] = _ratio(stats["mistake_distance"], stats["mistakes"])
    for k in ks:
        out[f"hierarchical_distance@{k}"] = _ratio(stats[f"dist_mean_at_{k}"], n)
        out[f"hierarchical_distance_top{k}"] = _ratio(stats[f"dist_min_at_{k}"], n)
    if "ancestors_common" in stats:
        p, r, f = _hprf_from(stats)
        out |= {"hierarchical_precision": p, "hierarchical_recall": r, "hierarchical_f1": f}
    out["ece"] = _ece_from(stats)
    return out


def report(
    scores,
    target,
    source,
    k=1,
    *,
    distance: str | None = None,
    from_logits: bool = False,
    n_bins: int = 15,
) -> dict[str, float]:
    """Every metric at once, as a dict of floats for logging.

    Parameters
    ----------
    scores : Tensor (N, C)
        Probabilities, or logits with ``from_logits=True`` (the calibration
        error needs to know which; the other metrics only use the ranking).
    target : LongTensor (N,)
    source : Taxonomy or Tensor (C, C)
    k : int or sequence of int, default 1
        The k of the top-k error and the hierarchical distances; 1 is always included.
    distance : str, optional
        The kind of distance, with a taxonomy only (default ``"lca_height"``).
    from_logits : bool, default False
    n_bins : int, default 15
        Bins of the calibration error.

    Returns
    -------
    dict
        ``top{k}_error``, ``mistake_severity``, ``hierarchical_distance@{k}``,
        ``hierarchical_distance_top{k}`` (for each k), ``hierarchical_precision``,
        ``hierarchical_recall``, ``hierarchical_f1`` (only when ``source``
        is a Taxonomy: they need ancestor sets) and ``ece``.

    Examples
    --------
    >>> import taxosmooth as ts
    >>> tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> probs = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.1, 0.6, 0.2, 0.1]])
    >>> r = report(probs, torch.tensor([0, 2]), tax, k=2)
    >>> r["top1_error"], r["top2_error"], r["mistake_severity"]
    (0.5, 0.0, 2.0)
    """
    pairs = _pairs(source, distance)
    scores, target = _check(scores, target, pairs.num_classes)
    ks = _check_ks(k, scores.shape[1])
    probs = as_probabilities(scores, from_logits, name="scores")
    stats = _report_stats(scores, target, pairs, ks, probs, _check_bins(n_bins))
    return {name: float(v) for name, v in _report_from(stats, ks).items()}
