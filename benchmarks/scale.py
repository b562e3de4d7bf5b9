"""Peak memory and time of ``linear_loss`` against the materialised logits, at a million classes, on the CPU.

One training step (forward and backward) of a linear classifier's loss, float32, batch 256, hidden size 64,
C = 1,000,000 classes on a synthetic taxonomy of depth 6 (``benchmarks/losses.py``'s generator):

* materialised: ``loss(F.linear(h, W, b), y).backward()`` — the ``(B, C)`` logits (1 GB), their gradient and
  the loss's intermediates;
* chunked: ``ts.linear_loss(h, W, y, loss, bias=b).backward()`` — one chunk of rows at a time (the automatic
  chunk, :func:`taxosmooth.losses.linear.auto_chunk_size`: 64 rows at a million classes and H = 64, 256 MB of
  logits).

Memory is the process's resident-set high-water mark (``VmHWM``; torch's CPU allocations are invisible to
tracemalloc), measured in a fresh process per method: the taxonomy, the loss and the tensors are built and one
step is run (caches, tables), the high-water mark is reset (``/proc/self/clear_refs``), and the peak of the next
step above the resident set before it is reported ("step peak"), together with the process's whole peak.
Both methods allocate ``W.grad`` (256 MB at these sizes) inside the step. Times: the best of ``--repeat`` steps
of each method, the methods taking turns in one process.

Goals (issue 20): step peak of the chunked loss <= 0.5 x the materialised one, time <= 1.5 x.

    python benchmarks/scale.py                        # C = 1,000,000 (a few minutes; ~8 GB of memory)
    python benchmarks/scale.py --classes 100000       # quicker
    python benchmarks/scale.py --markdown             # a table for the docs

The class-sharded loss's per-rank memory at 2 and 4 ranks: :func:`sharded_per_rank_memory`
(``--sharded-only`` runs it alone).

Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import taxosmooth as ts  # noqa: E402
from _util import fmt_bytes, fmt_seconds  # noqa: E402

LOSSES = {
    "soft_labels": ("HierarchicalSoftLabelLoss(beta=4)", lambda tax: ts.HierarchicalSoftLabelLoss(tax, beta=4.0)),
    "hxe": ("HXELoss(alpha=0.1)", lambda tax: ts.HXELoss(tax, alpha=0.1)),
    "wasserstein": ("TreeWassersteinLoss", lambda tax: ts.TreeWassersteinLoss(tax)),
    "cross_entropy": ("nn.CrossEntropyLoss (no taxonomy)", lambda tax: torch.nn.CrossEntropyLoss()),
}
METHODS = ("materialised", "chunked")


# ----------------------------------------------------------------------------- memory of this process
def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _settle() -> int:
    """Free what can be freed, reset the high-water mark to the resident set; returns the resident set."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to VmRSS (Linux >= 4.0)
    return _status("VmRSS")


# ----------------------------------------------------------------------------- one process, one loss
def _problem(args):
    from losses import synthetic_taxonomy

    t0 = time.perf_counter()
    tax = synthetic_taxonomy(args.classes, args.depth, seed=0) if args.loss != "cross_entropy" else None
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss = LOSSES[args.loss][1](tax)
    loss_s = time.perf_counter() - t0
    num_classes = args.classes if tax is None else tax.num_classes
    g = torch.Generator().manual_seed(0)
    w = (0.02 * torch.randn(num_classes, args.hidden, generator=g)).requires_grad_()
    b = torch.zeros(num_classes, requires_grad=True)
    h = torch.randn(args.batch, args.hidden, generator=g).requires_grad_()
    y = torch.randint(0, num_classes, (args.batch,), generator=g)
    info = {"build_s": build_s, "loss_s": loss_s, "nodes": None if tax is None else tax.num_nodes,
            "depth": None if tax is None else tax.max_depth}
    return tax, loss, (h, w, b, y), info


def _step(method: str, loss, tensors, chunk_size) -> float:
    h, w, b, y = tensors
    for x in (h, w, b):
        x.grad = None
    if method == "materialised":
        out = loss(F.linear(h, w, b), y)
    else:
        out = ts.linear_loss(h, w, y, loss, bias=b, chunk_size=chunk_size)
    out.backward()
    return float(out.detach())


