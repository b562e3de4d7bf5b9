"""Run a function on several CPU processes (gloo), each with a deadline; never leave a process behind.

``run_ranks(fn, world, out_dir, *args)`` starts ``world`` processes with the ``spawn`` method (module-level code of
the caller must sit under ``if __name__ == "__main__"``), each calling ``fn(rank, world, out_dir, *args)`` inside an
initialised process group, and waits at most ``timeout`` seconds. A rank that fails makes the others stop: the
survivors are terminated when the first failure or the deadline is seen.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["run_ranks", "free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn, world: int, port: int, out_dir: str, args: tuple) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        fn(rank, world, out_dir, *args)
        dist.barrier()  # every rank reaches the teardown together: gloo's can abort with a peer still in flight
    finally:
        dist.destroy_process_group()
    # leave without interpreter finalization, where gloo's threads can abort the process now and then
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_ranks(fn, world: int, out_dir: str, *args, timeout: float = 240.0) -> None:
    """Run ``fn`` on ``world`` ranks; raise if one fails or the deadline passes (after terminating all)."""
    for attempt in range(2):
        ctx = mp.start_processes(_entry, args=(fn, world, free_port(), out_dir, args), nprocs=world, join=False,
                                 start_method="spawn")
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=2):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {world} processes did not finish within {timeout:.0f} s")
            return
        except mp.ProcessExitedException as exc:
            # a worker killed by a signal (gloo's threads have aborted processes at start-up or exit under load):
            # one more run on a fresh port; a Python error in a worker is a real failure
            if exc.signal_name is None or attempt == 1:
                raise
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
                    p.join(5)
                    if p.is_alive():
                        p.kill()
