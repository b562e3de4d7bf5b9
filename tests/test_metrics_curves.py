"""Operating curves of the threshold rule: against a brute force over thresholds, Pareto fronts and areas
against loops, and against the anchor's own numbers (jvlmdr/hiercls)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _trees import random_taxonomies
from hypothesis import given
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth import metrics as M
from taxosmooth.data import load_animals
from taxosmooth.decision import predict_node


# ---------------------------------------------------------------------- the anchor: jvlmdr/hiercls
def anchor_case(tax, n, seed, coarse):
    """Dyadic probabilities (multiples of 2**-16: every node sum is exact) from an integer hash, and labels;
    two samples in three put extra mass on a class under their label."""
    c = tax.compiled
    C, N = c.num_classes, c.num_nodes
    i = np.arange(n, dtype=np.int64)[:, None]
    j = np.arange(C, dtype=np.int64)[None, :]
    r = ((i * 7919 + j * 104729 + seed * 31337) * 2654435761) % 4294967296 % 1000 + 1
    w = r**3
    rows = np.arange(n)
    label = (rows * 48271 + seed * 7) % (N if coarse else C)
    hit = c.position_class[c.leaf_lo[c.target_node[label]] + (rows * 13) % (c.leaf_hi - c.leaf_lo)[c.target_node[label]]]
    boost = (rows % 3 != 2) * (rows % 5 + 1) * w.max(axis=1) // 2
    w[rows, hit] += boost
    counts = w * 65536 // w.sum(axis=1, keepdims=True)
    counts[rows, counts.argmax(axis=1)] += 65536 - counts.sum(axis=1)
    return counts / 65536.0, label


# Produced by jvlmdr/hiercls itself at commit 1b907874aa546fa56b2c26081f678322d1353cca (hier.py, infer.py,
# metrics.py run unchanged in a scratch folder outside this repository, numpy 2, networkx 3): on the bundled
# animals taxonomy (hier.Hierarchy(compiled.parent), node probabilities by hier's ancestor_mask), for
# anchor_case(tax, 25, 3, coarse) with coarse False ("classes") and True ("coarse"):
# infer.pareto_optimal_predictions(-num_leaf_descendants, P[i], None, num_children != 1) per sample, predictions
# truncated with hier.truncate_given_lca, the metric_fns of hiercls's main.py, metrics.operating_curve (totals
# divided by 25 samples), metrics.pareto_integrate over the five pairs of its evaluation notebooks (INTEGRALS),
# the non-dominated points of each pair, and infer.max_info_majority_subtree (compiled node ids).
# scores_x65536: operating_curve's scores times 2**16 (the probabilities are multiples of 2**-16).
HIERCLS = {'classes': {'points': 141,
             'scores_x65536': [64600, 64580, 63235, 62818, 61747, 61739, 61610, 60928, 60508, 59870, 59111, 58295,
                               57784, 57752, 57425, 57112, 56657, 56385, 55907, 55459, 54993, 54254, 54138, 53486,
                               53368, 47688, 44476, 43986, 43906, 43522, 41502, 41030, 39645, 39430, 37648, 37618,
                               36680, 36332, 35910, 35363, 35039, 34017, 33533, 33127, 32892, 32200, 32150, 31399,
                               28037, 22907, 21743, 21591, 21442, 21275, 19657, 19252, 17385, 17239, 16772, 16484,
                               16046, 15922, 15540, 14561, 14482, 14064, 13941, 13881, 13775, 13566, 13523, 13364,
                               13320, 13311, 13292, 12969, 12821, 12793, 12686, 12388, 12331, 12273, 12272, 12204,
                               11994, 11981, 11788, 11776, 11682, 11530, 11291, 11280, 11222, 10748, 10548, 10489,
                               10375, 10350, 10102, 10007, 10006, 9987, 9933, 9908, 9890, 9731, 9593, 9559, 9543,
                               9539, 9537, 9485, 9337, 8885, 8270, 8222, 8138, 8068, 7829, 7622, 7585, 7496, 7488,
                               7262, 7024, 6832, 6480, 6388, 6319, 6249, 6214, 6190, 6079, 5942, 5856, 5779, 5771,
                               5755, 5691, 5592],
             'areas': {'AC(depth)': 0.5580266666666667,
                       'AC(info)': 0.3941808231252647,
                       'AP(depth)': 0.6360333333333332,
                       'AP(info)': 0.43409987959810314,
                       'AC(exact)': 0.3136},
             'sums': {'exact': 21.759999999999998,
                      'correct': 88.12,
                      'info_excess': 123.31558758141128,
                      'info_deficient': 555.1018726102133,
                      'info_dist': 678.4174601916245,
                      'info_recall': 36.69534523709837,
                      'info_precision': 96.81603116316465,
                      'depth_excess': 80.52,
                      'depth_deficient': 333.43999999999994,
                      'depth_dist': 413.9599999999999,
                      'depth_recall': 58.44733333333333,
                      'depth_precision': 109.18733333333334},
             'fronts': {'AC(depth)': [[0.12666666666666668, 1.0], [0.15466666666666667, 0.96],
                                      [0.31666666666666676, 0.92], [0.32466666666666677, 0.88],
                                      [0.34466666666666673, 0.76], [0.35466666666666674, 0.68],
                                      [0.41466666666666663, 0.6], [0.7546666666666666, 0.56]],
                        'AC(info)': [[0.01485206248227201, 1.0], [0.018279461516642472, 0.96],
                                     [0.08501804728220944, 0.92], [0.09035816740512179, 0.88],
                                     [0.10103840765094649, 0.76], [0.10637852777385884, 0.68],
                                     [0.20809895726001126, 0.6], [0.6315974054661075, 0.56]],
                        'AP(depth)': [[0.12666666666666668, 1.0], [0.15466666666666667, 0.96],
                                      [0.31666666666666676, 0.92], [0.32466666666666677, 0.9],
                                      [0.34466666666666673, 0.84], [0.35466666666666674, 0.8],
                                      [0.41466666666666663, 0.7733333333333334], [0.46066666666666656, 0.76],
                                      [0.7466666666666666, 0.7486666666666667], [0.7546666666666666, 0.746]],
                        'AP(info)': [[0.01485206248227201, 1.0], [0.018279461516642472, 0.96],
                                     [0.08501804728220944, 0.92], [0.09035816740512179, 0.8870494476270059],
                                     [0.10103840765094649, 0.7881977905080236],
                                     [0.10637852777385884, 0.7222966857620355],
                                     [0.20809895726001126, 0.6720132468613802],
                                     [0.28141740371955465, 0.6536274315304871],
                                     [0.6315974054661075, 0.6318617472875601]],
                        'AC(exact)': [[0.0, 1.0], [0.56, 0.56]]},
             'majority_nodes': [2, 2, 2, 1, 1, 1, 2, 2, 2, 2, 2, 2, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]},
 'coarse': {'points': 139,
            'scores_x65536': [64580, 63397, 63235, 62818, 61747, 61739, 61610, 60928, 59870, 59111, 58415, 58295,
                              57784, 57425, 57112, 56657, 56385, 55907, 55459, 54993, 54254, 54138, 53486, 53368,
                              46659, 44476, 43906, 43522, 41503, 41502, 41095, 41030, 40810, 39430, 39360, 38537,
                              37648, 36680, 36332, 35910, 35363, 35039, 34376, 33533, 32200, 31399, 30137, 30076,
                              28254, 27687, 22907, 21743, 18529, 18312, 17385, 17133, 16772, 16752, 16560, 16484,
                              16419, 15922, 15540, 15090, 15059, 14426, 14421, 14064, 13941, 13883, 13612, 13364,
                              13325, 13311, 13273, 12799, 12771, 12686, 12606, 12388, 12331, 11994, 11981, 11958,
                              11788, 11682, 11291, 11280, 11022, 10916, 10748, 10548, 10489, 10375, 10350, 10166,
                              10007, 10006, 9987, 9908, 9835, 9731, 9568, 9559, 9543, 9537, 9400, 9337, 9149, 8938,
                              8320, 8270, 8262, 8244, 8222, 8068, 7897, 7829, 7596, 7488, 7262, 7049, 7024, 6832,
                              6825, 6480, 6388, 6319, 6305, 6214, 6081, 5856, 5779, 5771, 5692, 5592, 5489, 5348],
            'areas': {'AC(depth)': 0.5990933333333331,
                      'AC(info)': 0.45903513384919803,
                      'AP(depth)': 0.6484133333333333,
                      'AP(info)': 0.4812993301746553,
                      'AC(exact)': 0.4096},
            'sums': {'exact': 26.28,
                     'correct': 85.80000000000001,
                     'info_excess': 126.7548658025687,
                     'info_deficient': 495.9356769656315,
                     'info_dist': 622.6905427682002,
                     'info_recall': 37.23859155289069,
                     'info_precision': 91.76492802682769,
                     'depth_excess': 89.08000000000001,
                     'depth_deficient': 275.92,
                     'depth_dist': 365.0,
                     'depth_recall': 59.42733333333332,
                     'depth_precision': 102.73466666666667},
            'fronts': {'AC(depth)': [[0.106, 1.0], [0.12933333333333333, 0.96], [0.15266666666666667, 0.92],
                                     [0.23199999999999998, 0.88], [0.2853333333333333, 0.84],
                                     [0.3526666666666666, 0.8], [0.3739999999999999, 0.76],
                                     [0.7873333333333332, 0.64]],
                       'AC(info)': [[0.01286139380156855, 1.0], [0.015410668312601567, 0.96],
                                    [0.017959942823634584, 0.92], [0.02690938233625523, 0.88],
                                    [0.060325552917322535, 0.84], [0.09894198122980694, 0.8],
                                    [0.11085780892772958, 0.76], [0.6819309998765983, 0.64]],
                       'AP(depth)': [[0.106, 1.0], [0.12933333333333333, 0.96], [0.15266666666666667, 0.92],
                                     [0.23199999999999998, 0.88], [0.2853333333333333, 0.84],
                                     [0.3526666666666666, 0.82], [0.3739999999999999, 0.8],
                                     [0.4773333333333333, 0.76], [0.7873333333333332, 0.7520000000000002]],
                       'AP(info)': [[0.01286139380156855, 1.0], [0.015410668312601567, 0.96],
                                    [0.017959942823634584, 0.92], [0.02690938233625523, 0.88],
                                    [0.060325552917322535, 0.84], [0.09894198122980694, 0.8070494476270059],
                                    [0.11085780892772958, 0.7740988952540119],
                                    [0.24879528679912602, 0.6856746378217529],
                                    [0.6819309998765983, 0.6758403313728827]],
                       'AC(exact)': [[0.0, 1.0], [0.64, 0.64]]},
            'majority_nodes': [2, 2, 2, 2, 2, 1, 2, 2, 2, 1, 2, 2, 2, 1, 2, 1, 2, 2, 1, 2, 2, 2, 2, 2, 1]}}


@pytest.mark.parametrize("name, coarse", [("classes", False), ("coarse", True)])
def test_curve_equals_hiercls(name, coarse):
    tax = load_animals()
    ref = HIERCLS[name]
    p, label = anchor_case(tax, 25, 3, coarse)
    p, label = torch.from_numpy(p), torch.from_numpy(label)
    curve = M.operating_curve(p, label, tax, coarse_labels=coarse)
    assert len(curve) == ref["points"]
    assert curve.thresholds[0] == 1.0
    assert (curve.thresholds[1:] * 65536).tolist() == ref["scores_x65536"]  # exact: dyadic probabilities
    for field, total in ref["sums"].items():
        assert curve[field].sum().item() == pytest.approx(total, rel=1e-12), field
    for key, area in curve.areas().items():
        assert area.item() == pytest.approx(ref["areas"][key], rel=1e-12, abs=1e-15), key
    for key, (x, y) in M.AREAS.items():
        front = curve.front(x, y)
        got = np.stack([front["x"].numpy(), front["y"].numpy()], 1)
        np.testing.assert_allclose(got, np.array(ref["fronts"][key]), rtol=1e-12, atol=1e-15, err_msg=key)
    nodes = predict_node(p, tax, "max_info")
    assert tax.compiled.target_node[nodes.numpy()].tolist() == ref["majority_nodes"]


def test_anchor_case_has_no_ties_that_decide_an_answer():
    """The tie rules differ (hiercls: its node order; here: deeper, then lowest target id): the anchor data must
    not depend on them. In every sample, each answer of the sequence (the most probable node among those with as
    many classes, when it beats every node with fewer) is unique; nodes with a single child are left out, as
    hiercls leaves them out (they tie with their child)."""
    tax = load_animals()
    c = tax.compiled
    n_children = np.bincount(c.parent[1:], minlength=c.num_nodes)
    keep = (n_children != 1) & (np.arange(c.num_nodes) != 0)
    leaves = (c.leaf_hi - c.leaf_lo)[keep]
    for coarse in (False, True):
        p, _ = anchor_case(tax, 25, 3, coarse)
        P = ts.decision.node_probabilities(torch.from_numpy(p), tax).numpy()[:, c.node_target][:, keep]
        for row in P:
            best_below = -1.0
            for n in sorted(set(leaves.tolist())):
                group = row[leaves == n]
                if group.max() > best_below:
                    assert (group == group.max()).sum() == 1, (n, group)
                best_below = max(best_below, group.max())


# ---------------------------------------------------------------------- independent oracle: thresholds one by one
class Loop:
    def __init__(self, tax):
        self.tax = tax
        self.names = list(tax.target_names)
        self.C = tax.num_classes
        self.under = {v: ([v] if tax.is_leaf(v) else list(tax.leaves_under(v))) for v in self.names}
        self.ids = {v: [tax.class_index(x) for x in self.under[v]] for v in self.names}
        self._fields = {}

    def answer(self, p, tau):
        """The threshold rule by its definition: the most specific node with P > τ (the root always)."""
        P = {v: math.fsum(p[i] for i in self.ids[v]) for v in self.names}
        cand = [v for v in self.names if min(P[v], 1.0) > tau or v == self.tax.root]
        return min(cand, key=lambda v: (len(self.under[v]), -P[v], -self.tax.depth(v), self.names.index(v)))

    def fields(self, label, pred):
        if (label, pred) not in self._fields:
            self._fields[label, pred] = self._compute_fields(label, pred)
        return self._fields[label, pred]

    def _compute_fields(self, label, pred):
        tax = self.tax
        below = {label} | set(tax.descendants(label))
        if pred in below:
            pred = label
        a = tax.lca(label, pred)
        out = {"exact": float(pred == label), "correct": float(a in (label, pred))}
        for which in ("depth", "info"):
            f = (lambda v: tax.depth(v)) if which == "depth" else (lambda v: math.log2(self.C / len(self.under[v])))
            fv, fp, fa = f(label), f(pred), f(a)
            prec, rec = (1.0 if fp == 0 else fa / fp), (1.0 if fv == 0 else fa / fv)
            out |= {f"{which}_precision": prec, f"{which}_recall": rec, f"{which}_excess": fp - fa,
                    f"{which}_deficient": fv - fa, f"{which}_dist": fp + fv - 2 * fa,
                    f"{which}_f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0}
        return out

    def point(self, probs, labels, tau):
        vals = [self.fields(self.names[t], self.answer(row, tau)) for row, t in zip(probs.tolist(), labels.tolist())]
        return {k: sum(v[k] for v in vals) / len(vals) for k in M.LCA_FIELDS}


def dyadic(seed, n, C, total=64):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.multinomial(total, rng.dirichlet(np.full(C, 0.5)), size=n) / total)


@given(tax=random_taxonomies(min_nodes=2, max_nodes=20), seed=st.integers(0, 2**31 - 1), coarse=st.booleans(),
       exact=st.booleans())
def test_curve_contains_every_point_of_a_dense_threshold_grid(tax, seed, coarse, exact):
    loop = Loop(tax)
    n = 6
    if exact:
        probs = dyadic(seed, n, tax.num_classes)
    else:
        g = torch.Generator().manual_seed(seed)
        probs = torch.softmax(2 * torch.randn(n, tax.num_classes, generator=g, dtype=torch.float64), 1)
    labels = torch.from_numpy(np.random.default_rng(seed).integers(0, tax.num_nodes if coarse else tax.num_classes, n))
    curve = M.operating_curve(probs, labels, tax, coarse_labels=coarse)
    t = curve.thresholds.tolist()
    # the dense grid: 100 thresholds in (0, 1], and with exact (dyadic) probabilities every node probability
    # and the midpoints between them; with rounded ones no threshold within rounding of a node probability
    P = sorted(set(ts.decision.node_probabilities(probs, tax).flatten().tolist()))
    grid = set(np.linspace(1e-3, 1, 100).tolist())
    if exact:
        grid |= {x for x in P if 0 < x <= 1} | {(a + b) / 2 for a, b in zip(P, P[1:])}
    else:
        grid = {x for x in grid if all(abs(x - v) > 1e-9 for v in P)}
    grid = sorted(grid)
    grid_points = []
    for tau in grid:
        # the curve's point for τ: thresholds[g+1] <= τ < thresholds[g] (point 0: τ >= thresholds[1])
        g_idx = next((g for g in range(len(t) - 1, 0, -1) if tau < t[g]), 0)
        want = loop.point(probs, labels, tau)
        for k in M.LCA_FIELDS:
            assert curve[k][g_idx].item() == pytest.approx(want[k], rel=1e-9, abs=1e-12), (tau, k)
        grid_points.append(want)
    # every point of the curve is some threshold's: the curve has no point the grid cannot reach
    assert len(curve) <= len(grid)
    # the curve's front contains the grid's front, for the integrated pairs
    for x, y in M.AREAS.values():
        gx = torch.tensor([pt[x] for pt in grid_points], dtype=torch.float64)
        gy = torch.tensor([pt[y] for pt in grid_points], dtype=torch.float64)
        cx, cy = curve[x], curve[y]
        for i in M.pareto_front(gx, gy).tolist():
            assert ((cx - gx[i]).abs() < 1e-12).logical_and((cy - gy[i]).abs() < 1e-12).any()
        assert M.pareto_integrate(cx, cy).item() >= M.pareto_integrate(gx, gy).item() - 1e-12


def test_predict_node_at_any_threshold_is_the_curves_point():
    tax = load_animals()
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(300, tax.num_classes, generator=g), 1)
    target = torch.randint(0, tax.num_classes, (300,), generator=g)
    curve = M.operating_curve(probs, target, tax)
    t = curve.thresholds
    for tau in torch.rand(20, generator=g).tolist() + [1.0, 0.5]:
        g_idx = int((t[1:] > tau).sum())
        m = M.lca_metrics(predict_node(probs, tax, threshold=tau), target, tax)
        for k in M.LCA_FIELDS:
            assert m[k].item() == pytest.approx(curve[k][g_idx].item(), rel=1e-9, abs=1e-12), (tau, k)


def test_curve_by_hand(seed_tax):
    probs = torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.0, 0.0, 0.5, 0.5]], dtype=torch.float64)
    curve = M.operating_curve(probs, torch.tensor([0, 3]), seed_tax)
    # sample 0: root, mammal (0.75), horse (0.5); sample 1: root, sea (1.0), whale (0.5, lower index than shark)
    assert curve.thresholds.tolist() == [1.0, 1.0, 0.75, 0.5]
    assert curve["correct"].tolist() == [1.0, 1.0, 1.0, 0.5]
    assert curve["exact"].tolist() == [0.0, 0.0, 0.0, 0.5]
    assert curve["depth_recall"].tolist() == [0.0, 0.25, 0.5, 0.75]
    # AC(exact): correct 1 up to exact 0, 0.5 up to 0.5
    assert curve.area("exact", "correct").item() == 0.25
    empty = M.operating_curve(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), seed_tax)
    assert len(empty) == 1 and math.isnan(empty["correct"][0].item())


def test_the_curve_of_an_empty_set(seed_tax):
    """An empty set: one point of NaN means, NaN areas (the mean over no samples), a front that says it is empty."""
    empty = M.operating_curve(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), seed_tax)
    assert empty.num_samples == 0 and empty.thresholds.tolist() == [1.0]
    areas = empty.areas()
    assert list(areas) == list(M.AREAS)
    assert all(a.dtype == torch.float64 and a.shape == () and math.isnan(a.item()) for a in areas.values())
    assert math.isnan(empty.area("exact", "correct").item())
    with pytest.raises(ValueError, match=r"empty set \(num_samples = 0\).*'depth_recall', 'correct'"):
        empty.front("depth_recall", "correct")
    with pytest.raises(KeyError, match="no metric 'recall'"):  # a wrong name is still named first
        empty.area("recall", "correct")
    # the plain functions keep refusing points that are not finite
    with pytest.raises(ValueError, match=r"x\[0\] is nan"):
        M.pareto_integrate(empty["exact"], empty["correct"])


# ---------------------------------------------------------------------- Pareto fronts and areas
def loop_front(x, y):
    pts = list(zip(x, y))
    keep = []
    for i, (a, b) in enumerate(pts):
        dominated = any((c >= a and d >= b and (c, d) != (a, b)) for c, d in pts)
        first = all(pts[j] != (a, b) for j in range(i))
        if not dominated and first:
            keep.append(i)
    return sorted(keep, key=lambda i: (x[i], i))


def loop_area(x, y):
    xs = sorted(set(x))
    area, prev = 0.0, 0.0
    for v in xs:
        area += (v - prev) * max(b for a, b in zip(x, y) if a >= v)
        prev = v
    return area


@given(x=st.lists(st.sampled_from([0.0, 0.125, 0.25, 0.5, 0.75, 1.0]), min_size=1, max_size=12), data=st.data())
def test_pareto_front_and_area_match_loops(x, data):
    y = data.draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.875, 1.0]), min_size=len(x), max_size=len(x)))
    assert M.pareto_front(torch.tensor(x), torch.tensor(y)).tolist() == loop_front(x, y)
    assert M.pareto_integrate(torch.tensor(x), torch.tensor(y)).item() == loop_area(x, y)


def test_pareto_bad_input():
    with pytest.raises(ValueError, match="1-D of one non-zero length"):
        M.pareto_integrate(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match=r"x\[1\] = -0.5 is negative"):
        M.pareto_integrate(torch.tensor([0.0, -0.5]), torch.zeros(2))
    with pytest.raises(ValueError, match=r"y\[0\] is nan"):
        M.pareto_front(torch.zeros(1), torch.tensor([float("nan")]))
    tax = load_animals()
    curve = M.operating_curve(torch.full((1, 40), 1 / 40), torch.tensor([0]), tax)
    with pytest.raises(KeyError, match="no metric 'recall' on the curve"):
        curve["recall"]
    with pytest.raises(ValueError, match="from_logits=True"):
        M.operating_curve(torch.randn(2, 40), torch.tensor([0, 1]), tax)


# ---------------------------------------------------------------------- batches
def test_curve_metric_batches_equal_the_whole_set():
    tax = load_animals()
    g = torch.Generator().manual_seed(4)
    logits = 3 * torch.randn(90, tax.num_classes, generator=g)
    target = torch.randint(0, tax.num_nodes, (90,), generator=g)
    whole = M.operating_curve(logits, target, tax, from_logits=True, coarse_labels=True)
    m = M.HierarchicalOperatingCurve(tax, from_logits=True, coarse_labels=True)
    for a, b in [(0, 0), (0, 17), (17, 50), (50, 90)]:
        m.update(logits[a:b], target[a:b])
    got = m.compute()
    torch.testing.assert_close(got.thresholds, whole.thresholds)
    for k in M.LCA_FIELDS:
        torch.testing.assert_close(got[k], whole[k], rtol=1e-12, atol=1e-12)
    alone = M.operating_curve(logits[:17], target[:17], tax, from_logits=True, coarse_labels=True)
    assert len(alone) != len(whole)