def child(args) -> dict:
    torch.set_num_threads(args.threads)
    tax, loss, tensors, info = _problem(args)
    method = args.method
    values = {method: _step(method, loss, tensors, args.chunk_size)}  # warm: tables, caches, first-touch
    for x in tensors[:3]:
        x.grad = None
    base = _settle()
    _step(method, loss, tensors, args.chunk_size)
    info.update(method=method, rss_before=base, step_peak=_status("VmHWM") - base, process_peak=None)
    if args.time:
        other = "chunked" if method == "materialised" else "materialised"
        values[other] = _step(other, loss, tensors, args.chunk_size)  # warm
        best = {m: float("inf") for m in METHODS}
        for _ in range(args.repeat):
            for m in METHODS:
                gc.collect()
                t0 = time.perf_counter()
                values[m] = _step(m, loss, tensors, args.chunk_size)
                best[m] = min(best[m], time.perf_counter() - t0)
        info["time"] = best
    info["values"] = values
    import resource

    info["process_peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return info


def _run_child(args, loss: str, method: str, timed: bool) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--loss", loss, "--method", method,
           "--classes", str(args.classes), "--depth", str(args.depth), "--hidden", str(args.hidden),
           "--batch", str(args.batch), "--repeat", str(args.repeat), "--threads", str(args.threads)]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    if timed:
        cmd.append("--time")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{loss} {method}: the child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["child_s"] = time.perf_counter() - t0
    return out


# ----------------------------------------------------------------------------- class sharding
#: the sharded losses measured (taxosmooth.parallel: every loss takes process_group=)
SHARDED = {
    "soft_labels": lambda tax, group: ts.HierarchicalSoftLabelLoss(tax, beta=4.0, process_group=group),
    "hxe": lambda tax, group: ts.HXELoss(tax, alpha=0.1, process_group=group),
    "wasserstein": lambda tax, group: ts.TreeWassersteinLoss(tax, process_group=group),
}


def _sharded_worker(rank: int, world: int, port: int, args, method: str, out_dir: str) -> None:
    """One rank: its classes' weight rows, the sharded loss; the step peak of one method (see :func:`child`)."""
    from datetime import timedelta

    import torch.distributed as dist
    from losses import synthetic_taxonomy

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=args.timeout))
    try:
        tax = synthetic_taxonomy(args.classes, args.depth, seed=0)
        loss = SHARDED[args.loss](tax, dist.group.WORLD)
        ids = ts.parallel.shard_classes(tax, world)[rank]
        g = torch.Generator().manual_seed(0)  # the same batch on every rank
        h = torch.randn(args.batch, args.hidden, generator=g).requires_grad_()
        y = torch.randint(0, tax.num_classes, (args.batch,), generator=g)
        gw = torch.Generator().manual_seed(1 + rank)
        w = (0.02 * torch.randn(len(ids), args.hidden, generator=gw)).requires_grad_()
        b = torch.zeros(len(ids), requires_grad=True)
        tensors = (h, w, b, y)
        _step(method, loss, tensors, args.chunk_size)  # warm: the shard plan, tables, first touch
        for x in tensors[:3]:
            x.grad = None
        dist.barrier()
        base = _settle()
        t0 = time.perf_counter()
        value = _step(method, loss, tensors, args.chunk_size)
        seconds = time.perf_counter() - t0
        info = {"rank": rank, "classes": len(ids), "rss_before": base, "step_peak": _status("VmHWM") - base,
                "time": seconds, "value": value}
        with open(os.path.join(out_dir, f"{method}-{world}-{rank}.json"), "w") as f:
            json.dump(info, f)
    finally:
        dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # gloo's threads can abort a process at interpreter exit


def sharded_per_rank_memory(args, world_sizes=(2, 4)) -> list[dict]:
    """SHARDED LOSS — per-rank memory of the class-sharded loss at 2 and 4 ranks.

    For each world size and method, that many gloo processes on this machine (so the ranks share its cores:
    the times are not a speed-up measurement); rank ``r`` holds ``ts.parallel.shard_classes(taxonomy,
    world)[r]`` (weight rows ``(C_r, H)``) and the loss built with ``process_group=``; the batch is the same on
    every rank. Reported per rank: the step peak (as in :func:`child`) of the materialised local logits
    (``loss(F.linear(h, W_r, b_r), y)``) and of ``ts.linear_loss(h, W_r, y, loss, bias=b_r)`` (the same chunks
    on every rank: the automatic size comes from the loss's global class count). Each rank also holds the whole
    taxonomy (built once per process), which is in its resident set before the step, not in the step peak.
    """
    import socket
    import tempfile

    import torch.multiprocessing as mp

    rows = []
    with tempfile.TemporaryDirectory() as out_dir:
        for world in world_sizes:
            for method in METHODS:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", 0))
                    port = sock.getsockname()[1]
                mp.start_processes(_sharded_worker, args=(world, port, args, method, out_dir), nprocs=world,
                                   start_method="spawn")
                for rank in range(world):
                    with open(os.path.join(out_dir, f"{method}-{world}-{rank}.json")) as f:
                        rows.append({"world": world, "method": method, **json.load(f)})
    return rows


