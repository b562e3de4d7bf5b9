"""The losses under autograd's other uses: double backward, Hessian-vector products, torch.func,
tracing, compilation; plus state_dict fingerprints and deep trees. Oracles are plain autograd on
the per-sample loops of ``test_losses``, in float64."""

from __future__ import annotations

import gc
import resource

import pytest
import torch
import torch.nn.functional as F
from _trees import seed_taxonomy
from test_losses import TreeView, expected_cost_oracle, hxe_oracle, pairwise_oracle, soft_label_oracle, weighted_tax
from test_losses_targets import NodeView, hxe_node_oracle, wasserstein_node_oracle

import taxosmooth as ts
from taxosmooth.tree_ops import tables


def _oracle_cases(tax):
    view = TreeView(tax)
    node_view = NodeView(tax)
    cost = torch.from_numpy(ts.class_distances(tax, "lca_height"))
    return [
        ("soft_labels", ts.HierarchicalSoftLabelLoss(tax, 1.7, reduction="sum"),
         soft_label_oracle(view, 1.7, "lca_height", "max", None)),
        ("hxe", ts.HXELoss(tax, 0.6, reduction="sum"), hxe_oracle(view, 0.6, "depth", False)),
        ("expected_cost", ts.ExpectedCostLoss(tax, ce_weight=0.5, reduction="sum"), expected_cost_oracle(cost, 0.5)),
        ("wasserstein", ts.TreeWassersteinLoss(tax, ce_weight=0.25, reduction="sum"),
         wasserstein_node_oracle(node_view, 0.25)),
        ("pairwise", ts.PairwiseCostLoss(tax, reduction="sum"), pairwise_oracle(cost)),
    ]


def _penalty_grad(loss_fn, x, w0):
    """A gradient-penalty step: d/dw of |∂ loss(x w^T) / ∂x|², as in WGAN-GP or input-gradient regularisers."""
    w = w0.clone().requires_grad_(True)
    xx = x.clone().requires_grad_(True)
    out = loss_fn(xx @ w.T)
    (gx,) = torch.autograd.grad(out, xx, create_graph=True)
    (gw,) = torch.autograd.grad((gx**2).sum() + out, w)
    return gw


def test_double_backward_equals_the_oracle():
    tax = weighted_tax()
    C = tax.num_classes
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    w0 = torch.randn(C, 3, generator=g, dtype=torch.float64)
    t = torch.randint(0, C, (6,), generator=g)
    got = _penalty_grad(lambda z: ts.HXELoss(tax, 0.0)(z, t), x, w0)
    want = _penalty_grad(lambda z: F.cross_entropy(z, t), x, w0)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for name, mod, oracle in _oracle_cases(tax):
        got = _penalty_grad(lambda z: mod(z, t), x, w0)
        want = _penalty_grad(lambda z: sum(oracle(z[i], int(t[i])) for i in range(6)), x, w0)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11, msg=name)


def test_double_backward_of_new_target_kinds():
    """Probability targets, coarse labels and label smoothing have second derivatives too (against the
    torch formulation, itself checked against loops elsewhere, and against gradgradcheck)."""
    tax = weighted_tax()
    C, N = tax.num_classes, tax.num_nodes
    g = torch.Generator().manual_seed(1)
    z = torch.randn(N, C, generator=g, dtype=torch.float64, requires_grad=True)
    p = torch.softmax(torch.randn(N, C, generator=g, dtype=torch.float64), 1)
    ids = torch.arange(N)
    mods = [ts.HierarchicalSoftLabelLoss(tax, 2.0, coarse_labels=True, label_smoothing=0.1),
            ts.HXELoss(tax, 0.5, coarse_labels=True, label_smoothing=0.1),
            ts.ExpectedCostLoss(tax, coarse_labels=True, label_smoothing=0.1),
            ts.TreeWassersteinLoss(tax, coarse_labels=True),
            ts.PairwiseCostLoss(tax, coarse_labels=True)]
    for mod in mods:
        for target in (ids, p):
            assert torch.autograd.gradgradcheck(lambda a: mod(a, target), (z,)), type(mod).__name__
            # a Hessian-vector product against forward-over-reverse torch.func (the formula, batched by vmap)
            v = torch.randn_like(z)
            _, hv = torch.autograd.functional.hvp(lambda a: mod(a, target), z.detach(), v)
            _, hv_ref = torch.func.jvp(torch.func.grad(lambda a: mod(a, target)), (z.detach(),), (v,))
            torch.testing.assert_close(hv, hv_ref, rtol=1e-9, atol=1e-11, msg=type(mod).__name__)


