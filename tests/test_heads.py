"""HierarchicalSoftmax and LevelwiseHead against loop oracles, gradcheck and the hierarchicalsoftmax package."""

from __future__ import annotations

import math
import os

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _trees import random_taxonomies
from hypothesis import given
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth.data import load_animals
from taxosmooth.heads import HierarchicalSoftmax, LevelwiseHead

# unbalanced, with unary chains (above a class, above an internal node, at the root) and classes at depths 1-5
UNBALANCED = {
    "root": {
        "chain": {"chain2": {"a": ["a1", "a2", "a3"], "b": {"b0": ["b1", "b2"]}}},
        "c": ["c1", {"cc": ["c2"]}],
        "d": None,
        "e": ["e1", "e2", "e3", "e4"],
    }
}


def unbalanced() -> ts.Taxonomy:
    classes = ["e2", "a1", "d", "c2", "b1", "a3", "e4", "c1", "b2", "a2", "e1", "e3"]  # not DFS order
    return ts.Taxonomy.from_nested(UNBALANCED, classes=classes)


def unary_root() -> ts.Taxonomy:
    return ts.Taxonomy.from_nested({"top": {"only": {"x": ["x1", "x2"], "y": ["y1", "y2", "y3"]}}})


TREES = [unbalanced, unary_root, lambda: ts.Taxonomy.from_nested({"r": ["p", "q"]})]


# ---------------------------------------------------------------------- oracles (plain loops)
def score_of_node(head: HierarchicalSoftmax, s: torch.Tensor) -> dict:
    """Node name -> score column (the first child of each node has none: score 0)."""
    names = head.taxonomy.decode(head.score_targets)
    return {name: s[:, j] for j, name in enumerate(names)}


def conditional_loop(head: HierarchicalSoftmax, x: torch.Tensor) -> dict:
    """Node name -> log P(node | parent) (N,), one softmax per internal node, by name."""
    tax = head.taxonomy
    s = head.scores(x)
    by_node = score_of_node(head, s)
    out = {}
    for u in tax.nodes:
        kids = tax.children(u)
        if len(kids) == 0:
            continue
        if len(kids) == 1:
            out[kids[0]] = torch.zeros(x.shape[0], dtype=s.dtype)
            continue
        assert kids[0] not in by_node  # the first child's score is fixed at 0
        z = torch.stack([torch.zeros(x.shape[0], dtype=s.dtype)] + [by_node[k] for k in kids[1:]], 1)
        logp = torch.log_softmax(z, 1)
        for i, k in enumerate(kids):
            out[k] = logp[:, i]
    return out


def class_log_probs_loop(head: HierarchicalSoftmax, x: torch.Tensor) -> torch.Tensor:
    tax = head.taxonomy
    cond = conditional_loop(head, x)
    cols = []
    for c in tax.classes:
        total = torch.zeros(x.shape[0], dtype=x.dtype)
        for v in (c,) + tax.ancestors(c)[:-1]:  # every node on the path but the root
            total = total + cond[v]
        cols.append(total)
    return torch.stack(cols, 1)


def package_loss_loop(head, x, target, alpha: dict, eps: dict) -> torch.Tensor:
    """The hierarchicalsoftmax package's algorithm: per sample, per node on the path, a weighted smoothed CE."""
    tax = head.taxonomy
    s = head.scores(x)
    by_node = score_of_node(head, s)
    total = 0.0
    for n, t in enumerate(target.tolist()):
        v = tax.target_names[t]
        while tax.parent(v) is not None:
            u = tax.parent(v)
            kids = tax.children(u)
            if len(kids) > 1:
                z = torch.stack([torch.zeros((), dtype=s.dtype)] + [by_node[k][n] for k in kids[1:]]).unsqueeze(0)
                label = torch.tensor([kids.index(v)])
                total = total + alpha.get(u, 1.0) * F.cross_entropy(z, label, label_smoothing=eps.get(u, 0.0))
            v = u
    return total / len(target)