def _print_sharded(rows: list[dict], args) -> None:
    print(f"Class-sharded {LOSSES[args.loss][0]} (taxosmooth.parallel), per rank, C = {args.classes:,}, batch "
          f"{args.batch}, hidden {args.hidden}: step peak of the rank's process (gloo, all ranks on this machine)")
    head = ["ranks", "rank", "classes", "materialised step peak", "chunked step peak", "ratio",
            "materialised time", "chunked time"]
    table = []
    for world in sorted({r["world"] for r in rows}):
        for rank in range(world):
            m = next(r for r in rows if (r["world"], r["method"], r["rank"]) == (world, "materialised", rank))
            c = next(r for r in rows if (r["world"], r["method"], r["rank"]) == (world, "chunked", rank))
            table.append([str(world), str(rank), f"{m['classes']:,}", fmt_bytes(m["step_peak"]),
                          fmt_bytes(c["step_peak"]), f"{c['step_peak'] / m['step_peak']:.2f}x",
                          fmt_seconds(m["time"]), fmt_seconds(c["time"])])
    _table(head, table, args.markdown)


def _table(head, table, markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in table:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *table)]
        for r in [head] + table:
            print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))


# ----------------------------------------------------------------------------- the report
def single_process(args) -> bool:
    """The chunked and the materialised step of each loss in ``args.losses``, side by side; whether the goals
    are met."""
    print("memory: resident-set high-water mark of a fresh process per method, above the resident set before the "
          "step (step peak), and the whole process's peak; time: best of "
          f"{args.repeat} steps (forward + backward), the methods taking turns in one process\n")
    rows, ok = [], True
    for name in args.losses:
        mat = _run_child(args, name, "materialised", timed=True)
        chk = _run_child(args, name, "chunked", timed=False)
        t = mat["time"]
        mem_ratio = chk["step_peak"] / mat["step_peak"]
        time_ratio = t["chunked"] / t["materialised"]
        agree = abs(mat["values"]["chunked"] - mat["values"]["materialised"]) <= 1e-4 * abs(
            mat["values"]["materialised"])
        ok &= mem_ratio <= 0.5 and time_ratio <= 1.5 and agree
        rows.append((LOSSES[name][0], mat, chk, mem_ratio, time_ratio, agree))
        built = "no taxonomy" if mat["nodes"] is None else (
            f"taxonomy built in {fmt_seconds(mat['build_s'])} ({mat['nodes']:,} nodes, depth {mat['depth']})")
        print(f"  {LOSSES[name][0]}: {built}, loss in {fmt_seconds(mat['loss_s'])}; processes {mat['child_s']:.0f} s "
              f"+ {chk['child_s']:.0f} s", flush=True)
    print()
    head = ["loss", "materialised step peak", "chunked step peak", "ratio", "materialised process peak",
            "chunked process peak", "materialised time", "chunked time", "ratio", "same value"]
    table = [[label, fmt_bytes(m["step_peak"]), fmt_bytes(c["step_peak"]), f"{mr:.2f}x",
              fmt_bytes(m["process_peak"]), fmt_bytes(c["process_peak"]), fmt_seconds(m["time"]["materialised"]),
              fmt_seconds(m["time"]["chunked"]), f"{tr:.2f}x", "yes" if agree else "NO"]
             for label, m, c, mr, tr, agree in rows]
    _table(head, table, args.markdown)
    print(f"\ngoals: chunked step peak <= 0.5x, time <= 1.5x, same loss value: {'met' if ok else 'NOT met'}")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=1_000_000)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--losses", nargs="+", default=["soft_labels", "hxe", "cross_entropy"], choices=sorted(LOSSES))
    ap.add_argument("--chunk-size", type=int, default=None, help="rows per chunk (default: linear_loss's choice)")
    ap.add_argument("--repeat", type=int, default=3, help="timed steps per method (best reported)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--no-sharded", action="store_true", help="skip the sharded per-rank measurement")
    ap.add_argument("--sharded-only", action="store_true", help="only the sharded per-rank measurement")
    ap.add_argument("--sharded-loss", default="hxe", choices=sorted(SHARDED), help="the sharded loss measured")
    # one child process: one loss, one method
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--loss", default="soft_labels", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="chunked", help=argparse.SUPPRESS)
    ap.add_argument("--time", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0

    from taxosmooth.losses.linear import auto_chunk_size

    chunk = args.chunk_size or auto_chunk_size(args.classes, args.hidden)
    print(f"taxosmooth {ts.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs visible, "
          f"{args.threads} torch threads; float32, batch {args.batch}, hidden {args.hidden}, "
          f"C = {args.classes:,}, synthetic taxonomy of depth {args.depth}; chunk {chunk} rows")
    if not args.sharded_only:
        single_process(args)
    if not args.no_sharded:
        print()
        args.loss = args.sharded_loss
        _print_sharded(sharded_per_rank_memory(args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