def test_torch_func_grad_and_vmap():
    from torch.func import grad, vmap

    tax = weighted_tax()
    C = tax.num_classes
    z = torch.randn(4, C, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3]) % C
    p = torch.softmax(torch.randn(4, C, dtype=torch.float64), 1)
    for mod in (ts.HierarchicalSoftLabelLoss(tax, 2.0), ts.HXELoss(tax, 0.5), ts.ExpectedCostLoss(tax),
                ts.TreeWassersteinLoss(tax), ts.PairwiseCostLoss(tax), ts.SoftTargetCrossEntropy()):
        for target in (t, p):
            g1 = grad(lambda a: mod(a, target))(z)
            zz = z.clone().requires_grad_(True)
            mod(zz, target).backward()
            torch.testing.assert_close(g1, zz.grad, msg=type(mod).__name__)
        # per-sample gradients: vmap over the batch of grad of one sample's loss
        per = vmap(grad(lambda a, b: mod(a.unsqueeze(0), b.unsqueeze(0))))(z, t)
        for i in range(4):
            zi = z[i : i + 1].clone().requires_grad_(True)
            mod(zi, t[i : i + 1]).backward()
            torch.testing.assert_close(per[i], zi.grad[0], msg=type(mod).__name__)


def test_torch_func_grad_checks_the_target_with_the_eager_message():
    """Under torch.func.grad the target is outside the transform: an out-of-range id or a negative probability
    gets the eager error naming the loss and the position, not torch's "Cannot access data pointer"."""
    from torch.func import grad

    tax = weighted_tax()
    C = tax.num_classes
    z = torch.randn(2, C, dtype=torch.float64)
    bad_prob = torch.full((2, C), 1.0 / C, dtype=torch.float64)
    bad_prob[0, 0], bad_prob[0, 1] = -0.1, bad_prob[0, 1] + 0.1
    for mod in (ts.HierarchicalSoftLabelLoss(tax, 2.0), ts.HXELoss(tax, 0.5), ts.ExpectedCostLoss(tax),
                ts.TreeWassersteinLoss(tax), ts.PairwiseCostLoss(tax), ts.SoftTargetCrossEntropy(ts.soft_targets(tax, 2.0))):
        name = type(mod).__name__
        for bad in (C + 3, -3):
            with pytest.raises(IndexError, match=rf"{name}: target {bad} at position \(1,\) is out of range"):
                grad(lambda a: mod(a, torch.tensor([0, bad])))(z)
        with pytest.raises(ValueError, match=rf"{name}: target probability -0.1 in row \(0, :\)"):
            grad(lambda a: mod(a, bad_prob))(z)
        # ignored targets still work under the transform
        t = torch.tensor([0, -100])
        zz = z.clone().requires_grad_(True)
        mod(zz, t).backward()
        torch.testing.assert_close(grad(lambda a: mod(a, t))(z), zz.grad, msg=name)


def test_vmapped_out_of_range_targets_give_nan_not_a_number():
    """Inside vmap the ids cannot be checked: an id of an internal node without coarse_labels (or any id out of
    range) makes that sample's loss NaN instead of silently reading another row of the tables."""
    from torch.func import vmap

    tax = weighted_tax()
    C = tax.num_classes
    assert tax.num_nodes > C + 1
    z = torch.randn(3, C, dtype=torch.float64)
    t = torch.tensor([0, C + 1, -7])
    for mod in (ts.HierarchicalSoftLabelLoss(tax, 2.0), ts.HXELoss(tax, 0.5), ts.ExpectedCostLoss(tax),
                ts.TreeWassersteinLoss(tax), ts.PairwiseCostLoss(tax), ts.SoftTargetCrossEntropy(ts.soft_targets(tax, 2.0))):
        per = vmap(lambda a, b: mod(a.unsqueeze(0), b.unsqueeze(0)))(z, t)
        torch.testing.assert_close(per[0], mod(z[:1], t[:1]), msg=type(mod).__name__)
        assert torch.isnan(per[1:]).all(), type(mod).__name__
    coarse = ts.HXELoss(tax, 0.5, coarse_labels=True)  # with coarse labels that id is a node: a number
    per = vmap(lambda a, b: coarse(a.unsqueeze(0), b.unsqueeze(0)))(z, t)
    torch.testing.assert_close(per[1], coarse(z[1:2], t[1:2]))
    assert torch.isnan(per[2])


