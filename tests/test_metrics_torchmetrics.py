"""torchmetrics classes: batch-by-batch accumulation equals the whole-set metric; lazy import."""

from __future__ import annotations

import importlib
import math
import sys

import pytest
import torch
from _trees import random_taxonomies, seed_taxonomy
from hypothesis import given
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth import metrics as M

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def data(seed, n, C, ties=False):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randint(0, 3, (n, C), generator=g).float() if ties else 2 * torch.randn(n, C, generator=g)
    return logits, torch.randint(0, C, (n,), generator=g)


def batches(n, seed):
    """Uneven batch boundaries, including an empty batch."""
    g = torch.Generator().manual_seed(seed)
    cuts = sorted(set(torch.randint(0, n + 1, (4,), generator=g).tolist()) | {0, n})
    cuts.insert(1, 0)  # an empty first batch
    return list(zip(cuts[:-1], cuts[1:]))


def pairs_of(tax, k):
    """(metric object, the functional metric of the whole set) for every class."""
    return [
        (M.TopKError(k), lambda s, t: M.topk_error(s, t, k)),
        (M.MistakeSeverity(tax), lambda s, t: M.mistake_severity(s, t, tax)),
        (M.MistakeSeverity(ts.class_distances(tax, "path_length")), lambda s, t: M.mistake_severity(s, t, tax, distance="path_length")),
        (M.MeanHierarchicalDistanceAtK(tax, k), lambda s, t: M.mean_hierarchical_distance_at_k(s, t, tax, k)),
        (M.MinHierarchicalDistanceAtK(tax, k, distance="lca_depth_complement"),
         lambda s, t: M.min_hierarchical_distance_at_k(s, t, tax, k, distance="lca_depth_complement")),
        (M.HierarchicalPrecision(tax), lambda s, t: M.hierarchical_precision(s, t, tax)),
        (M.HierarchicalRecall(tax), lambda s, t: M.hierarchical_recall(s, t, tax)),
        (M.HierarchicalF1(tax), lambda s, t: M.hierarchical_f1(s, t, tax)),
        (M.ExpectedCalibrationError(n_bins=10, from_logits=True), lambda s, t: M.expected_calibration_error(s, t, 10, from_logits=True)),
    ]


@given(tax=random_taxonomies(min_nodes=3, max_nodes=20), seed=st.integers(0, 2**31 - 1), ties=st.booleans())
def test_batches_equal_whole_set(tax, seed, ties):
    C = tax.num_classes
    logits, target = data(seed, 40, C, ties)
    k = min(2, C)
    for metric, whole in pairs_of(tax, k):
        for a, b in batches(40, seed):
            metric.update(logits[a:b], target[a:b])
        expected = whole(logits, target)
        torch.testing.assert_close(metric.compute(), expected, equal_nan=True, msg=type(metric).__name__)


def test_not_an_average_of_batch_averages(seed_tax):
    """Two batches of different sizes: the average of batch averages would be wrong."""
    s1, t1 = torch.eye(4)[[2]], torch.tensor([0])  # one mistake at distance 2
    s2, t2 = torch.eye(4)[[1, 0, 0]], torch.tensor([0, 1, 1])  # three mistakes at distance 1
    m = M.MistakeSeverity(seed_tax)
    m.update(s1, t1)
    m.update(s2, t2)
    assert m.compute().item() == pytest.approx((2 + 1 + 1 + 1) / 4)  # not (2 + 1) / 2
    e = M.TopKError()
    e.update(s1, t1)
    e.update(torch.eye(4), torch.arange(4))
    assert e.compute().item() == pytest.approx(1 / 5)  # not (1 + 0) / 2


def test_merged_states_equal_whole_set():
    """What a distributed sync does: sum the states of metrics fed disjoint shards."""
    tax = seed_taxonomy()
    logits, target = data(0, 30, 4)
    whole = M.HierarchicalReport(tax, k=(1, 2), calibration=True, from_logits=True)
    whole.update(logits, target, logits)
    parts = [M.HierarchicalReport(tax, k=(1, 2), calibration=True, from_logits=True) for _ in range(3)]
    for i, m in enumerate(parts):
        m.update(logits[i::3], target[i::3], logits[i::3])
    merged = M.HierarchicalReport(tax, k=(1, 2), calibration=True, from_logits=True)
    for name in merged._defaults:
        setattr(merged, name, sum(getattr(m, name) for m in parts))
    for key, value in whole.compute().items():
        torch.testing.assert_close(merged.compute()[key], value, equal_nan=True, msg=key)
    assert all(merged._reductions[name] is not None for name in merged._defaults)


