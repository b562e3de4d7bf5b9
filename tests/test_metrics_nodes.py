"""Metrics with coarse labels and node predictions, against plain loops over the Taxonomy's own methods."""

from __future__ import annotations

import math
import warnings

import networkx as nx
import pytest
import torch
from _trees import random_taxonomies, seed_taxonomy
from hypothesis import given
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth import metrics as M

KINDS = ["lca_height", "lca_depth_complement", "path_length"]


# ---------------------------------------------------------------------- oracle
class Oracle:
    """Sets, depths and distances of named nodes, one pair at a time."""

    def __init__(self, tax: ts.Taxonomy, kind: str = "lca_height"):
        self.tax, self.kind = tax, kind
        self.names = list(tax.target_names)
        self.C = tax.num_classes
        self.D = max(tax.depth(c) for c in tax.classes)
        self.und = tax.to_networkx().to_undirected()

    def below(self, v):
        return {v} | set(self.tax.descendants(v))

    def leaves(self, v):
        return [v] if self.tax.is_leaf(v) else list(self.tax.leaves_under(v))

    def trunc(self, label, pred):
        return label if pred in self.below(label) else pred

    def anc(self, v):
        return set(self.tax.ancestors(v, include_self=True)) - {self.tax.root}

    def dist(self, label, pred):
        pred = self.trunc(label, pred)
        if pred == label:
            return 0.0
        u = self.tax.lca(label, pred)
        if self.kind == "lca_height":
            return float(self.tax.height(u))
        if self.kind == "lca_depth_complement":
            return float(self.D - self.tax.depth(u))
        return nx.shortest_path_length(self.und, label, pred, weight="weight")

    def value(self, v, which):
        return self.tax.depth(v) if which == "depth" else math.log2(self.C / len(self.leaves(v)))

    def lca_fields(self, label, pred):
        p = self.trunc(label, pred)
        a = self.tax.lca(label, p)
        out = {"exact": float(p == label), "correct": float(a in (label, p))}
        for which in ("depth", "info"):
            fv, fp, fa = (self.value(x, which) for x in (label, p, a))
            prec = 1.0 if fp == 0 else fa / fp
            rec = 1.0 if fv == 0 else fa / fv
            out |= {f"{which}_excess": fp - fa, f"{which}_deficient": fv - fa, f"{which}_dist": fp + fv - 2 * fa,
                    f"{which}_precision": prec, f"{which}_recall": rec,
                    f"{which}_f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0}
        return out

    def ext_anc(self, v, k):
        """Ancestor at depth k; a class shallower than k stands for itself; None for a shallower internal node."""
        if self.tax.depth(v) >= k:
            path = [v, *self.tax.ancestors(v)]
            return next(x for x in path if self.tax.depth(x) == k)
        return v if self.tax.is_leaf(v) else None


def ranking(row):
    return sorted(range(len(row)), key=lambda j: (-row[j], j))


def case(tax, seed, n=30, coarse=True):
    g = torch.Generator().manual_seed(seed)
    scores = 2 * torch.randn(n, tax.num_classes, generator=g, dtype=torch.float64)
    high = tax.num_nodes if coarse else tax.num_classes
    target = torch.randint(0, high, (n,), generator=g)
    preds = torch.randint(0, tax.num_nodes, (n,), generator=g)
    return scores, target, preds


def close(a, b):
    if isinstance(b, float) and math.isnan(b):
        return math.isnan(float(a))
    return float(a) == pytest.approx(b, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------- coarse labels, every metric
@given(tax=random_taxonomies(min_nodes=3, max_nodes=20, weighted=True), seed=st.integers(0, 2**31 - 1),
       kind=st.sampled_from(KINDS))
def test_every_metric_with_coarse_labels_matches_the_loop(tax, seed, kind):
    o = Oracle(tax, kind)
    scores, target, _ = case(tax, seed)
    names = o.names
    labels = [names[t] for t in target.tolist()]
    ranks = [ranking(s) for s in scores.tolist()]
    tops = [[tax.classes[j] for j in r] for r in ranks]
    k = min(2, tax.num_classes)
    kw = {"coarse_labels": True}

    err = sum(not any(c in o.below(v) for c in t[:k]) for t, v in zip(tops, labels)) / len(labels)
    assert close(M.topk_error(scores, target, k, taxonomy=tax, **kw), err)

    wrong = [(v, t[0]) for t, v in zip(tops, labels) if o.trunc(v, t[0]) != v]
    sev = sum(o.dist(v, p) for v, p in wrong) / len(wrong) if wrong else math.nan
    assert close(M.mistake_severity(scores, target, tax, distance=kind, **kw), sev)

    hd = sum(sum(o.dist(v, c) for c in t[:k]) / k for t, v in zip(tops, labels)) / len(labels)
    assert close(M.mean_hierarchical_distance_at_k(scores, target, tax, k, distance=kind, **kw), hd)
    hd_min = sum(min(o.dist(v, c) for c in t[:k]) for t, v in zip(tops, labels)) / len(labels)
    assert close(M.min_hierarchical_distance_at_k(scores, target, tax, k, distance=kind, **kw), hd_min)

    probs = torch.softmax(scores, 1)
    # ECE: correct when the argmax class lies under the label
    n_bins = 5
    total = 0.0
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        members = [(float(p.max()), o.trunc(v, t[0]) == v) for p, t, v in zip(probs, tops, labels)
                   if lo < float(p.max()) <= hi or (m == 0 and float(p.max()) <= hi)]
        if members:
            total += abs(sum(c for _, c in members) - sum(c for c, _ in members))
    assert close(M.expected_calibration_error(probs, target, n_bins, taxonomy=tax, **kw), total / len(labels))

    r = M.report(scores, target, tax, k=k, distance=kind, probs=probs, n_bins=n_bins, **kw)
    assert close(r[f"top{k}_error"], err) and close(r["mistake_severity"], sev) and close(r["ece"], total / len(labels))


@given(tax=random_taxonomies(min_nodes=3, max_nodes=20), seed=st.integers(0, 2**31 - 1),
       coarse=st.booleans(), nodes=st.booleans())
def test_ancestor_set_metrics_match_the_loop(tax, seed, coarse, nodes):
    o = Oracle(tax)
    scores, target, preds = case(tax, seed, coarse=coarse)
    labels = [o.names[t] for t in target.tolist()]
    if nodes:
        given_preds, pred_names = preds, [o.names[p] for p in preds.tolist()]
    else:
        given_preds, pred_names = scores, [tax.classes[ranking(s)[0]] for s in scores.tolist()]
    kw = {"coarse_labels": coarse}
    # micro and macro hP / hR / hF
    sets = [(o.anc(o.trunc(v, p)), o.anc(v)) for v, p in zip(labels, pred_names)]
    inter = sum(len(a & b) for a, b in sets)
    pred_size, true_size = sum(len(a) for a, _ in sets), sum(len(b) for _, b in sets)
    p_micro = inter / pred_size if pred_size else math.nan
    r_micro = inter / true_size if true_size else math.nan
    f_micro = (2 * p_micro * r_micro / (p_micro + r_micro) if p_micro + r_micro else 0.0) if pred_size and true_size else math.nan
    got = M.hierarchical_precision_recall_f1(given_preds, target, tax, **kw)
    assert all(close(g, e) for g, e in zip(got, (p_micro, r_micro, f_micro)))
    per = []
    for a, b in sets:
        pp = len(a & b) / len(a) if a else 1.0
        rr = len(a & b) / len(b) if b else 1.0
        per.append((pp, rr, 2 * pp * rr / (pp + rr) if pp + rr else 0.0))
    macro = [sum(x[i] for x in per) / len(per) for i in range(3)]
    got = M.hierarchical_precision_recall_f1(given_preds, target, tax, average="macro", **kw)
    assert all(close(g, e) for g, e in zip(got, macro))
    # LCA metrics
    fields = [o.lca_fields(v, p) for v, p in zip(labels, pred_names)]
    got = M.lca_metrics(given_preds, target, tax, **kw)
    assert set(got) == set(M.LCA_FIELDS)
    for key in M.LCA_FIELDS:
        assert close(got[key], sum(f[key] for f in fields) / len(fields)), key
    assert close(got["depth_precision"], macro[0]) and close(got["depth_f1"], macro[2])
    # accuracy at every depth
    for d in range(0, tax.max_depth + 1):
        counted = [(o.ext_anc(p, d), o.ext_anc(v, d)) for v, p in zip(labels, pred_names) if o.ext_anc(v, d) is not None]
        acc = sum(a == b for a, b in counted) / len(counted) if counted else math.nan
        assert close(M.accuracy_at_depth(given_preds, target, tax, d, **kw), acc), d


@given(tax=random_taxonomies(min_nodes=3, max_nodes=20), seed=st.integers(0, 2**31 - 1), coarse=st.booleans(),
       consistent=st.booleans())
def test_per_level_metrics_match_the_loop(tax, seed, coarse, consistent):
    o = Oracle(tax)
    _, target, _ = case(tax, seed, coarse=coarse)
    L = tax.max_depth
    g = torch.Generator().manual_seed(seed + 1)
    # per-level predictions: the path of a random class (consistent), or an independent node per level
    rows = []
    for _ in range(len(target)):
        if consistent or torch.rand(1, generator=g).item() < 0.5:
            c = tax.classes[int(torch.randint(0, tax.num_classes, (1,), generator=g))]
            rows.append([o.ext_anc(c, d) for d in range(1, L + 1)])
        else:
            row = []
            for d in range(1, L + 1):
                options = [v for v in o.names if tax.depth(v) == d or (tax.is_leaf(v) and tax.depth(v) < d)]
                row.append(options[int(torch.randint(0, len(options), (1,), generator=g))])
            rows.append(row)
    preds = torch.tensor([[o.names.index(v) for v in row] for row in rows])
    labels = [o.names[t] for t in target.tolist()]
    right = counted = 0
    for row, v in zip(rows, labels):
        judged = [(row[d - 1], o.ext_anc(v, d)) for d in range(1, L + 1) if o.ext_anc(v, d) is not None]
        if judged:
            counted += 1
            right += all(a == b for a, b in judged)
    assert close(M.full_path_accuracy(preds, target, tax, coarse_labels=coarse), right / counted if counted else math.nan)
    cons = sum(all(o.ext_anc(row[j], j) == row[j - 1] for j in range(1, L)) for row in rows) / len(rows)
    assert close(M.path_consistency(preds, tax), cons)
    if consistent:
        assert M.path_consistency(preds, tax).item() == 1.0


# ---------------------------------------------------------------------- leaves: coarse_labels changes nothing
@given(tax=random_taxonomies(min_nodes=3, max_nodes=20), seed=st.integers(0, 2**31 - 1))
def test_class_labels_give_the_same_values_with_and_without_coarse_labels(tax, seed):
    scores, target, _ = case(tax, seed, coarse=False)
    plain = M.report(scores, target, tax, k=min(2, tax.num_classes), probs=torch.softmax(scores, 1))
    coarse = M.report(scores, target, tax, k=min(2, tax.num_classes), probs=torch.softmax(scores, 1), coarse_labels=True)
    assert plain == pytest.approx(coarse, nan_ok=True)
    assert close(M.topk_error(scores, target, taxonomy=tax, coarse_labels=True), float(M.topk_error(scores, target)))


def test_coarse_labels_by_hand(seed_tax):
    mammal, sea = (int(i) for i in seed_tax.encode(["mammal", "sea"]))
    scores = torch.tensor([[0.1, 0.9, 0.0, 0.0], [0.9, 0.1, 0.0, 0.0], [0.0, 0.0, 0.2, 0.8]])
    target = torch.tensor([mammal, sea, sea])  # zebra under mammal: right; horse for sea: wrong; shark: right
    assert M.topk_error(scores, target, taxonomy=seed_tax, coarse_labels=True).item() == pytest.approx(1 / 3)
    # the wrong one: d(sea, horse) = height(animal) = 2
    assert M.mistake_severity(scores, target, seed_tax, coarse_labels=True).item() == 2.0
    p, r, f = M.hierarchical_precision_recall_f1(scores, target, seed_tax, coarse_labels=True)
    # A: {mammal} (zebra truncated), {mammal, horse} vs {sea}, {sea} (shark truncated): 2 shared of 4 and of 3
    assert (p.item(), r.item()) == (0.5, 2 / 3)
    # path_length from a node: sea -> animal -> mammal -> horse = 3 edges
    assert M.mistake_severity(scores, target, seed_tax, distance="path_length", coarse_labels=True).item() == 3.0


def test_node_predictions_by_hand(seed_tax):
    ids = torch.tensor(seed_tax.encode(["mammal", "animal", "whale", "horse"]))
    target = torch.tensor([0, 0, 3, 0])  # horse, horse, shark, horse
    # mammal for horse: a mistake at height(mammal) = 1; animal: 2; whale for shark: 1; horse: right
    assert M.mistake_severity(ids, target, seed_tax).item() == pytest.approx(4 / 3)
    m = M.lca_metrics(ids, target, seed_tax)
    assert m["exact"].item() == 0.25 and m["correct"].item() == 0.75
    assert M.accuracy_at_depth(ids, target, seed_tax, 1).item() == 0.75  # animal says nothing at depth 1
    assert M.hierarchical_precision(ids, target, seed_tax, average="macro").item() == pytest.approx((1 + 1 + 0.5 + 1) / 4)


# ---------------------------------------------------------------------- scores: one rule
def test_crm_output_feeds_report_and_the_ranking_metrics(seed_tax):
    crm = ts.CRMClassifier(torch.nn.Identity(), seed_tax, from_logits=True)
    logits, target = torch.randn(20, 4), torch.randint(0, 4, (20,))
    scores = crm(logits)
    r = M.report(scores, target, seed_tax, k=2)
    assert "ece" not in r and r["top1_error"] == pytest.approx(
        (ts.crm_predict(logits, seed_tax, from_logits=True) != target).double().mean().item())
    r2 = M.report(scores, target, seed_tax, k=2, probs=logits, from_logits=True)
    assert r2["ece"] == pytest.approx(M.expected_calibration_error(logits, target, from_logits=True).item())
    assert {k: v for k, v in r2.items() if k != "ece"} == r


def test_no_warnings_on_inputs_that_require_grad(seed_tax):
    logits = torch.randn(10, 4, requires_grad=True)
    target = torch.randint(0, 4, (10,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        M.report(logits, target, seed_tax, k=2, probs=logits, from_logits=True)
        M.expected_calibration_error(logits, target, from_logits=True)
        M.operating_curve(logits, target, seed_tax, from_logits=True)
        M.lca_metrics(logits, target, seed_tax)
        ts.decision.predict_node(logits, seed_tax, from_logits=True)


def test_report_warning_is_torchs_before_the_fix():
    """The UserWarning the fix removes is torch's: float() of a tensor that requires grad."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        float(torch.ones((), requires_grad=True) * 2)
    assert any("requires_grad" in str(w.message) for w in caught)


# ---------------------------------------------------------------------- bad input
def test_bad_input(seed_tax):
    scores = torch.randn(3, 4)
    with pytest.raises(IndexError, match=r"target\[1\] = 5 is not a class index in \[0, 4\); it is the target id of internal node "
                                         r"'mammal': pass coarse_labels=True"):
        M.mistake_severity(scores, torch.tensor([0, 5, 1]), seed_tax)
    with pytest.raises(IndexError, match=r"target\[2\] = 7 is not a target id in \[0, 7\)"):
        M.mistake_severity(scores, torch.tensor([0, 5, 7]), seed_tax, coarse_labels=True)
    with pytest.raises(TypeError, match="coarse_labels=True needs taxonomy="):
        M.topk_error(scores, torch.tensor([0, 1, 2]), coarse_labels=True)
    with pytest.raises(TypeError, match="coarse_labels=True needs a Taxonomy"):
        M.mistake_severity(scores, torch.tensor([0, 1, 2]), ts.class_distances(seed_tax), coarse_labels=True)
    with pytest.raises(TypeError, match="coarse_labels must be True or False"):
        M.topk_error(scores, torch.tensor([0, 1, 2]), coarse_labels=1)
    with pytest.raises(IndexError, match=r"scores\[1\] = 9 is not a target id in \[0, 7\)"):
        M.lca_metrics(torch.tensor([0, 9, 1]), torch.tensor([0, 1, 2]), seed_tax)
    with pytest.raises(TypeError, match="node predictions .* need a Taxonomy"):
        M.mistake_severity(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), ts.class_distances(seed_tax))
    with pytest.raises(ValueError, match="average must be 'micro' or 'macro'"):
        M.hierarchical_f1(scores, torch.tensor([0, 1, 2]), seed_tax, average="weighted")
    with pytest.raises(ValueError, match=r"depth = 3 is out of range: the taxonomy's depths are 0 to 2"):
        M.accuracy_at_depth(scores, torch.tensor([0, 1, 2]), seed_tax, 3)
    with pytest.raises(ValueError, match=r"preds\[0, 0\] = 0 is a node of depth 2; column 0 holds the predictions at depth 1"):
        M.full_path_accuracy(torch.tensor([[0, 0]]), torch.tensor([0]), seed_tax)
    with pytest.raises(ValueError, match=r"shape \(N, L\)"):
        M.path_consistency(torch.tensor([[5, 0, 0]]), seed_tax)
    with pytest.raises(ValueError, match="probs has 2 rows but scores has 3"):
        M.report(scores, torch.tensor([0, 1, 2]), seed_tax, probs=torch.full((2, 4), 0.25))


def test_seed_helper():
    assert seed_taxonomy().num_nodes == 7
