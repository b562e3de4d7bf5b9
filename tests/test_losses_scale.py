"""Scale: 100,000 classes, depth 8 — the structured losses must never build a (C, C) tensor.

A float32 (C, C) tensor at this size is 40 GB; the forward and backward of
each structured loss on a batch of 32 must stay within a couple of GB of
resident memory (measured as the growth of the process's peak RSS), or of
GPU memory on CUDA (the growth of the allocator's peak).
"""

from __future__ import annotations

import gc
import resource

import numpy as np
import pytest
import torch

import taxosmooth as ts

C, DEPTH, BATCH = 100_000, 8, 32
LIMIT = 2 * 1024**3  # bytes; a dense (C, C) float32 would need 4e10


def level_taxonomy(num_classes: int, depth: int, seed: int = 0) -> ts.Taxonomy:
    """All classes at ``depth``; about ``C^(d/depth)`` nodes at level ``d``, random fan-out."""
    rng = np.random.default_rng(seed)
    sizes = [max(1, round(num_classes ** (d / depth))) for d in range(depth + 1)]
    sizes[-1] = num_classes
    edges = []
    for d in range(1, depth + 1):
        parents = np.sort(np.concatenate([np.arange(sizes[d - 1]), rng.integers(0, sizes[d - 1], sizes[d] - sizes[d - 1])]))
        edges += [(f"{d - 1}_{p}", f"{d}_{i}") for i, p in enumerate(parents)]
    return ts.Taxonomy.from_edges(edges)


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_growth(fn) -> int:
    """Bytes by which the peak resident set grows while ``fn`` runs."""
    gc.collect()
    if _reset_peak() and _status_kib("VmHWM") is not None:
        before = _status_kib("VmRSS")
        fn()
        return (_status_kib("VmHWM") - before) * 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024


def cuda_peak_growth(fn) -> int:
    """Bytes by which the CUDA allocator's peak grows while ``fn`` runs."""
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_structured_losses_at_100k_classes(device):
    tax = level_taxonomy(C, DEPTH)
    assert tax.num_classes == C and tax.max_depth == DEPTH
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(BATCH, C, generator=g).to(device)
    target = torch.randint(0, C, (BATCH,), generator=g).to(device)
    # the new target kinds too: Mixup rows (two classes each), coarse labels (internal nodes), smoothing
    mixed = torch.zeros(BATCH, C)
    mixed[torch.arange(BATCH), target.cpu()] = 0.7
    mixed[torch.arange(BATCH), torch.roll(target.cpu(), 1)] += 0.3
    coarse = torch.from_numpy(tax.encode([tax.parent(tax.classes[int(t)]) for t in target.cpu()]))
    makers = {
        "HierarchicalSoftLabelLoss": lambda **kw: ts.HierarchicalSoftLabelLoss(tax, beta=5.0, **kw),
        "HXELoss": lambda **kw: ts.HXELoss(tax, alpha=0.5, **kw),
        "TreeWassersteinLoss": lambda **kw: ts.TreeWassersteinLoss(tax, **kw),
        "ExpectedCostLoss": lambda **kw: ts.ExpectedCostLoss(tax, **kw),
        "PairwiseCostLoss": lambda **kw: ts.PairwiseCostLoss(tax, **kw),
    }
    kinds = {
        "classes": (dict(), target),
        "probabilities": (dict(), mixed.to(device)),
        "coarse labels": (dict(coarse_labels=True), coarse.to(device)),
        "label smoothing": (dict(label_smoothing=0.1), target),
    }
    for (name, make), (kind, (options, tgt)) in ((m, k) for m in makers.items() for k in kinds.items()):
        out = {}

        def run():
            loss = make(**options).to(device)
            z = logits.clone().requires_grad_(True)
            value = loss(z, tgt)
            value.backward()
            out["value"], out["grad"], out["bytes"] = value.detach(), z.grad, loss.buffer_bytes()

        growth = peak_growth(run) if device == "cpu" else cuda_peak_growth(run)
        name = f"{name}, {kind}"
        assert torch.isfinite(out["value"]) and torch.isfinite(out["grad"]).all(), name
        # every loss is invariant to a shift of a row's logits: its gradient sums to zero over the classes (to
        # float32's rounding of the row's gradient mass; pairwise's mass is the sum of its class costs)
        mass = out["grad"].abs().sum(dim=1).clamp_min(1.0)
        assert (out["grad"].sum(dim=1).abs() / mass).max() < 1e-5, name
        assert growth < LIMIT, f"{name}: peak RSS grew by {growth / 2**30:.2f} GiB"
        assert out["bytes"] < 64 * 2**20, f"{name}: {out['bytes']} bytes of buffers"


@pytest.mark.slow
def test_float32_within_1e_5_of_float64_at_100k_classes():
    """Logits spread over ±30 (probabilities from 1 down to e^-60): float32 losses stay within 1e-5 (relative) of
    the same losses in float64, for every loss and target kind."""
    tax = level_taxonomy(C, DEPTH)
    g = torch.Generator().manual_seed(1)
    logits = (torch.rand(BATCH, C, generator=g, dtype=torch.float64) * 60 - 30)
    target = torch.randint(0, C, (BATCH,), generator=g)
    mixed = torch.zeros(BATCH, C, dtype=torch.float64)
    mixed[torch.arange(BATCH), target] = 0.6
    mixed[torch.arange(BATCH), torch.roll(target, 1)] += 0.4
    coarse = torch.from_numpy(tax.encode([tax.parent(tax.classes[int(t)]) for t in target]))
    makers = {
        "soft labels": lambda **kw: ts.HierarchicalSoftLabelLoss(tax, beta=5.0, **kw),
        "HXE": lambda **kw: ts.HXELoss(tax, alpha=0.5, **kw),
        "tree-Wasserstein": lambda **kw: ts.TreeWassersteinLoss(tax, **kw),
        "expected cost": lambda **kw: ts.ExpectedCostLoss(tax, **kw),
        "pairwise": lambda **kw: ts.PairwiseCostLoss(tax, **kw),
    }
    kinds = {"classes": ({}, target), "probabilities": ({}, mixed), "coarse labels": ({"coarse_labels": True}, coarse),
             "label smoothing": ({"label_smoothing": 0.1}, target)}
    for name, make in makers.items():
        for kind, (options, tgt) in kinds.items():
            loss = make(**options)
            want = loss(logits, tgt).item()
            got = loss(logits.float(), tgt.float() if tgt.is_floating_point() else tgt).item()
            assert abs(got - want) <= 1e-5 * abs(want), f"{name}, {kind}: float32 {got!r}, float64 {want!r}"