def test_traced_losses_follow_new_targets():
    """torch.jit.trace records the target as an input: new targets give new values (no rows baked in)."""
    tax = seed_taxonomy()
    z = torch.randn(3, 4)
    t1, t2 = torch.tensor([0, 1, 2]), torch.tensor([3, 3, 0])
    for mod in (ts.ExpectedCostLoss(tax), ts.PairwiseCostLoss(tax), ts.TreeWassersteinLoss(tax),
                ts.HXELoss(tax, 0.5), ts.HierarchicalSoftLabelLoss(tax, 2.0),
                ts.ExpectedCostLoss(ts.cost_matrix(tax)), ts.PairwiseCostLoss(ts.cost_matrix(tax))):
        with pytest.warns(torch.jit.TracerWarning):
            traced = torch.jit.trace(mod, (z, t1), check_trace=False)
        torch.testing.assert_close(traced(z, t2), mod(z, t2), msg=type(mod).__name__)
        torch.testing.assert_close(traced(z * 2, t1), mod(z * 2, t1), msg=type(mod).__name__)


def test_compiled_out_of_range_target_has_the_losss_message(seed_tax):
    torch._dynamo.reset()
    mod = ts.ExpectedCostLoss(seed_tax)
    f = torch.compile(lambda z, t: mod(z, t), backend="inductor")
    f(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(RuntimeError, match=r"ExpectedCostLoss: a target is out of range; expected class indices"):
        f(torch.randn(2, 4), torch.tensor([0, 4]))


def test_compiled_losses_raise_no_dynamo_warning_about_our_code():
    """Dynamo runs the losses' eager parts after a graph break; the torch.func probe must not make it warn that
    it cannot trace a builtin (a warning with torch internals on every user's console). In a fresh process:
    Dynamo warns once per process."""
    import subprocess
    import sys

    code = (
        "import torch, taxosmooth as ts\n"
        "tax = ts.Taxonomy.from_nested({'a': {'b': ['x', 'y'], 'c': ['z', 'w']}})\n"
        "for mod in (ts.HXELoss(tax, 0.5), ts.ExpectedCostLoss(tax), ts.TreeWassersteinLoss(tax)):\n"
        "    f = torch.compile(lambda z, t: mod(z, t), backend='eager')\n"
        "    z = torch.randn(3, 4)\n"
        "    torch.testing.assert_close(f(z, torch.tensor([0, 1, 3])), mod(z, torch.tensor([0, 1, 3])))\n"
    )
    done = subprocess.run([sys.executable, "-W", "always::UserWarning", "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Dynamo does not know how to trace" not in done.stderr, done.stderr[-2000:]


# ----------------------------------------------------------------------------- state
def test_state_dict_names_its_taxonomy():
    tax = seed_taxonomy()
    other = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["shark", "whale"]}})
    for cls, args in ((ts.HXELoss, (0.5,)), (ts.HierarchicalSoftLabelLoss, (2.0,)), (ts.TreeWassersteinLoss, ()),
                      (ts.ExpectedCostLoss, ()), (ts.PairwiseCostLoss, ())):
        sd = cls(tax, *args).state_dict()
        cls(seed_taxonomy(), *args).load_state_dict(sd)  # an equal taxonomy loads
        with pytest.raises(RuntimeError, match="saved by a loss built on another taxonomy"):
            cls(other, *args).load_state_dict(sd)
        model = torch.nn.Sequential(torch.nn.Linear(2, 4), cls(tax, *args))
        torch.nn.Sequential(torch.nn.Linear(2, 4), cls(seed_taxonomy(), *args)).load_state_dict(model.state_dict())


# ----------------------------------------------------------------------------- shapes of real inputs
def test_non_contiguous_and_half_inputs(seed_tax):
    w = torch.randn(4, 3)
    x = torch.randn(5, 3)
    logits = (w @ x.T).T  # non-contiguous
    assert not logits.is_contiguous()
    t = torch.tensor([0, 1, 2, 3, 0])
    for mod in (ts.PairwiseCostLoss(seed_tax), ts.PairwiseCostLoss(ts.cost_matrix(seed_tax)),
                ts.ExpectedCostLoss(seed_tax), ts.HXELoss(seed_tax, 0.5)):
        torch.testing.assert_close(mod(logits, t), mod(logits.contiguous(), t))
    # the library's own soft targets in half precision are valid matrices
    for dtype in (torch.float16, torch.bfloat16):
        q = ts.soft_targets(seed_tax, 3.0, dtype=dtype)
        loss = ts.SoftTargetCrossEntropy(q)
        assert loss.matrix.dtype == dtype
        torch.testing.assert_close(loss(torch.zeros(2, 4), torch.tensor([0, 2])), torch.log(torch.tensor(4.0)),
                                   rtol=1e-2, atol=1e-2)