def test_report_metric_equals_functional_report():
    tax = seed_taxonomy()
    logits, target = data(1, 50, 4)
    m = M.HierarchicalReport(tax, k=2, calibration=True, from_logits=True)
    for a, b in batches(50, 1):
        m.update(logits[a:b], target[a:b], logits[a:b])
    got = {key: v.item() for key, v in m.compute().items()}
    assert got == pytest.approx(M.report(logits, target, tax, k=2, probs=logits, from_logits=True), nan_ok=True)
    m.reset()
    m.update(logits[:5], target[:5], logits[:5])
    assert m.compute()["top1_error"].item() == pytest.approx(M.topk_error(logits[:5], target[:5]).item())


def test_states_are_sums():
    tax = seed_taxonomy()
    for metric, _ in pairs_of(tax, 2) + [(M.HierarchicalReport(tax, k=2), None)]:
        assert metric._reductions, type(metric).__name__
        for name, fx in metric._reductions.items():
            assert getattr(fx, "__name__", "") in ("dim_zero_sum", "sum"), (type(metric).__name__, name, fx)


@pytest.mark.parametrize("device", DEVICES)
def test_device(device):
    tax = seed_taxonomy()
    logits, target = data(2, 20, 4)
    m = M.MeanHierarchicalDistanceAtK(tax, 2).to(device)
    m.update(logits.to(device), target.to(device))
    out = m.compute()
    assert out.device.type == device
    assert out.item() == pytest.approx(M.mean_hierarchical_distance_at_k(logits, target, tax, 2).item())