# ---------------------------------------------------------------------- HierarchicalSoftmax
@pytest.mark.parametrize("make", TREES)
def test_hierarchical_softmax_is_the_product_of_conditional_softmaxes(make):
    tax = make()
    torch.manual_seed(0)
    head = HierarchicalSoftmax(6, tax).double()
    x = torch.randn(9, 6, dtype=torch.float64)
    log_p = head(x)
    torch.testing.assert_close(log_p, class_log_probs_loop(head, x))
    torch.testing.assert_close(log_p.exp().sum(1), torch.ones(9, dtype=torch.float64))
    assert head.num_scores == tax.num_classes - 1


@given(random_taxonomies(min_nodes=3, max_nodes=40), st.integers(0, 2**31 - 1))
def test_hierarchical_softmax_random_trees(tax, seed):
    if tax.num_classes < 2:
        with pytest.raises(ValueError, match="at least 2 classes"):
            HierarchicalSoftmax(4, tax)
        return
    torch.manual_seed(seed)
    head = HierarchicalSoftmax(4, tax).double()
    x = 3 * torch.randn(5, 4, dtype=torch.float64)
    log_p = head(x)
    torch.testing.assert_close(log_p.exp().sum(1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(log_p, class_log_probs_loop(head, x))
    # every node's probability is the sum of the classes under it
    node_p = head.node_log_probabilities(x).exp()
    for i, name in enumerate(tax.target_names):
        under = [tax.class_index(c) for c in tax.leaves_under(name)] if not tax.is_leaf(name) else [i]
        torch.testing.assert_close(node_p[:, i], log_p.exp()[:, under].sum(1))


def test_default_loss_is_cross_entropy_of_the_output():
    tax = unbalanced()
    head = HierarchicalSoftmax(5, tax)
    x, t = torch.randn(16, 5), torch.randint(0, tax.num_classes, (16,))
    torch.testing.assert_close(head.loss(x, t), F.cross_entropy(head(x), t))
    torch.testing.assert_close(head.loss(x, t, reduction="none"), F.cross_entropy(head(x), t, reduction="none"))
    torch.testing.assert_close(head.loss(x, t, reduction="sum"), F.cross_entropy(head(x), t, reduction="sum"))


def weights_and_smoothing(tax, seed=0):
    rng = np.random.default_rng(seed)
    internal = tax.target_names[tax.num_classes:]
    return ({n: float(rng.uniform(0.2, 2.0)) for n in internal}, {n: float(rng.uniform(0.0, 0.6)) for n in internal})


@pytest.mark.parametrize("make", TREES)
def test_loss_with_node_weights_and_smoothing_equals_the_per_sample_loop(make):
    tax = make()
    alpha, eps = weights_and_smoothing(tax)
    head = HierarchicalSoftmax(5, tax, node_weights=alpha, label_smoothing=eps).double()
    x, t = torch.randn(11, 5, dtype=torch.float64), torch.randint(0, tax.num_classes, (11,))
    torch.testing.assert_close(head.loss(x, t), package_loss_loop(head, x, t, alpha, eps))
    # array form (target-id order of the internal nodes) gives the same head
    internal = tax.target_names[tax.num_classes:]
    same = HierarchicalSoftmax(5, tax, node_weights=[alpha[n] for n in internal],
                               label_smoothing=np.array([eps[n] for n in internal])).double()
    same.load_state_dict(head.state_dict())
    torch.testing.assert_close(same.loss(x, t), head.loss(x, t))


def package_tree(tax, alpha: dict, eps: dict):
    """The taxonomy as a hierarchicalsoftmax SoftmaxNode tree (children in the taxonomy's order)."""
    from hierarchicalsoftmax import SoftmaxNode

    nodes = {}
    for name in tax.nodes:  # pre-order: parents first
        parent = tax.parent(name)
        kw = {} if tax.is_leaf(name) else dict(alpha=alpha.get(name, 1.0), label_smoothing=eps.get(name, 0.0))
        nodes[name] = SoftmaxNode(str(name), parent=None if parent is None else nodes[parent], **kw)
    root = nodes[tax.root]
    root.set_indexes()
    return root, nodes


def _require_package():
    try:
        import hierarchicalsoftmax  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the hierarchicalsoftmax package is not installed; under CI this comparison must run "
                        "(pip install --no-deps hierarchicalsoftmax==1.4.4 and its dependencies, see .ci/run)")
        pytest.skip("the hierarchicalsoftmax package is not installed")


@pytest.mark.parametrize("make", TREES + [load_animals])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_equals_the_hierarchicalsoftmax_package(make, weighted):
    _require_package()
    from hierarchicalsoftmax import HierarchicalSoftmaxLoss

    tax = make()
    alpha, eps = weights_and_smoothing(tax, 1) if weighted else ({}, {})
    head = HierarchicalSoftmax(7, tax, node_weights=alpha or 1.0, label_smoothing=eps or 0.0).double()
    x = torch.randn(13, 7, dtype=torch.float64)
    t = torch.randint(0, tax.num_classes, (13,))
    root, nodes = package_tree(tax, alpha, eps)
    # the package's layer: one score per child of every node with >= 2 children; our first children score 0
    s = head.scores(x)
    layer = torch.zeros(13, root.layer_size, dtype=torch.float64)
    columns = [nodes[name].index_in_softmax_layer for name in tax.decode(head.score_targets)]
    layer[:, columns] = s
    package_targets = torch.tensor([root.node_to_id[nodes[tax.classes[i]]] for i in t])
    expected = HierarchicalSoftmaxLoss(root)(layer, package_targets)
    torch.testing.assert_close(head.loss(x, t), expected)
    torch.testing.assert_close(head.loss_from_scores(s, t), expected)
    if not weighted:
        torch.testing.assert_close(F.cross_entropy(head(x), t), expected)


def test_coarse_labels():
    tax = unbalanced()
    head = HierarchicalSoftmax(4, tax, coarse_labels=True).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    t = torch.tensor(tax.encode(["a", "chain", "a1", "cc", "root", "e"]))
    node = head.node_log_probabilities(x)
    torch.testing.assert_close(head.loss(x, t, reduction="none"), -node.gather(1, t.unsqueeze(1)).squeeze(1))
    assert float(head.loss(x, t, reduction="none")[4].detach()) == 0.0  # the root has probability 1
    with pytest.raises(IndexError, match="internal node 'a'.*coarse_labels=True"):
        HierarchicalSoftmax(4, tax).loss(x.float(), torch.tensor(tax.encode(["a"] * 6)))


def test_ignore_index_and_target_errors():
    tax = unbalanced()
    head = HierarchicalSoftmax(4, tax)
    x, t = torch.randn(5, 4), torch.tensor([0, -100, 3, -100, 1])
    keep = t != -100
    torch.testing.assert_close(head.loss(x, t), F.cross_entropy(head(x)[keep], t[keep]))
    torch.testing.assert_close(head.loss(x, t), F.cross_entropy(head(x), t))  # F.cross_entropy ignores -100 too
    with pytest.raises(IndexError, match=r"target\[1\] = 12 is not a class index .*target id of internal node"):
        head.loss(x, torch.tensor([0, 12, 0, 0, 0]))
    with pytest.raises(IndexError, match=r"target\[2\] = -3 is not a class index in \[0, 12\) or ignore_index=-100"):
        head.loss(x, torch.tensor([0, 1, -3, 0, 0]))
    with pytest.raises(TypeError, match="integer"):
        head.loss(x, torch.zeros(5))
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        head(torch.randn(5, 3))


@pytest.mark.parametrize("make", TREES)
def test_gradcheck(make):
    tax = make()
    alpha, eps = weights_and_smoothing(tax, 2)
    torch.manual_seed(1)
    head = HierarchicalSoftmax(3, tax, node_weights=alpha, label_smoothing=eps, coarse_labels=True).double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, tax.num_classes, tax.num_nodes - 1, 1])
    for exact in (False, True):
        head._force_exact = exact
        assert torch.autograd.gradcheck(head, (x,))
        assert torch.autograd.gradcheck(head.node_log_probabilities, (x,))
        assert torch.autograd.gradcheck(lambda x: head.loss(x, t, reduction="none"), (x,))
        # parameters too: the linear layer's gradient through the custom kernels
        w = head.linear.weight
        assert torch.autograd.gradcheck(lambda w: F.linear(x, w, head.linear.bias), (w.detach().requires_grad_(),))


