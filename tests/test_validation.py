"""One mistake, one exception: the losses, heads, metrics and calibration check labels and shared arguments alike.

Decisions (:mod:`taxosmooth.decision`) take no labels and no ``ignore_index``; the
argument they share (``k``) comes from the same module and is checked in
``test_decision.py``.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

import taxosmooth as ts
import taxosmooth.functional as TF
from taxosmooth import _validation as V
from taxosmooth import metrics as M
from taxosmooth.embeddings import class_embeddings, haframe_weights
from taxosmooth.heads import EmbeddingHead, FixedClassifier, HierarchicalSoftmax, LevelwiseHead
from taxosmooth.losses import CosineLoss

TAX = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra", "donkey"], "sea": ["whale", "shark"]}})
C, NODES = TAX.num_classes, TAX.num_nodes  # 5 classes, 8 nodes
FEATURES = 6


def _losses():
    """name -> (module builder taking keyword options, input maker): every loss class."""
    phi = class_embeddings(TAX, dtype=torch.float32)
    logits = lambda n: torch.randn(n, C)  # noqa: E731
    return {
        "SoftTargetCrossEntropy": (lambda **kw: ts.SoftTargetCrossEntropy(ts.soft_targets(TAX, 2.0), **kw), logits),
        "HierarchicalSoftLabelLoss": (lambda **kw: ts.HierarchicalSoftLabelLoss(TAX, 2.0, **kw), logits),
        "HXELoss": (lambda **kw: ts.HXELoss(TAX, 0.5, **kw), logits),
        "ExpectedCostLoss": (lambda **kw: ts.ExpectedCostLoss(TAX, **kw), logits),
        "TreeWassersteinLoss": (lambda **kw: ts.TreeWassersteinLoss(TAX, **kw), logits),
        "PairwiseCostLoss": (lambda **kw: ts.PairwiseCostLoss(TAX, **kw), logits),
        "CosineLoss": (lambda **kw: CosineLoss(phi, **kw), lambda n: torch.randn(n, phi.shape[1])),
    }


def _heads():
    """name -> builder taking keyword options; each head's ``loss(x, target)``."""
    return {
        "HierarchicalSoftmax": lambda **kw: HierarchicalSoftmax(FEATURES, TAX, **kw),
        "LevelwiseHead": lambda **kw: LevelwiseHead(FEATURES, TAX, **kw),
        "EmbeddingHead": lambda **kw: EmbeddingHead(FEATURES, TAX, ce_weight=0.1, **kw),
        "FixedClassifier": lambda **kw: FixedClassifier(FEATURES, haframe_weights(TAX), **kw),
    }


def _labelled_calls():
    """name -> f(target): every public entry that takes class labels, on a batch of 4."""
    torch.manual_seed(0)
    x, scores = torch.randn(4, FEATURES), torch.randn(4, C)
    calls = {}
    for name, (make, inputs) in _losses().items():
        calls[f"loss {name}"] = (lambda make, z: lambda t: make()(z, t))(make, inputs(4))
    for name, make in _heads().items():
        calls[f"head {name}"] = (lambda head: lambda t: head.loss(x, t))(make())
    calls["functional hxe_loss"] = lambda t: TF.hxe_loss(scores, t, TAX, 0.5)
    calls["metric topk_error"] = lambda t: M.topk_error(scores, t, 1)
    calls["metric mistake_severity"] = lambda t: M.mistake_severity(scores, t, TAX)
    calls["metric mean_hierarchical_distance_at_k"] = lambda t: M.mean_hierarchical_distance_at_k(scores, t, TAX, 2)
    calls["metric hierarchical_precision_recall_f1"] = lambda t: M.hierarchical_precision_recall_f1(scores, t, TAX)
    calls["metric report"] = lambda t: M.report(scores, t, TAX)
    calls["calibration fit_temperature"] = lambda t: ts.fit_temperature(scores, t)
    return calls


CALLS = _labelled_calls()


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("bad", [C, C + 2, NODES + 3, -1, -7])
def test_an_out_of_range_label_is_an_index_error_everywhere(call, bad):
    """``C`` and ``C + 2`` are internal nodes' target ids (a class label without ``coarse_labels``)."""
    target = torch.tensor([0, 1, bad, 2])
    with pytest.raises(IndexError) as info:
        CALLS[call](target)
    message = str(info.value)
    assert str(bad) in message and "2" in message.replace(str(bad), ""), message  # the value and its position


@pytest.mark.parametrize("call", sorted(c for c in CALLS if "fit_temperature" not in c))  # 4 samples: no optimum
def test_labels_in_range_pass_everywhere(call):
    CALLS[call](torch.tensor([0, 1, C - 1, 2]))


