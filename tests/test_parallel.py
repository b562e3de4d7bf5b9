"""Class-sharded losses over torch.distributed (gloo, 2 and 4 CPU processes) against the one-process loss.

Each rank holds the columns of its shard (``shard_classes``) of float64 logits; every loss and target kind must
give every rank the one-process loss on the whole logits (to 1e-10), and each rank the gradient of its columns
(to 1e-10). A counting wrapper around ``torch.distributed`` pins the collectives: two in the forward
(``all_gather`` then ``all_reduce``, each of O(batch × boundary) numbers), none in the backward.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
from _spawn import run_ranks
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import taxosmooth as ts
from taxosmooth.parallel import shard_bounds, shard_classes, shard_plan

# classes not in depth-first order, unary chains (b1 -> b2 -> b3, d -> d5 -> d6), leaves at depths 1-4
TREE = {"r": {"a": {"a1": None, "a2": {"a3": None, "a4": None}}, "b": {"b1": {"b2": {"b3": None}}},
              "c": ["c1", "c2", "c3"], "d": {"d1": ["d2", "d3"], "d4": None, "d5": {"d6": ["d7", "d8"]}}, "e": None}}
CLASSES = ["c2", "a1", "b3", "a4", "c1", "d7", "a3", "c3", "d2", "e", "d3", "d4", "d8"]
SMALL = {"r": {"x": ["x1", "x2"], "y": ["y1", "y2", "y3"]}}  # 5 classes: on 4 ranks, ranks holding one class


def taxonomy(name: str = "tree") -> ts.Taxonomy:
    """``"tree"``, ``"small"``, or ``"searched"``: the tree, its paths searched per batch instead of tabulated (set
    by the worker)."""
    if name == "small":
        return ts.Taxonomy.from_nested(SMALL)
    return ts.Taxonomy.from_nested(TREE, classes=CLASSES)


LOSSES = {
    "soft": lambda tax, **k: ts.HierarchicalSoftLabelLoss(tax, 2.0, **k),
    "soft_mix": lambda tax, **k: ts.HierarchicalSoftLabelLoss(tax, 3.0, mix=0.4, **k),
    "hxe": lambda tax, **k: ts.HXELoss(tax, 0.5, **k),
    "cost": lambda tax, **k: ts.ExpectedCostLoss(tax, ce_weight=0.3, **k),
    "pairwise": lambda tax, **k: ts.PairwiseCostLoss(tax, **k),
    "wasserstein": lambda tax, **k: ts.TreeWassersteinLoss(tax, ce_weight=0.2, **k),
    "soft_target": lambda tax, **k: ts.SoftTargetCrossEntropy(ts.soft_targets(tax, 2.0), **k),
    "soft_target_rows": lambda tax, **k: ts.SoftTargetCrossEntropy(**{"weight": torch.ones(tax.num_classes), **k}),
    "cost_matrix": lambda tax, **k: ts.ExpectedCostLoss(ts.cost_matrix(tax) ** 1.5, ce_weight=0.3, **k),
    "pairwise_matrix": lambda tax, **k: ts.PairwiseCostLoss(ts.cost_matrix(tax) ** 1.5, **k),
}
MATRIX = ("soft_target", "soft_target_rows", "cost_matrix", "pairwise_matrix")  # built without a taxonomy
KINDS = ["ids", "prob", "smooth", "weighted", "weighted_ids", "ignored_sum", "spatial_none", "coarse", "coarse_ids",
         "coarse_weighted"]
PATH_FORM = ("ids", "weighted_ids", "ignored_sum", "spatial_none", "coarse_ids")  # class ids without smoothing


def _skip(loss: str, kind: str) -> bool:
    if kind in ("coarse", "coarse_weighted"):
        return loss != "hxe"
    if kind == "coarse_ids":
        return loss not in ("hxe", "soft", "soft_mix", "cost", "wasserstein", "pairwise")
    if loss == "soft_target_rows":
        return kind not in ("prob", "spatial_none")
    return False


def cases(tax: ts.Taxonomy):
    """(key, loss options, target, logits) of every case, deterministic."""
    C = tax.num_classes
    g = torch.Generator().manual_seed(7)
    out = []
    for loss in LOSSES:
        for kind in KINDS:
            if _skip(loss, kind):
                continue
            options: dict = {}
            z = 3 * torch.randn(6, C, generator=g, dtype=torch.float64)
            if kind == "prob" or (loss == "soft_target_rows" and kind != "spatial_none"):
                t = torch.softmax(torch.randn(6, C, generator=g, dtype=torch.float64), 1)
                if loss == "wasserstein":
                    options["weight"] = torch.linspace(0.5, 1.5, C, dtype=torch.float64)
            elif kind == "spatial_none":
                z = 3 * torch.randn(2, C, 3, generator=g, dtype=torch.float64)
                t = torch.randint(0, C, (2, 3), generator=g)
                if loss == "soft_target_rows":
                    t = torch.softmax(torch.randn(2, C, 3, generator=g, dtype=torch.float64), 1)
                options["reduction"] = "none"
            elif kind in ("coarse", "coarse_ids", "coarse_weighted"):
                t = torch.randint(0, tax.num_nodes, (6,), generator=g)
                options.update(coarse_labels=True, label_smoothing=0.0 if kind == "coarse_ids" else 0.1)
                if kind in ("coarse_ids", "coarse_weighted"):
                    options["weight"] = torch.linspace(0.25, 2.0, C, dtype=torch.float64)
            else:
                t = torch.randint(0, C, (6,), generator=g)
                if kind == "smooth":
                    options["label_smoothing"] = 0.15
                if kind == "weighted":
                    options.update(weight=torch.linspace(0.25, 2.0, C, dtype=torch.float64), label_smoothing=0.1)
                if kind == "weighted_ids":
                    options["weight"] = torch.linspace(0.25, 2.0, C, dtype=torch.float64)
                if kind == "ignored_sum":
                    t[[1, 4]] = -100
                    options["reduction"] = "sum"
            out.append((f"{loss}-{kind}", loss, options, t, z))
    return out


def _columns(loss: str, tax: ts.Taxonomy, world: int, rank: int) -> torch.Tensor:
    if loss in MATRIX:  # built from a matrix (or none): consecutive class ids
        cuts = shard_bounds(ts.Taxonomy.from_nested({"_all": [f"c{i}" for i in range(tax.num_classes)]},
                                                    classes="tree"), world)
        return torch.arange(int(cuts[rank]), int(cuts[rank + 1]))
    return shard_classes(tax, world)[rank]


class Counter:
    """Counts the collectives (name, number of elements) while active."""

    def __init__(self):
        self.calls: list[tuple[str, int]] = []
        self._saved = {}

    def __enter__(self):
        for name in ("all_reduce", "all_gather_single", "all_gather_into_tensor", "all_gather", "broadcast",
                     "reduce_scatter_tensor"):
            original = getattr(dist, name, None)
            if original is None:
                continue
            self._saved[name] = original

            def wrapped(tensor_or_out, *a, _name=name, _orig=original, **k):
                self.calls.append((_name, int(tensor_or_out.numel())))
                return _orig(tensor_or_out, *a, **k)

            setattr(dist, name, wrapped)
        return self

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(dist, name, original)


class HostReads(TorchDispatchMode):
    """Records the operations that read a tensor's values on the host (a GPU would synchronise) from the sharded
    code (the shared target checks read CPU tensors only on the CPU, where it costs nothing)."""

    READS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::equal", "aten::is_nonzero")

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in self.READS:
            import traceback

            where = [f for f in traceback.extract_stack() if "taxosmooth" in f.filename]
            if where and ("parallel" in where[-1].filename or "tree_ops" in where[-1].filename):
                self.ops.append(f"{func._schema.name} at {where[-1].filename}:{where[-1].lineno}")
        return func(*args, **(kwargs or {}))


def _sharded_worker(rank: int, world: int, out_dir: str, tree_name: str) -> None:
    if tree_name == "searched":  # no path tables: the paths of each batch are searched
        from taxosmooth.tree_ops import tables

        tables.PATH_TABLE_BYTES = 0
    tax = taxonomy(tree_name)
    results = {}
    ts.set_checks("device")  # the collectives of a GPU run: no agreement round
    try:
        for key, loss, options, t, z in cases(tax):
            cols = _columns(loss, tax, world, rank)
            mod = LOSSES[loss](tax, process_group=dist.group.WORLD, **options)
            zl = z.index_select(1, cols).clone().requires_grad_()
            tl = t.index_select(1, cols) if t.is_floating_point() else t
            with Counter() as fwd, HostReads() as reads:
                value = mod(zl, tl)
            with Counter() as bwd, reads:
                value.sum().backward()
            results[key] = {"value": value.detach(), "grad": zl.grad, "forward": fwd.calls, "backward": bwd.calls,
                            "host_reads": reads.ops}
    finally:
        ts.set_checks("auto")
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


@functools.lru_cache(maxsize=None)
def _reference(tree_name: str):
    tax = taxonomy(tree_name)
    out = {}
    for key, loss, options, t, z in cases(tax):
        zz = z.clone().requires_grad_()
        value = LOSSES[loss](tax, **options)(zz, t)
        value.sum().backward()
        out[key] = (value.detach(), zz.grad)
    return out


@pytest.fixture(scope="module", params=[("tree", 2), ("tree", 4), ("small", 4), ("searched", 2)], ids=lambda p: f"{p[0]}-{p[1]}ranks")
def sharded_results(request, tmp_path_factory):
    tree_name, world = request.param
    out = tmp_path_factory.mktemp(f"shards{world}")
    run_ranks(_sharded_worker, world, str(out), tree_name)
    return tree_name, world, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.mark.distributed
def test_every_loss_and_target_kind_equals_one_process(sharded_results):
    tree_name, world, per_rank = sharded_results
    tax = taxonomy(tree_name)
    ref = _reference(tree_name)
    assert set(per_rank[0]) == set(ref)
    for key, (value, grad) in ref.items():
        loss = key.split("-")[0]
        for rank, res in enumerate(per_rank):
            got = res[key]
            torch.testing.assert_close(got["value"], value, rtol=1e-10, atol=1e-10, msg=f"{key} rank {rank} value")
            cols = _columns(loss, tax, world, rank)
            torch.testing.assert_close(got["grad"], grad.index_select(1, cols), rtol=1e-10, atol=1e-10,
                                       msg=f"{key} rank {rank} gradient")


@pytest.mark.distributed
def test_two_collectives_forward_none_backward(sharded_results):
    tree_name, world, per_rank = sharded_results
    tax = taxonomy(tree_name)
    for key, loss, options, t, z in cases(tax):
        rows = z.shape[0] * (z.shape[2] if z.dim() == 3 else 1)
        for rank, res in enumerate(per_rank):
            calls = res[key]["forward"]
            names = [name for name, _ in calls]
            # class ids on their paths: one all-gather; the node form: an all-gather and an all-reduce
            kind = key.split("-")[1]
            path_form = kind in PATH_FORM and loss not in MATRIX
            # the pairwise path form needs collective 2 (the rows' terms against the target's logit)
            want = ["all_gather_single"] + (["all_reduce"] if loss == "pairwise" or not path_form else [])
            through_matrix = kind == "prob" and loss in ("soft_target", "cost_matrix", "pairwise_matrix")
            if through_matrix:  # the target rows through a dense matrix: one all-reduce of N x C first
                want = ["all_reduce"] + want
            assert names == want, (key, calls)
            boundary = int(shard_plan(tax, world, rank).boundary.numel()) if loss not in MATRIX else 1
            segments = 2 * ts.tree_ops.tree_tensors(tax).num_rings - 1
            for i, (_, numel) in enumerate(calls):  # O(batch × (boundary + depth)): per boundary node, segment, row
                if through_matrix and i == 0:
                    assert numel == rows * tax.num_classes, (key, calls)
                    continue
                assert numel <= world * rows * (4 * boundary + 3 * segments + 8), (key, calls)
            assert res[key]["backward"] == [], key
            assert res[key]["host_reads"] == [], (key, res[key]["host_reads"])  # "device" checks: no host read


def _errors_worker(rank: int, world: int, out_dir: str) -> None:
    tax = taxonomy()
    C = tax.num_classes
    cols = shard_classes(tax, world)[rank]
    g = torch.Generator().manual_seed(11)  # the same numbers on every rank
    z = torch.randn(4, C, dtype=torch.float64, generator=g)
    errors = {}

    def attempt(name, fn):
        try:
            fn()
            errors[name] = None
        except Exception as exc:  # noqa: BLE001 - the message is the result
            errors[name] = f"{type(exc).__name__}: {exc}"

    group = dist.group.WORLD
    loss = ts.HXELoss(tax, 0.5, process_group=group)
    wrong = cols[:-1] if rank == world - 1 else cols  # the last rank drops a column
    attempt("width", lambda: loss(z.index_select(1, wrong), torch.tensor([0, 1, 2, 3])))
    attempt("target", lambda: loss(z.index_select(1, cols), torch.tensor([0, C, 2, 3])))
    p = torch.softmax(torch.randn(4, C, dtype=torch.float64, generator=g), 1)
    p[2] *= 0.5
    attempt("sums", lambda: loss(z.index_select(1, cols), p.index_select(1, cols)))
    ts.set_checks("device")  # a GPU's checks: an asynchronous assertion, no host read
    try:
        attempt("sums_device", lambda: loss(z.index_select(1, cols), p.index_select(1, cols)))
    finally:
        ts.set_checks("auto")
    q = torch.softmax(torch.randn(4, C, dtype=torch.float64, generator=g), 1)
    if rank == 0:
        q[1, cols[0]] = -0.25
    attempt("negative", lambda: loss(z.index_select(1, cols), q.index_select(1, cols)))
    attempt("coarse_smoothed", lambda: ts.ExpectedCostLoss(tax, coarse_labels=True, label_smoothing=0.1,
                                                            process_group=group)(
        z.index_select(1, cols), torch.tensor([0, 1, 2, 3])))
    # after every refusal the group still works: one more loss, the same on every rank
    errors["after"] = float(loss(z.index_select(1, cols), torch.tensor([0, 1, 2, 3])))
    # a DTensor sharded on the class dimension (torch.chunk's split: slack=0), the logits in depth-first order
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard

    mesh = init_device_mesh("cpu", (world,))
    even = shard_classes(tax, world, slack=0.0)[rank]
    local = z.index_select(1, even).clone().requires_grad_()
    dz = DTensor.from_local(local, mesh, [Shard(1)], run_check=False)
    dloss = ts.HXELoss(tax, 0.5, process_group=mesh.get_group(), shard_slack=0.0)
    value = dloss(dz, torch.tensor([0, 1, 2, 3]))
    value.backward()
    errors["dtensor"] = (float(value), local.grad.clone(), even)
    torch.save(errors, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.distributed
def test_misuse_is_named_on_every_rank_never_a_hang(tmp_path):
    world = 2
    run_ranks(_errors_worker, world, str(tmp_path), timeout=180)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    tax = taxonomy()
    for errors in per_rank:
        assert "disagree with the shards" in errors["width"] and "holds" in errors["width"], errors["width"]
        assert errors["target"].startswith("IndexError") and f"[0, {tax.num_classes})" in errors["target"]
        assert "row 2" in errors["sums"] and "across the 2 ranks" in errors["sums"], errors["sums"]
        assert "does not sum to 1 across the 2 ranks" in errors["sums_device"], errors["sums_device"]
        assert "row 1" in errors["negative"] and "negative or non-finite" in errors["negative"], errors["negative"]
        assert "coarse labels with label_smoothing and process_group" in errors["coarse_smoothed"]
    assert per_rank[0]["after"] == per_rank[1]["after"]
    z = torch.randn(4, tax.num_classes, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    zz = z.clone().requires_grad_()
    want = ts.HXELoss(tax, 0.5)(zz, torch.tensor([0, 1, 2, 3]))
    want.backward()
    for errors in per_rank:
        value, grad, cols = errors["dtensor"]
        assert abs(value - want.item()) < 1e-10
        torch.testing.assert_close(grad, zz.grad.index_select(1, cols), rtol=1e-10, atol=1e-10)


def _decisions_worker(rank: int, world: int, out_dir: str) -> None:
    tax = taxonomy()
    cols = shard_classes(tax, world)[rank]
    g = torch.Generator().manual_seed(5)
    logits = 2 * torch.randn(9, tax.num_classes, dtype=torch.float64, generator=g)
    logits[0, :] = 0.0  # ties: every class equal
    local = logits.index_select(1, cols)
    out = {
        "topk": ts.parallel.topk(local, 4, tax)[1],
        "bottomk": ts.parallel.topk(local, 3, tax, largest=False)[1],
        "nodes": ts.parallel.node_probabilities(local, tax, from_logits=True),
        "threshold_0.3": ts.parallel.predict_node(local, tax, threshold=0.3, from_logits=True),
        "threshold_0.6": ts.parallel.predict_node(local, tax, threshold=0.6, from_logits=True),
        "crm": ts.parallel.crm_predict(local, tax, from_logits=True),
        "crm_3": ts.parallel.crm_predict(local, tax, k=3, from_logits=True),
        "probs_crm": ts.parallel.crm_predict(torch.softmax(logits, 1).index_select(1, cols), tax),
        "crm_path": ts.parallel.crm_predict(local, tax, from_logits=True, distance="path_length"),
        "crm_path_2": ts.parallel.crm_predict(local, tax, k=2, from_logits=True, distance="path_length"),
    }
    torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.distributed
@pytest.mark.parametrize("world", [2, 4])
def test_sharded_decisions_equal_one_process(tmp_path, world):
    run_ranks(_decisions_worker, world, str(tmp_path), timeout=180)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    tax = taxonomy()
    g = torch.Generator().manual_seed(5)
    logits = 2 * torch.randn(9, tax.num_classes, dtype=torch.float64, generator=g)
    logits[0, :] = 0.0
    probs = torch.softmax(logits, 1)
    want_topk = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :4]
    want_bottom = torch.sort(logits, dim=1, stable=True).indices[:, :3]
    P = ts.node_probabilities(probs, tax)
    for rank, got in enumerate(per_rank):
        assert torch.equal(got["topk"], want_topk) and torch.equal(got["bottomk"], want_bottom)
        ids, local_P = got["nodes"]
        torch.testing.assert_close(local_P, P.index_select(1, ids), rtol=1e-12, atol=1e-12)
        for tau in (0.3, 0.6):
            want = ts.predict_node(probs, tax, threshold=tau)
            assert torch.equal(got[f"threshold_{tau}"], want), (rank, tau)
        # row 0 (every class equal) has exact ties in the expected costs, broken by rounding: compare the costs
        risk = ts.conditional_risk(probs, tax)
        path_risk = ts.conditional_risk(probs, tax, distance="path_length")
        for key, k, dist_kind, r in (("crm", 1, None, risk), ("crm_3", 3, None, risk), ("probs_crm", 1, None, risk),
                                     ("crm_path", 1, "path_length", path_risk),
                                     ("crm_path_2", 2, "path_length", path_risk)):
            want = ts.crm_predict(probs, tax, k=k, distance=dist_kind)
            assert torch.equal(got[key][1:], want[1:]), (rank, key)
            chosen = got[key][:1].reshape(1, -1)
            torch.testing.assert_close(r[:1].gather(1, chosen), r[:1].gather(1, want[:1].reshape(1, -1)),
                                       rtol=1e-12, atol=1e-12)


def _edges_worker(rank: int, world: int, out_dir: str) -> None:
    """Edge cases where a sharded loss must give the one-process number (see the test)."""
    tax = taxonomy()
    C = tax.num_classes
    cols = shard_classes(tax, world)[rank]
    z, t = _edge_inputs(C)
    out = {}
    for name, (options, zz, tt) in _edge_cases(C, z, t).items():
        loss_name, *_ = name.split("/")
        mod = LOSSES[loss_name](tax, process_group=dist.group.WORLD, **options)
        zl = zz.index_select(1, cols).clone().requires_grad_()
        value = mod(zl, tt)
        value.sum().backward()
        out[name] = (value.detach(), zl.grad, cols)
    # a NaN logit on one rank: a ValueError on every rank, the holder naming it
    bad = z.index_select(1, cols).clone()
    if rank == world - 1:
        bad[1, 0] = float("nan")
    try:
        LOSSES["hxe"](tax, process_group=dist.group.WORLD)(bad, t)
        out["nan"] = None
    except ValueError as exc:
        out["nan"] = str(exc)
    torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))


def _edge_inputs(C):
    g = torch.Generator().manual_seed(21)
    return torch.randn(4, C, dtype=torch.float64, generator=g), torch.tensor([0, 5, 7, 2])


def _edge_cases(C, z, t):
    w0 = torch.ones(C, dtype=torch.float64)
    w0[0] = 0.0  # target 0 weighs nothing, and its logit is -inf
    minus_inf = z.clone()
    minus_inf[0, 0] = float("-inf")
    low = z.clone()
    low[1] -= 800.0  # the row's log-sum-exp below exp's range
    cases = {}
    for loss in ("hxe", "soft", "cost", "wasserstein", "pairwise"):
        cases[f"{loss}/weight0"] = ({"weight": w0, "reduction": "none"}, minus_inf, t)
        cases[f"{loss}/weight0_sum"] = ({"weight": w0, "reduction": "sum"}, minus_inf, t)
        cases[f"{loss}/low"] = ({"reduction": "none"}, low, t)
        cases[f"{loss}/half"] = ({}, z.float(), t)
        cases[f"{loss}/nothing"] = ({"weight": torch.zeros(C, dtype=torch.float64)}, z, t)  # mean of nothing
    return cases


@pytest.mark.distributed
def test_edge_cases_equal_one_process_and_a_nan_logit_is_named_on_every_rank(tmp_path):
    world = 2
    run_ranks(_edges_worker, world, str(tmp_path), timeout=180)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    tax = taxonomy()
    C = tax.num_classes
    z, t = _edge_inputs(C)
    for name, (options, zz, tt) in _edge_cases(C, z, t).items():
        loss_name = name.split("/")[0]
        x = zz.clone().requires_grad_()
        want = LOSSES[loss_name](tax, **options)(x, tt)
        want.sum().backward()
        for got in per_rank:
            value, grad, cols = got[name]
            assert value.dtype == want.dtype, name  # float32 for half logits, as one process
            tol = 1e-5 if zz.dtype == torch.float32 else 1e-10
            torch.testing.assert_close(value, want.detach(), rtol=tol, atol=tol, equal_nan=True, msg=name)
            if not torch.isnan(want).any():
                torch.testing.assert_close(grad.to(x.grad.dtype), x.grad.index_select(1, cols), rtol=tol, atol=tol,
                                           msg=name)
            else:  # the mean of nothing: nan, with a zero gradient
                assert torch.equal(grad, torch.zeros_like(grad)), name
    holder, other = per_rank[world - 1]["nan"], per_rank[0]["nan"]
    assert holder is not None and "is nan at column 0" in holder, holder
    assert other is not None and f"a logit of rank {world - 1} is NaN or +inf" in other, other


def _linear_cases(tax, y):
    """(loss, target kind, reduction, options, target) for linear_loss over sharded weight rows."""
    g = torch.Generator().manual_seed(12)
    mix = torch.softmax(torch.randn(y.shape[0], tax.num_classes, dtype=torch.float64, generator=g), 1)
    weight = torch.rand(tax.num_classes, dtype=torch.float64, generator=g) + 0.5
    out = []
    for name in ("hxe", "soft", "cost", "wasserstein", "pairwise"):
        for reduction in ("mean", "none"):
            out.append((name, "ids", reduction, {}, y))
        out.append((name, "prob", "mean", {}, mix))
        out.append((name, "smooth", "sum", {"label_smoothing": 0.1}, y))
        out.append((name, "weighted", "mean", {"weight": weight}, y))
    return out


def _linear_worker(rank: int, world: int, out_dir: str) -> None:
    """linear_loss over each rank's weight rows with a sharded loss: chunks of rows, every chunk meeting the
    other ranks."""
    tax = taxonomy()
    cols = shard_classes(tax, world)[rank]
    g = torch.Generator().manual_seed(11)
    h = torch.randn(10, 6, dtype=torch.float64, generator=g)
    w = torch.randn(tax.num_classes, 6, dtype=torch.float64, generator=g)
    b = torch.randn(tax.num_classes, dtype=torch.float64, generator=g)
    y = torch.randint(0, tax.num_classes, (10,), generator=g)
    out = {}
    for name, kind, reduction, options, t in _linear_cases(tax, y):
        hh = h.clone().requires_grad_()
        wl = w.index_select(0, cols).clone().requires_grad_()
        bl = b.index_select(0, cols).clone().requires_grad_()
        mod = LOSSES[name](tax, process_group=dist.group.WORLD, reduction=reduction, **options)
        tl = t.index_select(1, cols) if t.is_floating_point() else t
        value = ts.linear_loss(hh, wl, tl, mod, bias=bl, chunk_size=3)
        value.sum().backward()
        out[(name, kind, reduction)] = (value.detach(), hh.grad, wl.grad, bl.grad, cols)
    torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.distributed
def test_linear_loss_over_sharded_weight_rows_equals_one_process(tmp_path):
    world = 2
    run_ranks(_linear_worker, world, str(tmp_path), timeout=180)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    tax = taxonomy()
    g = torch.Generator().manual_seed(11)
    h = torch.randn(10, 6, dtype=torch.float64, generator=g)
    w = torch.randn(tax.num_classes, 6, dtype=torch.float64, generator=g)
    b = torch.randn(tax.num_classes, dtype=torch.float64, generator=g)
    y = torch.randint(0, tax.num_classes, (10,), generator=g)
    cases = _linear_cases(tax, y)
    assert set(per_rank[0]) == {c[:3] for c in cases}
    for name, kind, reduction, options, t in cases:
        hh, ww, bb = (x.clone().requires_grad_() for x in (h, w, b))
        want = LOSSES[name](tax, reduction=reduction, **options)(torch.nn.functional.linear(hh, ww, bb), t)
        want.sum().backward()
        for got in per_rank:
            value, gh, gw, gb, cols = got[(name, kind, reduction)]
            torch.testing.assert_close(value, want.detach(), rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(gh, hh.grad, rtol=1e-10, atol=1e-10)  # summed over the ranks
            torch.testing.assert_close(gw, ww.grad.index_select(0, cols), rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(gb, bb.grad.index_select(0, cols), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ the shards themselves (one process)
def _random_tree(draw_sizes):
    """A random tree from a list of child counts (breadth first), as nested dicts."""
    names = iter(f"n{i}" for i in range(10_000))
    root = next(names)
    tree: dict = {root: {}}
    frontier = [tree[root]]
    for k in draw_sizes:
        if not frontier:
            break
        node = frontier.pop(0)
        for _ in range(k):
            child = next(names)
            node[child] = {}
            frontier.append(node[child])
    def clean(d):
        return {k: (clean(v) if v else None) for k, v in d.items()}
    return ts.Taxonomy.from_nested(clean(tree))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=2, max_size=30), st.integers(1, 6), st.sampled_from([0.0, 0.02, 0.3]))
def test_shards_are_runs_of_leaves_that_cover_every_class(sizes, world, slack):
    tax = _random_tree(sizes)
    C = tax.num_classes
    if world > C:
        with pytest.raises(ValueError, match="every rank must hold"):
            shard_classes(tax, world, slack)
        return
    parts = shard_classes(tax, world, slack)
    assert len(parts) == world and all(len(p) >= 1 for p in parts)
    leaf_order = tax.compiled.position_class
    assert np.array_equal(np.concatenate([p.numpy() for p in parts]), leaf_order)  # DFS runs, every class once
    if slack == 0 and -(-C // world) * (world - 1) < C:
        assert [len(p) for p in parts] == [len(c) for c in torch.arange(C).chunk(world)]  # DTensor's split
    cuts = shard_bounds(tax, world, slack)
    c = tax.compiled
    for rank in range(world):
        plan = shard_plan(tax, world, rank, slack)
        # the boundary: every node whose leaves straddle a cut (a loop over nodes and cuts)
        want = [u for u in range(c.num_nodes) if any(c.leaf_lo[u] < k < c.leaf_hi[u] for k in cuts[1:-1])]
        assert sorted(plan.boundary.tolist()) == want
        local = [u for u in range(c.num_nodes) if c.leaf_lo[u] < cuts[rank + 1] and c.leaf_hi[u] > cuts[rank]]
        assert sorted(plan.nodes.tolist()) == local


def test_cuts_move_to_shallow_boundaries_within_the_slack():
    tax = ts.Taxonomy.from_nested({"r": {f"g{i}": [f"g{i}s{j}" for j in range(10)] for i in range(10)}})
    even = shard_bounds(tax, 3, slack=0.0)
    moved = shard_bounds(tax, 3, slack=0.3)
    assert even.tolist() == [0, 34, 68, 100]  # torch.chunk's sizes
    assert moved.tolist() == [0, 30, 70, 100]  # the genus boundaries nearby: only the root straddles
    assert shard_plan(tax, 3, 0, 0.3).boundary.tolist() == [0]


def test_process_group_needs_an_initialised_group():
    tax = taxonomy()
    with pytest.raises(RuntimeError, match="not initialised"):
        ts.HXELoss(tax, 0.5, process_group=object())
