"""Tiny helpers shared by the benchmark scripts: best-of-n timing, peak memory, launching-op counts."""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeat: int = 3, number: int = 1) -> float:
    """Smallest wall-clock time of ``number`` calls of ``fn``, over ``repeat`` rounds, per call (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def best_cpu(fn: Callable[[], object], repeat: int = 3) -> float:
    """Smallest process CPU time of one call of ``fn`` (seconds): robust to other load on the machine."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def peak_memory(fn: Callable[[], object]) -> tuple[object, int]:
    """``(result, peak bytes)`` of Python and numpy allocations made while ``fn`` runs (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def fmt_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def table(rows: list[dict], markdown: bool = False) -> str:
    """Rows of equal keys as an aligned text table, or a markdown table."""
    if not rows:
        return ""
    keys = list(rows[0])
    cells = [[str(r[k]) for k in keys] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    out = ["  ".join(k.ljust(w) for k, w in zip(keys, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


#: aten ops that launch no kernel: views, metadata, allocation (``aten::to`` is counted apart)
NON_LAUNCHING = frozenset({
    "view", "reshape", "slice", "select", "as_strided", "unsqueeze", "squeeze", "expand", "t", "transpose",
    "permute", "detach", "alias", "narrow", "_unsafe_view", "view_as", "flatten", "unflatten", "lift_fresh",
    "result_type", "is_nonzero", "item", "_local_scalar_dense", "empty", "empty_strided", "split", "unbind",
    "chunk", "expand_as", "movedim", "resolve_conj", "resolve_neg", "detach_", "numpy_T", "contiguous", "set_",
    "empty_like",
})
_OPS = ("aten::", "taxosmooth::")


def launching_ops(step: Callable[[], object], warmup: int = 1) -> int:
    """Kernel-launching top-level ops of one call of ``step`` (after ``warmup`` calls), by torch.profiler.

    Counted: the ``aten::`` and ``taxosmooth::`` events (CPU activity) whose parent is not itself such an
    op (an op called by another op is part of it), less the view-like and metadata ops of
    :data:`NON_LAUNCHING`; ``aten::to`` only where it copies (an ``aten::_to_copy`` child). Forward and
    backward of ``F.cross_entropy`` count 4: ``cross_entropy_loss``, ``ones_like`` (the seed gradient),
    ``nll_loss_backward``, ``_log_softmax_backward_data``. Work done outside torch's dispatcher (numpy
    calls, the C++ or Triton kernels of compiled code) is not seen.
    """
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(1 for e in prof.events() if _launches(e))


def _launches(event) -> bool:
    name = event.name
    parent = event.cpu_parent
    if not name.startswith(_OPS) or (parent is not None and parent.name.startswith(_OPS)):
        return False
    if name.startswith("taxosmooth::"):
        return True
    op = name[len("aten::"):]
    if op == "to":
        return any(c.name == "aten::_to_copy" for c in event.cpu_children)
    return op not in NON_LAUNCHING