def _coarse_calls():
    torch.manual_seed(0)
    x, scores = torch.randn(4, FEATURES), torch.randn(4, C)
    calls = {f"loss {n}": (lambda make, z: lambda t: make(coarse_labels=True)(z, t))(make, inputs(4))
             for n, (make, inputs) in _losses().items() if n not in ("SoftTargetCrossEntropy", "CosineLoss")}
    for name in ("HierarchicalSoftmax", "LevelwiseHead"):
        calls[f"head {name}"] = (lambda head: lambda t: head.loss(x, t))(_heads()[name](coarse_labels=True))
    calls["head LevelwiseHead.level_targets"] = lambda t: _heads()["LevelwiseHead"]().level_targets(t)
    calls["metric mistake_severity"] = lambda t: M.mistake_severity(scores, t, TAX, coarse_labels=True)
    calls["metric topk_error"] = lambda t: M.topk_error(scores, t, 1, taxonomy=TAX, coarse_labels=True)
    return calls


COARSE = _coarse_calls()


@pytest.mark.parametrize("call", sorted(COARSE))
@pytest.mark.parametrize("bad", [NODES, NODES + 4, -1])
def test_an_out_of_range_target_id_is_an_index_error_with_coarse_labels(call, bad):
    with pytest.raises(IndexError) as info:
        COARSE[call](torch.tensor([0, C, bad, 2]))
    assert str(bad) in str(info.value)
    COARSE[call](torch.tensor([0, C, NODES - 1, 2]))  # internal nodes are labels here


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_boolean_label_is_a_type_error_everywhere(call):
    with pytest.raises(TypeError):
        CALLS[call](torch.tensor([True, False, True, True]))


@pytest.mark.parametrize("call", sorted(c for c in CALLS if not c.startswith(("loss", "functional"))))
def test_a_float_label_is_a_type_error_where_there_are_no_probability_targets(call):
    """(A loss reads a float target as class probabilities, of the input's shape.)"""
    with pytest.raises(TypeError, match="integer"):
        CALLS[call](torch.tensor([0.0, 1.0, 1.0, 2.0]))


# ---------------------------------------------------------------------- ignore_index
def _ignore_index_builders():
    out = {f"loss {n}": make for n, (make, _) in _losses().items()}
    out.update({f"head {n}": make for n, make in _heads().items()})
    z, t = torch.randn(3, C), torch.tensor([0, 1, 2])
    out["functional hxe_loss"] = lambda ignore_index: TF.hxe_loss(z, t, TAX, 0.5, ignore_index=ignore_index)
    out["functional soft_target_cross_entropy"] = lambda ignore_index: TF.soft_target_cross_entropy(
        z, t, ts.soft_targets(TAX, 2.0), ignore_index=ignore_index)
    return out


IGNORE = _ignore_index_builders()
NOT_INTS = [True, False, np.bool_(True), 1.5, 2.0, np.float32(2.0), "3", None, torch.tensor(1.0), torch.tensor(True),
            [1]]


@pytest.mark.parametrize("where", sorted(IGNORE))
@pytest.mark.parametrize("bad", NOT_INTS, ids=repr)
def test_ignore_index_must_be_an_int_everywhere(where, bad):
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        IGNORE[where](ignore_index=bad)


@pytest.mark.parametrize("where", sorted(w for w in IGNORE if not w.startswith("functional")))
@pytest.mark.parametrize("good", [3, np.int64(3), np.int32(3), torch.tensor(3)], ids=repr)
def test_ignore_index_integers_are_taken_as_int(where, good):
    module = IGNORE[where](ignore_index=good)
    assert module.ignore_index == 3 and type(module.ignore_index) is int


@pytest.mark.parametrize("where", sorted(w for w in IGNORE if w.startswith("head")) + ["loss CosineLoss"])
def test_ignored_samples_do_not_count(where):
    """The ignored sample adds nothing and the mean is over the others (F.cross_entropy's rule)."""
    torch.manual_seed(1)
    module = IGNORE[where](ignore_index=7)
    x = torch.randn(4, module.embeddings.shape[1] if where == "loss CosineLoss" else FEATURES)
    loss = module if where == "loss CosineLoss" else module.loss
    if hasattr(module, "classifier") and module.classifier is not None:
        module.eval()  # batch norm: the same statistics for the batch and its part
    t = torch.tensor([0, 7, 3, 1])
    keep = torch.tensor([True, False, True, True])
    torch.testing.assert_close(loss(x, t), loss(x[keep], t[keep]))


# ---------------------------------------------------------------------- reduction, label_smoothing, coarse_labels
@pytest.mark.parametrize("where", sorted(f"loss {n}" for n in _losses()))
@pytest.mark.parametrize("bad", ["avg", "MEAN", None, 1])
def test_reduction_is_refused_alike_by_losses(where, bad):
    with pytest.raises(ValueError, match="reduction must be one of mean, sum, none"):
        IGNORE[where](reduction=bad)


@pytest.mark.parametrize("head", sorted(_heads()))
@pytest.mark.parametrize("bad", ["avg", "MEAN", None, 1])
def test_reduction_is_refused_alike_by_heads(head, bad):
    module = _heads()[head]()
    with pytest.raises(ValueError, match="reduction must be one of mean, sum, none"):
        module.loss(torch.randn(2, FEATURES), torch.tensor([0, 1]), reduction=bad)


LABEL_SMOOTHING = {f"loss {n}": make for n, (make, _) in _losses().items() if n != "CosineLoss"}
LABEL_SMOOTHING["head HierarchicalSoftmax"] = _heads()["HierarchicalSoftmax"]


