"""Train a classifier whose head is split over processes by class, on a taxonomy of 114,688 classes.

Class (vocabulary) parallelism: every process holds the rows of the classifier for its shard of the classes
(``ts.parallel.shard_classes``: runs of classes in depth-first order) and the logits of those classes only;
the hierarchical loss meets in two small collectives and equals the loss of one process on the whole
logits. The shared trunk sees the same batch on every process; its gradient is the sum of what each
process's head sends back (one all-reduce of the trunk's gradients, as in Megatron-LM's column-parallel layers).

    torchrun --nproc-per-node 2 examples/class_parallel.py        # two CPU processes (gloo)
    python examples/class_parallel.py                             # the same: spawns its two processes
    python examples/class_parallel.py --quick                     # 1,344 classes, a few seconds

With ``--check`` (the default) process 0 also trains the same model on one process, with the whole head,
and prints the largest difference of the losses and of the weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

import taxosmooth as ts


def regular_taxonomy(branching: list[int]) -> ts.Taxonomy:
    """A tree with ``branching[d]`` children under every node of depth ``d`` (a stand-in for a species tree)."""
    paths = [""]
    for d, k in enumerate(branching):  # node j of depth d + 1 is named L{d}_{j}: unique
        paths = [f"{p}/L{d}_{j}" if p else f"L{d}_{j}" for j, p in enumerate(q for q in paths for _ in range(k))]
    return ts.Taxonomy.from_paths(paths)


def make_problem(args, tax: ts.Taxonomy):
    """Trunk, full head weights and a batch per step, the same on every process (one seed)."""
    g = torch.Generator().manual_seed(0)
    trunk = nn.Sequential(nn.Linear(args.features, args.hidden), nn.Tanh())
    with torch.no_grad():
        for p in trunk.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    head = 0.05 * torch.randn(tax.num_classes, args.hidden, generator=g)  # row c scores class c
    batches = [(torch.randn(args.batch, args.features, generator=g),
                torch.randint(0, tax.num_classes, (args.batch,), generator=g)) for _ in range(args.steps)]
    return trunk, head, batches


def train_sharded(args, tax, rank: int, world: int):
    """This process's part: the trunk (replicated) and the head rows of its shard."""
    trunk, head, batches = make_problem(args, tax)
    ids = ts.parallel.shard_classes(tax, world)[rank]  # the classes this process scores, depth-first
    weight = nn.Parameter(head.index_select(0, ids).clone())  # a real model would initialise only these rows
    loss_fn = ts.HXELoss(tax, alpha=0.5, label_smoothing=0.1, process_group=dist.group.WORLD)
    opt = torch.optim.SGD([*trunk.parameters(), weight], lr=args.lr)
    losses = []
    for x, y in batches:
        opt.zero_grad()
        logits = trunk(x) @ weight.T  # (batch, this shard's classes): never the whole row
        loss = loss_fn(logits, y)  # the global class ids; the same value on every process
        loss.backward()
        for p in trunk.parameters():  # the trunk's gradient: the sum of every head's contribution
            dist.all_reduce(p.grad)
        opt.step()
        losses.append(loss.item())
    return losses, trunk, ids, weight.detach()


def train_one_process(args, tax):
    trunk, head, batches = make_problem(args, tax)
    weight = nn.Parameter(head.clone())
    loss_fn = ts.HXELoss(tax, alpha=0.5, label_smoothing=0.1)
    opt = torch.optim.SGD([*trunk.parameters(), weight], lr=args.lr)
    losses = []
    for x, y in batches:
        opt.zero_grad()
        loss = loss_fn(trunk(x) @ weight.T, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, trunk, weight.detach()


def run(rank: int, world: int, args) -> None:
    torch.set_num_threads(1)
    tax = regular_taxonomy(args.branching)
    if rank == 0:
        print(f"taxonomy: {tax.num_classes:,} classes, {tax.num_nodes:,} nodes, depth {tax.max_depth}; "
              f"{world} processes")
    t0 = time.perf_counter()
    losses, trunk, ids, weight = train_sharded(args, tax, rank, world)
    elapsed = time.perf_counter() - t0
    plan = ts.parallel.shard_plan(tax, world, rank)
    print(f"process {rank}: classes {plan.lo:,}-{plan.hi - 1:,} (depth-first), logits {args.batch} x {len(ids):,}, "
          f"{plan.num_nodes:,} nodes of the tree here, {plan.boundary.numel()} on the boundary; "
          f"{args.steps} steps in {elapsed:.1f} s", flush=True)
    if rank == 0:
        print("losses: " + ", ".join(f"{v:.6f}" for v in losses))
    if args.check and rank == 0:
        ref_losses, ref_trunk, ref_weight = train_one_process(args, tax)
        d_loss = max(abs(a - b) for a, b in zip(losses, ref_losses))
        d_trunk = max(float((a - b).detach().abs().max()) for a, b in zip(trunk.parameters(), ref_trunk.parameters()))
        d_head = float((weight - ref_weight.index_select(0, ids)).abs().max())
        print(f"one process, whole head: losses {', '.join(f'{v:.6f}' for v in ref_losses)}")
        print(f"largest difference: loss {d_loss:.2e}, trunk {d_trunk:.2e}, head rows {d_head:.2e} "
              f"({'equal' if max(d_loss, d_trunk, d_head) < 1e-4 else 'DIFFERENT'} within float32)")


def _spawned(rank: int, world: int, port: int, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    main_process(args)


def main_process(args) -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    try:
        run(dist.get_rank(), dist.get_world_size(), args)
        dist.barrier()  # every rank reaches the teardown together: gloo's can abort with a peer still in flight
    finally:
        dist.destroy_process_group()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small taxonomy (1,344 classes) and 2 steps")
    ap.add_argument("--branching", type=int, nargs="+", default=[4, 8, 8, 8, 7, 8],
                    help="children per node at each depth (default: 114,688 classes, depth 6)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--processes", type=int, default=2, help="processes to spawn when not started by torchrun")
    ap.add_argument("--no-check", dest="check", action="store_false", help="skip the one-process comparison")
    args = ap.parse_args(argv)
    if args.quick:
        args.branching, args.steps = [4, 6, 7, 8], 2
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun
        main_process(args)
        return 0
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_spawned, args=(args.processes, port, args), nprocs=args.processes, start_method="spawn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