@pytest.mark.parametrize("size", [60.0, 500.0])
def test_large_scores(size):
    """Scores up to the row-shift limit (one shift per row) and beyond it (the per-parent maximum) agree
    with the exact path and the float64 loop."""
    tax = unbalanced()
    head = HierarchicalSoftmax(4, tax)
    x = torch.randn(7, 4)
    with torch.no_grad():
        head.linear.bias.zero_()
        head.linear.weight.mul_(size / head.scores(x).abs().max())
    assert 0.9 * size < float(head.scores(x).detach().abs().max()) <= size * 1.0001
    log_p = head(x)
    assert torch.isfinite(log_p).all()
    head._force_exact = True
    torch.testing.assert_close(log_p, head(x), atol=1e-5, rtol=1e-5)
    loop = class_log_probs_loop(head.double(), x.double())
    torch.testing.assert_close(log_p.double(), loop, atol=1e-4 * size / 60, rtol=1e-5)


def test_half_input_is_computed_in_float32():
    tax = unbalanced()
    head = HierarchicalSoftmax(4, tax).to(torch.bfloat16)
    out = head(torch.randn(3, 4, dtype=torch.bfloat16))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_bad_arguments():
    tax = unbalanced()
    for bad in (0, -3):
        with pytest.raises(ValueError, match=rf"in_features must be >= 1.*got {bad}"):
            HierarchicalSoftmax(bad, tax)
    with pytest.raises(TypeError, match="in_features must be an int"):
        HierarchicalSoftmax(2.5, tax)
    single = nx.DiGraph()
    single.add_node("alone")
    with pytest.raises(ValueError, match="no internal nodes"):
        HierarchicalSoftmax(3, ts.Taxonomy.from_networkx(single))
    with pytest.raises(ValueError, match="1 class.*at least 2"):
        HierarchicalSoftmax(3, ts.Taxonomy.from_nested({"a": ["b"]}))
    with pytest.raises(ValueError, match=r"label_smoothing\['a'\] must be in \[0, 1\]"):
        HierarchicalSoftmax(3, tax, label_smoothing={"a": 1.5})
    with pytest.raises(ValueError, match="'a1' is a class"):
        HierarchicalSoftmax(3, tax, node_weights={"a1": 2.0})
    with pytest.raises(ValueError, match="'zzz' is not a node"):
        HierarchicalSoftmax(3, tax, node_weights={"zzz": 2.0})
    with pytest.raises(ValueError, match=r"one value per internal node \(9"):
        HierarchicalSoftmax(3, tax, node_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"node_weights\[0\] \(node 'root'\) must be finite and >= 0"):
        HierarchicalSoftmax(3, tax, node_weights=[-1.0] + [1.0] * 8)


