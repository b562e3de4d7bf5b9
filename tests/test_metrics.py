"""Functional metrics against plain loops, hand-built cases and validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _trees import random_taxonomies, seed_taxonomy
from hypothesis import given
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth import metrics as M

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
KINDS = ["lca_height", "lca_depth_complement", "path_length"]


# ---------------------------------------------------------------------- plain-loop oracles
def ranking(row) -> list[int]:
    """Highest score first; equal scores by class index."""
    return sorted(range(len(row)), key=lambda j: (-row[j], j))


def loop_topk_error(scores, target, k):
    return sum(t not in ranking(s)[:k] for s, t in zip(scores, target)) / len(target)


def loop_severity(scores, target, d):
    ds = [d[t][ranking(s)[0]] for s, t in zip(scores, target) if ranking(s)[0] != t]
    return sum(ds) / len(ds) if ds else math.nan


def loop_hdist_at_k(scores, target, d, k):
    return sum(sum(d[t][j] for j in ranking(s)[:k]) / k for s, t in zip(scores, target)) / len(target)


def loop_hdist_top_k(scores, target, d, k):
    return sum(min(d[t][j] for j in ranking(s)[:k]) for s, t in zip(scores, target)) / len(target)


def loop_hprf(scores, target, tax):
    def anc(c):  # ancestors-or-self, without the root
        name = tax.classes[c]
        return set(tax.ancestors(name, include_self=True)) - {tax.root}

    inter = pred = true = 0
    for s, t in zip(scores, target):
        a, b = anc(ranking(s)[0]), anc(t)
        inter, pred, true = inter + len(a & b), pred + len(a), true + len(b)
    p, r = inter / pred, inter / true
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def loop_ece(probs, target, n_bins):
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.as_tensor(probs).dtype).tolist()
    total = 0.0
    for m in range(n_bins):
        members = []
        for p, t in zip(probs, target):
            conf = max(p)
            if edges[m] < conf <= edges[m + 1] or (m == 0 and conf <= edges[1]):
                members.append((conf, ranking(p)[0] == t))
        if members:
            acc = sum(c for _, c in members) / len(members)
            conf = sum(c for c, _ in members) / len(members)
            total += len(members) * abs(acc - conf)
    return total / len(target)


def random_case(seed, n, C, ties=False):
    g = torch.Generator().manual_seed(seed)
    if ties:
        logits = torch.randint(0, 3, (n, C), generator=g).double()
    else:
        logits = 2 * torch.randn(n, C, generator=g, dtype=torch.float64)
    target = torch.randint(0, C, (n,), generator=g)
    return logits, target


# ---------------------------------------------------------------------- each metric vs its loop
@given(tax=random_taxonomies(min_nodes=3, max_nodes=25, weighted=True), seed=st.integers(0, 2**31 - 1),
       kind=st.sampled_from(KINDS), ties=st.booleans())
def test_metrics_match_loops_on_random_trees(tax, seed, kind, ties):
    C = tax.num_classes
    logits, target = random_case(seed, 12, C, ties)
    s, t = logits.tolist(), target.tolist()
    d = ts.class_distances(tax, kind).tolist()
    for k in range(1, C + 1):
        assert M.topk_error(logits, target, k).item() == pytest.approx(loop_topk_error(s, t, k))
        assert M.mean_hierarchical_distance_at_k(logits, target, tax, k, distance=kind).item() == pytest.approx(loop_hdist_at_k(s, t, d, k))
        assert M.min_hierarchical_distance_at_k(logits, target, tax, k, distance=kind).item() == pytest.approx(loop_hdist_top_k(s, t, d, k))
    sev = M.mistake_severity(logits, target, tax, distance=kind).item()
    expected = loop_severity(s, t, d)
    assert (math.isnan(sev) and math.isnan(expected)) or sev == pytest.approx(expected)
    p, r, f = M.hierarchical_precision_recall_f1(logits, target, tax)
    assert (p.item(), r.item(), f.item()) == pytest.approx(loop_hprf(s, t, tax))
    assert M.hierarchical_precision(logits, target, tax) == p
    assert M.hierarchical_recall(logits, target, tax) == r
    assert M.hierarchical_f1(logits, target, tax) == f


@given(tax=random_taxonomies(min_nodes=3, max_nodes=25, weighted=True), seed=st.integers(0, 2**31 - 1),
       kind=st.sampled_from(KINDS))
def test_taxonomy_equals_its_distance_matrix(tax, seed, kind):
    """The structured (LCA) pair distances equal a gather from the dense matrix."""
    C = tax.num_classes
    logits, target = random_case(seed, 20, C)
    matrix = torch.from_numpy(ts.class_distances(tax, kind))
    for k in {1, C}:
        for fn in (M.mean_hierarchical_distance_at_k, M.min_hierarchical_distance_at_k):
            torch.testing.assert_close(fn(logits, target, tax, k, distance=kind), fn(logits, target, matrix, k))
    torch.testing.assert_close(M.mistake_severity(logits, target, tax, distance=kind),
                               M.mistake_severity(logits, target, matrix), equal_nan=True)


@given(seed=st.integers(0, 2**31 - 1), C=st.integers(1, 8), n_bins=st.sampled_from([1, 5, 15]), ties=st.booleans())
def test_ece_matches_loop(seed, C, n_bins, ties):
    logits, target = random_case(seed, 30, C, ties)
    probs = torch.softmax(logits, 1)
    got = M.expected_calibration_error(probs, target, n_bins).item()
    assert got == pytest.approx(loop_ece(probs.tolist(), target.tolist(), n_bins), abs=1e-12)
    assert M.expected_calibration_error(logits, target, n_bins, from_logits=True).item() == pytest.approx(got)


def test_ece_bin_edges_are_right_closed():
    # confidence exactly 0.5 belongs to the bin (0.4, 0.5] (Guo et al.: ((m-1)/M, m/M])
    probs = torch.tensor([[0.5, 0.5], [0.5, 0.5]], dtype=torch.float64)
    target = torch.tensor([0, 1])
    assert M.expected_calibration_error(probs, target, n_bins=2).item() == pytest.approx(0.0)
    probs = torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)  # bins: {0.5 correct}, {0.9 wrong}
    target = torch.tensor([0, 1])
    assert M.expected_calibration_error(probs, target, n_bins=2).item() == pytest.approx((0.5 + 0.9) / 2)


# ---------------------------------------------------------------------- hand-built cases
def test_all_correct(seed_tax):
    scores = torch.eye(4) * 5
    target = torch.arange(4)
    assert M.topk_error(scores, target).item() == 0
    assert math.isnan(M.mistake_severity(scores, target, seed_tax).item())  # no mistakes: NaN, by design
    assert M.mean_hierarchical_distance_at_k(scores, target, seed_tax, 1).item() == 0
    assert M.min_hierarchical_distance_at_k(scores, target, seed_tax, 3).item() == 0
    assert [x.item() for x in M.hierarchical_precision_recall_f1(scores, target, seed_tax)] == [1.0, 1.0, 1.0]
    assert M.expected_calibration_error(torch.eye(4), target).item() == 0


def test_all_wrong_seed_tree(seed_tax):
    # horse->whale, zebra->shark, whale->horse, shark->zebra: every mistake crosses the root
    scores = torch.eye(4)[[2, 3, 0, 1]]
    target = torch.arange(4)
    assert M.topk_error(scores, target).item() == 1
    assert M.topk_error(scores, target, k=4).item() == 0
    assert M.mistake_severity(scores, target, seed_tax).item() == 2  # lca_height of the root
    assert M.mistake_severity(scores, target, seed_tax, distance="path_length").item() == 4
    assert [x.item() for x in M.hierarchical_precision_recall_f1(scores, target, seed_tax)] == [0.0, 0.0, 0.0]
    assert M.expected_calibration_error(torch.eye(4)[[2, 3, 0, 1]], target).item() == 1
    # near misses: horse<->zebra, whale<->shark
    near = torch.eye(4)[[1, 0, 3, 2]]
    assert M.mistake_severity(near, target, seed_tax).item() == 1
    assert [x.item() for x in M.hierarchical_precision_recall_f1(near, target, seed_tax)] == [0.5, 0.5, 0.5]


def test_ties_go_to_the_lowest_index(seed_tax):
    scores = torch.zeros(2, 4)  # all tied: the ranking is 0, 1, 2, 3
    target = torch.tensor([1, 0])
    assert M.topk_error(scores, target, 1).item() == 0.5
    assert M.topk_error(scores, target, 2).item() == 0
    # sample 0: top-1 is horse (0), truth zebra (1): distance 1; sample 1 is right
    assert M.mistake_severity(scores, target, seed_tax).item() == 1
    # top-3 = horse, zebra, whale; truth zebra: (1 + 0 + 2) / 3; truth horse: (0 + 1 + 2) / 3
    assert M.mean_hierarchical_distance_at_k(scores, target, seed_tax, 3).item() == pytest.approx(1.0)


def test_user_matrix_orientation():
    # d[t, j]: cost of predicting j when the truth is t (asymmetric on purpose)
    d = torch.tensor([[0.0, 5.0], [1.0, 0.0]])
    scores = torch.tensor([[0.0, 1.0]])
    assert M.mistake_severity(scores, torch.tensor([0]), d).item() == 5
    assert M.mistake_severity(torch.tensor([[1.0, 0.0]]), torch.tensor([1]), d).item() == 1


def test_probabilities_and_logits_rank_alike(seed_tax):
    logits, target = random_case(3, 50, 4)
    probs = torch.softmax(logits, 1)
    for fn in (lambda s: M.topk_error(s, target, 2), lambda s: M.mistake_severity(s, target, seed_tax),
               lambda s: M.mean_hierarchical_distance_at_k(s, target, seed_tax, 2)):
        torch.testing.assert_close(fn(logits), fn(probs))


# ---------------------------------------------------------------------- report
def test_report_equals_the_individual_metrics(seed_tax):
    logits, target = random_case(7, 40, 4)
    probs = torch.softmax(logits, 1)
    r = M.report(probs, target, seed_tax, k=(1, 3), probs=probs)
    assert r == M.report(logits, target, seed_tax, k=(3,), probs=logits, from_logits=True) | {"ece": pytest.approx(r["ece"])}
    assert M.report(logits, target, seed_tax, k=(1, 3)) == {k: v for k, v in r.items() if k != "ece"}
    assert r["top1_error"] == M.topk_error(probs, target).item()
    assert r["top3_error"] == M.topk_error(probs, target, 3).item()
    assert r["mistake_severity"] == pytest.approx(M.mistake_severity(probs, target, seed_tax).item())
    for k in (1, 3):
        assert r[f"mean_hierarchical_distance@{k}"] == pytest.approx(M.mean_hierarchical_distance_at_k(probs, target, seed_tax, k).item())
        assert r[f"min_hierarchical_distance@{k}"] == pytest.approx(M.min_hierarchical_distance_at_k(probs, target, seed_tax, k).item())
    p, rc, f = M.hierarchical_precision_recall_f1(probs, target, seed_tax)
    assert (r["hierarchical_precision"], r["hierarchical_recall"], r["hierarchical_f1"]) == pytest.approx((p.item(), rc.item(), f.item()))
    assert r["ece"] == pytest.approx(M.expected_calibration_error(probs, target).item())
    assert all(isinstance(v, float) for v in r.values())
    # with a matrix there are no ancestor sets
    r2 = M.report(probs, target, ts.class_distances(seed_tax))
    assert "hierarchical_precision" not in r2 and r2["mistake_severity"] == pytest.approx(r["mistake_severity"])


def test_report_asks_for_from_logits(seed_tax):
    logits, target = random_case(1, 5, 4)
    with pytest.raises(ValueError, match="from_logits=True"):
        M.report(logits, target, seed_tax, probs=logits)
    with pytest.raises(ValueError, match="from_logits=True applies to probs="):
        M.report(logits, target, seed_tax, from_logits=True)


# ---------------------------------------------------------------------- validation
def test_validation(seed_tax):
    scores = torch.randn(3, 4)
    target = torch.tensor([0, 1, 3])
    with pytest.raises(ValueError, match=r"k = 5 is out of range.*\(4\)"):
        M.topk_error(scores, target, k=5)
    with pytest.raises(ValueError, match="k = 5"):
        M.mean_hierarchical_distance_at_k(scores, target, seed_tax, 5)
    with pytest.raises(ValueError, match="k = 5"):
        M.report(scores, target, seed_tax, k=(1, 5))
    with pytest.raises(IndexError, match=r"target\[2\] = 4 is not a class index in \[0, 4\)"):
        M.topk_error(scores, torch.tensor([0, 1, 4]))
    with pytest.raises(IndexError, match=r"target\[0\] = -1"):
        M.mistake_severity(scores, torch.tensor([-1, 1, 2]), seed_tax)
    with pytest.raises(TypeError, match="integer class indices"):
        M.topk_error(scores, target.float())
    with pytest.raises(ValueError, match=r"target must have shape \(3,\)"):
        M.topk_error(scores, target[:2])
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        M.topk_error(scores[0], target)
    bad = scores.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"scores\[2, 1\] is NaN"):
        M.topk_error(bad, target)
    with pytest.raises(ValueError, match="5 columns but there are 4 classes"):
        M.mistake_severity(torch.randn(3, 5), target, seed_tax)
    with pytest.raises(TypeError, match="need a Taxonomy"):
        M.hierarchical_precision(scores, target, ts.class_distances(seed_tax))
    with pytest.raises(ValueError, match="diagonal must be zero"):
        M.mistake_severity(scores, target, torch.ones(4, 4))
    with pytest.raises(ValueError, match="not a probability"):
        M.expected_calibration_error(scores, target)
    with pytest.raises(ValueError, match="n_bins"):
        M.expected_calibration_error(torch.softmax(scores, 1), target, n_bins=0)
    with pytest.raises(ValueError, match="unknown distance '"):
        M.mistake_severity(scores, target, seed_tax, distance="nope")
    with pytest.raises(ValueError, match="applies to a Taxonomy"):
        M.mistake_severity(scores, target, ts.class_distances(seed_tax), distance="path_length")


def test_inf_scores_allowed(seed_tax):
    scores = torch.tensor([[-float("inf"), 0.0, -float("inf"), 1.0]])
    assert M.topk_error(scores, torch.tensor([1]), 2).item() == 0
    assert M.mean_hierarchical_distance_at_k(scores, torch.tensor([0]), seed_tax, 4).item() == pytest.approx((2 + 1 + 0 + 2) / 4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_devices_and_half_precision(device, dtype, seed_tax):
    logits, target = random_case(5, 64, 4)
    x = logits.to(device, dtype)
    got = M.report(x, target.to(device), seed_tax, k=2, probs=x, from_logits=True)
    rounded = logits.to(dtype).double()  # the ranking of the rounded scores is what the metrics see
    ref = M.report(rounded, target, seed_tax, k=2, probs=rounded, from_logits=True)
    assert got == pytest.approx(ref, abs=1e-2, nan_ok=True)
    assert M.topk_error(logits.to(device, dtype), target.to(device)).device.type == device


def test_seed_taxonomy_helper_is_the_seed():
    assert seed_taxonomy().classes == ("horse", "zebra", "whale", "shark")
    assert np.array_equal(ts.class_distances(seed_taxonomy()), [[0, 1, 2, 2], [1, 0, 2, 2], [2, 2, 0, 1], [2, 2, 1, 0]])


# ---------------------------------------------------------------------- the former names
def test_the_former_names_work_with_a_deprecation_warning(seed_tax):
    """hierarchical_distance_at_k / _top_k and the report keys hierarchical_distance@k / _top{k} still work, each
    with a DeprecationWarning at the caller's line that names its new name."""
    import json

    logits, target = random_case(3, 30, 4)
    for old, new in ((M.hierarchical_distance_at_k, M.mean_hierarchical_distance_at_k),
                     (M.hierarchical_distance_top_k, M.min_hierarchical_distance_at_k)):
        with pytest.warns(DeprecationWarning, match=f"^{old.__name__} is deprecated; use {new.__name__}") as rec:
            got = old(logits, target, seed_tax, 2, distance="path_length")
        assert len(rec) == 1 and rec[0].filename == __file__
        assert torch.equal(got, new(logits, target, seed_tax, 2, distance="path_length"))
    assert M.hierarchical_distance_at_k is not M.mean_hierarchical_distance_at_k
    for name in ("hierarchical_distance_at_k", "hierarchical_distance_top_k"):
        assert name not in dir(M) and name not in M.__all__ and name not in M.functional.__all__

    r = M.report(logits, target, seed_tax, k=(1, 2))
    assert [k for k in r if "distance" in k] == ["mean_hierarchical_distance@1", "min_hierarchical_distance@1",
                                                 "mean_hierarchical_distance@2", "min_hierarchical_distance@2"]
    assert "hierarchical_distance@2" not in r and "distance_top" not in json.dumps(r)
    for old_key, new_key in (("hierarchical_distance@2", "mean_hierarchical_distance@2"),
                             ("hierarchical_distance_top2", "min_hierarchical_distance@2")):
        with pytest.warns(DeprecationWarning, match=f"^the report key '{old_key}' is deprecated; use '{new_key}'") as rec:
            assert r[old_key] == r[new_key]
        assert rec[0].filename == __file__
        with pytest.warns(DeprecationWarning, match=f"use '{new_key}'") as rec:
            assert r.get(old_key) == r[new_key]
        assert rec[0].filename == __file__
    assert r["mean_hierarchical_distance@2"] != r["min_hierarchical_distance@2"]  # the case tells them apart
    # no k = 5 in this report: the former name of a key that is not there is missing as any other key
    assert r.get("hierarchical_distance@5") is None and r.get("nonsense", 7) == 7
    with pytest.raises(KeyError, match="hierarchical_distance_top5"):
        r["hierarchical_distance_top5"]
