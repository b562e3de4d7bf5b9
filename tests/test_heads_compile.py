"""Every head under ``torch.compile(fullgraph=True)``: one graph (no break), the eager values and gradients.

``fullgraph=True`` makes any graph break an error, so these tests also pin that no head method
reads tensor values on the host while compiling. Most tests use the ``aot_eager`` backend (Dynamo
and AOTAutograd, the parts that trace; no code generation); one compiles with the default backend.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from test_heads import UNBALANCED

import taxosmooth as ts
from taxosmooth.embeddings import haframe_weights
from taxosmooth.heads import EmbeddingHead, FixedClassifier, HierarchicalSoftmax, LevelwiseHead

FEATURES = 5


@pytest.fixture(scope="module")
def tax():
    # not in DFS order; unary chains; classes at depths 1-5
    classes = ["e2", "a1", "d", "c2", "b1", "a3", "e4", "c1", "b2", "a2", "e1", "e3"]
    return ts.Taxonomy.from_nested(UNBALANCED, classes=classes)


def make_head(name, tax, **kw):
    torch.manual_seed(0)
    if name == "HierarchicalSoftmax":
        alpha = {n: 0.5 + 0.1 * i for i, n in enumerate(tax.target_names[tax.num_classes:])}
        return HierarchicalSoftmax(FEATURES, tax, node_weights=alpha, label_smoothing={"a": 0.2, "e": 0.1}, **kw)
    if name == "LevelwiseHead":
        return LevelwiseHead(FEATURES, tax, weights=[1.0, 0.5, 2.0, 1.0, 0.25], **kw)
    if name == "EmbeddingHead":
        return EmbeddingHead(FEATURES, tax, ce_weight=0.1, **kw).eval()  # batch norm: running statistics
    return FixedClassifier(FEATURES, haframe_weights(tax), cosine_weight=0.4, **kw)


HEADS = ["HierarchicalSoftmax", "LevelwiseHead", "EmbeddingHead", "FixedClassifier"]
COARSE = ["HierarchicalSoftmax", "LevelwiseHead"]


def compiled(fn, backend="aot_eager"):
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend=backend)


def batch(tax, coarse=False, ignored=False, n=9):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, FEATURES, generator=g)
    t = torch.randint(0, tax.num_nodes if coarse else tax.num_classes, (n,), generator=g)
    if ignored:
        t[[1, 4]] = -100
    return x, t


def assert_same(a, b):
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            assert_same(u, v)
        return
    assert a.dtype == b.dtype and a.shape == b.shape
    if a.is_floating_point():
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    else:
        assert torch.equal(a, b)


def grads(head, fn, *args):
    head.zero_grad(set_to_none=True)
    fn(*args).sum().backward()
    return {n: p.grad.clone() for n, p in head.named_parameters() if p.grad is not None}


# ---------------------------------------------------------------------- forward and loss, every head
@pytest.mark.parametrize("name", HEADS)
def test_compiled_module_gives_the_eager_scores_and_gradients(name, tax):
    head = make_head(name, tax)
    x, _ = batch(tax)
    fast = compiled(head)
    assert_same(fast(x), head(x))
    eager = grads(head, head, x)
    assert eager and grads(head, fast, x).keys() == eager.keys()
    for k, g in grads(head, fast, x).items():
        torch.testing.assert_close(g, eager[k], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignored", [False, True])
def test_compiled_loss_gives_the_eager_loss_and_gradients(name, tax, reduction, ignored):
    head = make_head(name, tax)
    x, t = batch(tax, ignored=ignored)
    loss = lambda x, t: head.loss(x, t, reduction=reduction)  # noqa: E731
    fast = compiled(loss)
    assert_same(fast(x, t), loss(x, t))
    eager = grads(head, loss, x, t)
    for k, g in grads(head, fast, x, t).items():
        torch.testing.assert_close(g, eager[k], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", COARSE)
def test_compiled_loss_on_coarse_labels(name, tax):
    head = make_head(name, tax, coarse_labels=True)
    x, t = batch(tax, coarse=True, ignored=True)
    assert (t >= tax.num_classes).any()
    fast = compiled(head.loss)
    assert_same(fast(x, t), head.loss(x, t))


# ---------------------------------------------------------------------- every other method
METHODS = {
    "HierarchicalSoftmax": ["scores", "node_log_probabilities", "log_probabilities_from_scores", "loss_from_scores"],
    "LevelwiseHead": ["level_logits", "level_predictions", "level_targets"],
    "EmbeddingHead": ["embed", "classifier_logits"],
    "FixedClassifier": ["features"],
}


def method_args(method, head, x, t, tax):
    if method == "log_probabilities_from_scores":
        return (head.scores(x).detach(),)
    if method == "loss_from_scores":
        return (head.scores(x).detach(), t)
    if method == "level_targets":
        return (torch.arange(tax.num_nodes),)
    return (x,)


@pytest.mark.parametrize("name,method", [(n, m) for n, ms in METHODS.items() for m in ms])
def test_every_method_compiles_to_one_graph_with_the_eager_values(name, method, tax):
    head = make_head(name, tax)
    x, t = batch(tax)
    fn, args = getattr(head, method), method_args(method, head, x, t, tax)
    assert_same(compiled(fn)(*args), fn(*args))


def test_hierarchical_softmax_compiled_is_exact_beyond_the_row_shift_limit(tax):
    """Eager CPU calls shift each row by its maximum when that is exact; a compiled graph always takes the
    per-parent maximum. Scores of 500 (beyond the shift limit) give the eager values compiled too."""
    head = make_head("HierarchicalSoftmax", tax)
    x, t = batch(tax)
    with torch.no_grad():
        head.linear.weight.mul_(500.0 / head.scores(x).abs().max())
    assert_same(compiled(head)(x), head(x))
    assert_same(compiled(head.loss)(x, t), head.loss(x, t))


# ---------------------------------------------------------------------- checks inside the graph
@pytest.mark.parametrize("name", HEADS)
def test_compiled_loss_still_refuses_an_out_of_range_target(name, tax):
    """No host read in the graph: the target check is a device-side assertion (raised at once on the CPU)."""
    head = make_head(name, tax)
    x, t = batch(tax, ignored=True)
    fast = compiled(head.loss)
    fast(x, t)
    t[2] = tax.num_nodes + 3
    with pytest.raises(RuntimeError, match=f"{name}: target holds an id out of range"):
        fast(x, t)


# ---------------------------------------------------------------------- the default backend
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None and shutil.which("clang++") is None,
                    reason="the default backend compiles C++ on the CPU")
def test_hierarchical_softmax_with_the_default_backend(tax):
    head = make_head("HierarchicalSoftmax", tax)
    x, t = batch(tax, ignored=True)

    def step(x, t):
        return head.loss(x, t) + head(x).logsumexp(1).sum()

    fast = compiled(step, backend="inductor")
    assert_same(fast(x, t), step(x, t))
    eager = grads(head, step, x, t)
    for k, g in grads(head, fast, x, t).items():
        torch.testing.assert_close(g, eager[k], atol=1e-5, rtol=1e-5)