def test_device_and_state_dict_round_trip():
    tax = unbalanced()
    head = HierarchicalSoftmax(4, tax)
    # the index tables are rebuilt, not saved; the extra state is the taxonomy's fingerprint
    assert set(head.state_dict()) == {"linear.weight", "linear.bias", "_extra_state"}
    other = HierarchicalSoftmax(4, tax)
    other.load_state_dict(head.state_dict())
    x = torch.randn(3, 4)
    torch.testing.assert_close(other(x), head(x))


# ---------------------------------------------------------------------- LevelwiseHead
def level_label(tax, name, d):
    """The node standing for ``name`` at depth ``d`` (itself for a shallower class; None for a shallower node)."""
    if tax.depth(name) < d:
        return name if tax.is_leaf(name) else None
    v = name
    while tax.depth(v) > d:
        v = tax.parent(v)
    return v


@pytest.mark.parametrize("make", TREES)
def test_levelwise_against_loops(make):
    tax = make()
    torch.manual_seed(0)
    head = LevelwiseHead(5, tax, weights=None).double()
    x = torch.randn(7, 5, dtype=torch.float64)
    t = torch.randint(0, tax.num_classes, (7,))
    levels = head.level_logits(x)
    names = [tax.decode(ids) for ids in head.level_targets_ids]
    assert head.depths == tuple(range(1, tax.max_depth + 1))
    # forward: sum of the per-level log-softmaxes along each class's path
    expected = torch.zeros(7, tax.num_classes, dtype=torch.float64)
    for c, cls in enumerate(tax.classes):
        for i, d in enumerate(head.depths):
            expected[:, c] += torch.log_softmax(levels[i], 1)[:, names[i].index(level_label(tax, cls, d))]
    torch.testing.assert_close(head(x), expected)
    # loss: sum over levels of the mean cross entropy
    loss = sum(F.cross_entropy(levels[i], torch.tensor([names[i].index(level_label(tax, tax.classes[k], d))
                                                         for k in t.tolist()])) for i, d in enumerate(head.depths))
    torch.testing.assert_close(head.loss(x, t), loss)
    # per-level targets and predictions as target ids
    targets = head.level_targets(t)
    for k, cls in enumerate(t.tolist()):
        assert tax.decode(targets[k]) == [level_label(tax, tax.classes[cls], d) for d in head.depths]
    pred = head.level_predictions(x)
    for i in range(len(head.depths)):
        assert tax.decode(pred[:, i]) == [names[i][j] for j in levels[i].argmax(1).tolist()]


