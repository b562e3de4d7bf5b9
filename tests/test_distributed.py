"""Two CPU processes (gloo) train under DistributedDataParallel with a taxosmooth loss.

The trained weights must equal single-process training on the full batch, and
the torchmetrics metrics, each process fed a different (uneven) shard, must
sync to the single-process metrics of the whole evaluation set.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _trees import seed_taxonomy
from torch import nn

import taxosmooth as ts
from taxosmooth import metrics as M

pytestmark = pytest.mark.distributed

WORLD = 2
STEPS = 5
LR = 0.5
FEATURES = 6
EVAL_SPLIT = 7  # rank 0 evaluates 7 samples, rank 1 the rest: uneven on purpose
TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_problem():
    tax = seed_taxonomy()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, FEATURES, generator=g, dtype=torch.float64)
    y = torch.randint(0, tax.num_classes, (16,), generator=g)
    x_eval = torch.randn(23, FEATURES, generator=g, dtype=torch.float64)
    y_eval = torch.randint(0, tax.num_classes, (23,), generator=g)
    model = nn.Linear(FEATURES, tax.num_classes).double()
    with torch.no_grad():
        model.weight.copy_(0.1 * torch.randn(model.weight.shape, generator=g, dtype=torch.float64))
        model.bias.zero_()
    return tax, x, y, x_eval, y_eval, model.state_dict()


def _metrics(tax):
    return {
        "report": M.HierarchicalReport(tax, k=2, calibration=True, from_logits=True),
        "top1": M.TopKError(1),
        "severity": M.MistakeSeverity(tax),
        "hdist@2": M.MeanHierarchicalDistanceAtK(tax, 2),
        "hf1": M.HierarchicalF1(tax),
        "ece": M.ExpectedCalibrationError(n_bins=5, from_logits=True),
        # coarse labels, node predictions, per-level predictions, the operating curve
        "coarse_report": M.HierarchicalReport(tax, k=2, coarse_labels=True),
        "coarse_hf1_macro": M.HierarchicalF1(tax, average="macro", coarse_labels=True),
        "coarse_lca": M.LCAMetrics(tax, coarse_labels=True),
        "node_lca": M.LCAMetrics(tax),
        "depth1": M.AccuracyAtDepth(tax, 1, coarse_labels=True),
        "full_path": M.FullPathAccuracy(tax, coarse_labels=True),
        "consistency": M.PathConsistency(tax),
        "curve": M.HierarchicalOperatingCurve(tax, from_logits=True, coarse_labels=True),
    }


def _inputs(name, tax, logits, y):
    """What each metric is fed: coarse labels (the samples of even classes labelled by their depth-1 ancestor: a
    rule of the sample, not of its position in a shard), node predictions (the threshold rule), per-level
    predictions (the top-1 class's path)."""
    coarse = torch.where(y % 2 == 0, torch.from_numpy(tax.ancestor_at_depth(y.numpy(), 1)), y)
    if name == "report":
        return (logits, y, logits)
    if name == "consistency" or name == "full_path":
        top1 = logits.argmax(1).numpy()
        levels = torch.stack([torch.from_numpy(tax.ancestor_at_depth(top1, d)) for d in range(1, tax.max_depth + 1)], 1)
        return (levels,) if name == "consistency" else (levels, coarse)
    if name == "node_lca":
        return (ts.decision.predict_node(logits, tax, threshold=0.3, from_logits=True), y)
    if name.startswith(("coarse", "depth1", "curve")):
        return (logits, coarse)
    return (logits, y)


def _train(model, loss_fn, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(STEPS):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()


def _evaluate(model, tax, x, y):
    out = {}
    with torch.no_grad():
        logits = model(x)
    for name, metric in _metrics(tax).items():
        metric.update(*_inputs(name, tax, logits, y))
        result = metric.compute()  # syncs the states when a process group exists
        if isinstance(result, M.OperatingCurve):
            result = {"thresholds": result.thresholds, **result.metrics}
        out[name] = result
    return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        tax, x, y, x_eval, y_eval, init = _make_problem()
        model = nn.Linear(FEATURES, tax.num_classes).double()
        model.load_state_dict(init)
        ddp = nn.parallel.DistributedDataParallel(model)
        loss_fn = ts.HierarchicalSoftLabelLoss(tax, beta=2.0)
        shard = slice(rank * 8, (rank + 1) * 8)  # equal shards: the mean of shard means is the batch mean
        _train(ddp, loss_fn, x[shard], y[shard])
        eval_shard = slice(0, EVAL_SPLIT) if rank == 0 else slice(EVAL_SPLIT, None)
        results = _evaluate(model, tax, x_eval[eval_shard], y_eval[eval_shard])
        torch.save({"state": model.state_dict(), "metrics": results}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
    # The work is done and saved: leave without interpreter finalization, where gloo's threads can
    # still abort the process ("terminate called without an active exception", SIGABRT) now and then.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _run_two_processes(out_dir: str) -> None:
    ctx = mp.start_processes(_worker, args=(_free_port(), out_dir), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail(f"the {WORLD} processes did not finish within {TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
                p.join(5)


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    try:
        _run_two_processes(str(out))
    except mp.ProcessExitedException as exc:
        if exc.signal_name is None:  # a Python error in a worker: a real failure
            raise
        # a worker killed by a signal (gloo's threads have aborted processes at start-up or exit under
        # load, "terminate called without an active exception"): one more run, on a fresh port
        _run_two_processes(str(out))
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single_process_results():
    tax, x, y, x_eval, y_eval, init = _make_problem()
    model = nn.Linear(FEATURES, tax.num_classes).double()
    model.load_state_dict(init)
    _train(model, ts.HierarchicalSoftLabelLoss(tax, beta=2.0), x, y)
    return {"state": model.state_dict(), "metrics": _evaluate(model, tax, x_eval, y_eval), "init": init}


def test_weights_equal_single_process_full_batch(distributed_results, single_process_results):
    ref = single_process_results["state"]
    assert not torch.equal(ref["weight"], single_process_results["init"]["weight"])  # training did something
    for res in distributed_results:
        for name, value in res["state"].items():
            torch.testing.assert_close(value, ref[name], rtol=1e-10, atol=1e-12, msg=name)
    # and the two replicas are identical
    for name in ref:
        assert torch.equal(distributed_results[0]["state"][name], distributed_results[1]["state"][name])


def test_synced_metrics_equal_single_process(distributed_results, single_process_results):
    ref = single_process_results["metrics"]
    for res in distributed_results:  # every rank sees the synced (whole-set) value
        got = res["metrics"]
        for name in ref:
            if isinstance(ref[name], dict):
                assert got[name].keys() == ref[name].keys()
                for key in ref[name]:
                    torch.testing.assert_close(got[name][key], ref[name][key], equal_nan=True, msg=f"{name} {key}")
            else:
                torch.testing.assert_close(got[name], ref[name], equal_nan=True, msg=name)


def test_a_shard_alone_differs(single_process_results):
    """Guard against a vacuous pass: one rank's own shard gives different metrics than the whole set."""
    tax, *_, x_eval, y_eval, _ = _make_problem()
    model = nn.Linear(FEATURES, tax.num_classes).double()
    model.load_state_dict(single_process_results["state"])
    alone = _evaluate(model, tax, x_eval[:EVAL_SPLIT], y_eval[:EVAL_SPLIT])
    whole = single_process_results["metrics"]
    assert any(not torch.allclose(alone["report"][k], whole["report"][k], equal_nan=True) for k in whole["report"])