def test_deep_chain_stays_linear_in_memory():
    """A 2-class chain of depth 100,000: the losses' tables and one step are O(nodes), not O(depth²)."""
    depth = 100_000
    edges = [(f"n{i}", f"n{i + 1}") for i in range(depth)] + [("n0", "x")]
    tax = ts.Taxonomy.from_edges(edges)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for mod in (ts.HXELoss(tax, 0.5), ts.HierarchicalSoftLabelLoss(tax, 2.0), ts.TreeWassersteinLoss(tax)):
        assert mod.tree.num_rings == 2  # the unary chain is skipped
        z = torch.randn(64, 2, requires_grad=True)
        mod(z, torch.randint(0, 2, (64,))).backward()
        assert torch.isfinite(z.grad).all()
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 1024 * 1024, f"peak RSS grew by {grown_kib / 1024:.0f} MiB"


def test_a_path_table_over_its_size_is_replaced_by_a_search(monkeypatch):
    """A comb (every spine node has a class and the next spine node): C classes below up to C branching
    ancestors. Over the table size the paths come from a binary search over the branching nodes: the same
    losses, O(nodes) buffers."""
    depth = 60
    edges = [(f"s{i}", f"s{i + 1}") for i in range(depth)] + [(f"s{i}", f"x{i}") for i in range(depth + 1)]
    tax = ts.Taxonomy.from_edges(edges)
    C, N = tax.num_classes, tax.num_nodes
    g = torch.Generator().manual_seed(0)
    z = torch.randn(N, C, generator=g, dtype=torch.float64)
    ids = torch.arange(N)
    made = [lambda: ts.HXELoss(tax, 0.5, coarse_labels=True, reduction="none"),
            lambda: ts.HierarchicalSoftLabelLoss(tax, 2.0, coarse_labels=True, reduction="none"),
            lambda: ts.TreeWassersteinLoss(tax, coarse_labels=True, reduction="none"),
            lambda: ts.ExpectedCostLoss(tax, coarse_labels=True, reduction="none"),
            lambda: ts.PairwiseCostLoss(tax, coarse_labels=True, reduction="none")]
    tabled = [make() for make in made]
    assert all(m.tree.uses_path_table for m in tabled)
    monkeypatch.setattr(tables, "PATH_TABLE_BYTES", 0)
    searched = [make() for make in made]
    for a, b in zip(tabled, searched):
        assert not b.tree.uses_path_table
        assert b.tree.buffer_bytes() < a.tree.buffer_bytes()
        pa, pb = a.tree.paths(ids), b.tree.paths(ids)
        assert torch.equal(pa.path, pb.path) and torch.equal(pa.lengths, pb.lengths)
        za, zb = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        va, vb = a(za, ids), b(zb, ids)
        va.sum().backward()
        vb.sum().backward()
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=type(a).__name__)
        torch.testing.assert_close(za.grad, zb.grad, rtol=0, atol=0, msg=type(a).__name__)


def test_a_deep_clade_beside_many_shallow_classes_keeps_buffers_linear():
    """20,000 classes two levels deep and one 600-deep clade: the buffers grow with the nodes, not with
    classes × deepest path (the ring tables of earlier versions took 103 MB here)."""
    shallow = [(f"g{i // 20}", f"c{i}") for i in range(20_000)] + [("root", f"g{i}") for i in range(1000)]
    clade = [("root", "k0")] + [(f"k{i}", f"k{i + 1}") for i in range(600)] + \
        [(f"k{i}", f"leaf{i}") for i in range(600)]
    tax = ts.Taxonomy.from_edges(shallow + clade)
    loss = ts.HXELoss(tax, 0.5)
    per_node = loss.buffer_bytes() / tax.num_nodes
    assert per_node < 400, f"{per_node:.0f} bytes per node"
    z = torch.randn(4, tax.num_classes, requires_grad=True)
    t = torch.tensor([0, 1, tax.class_index("leaf599"), tax.class_index("leaf3")])
    loss(z, t).backward()
    assert torch.isfinite(z.grad).all()