def test_levelwise_one_level_is_a_linear_layer_with_cross_entropy():
    tax = unbalanced()  # classes at depths 1 to 5: at depth 5 every class stands for itself
    head = LevelwiseHead(6, tax, depths=[tax.max_depth], weights=[1.0]).double()
    order = [tax.decode(int(i)) for i in head.level_targets_ids[0]]
    assert sorted(order) == sorted(tax.classes)
    linear = torch.nn.Linear(6, tax.num_classes).double()
    perm = [order.index(c) for c in tax.classes]  # class order
    with torch.no_grad():
        linear.weight.copy_(head.linear.weight[perm])
        linear.bias.copy_(head.linear.bias[perm])
    x, t = torch.randn(10, 6, dtype=torch.float64), torch.randint(0, tax.num_classes, (10,))
    torch.testing.assert_close(head(x), torch.log_softmax(linear(x), 1))
    torch.testing.assert_close(head.loss(x, t), F.cross_entropy(linear(x), t))
    torch.testing.assert_close(head.loss(x, t, reduction="sum"), F.cross_entropy(linear(x), t, reduction="sum"))


def test_levelwise_weights_combine_and_coarse_labels():
    tax = unbalanced()
    head = LevelwiseHead(4, tax, depths=[3, 1], weights=[0.5, 2.0], coarse_labels=True).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    z3, z1 = head.level_logits(x)
    names3, names1 = (tax.decode(ids) for ids in head.level_targets_ids)
    t = torch.tensor(tax.encode(["a1", "chain", "d", "b", "e3"]))
    # "chain" (depth 1) has no label at depth 3; "d" (a class at depth 1) stands for itself there
    lab3 = [level_label(tax, n, 3) for n in tax.decode(t)]
    lab1 = [level_label(tax, n, 1) for n in tax.decode(t)]
    assert lab3[1] is None and lab3[2] == "d"
    ce3 = [-torch.log_softmax(z3[k], 0)[names3.index(n)] for k, n in enumerate(lab3) if n is not None]
    ce1 = [-torch.log_softmax(z1[k], 0)[names1.index(n)] for k, n in enumerate(lab1)]
    torch.testing.assert_close(head.loss(x, t), 0.5 * torch.stack(ce3).mean() + 2.0 * torch.stack(ce1).mean())
    assert head.level_targets(t)[1].tolist() == [-1, int(tax.encode("chain"))]
    finest = LevelwiseHead(4, tax, depths=[1, 3], combine="finest").double()
    finest.linear.load_state_dict(LevelwiseHead(4, tax, depths=[1, 3]).double().linear.state_dict())
    z1, z3 = finest.level_logits(x)
    names3 = tax.decode(finest.level_targets_ids[1])
    cols = [names3.index(level_label(tax, c, 3)) for c in tax.classes]
    torch.testing.assert_close(finest(x), torch.log_softmax(z3, 1)[:, cols])