@pytest.mark.parametrize("where", sorted(LABEL_SMOOTHING))
@pytest.mark.parametrize("bad,error", [(1.5, ValueError), (-0.1, ValueError), (True, TypeError), ("0.1", TypeError)],
                         ids=repr)
def test_label_smoothing_is_refused_alike(where, bad, error):
    with pytest.raises(error, match="label_smoothing must be"):
        LABEL_SMOOTHING[where](label_smoothing=bad)


COARSE_FLAG = {f"loss {n}": make for n, (make, _) in _losses().items()
               if n not in ("SoftTargetCrossEntropy", "CosineLoss")}
COARSE_FLAG.update({f"head {n}": _heads()[n] for n in ("HierarchicalSoftmax", "LevelwiseHead")})
COARSE_FLAG["metric topk_error"] = lambda coarse_labels: M.topk_error(torch.randn(2, C), torch.tensor([0, 1]), 1,
                                                                      taxonomy=TAX, coarse_labels=coarse_labels)


@pytest.mark.parametrize("where", sorted(COARSE_FLAG))
@pytest.mark.parametrize("bad", [1, 0, "yes", None])
def test_coarse_labels_must_be_a_bool_everywhere(where, bad):
    with pytest.raises(TypeError, match=f"coarse_labels must be .*got {bad!r}"):
        COARSE_FLAG[where](coarse_labels=bad)


# ---------------------------------------------------------------------- the losses' checks, one import away
SHARED = ["check_ignore_index", "check_reduction", "check_label_smoothing", "check_weight"]
BAD_ARGUMENTS = {
    "check_ignore_index": [(True,), (1.5,), ("3",), (torch.tensor(2.0),), (None,)],
    "check_reduction": [("avg",), (None,)],
    "check_label_smoothing": [(1.5,), (-1,), (True,), ("0.1",), (float("nan"),)],
    "check_weight": [([1.0, -2.0, 1.0], 3), ([1.0, 2.0], 3), ("abc", 3), (torch.tensor([True, False]), 2),
                     ([1.0, float("inf"), 1.0], 3), (torch.ones(3, 1), 3), ([1.0] * 4, 3, 5)],
}


@pytest.mark.parametrize("name", SHARED)
def test_the_losses_have_no_copy_of_a_shared_check(name):
    """Every loss validates its arguments with taxosmooth._validation's checks, never a copy of its own."""
    import importlib

    for module in ("taxosmooth.losses._inputs", "taxosmooth.losses._module", "taxosmooth.losses.cosine"):
        found = getattr(importlib.import_module(module), name, None)
        assert found is None or found is getattr(V, name), (module, name)
    assert name not in importlib.import_module("taxosmooth.losses._inputs").__all__


@pytest.mark.parametrize("name,args", [(n, a) for n in SHARED for a in BAD_ARGUMENTS[n]], ids=repr)
def test_the_shared_checks_refuse_and_name_the_argument(name, args):
    with pytest.raises((TypeError, ValueError)) as err:
        getattr(V, name)(*args)
    assert name.removeprefix("check_") in str(err.value)


@pytest.mark.parametrize("name,args,expected", [
    ("check_ignore_index", (np.int16(-100),), -100),
    ("check_reduction", ("sum",), "sum"),
    ("check_label_smoothing", (torch.tensor(0.25),), 0.25),
])
def test_the_shared_checks_accept_what_torch_accepts(name, args, expected):
    assert getattr(V, name)(*args) == expected


def test_check_weight_returns_a_float_copy():
    w = torch.tensor([1, 2, 3])
    out = V.check_weight(w, 3)
    assert out.dtype == torch.get_default_dtype() and out.tolist() == [1.0, 2.0, 3.0]
    v = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    out = V.check_weight(v, 3, 5)
    assert out is not v and torch.equal(out, v)
    assert V.check_weight(None, 3) is None


def test_target_errors_name_position_value_range_and_node():
    with pytest.raises(IndexError, match=r"^Head: target\[2\] = 6 is not a class index in \[0, 5\) or "
                                         r"ignore_index=-100; it is the target id of internal node 'mammal': "
                                         r"pass coarse_labels=True for coarse labels$"):
        V.check_target_ids(torch.tensor([0, 1, 6]), 3, C, num_nodes=NODES, ignore_index=-100,
                           target_names=TAX.target_names, where="Head")
    with pytest.raises(IndexError, match=r"^target\[1\] = 8 is not a target id in \[0, 8\)$"):
        V.check_target(torch.tensor([0, 8]), 2, C, coarse_labels=True, num_nodes=NODES)
    with pytest.raises(ValueError, match=r"target must have shape \(3,\)"):
        V.check_target(torch.tensor([[0, 1, 2]]), 3, C)
    ids, valid = V.check_target_ids(torch.tensor([0, -100, 4], dtype=torch.int32), 3, C, ignore_index=-100)
    assert ids.dtype == torch.int64 and ids.tolist() == [0, 0, 4] and valid.tolist() == [True, False, True]
    ids, valid = V.check_target_ids([1, 2], 2, C)
    assert ids.tolist() == [1, 2] and valid is None