def test_validation(seed_tax):
    with pytest.raises(ValueError, match="k = 5 is out of range"):
        M.MeanHierarchicalDistanceAtK(seed_tax, 5)
    with pytest.raises(TypeError, match="needs a Taxonomy"):
        M.HierarchicalF1(ts.class_distances(seed_tax))
    m = M.MistakeSeverity(seed_tax)
    with pytest.raises(ValueError, match="5 columns but there are 4 classes"):
        m.update(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(IndexError, match=r"target\[1\] = 7"):
        m.update(torch.randn(2, 4), torch.tensor([0, 7]))
    t = M.TopKError(k=3)
    with pytest.raises(ValueError, match="k = 3 is out of range"):
        t.update(torch.randn(2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="from_logits=True"):
        M.ExpectedCalibrationError().update(torch.randn(2, 4), torch.tensor([0, 1]))


def test_no_mistakes_is_nan(seed_tax):
    m = M.MistakeSeverity(seed_tax)
    m.update(torch.eye(4), torch.arange(4))
    assert math.isnan(m.compute().item())


def test_missing_torchmetrics_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # import torchmetrics -> ImportError
    monkeypatch.delitem(sys.modules, "taxosmooth.metrics.modules", raising=False)
    metrics = importlib.import_module("taxosmooth.metrics")
    monkeypatch.delattr(metrics, "modules", raising=False)
    assert metrics.report is not None  # the functions need no torchmetrics
    with pytest.raises(ImportError, match=r"taxosmooth\[metrics\]"):
        metrics.TopKError  # noqa: B018
    with pytest.raises(AttributeError):
        metrics.NoSuchMetric  # noqa: B018


# ---------------------------------------------------------------------- coarse labels, node and per-level predictions
def node_pairs_of(tax):
    """(metric object, its functional form on the whole set, how the inputs are built) for the node metrics."""
    return [
        (M.TopKError(2 if tax.num_classes > 1 else 1, taxonomy=tax, coarse_labels=True),
         lambda s, t, n, lv: M.topk_error(s, t, min(2, tax.num_classes), taxonomy=tax, coarse_labels=True), "scores"),
        (M.MistakeSeverity(tax, coarse_labels=True), lambda s, t, n, lv: M.mistake_severity(n, t, tax, coarse_labels=True), "nodes"),
        (M.MinHierarchicalDistanceAtK(tax, 1, distance="path_length", coarse_labels=True),
         lambda s, t, n, lv: M.min_hierarchical_distance_at_k(s, t, tax, 1, distance="path_length", coarse_labels=True), "scores"),
        (M.HierarchicalPrecision(tax, average="macro", coarse_labels=True),
         lambda s, t, n, lv: M.hierarchical_precision(n, t, tax, average="macro", coarse_labels=True), "nodes"),
        (M.HierarchicalF1(tax, coarse_labels=True), lambda s, t, n, lv: M.hierarchical_f1(s, t, tax, coarse_labels=True), "scores"),
        (M.LCAMetrics(tax, coarse_labels=True), lambda s, t, n, lv: M.lca_metrics(n, t, tax, coarse_labels=True), "nodes"),
        (M.AccuracyAtDepth(tax, 1, coarse_labels=True), lambda s, t, n, lv: M.accuracy_at_depth(n, t, tax, 1, coarse_labels=True), "nodes"),
        (M.FullPathAccuracy(tax, coarse_labels=True), lambda s, t, n, lv: M.full_path_accuracy(lv, t, tax, coarse_labels=True), "levels"),
        (M.ExpectedCalibrationError(4, from_logits=True, taxonomy=tax, coarse_labels=True),
         lambda s, t, n, lv: M.expected_calibration_error(s, t, 4, from_logits=True, taxonomy=tax, coarse_labels=True), "scores"),
        (M.HierarchicalReport(tax, k=1, coarse_labels=True), lambda s, t, n, lv: M.report(s, t, tax, coarse_labels=True), "scores"),
    ]


@given(tax=random_taxonomies(min_nodes=3, max_nodes=20), seed=st.integers(0, 2**31 - 1))
def test_node_metrics_batches_equal_whole_set(tax, seed):
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(40, tax.num_classes, generator=g)
    target = torch.randint(0, tax.num_nodes, (40,), generator=g)
    nodes = ts.decision.predict_node(logits, tax, threshold=0.3, from_logits=True)
    top1 = logits.argmax(1).numpy()
    levels = torch.stack([torch.from_numpy(tax.ancestor_at_depth(top1, d)) for d in range(1, tax.max_depth + 1)], 1)
    levels = torch.where(levels < 0, torch.from_numpy(top1)[:, None], levels)  # a shallow class stands for itself
    inputs = {"scores": logits, "nodes": nodes, "levels": levels}
    for metric, whole, kind in node_pairs_of(tax):
        for a, b in batches(40, seed):
            metric.update(inputs[kind][a:b], target[a:b])
        expected = whole(logits, target, nodes, levels)
        got = metric.compute()
        if isinstance(expected, dict):
            for key in expected:
                torch.testing.assert_close(got[key], torch.as_tensor(expected[key], dtype=got[key].dtype),
                                           equal_nan=True, msg=key)
        else:
            torch.testing.assert_close(got, expected, equal_nan=True, msg=type(metric).__name__)
    consistency = M.PathConsistency(tax)
    for a, b in batches(40, seed):
        consistency.update(levels[a:b])
    assert consistency.compute().item() == M.path_consistency(levels, tax).item() == 1.0


def test_the_former_class_names_work_with_a_deprecation_warning(seed_tax):
    logits, target = data(5, 40, 4)
    for old, new in (("HierarchicalDistanceAtK", "MeanHierarchicalDistanceAtK"),
                     ("HierarchicalDistanceTopK", "MinHierarchicalDistanceAtK")):
        with pytest.warns(DeprecationWarning, match=f"^{old} is deprecated; use {new}") as rec:
            metric = getattr(M, old)(seed_tax, 3)
        assert len(rec) == 1 and rec[0].filename == __file__
        assert isinstance(metric, getattr(M, new)) and old not in dir(M) and old not in M.__all__
        metric.update(logits, target)
        reference = getattr(M, new)(seed_tax, 3)
        reference.update(logits, target)
        assert torch.equal(metric.compute(), reference.compute())
    # the report object's dict reads the former keys too
    report = M.HierarchicalReport(seed_tax, k=3)
    report.update(logits, target)
    out = report.compute()
    with pytest.warns(DeprecationWarning, match="use 'min_hierarchical_distance@3'"):
        assert torch.equal(out["hierarchical_distance_top3"], out["min_hierarchical_distance@3"])