def test_levelwise_bad_arguments():
    tax = unbalanced()  # classes down to depth 5
    with pytest.raises(ValueError, match=r"depths\[1\] = 6 is outside the tree: depths must be in 1 … 5"):
        LevelwiseHead(3, tax, depths=[1, 6])
    with pytest.raises(ValueError, match=r"depths\[0\] = 0 .*depth 0 is the root"):
        LevelwiseHead(3, tax, depths=[0])
    with pytest.raises(ValueError, match=r"depths\[1\] = 2 is repeated"):
        LevelwiseHead(3, tax, depths=[2, 2])
    with pytest.raises(ValueError, match="depths is empty"):
        LevelwiseHead(3, tax, depths=[])
    with pytest.raises(TypeError, match=r"depths\[0\] must be an int"):
        LevelwiseHead(3, tax, depths=[1.5])
    with pytest.raises(ValueError, match=r"one number per depth \(2\)"):
        LevelwiseHead(3, tax, depths=[1, 2], weights=[1.0])
    with pytest.raises(ValueError, match=r"weights\[0\] = -1.0"):
        LevelwiseHead(3, tax, depths=[1, 2], weights=[-1.0, 1.0])
    with pytest.raises(ValueError, match="in_features must be >= 1"):
        LevelwiseHead(0, tax)
    with pytest.raises(ValueError, match="combine"):
        LevelwiseHead(3, tax, combine="max")


def test_levelwise_gradcheck():
    tax = unbalanced()
    head = LevelwiseHead(3, tax, weights=[1.0, 0.5, 2.0, 0.1, 1.5]).double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 3, 5, 7])
    assert torch.autograd.gradcheck(head, (x,))
    assert torch.autograd.gradcheck(lambda x: head.loss(x, t, reduction="none"), (x,))


# ---------------------------------------------------------------------- scale
@pytest.mark.slow
def test_hierarchical_softmax_100k_classes_under_2_gb():
    from test_losses_scale import BATCH, C, DEPTH, LIMIT, level_taxonomy, peak_growth

    tax = level_taxonomy(C, DEPTH)
    head = HierarchicalSoftmax(256, tax)
    x = torch.randn(BATCH, 256)
    t = torch.randint(0, C, (BATCH,))

    def step():
        F.cross_entropy(head(x), t).backward()
        head.loss(x, t).backward()

    step()  # allocator warm-up
    head.zero_grad(set_to_none=True)
    grown = peak_growth(step)
    assert grown < LIMIT, f"peak grew by {grown / 2**30:.2f} GiB"
    log_p = head(x[:2])
    assert math.isclose(float(log_p.detach().exp().sum(1)[0]), 1.0, rel_tol=1e-4)
