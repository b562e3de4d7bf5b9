"""Does any loss make the host wait for the GPU? Every loss on every kind of target, eager and compiled.

For each loss of ``benchmarks/losses.py`` (and ``F.cross_entropy``), each kind of target (class ids,
probability rows, label smoothing 0.1, coarse labels) and each mode (eager, and
``torch.compile(fullgraph=True, dynamic=False)``), one forward+backward runs, after warm-up, under
``torch.cuda.set_sync_debug_mode("error")``: an operation that synchronises the host with the GPU
(``.item()``, a copy to the host, ``nonzero``, ...) raises there. One line per loss, kind and mode:
``no host sync``, or the error. A control that calls ``.item()`` must be caught, or the check itself
is broken. Exit status 1 if anything synchronises or fails.

Without CUDA the same steps run (a dry run of the code paths, eager and compiled) and the sync
check is skipped, with a note.

    python benchmarks/sync_check.py --device cuda
    python benchmarks/sync_check.py --device cpu --no-compile   # a quick dry run
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from losses import CE, bind, build_losses, compiled, first_line, loss_cases, problem, step, warm_up

SYNC_FREE = "no host sync"


def under_sync_error(fn, logits: torch.Tensor) -> str:
    """One forward+backward of ``fn`` with host synchronisations raising: ``no host sync`` or the error."""
    if not logits.is_cuda:
        step(fn, logits)
        return "ran (no sync check without CUDA)"
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step(fn, logits)
    except RuntimeError as exc:
        return f"host sync: {first_line(exc)}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return SYNC_FREE


def check(name: str, fn, logits: torch.Tensor) -> tuple[str, bool]:
    """``(line, ok)`` for one case: warm-up (compiling), then the step under the sync check."""
    try:
        warm_up({name: fn}, logits)
        result = under_sync_error(fn, logits)
    except Exception as exc:  # a failure is a finding too: report it and go on with the others
        return f"error: {type(exc).__name__}: {first_line(exc)}", False
    return result, result == SYNC_FREE or not logits.is_cuda


def control(logits: torch.Tensor) -> tuple[str, bool]:
    """A step that calls ``.item()``: on CUDA it must be caught (else the check cannot see syncs)."""
    result = under_sync_error(lambda z: z.sum() * z.max().item(), logits)
    return result, not logits.is_cuda or result.startswith("host sync")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--depth", type=int, default=7)
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="eager only")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        sys.exit("sync check: --device cuda, but torch sees no GPU")
    torch._dynamo.config.recompile_limit = 64  # one entry per loss and kind of target
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    tax, logits, target = problem(args.classes, args.batch, args.depth, args.device)
    cases = {f"{CE} (classes)": (F.cross_entropy, target)} | loss_cases(tax, build_losses(tax, args.device), target,
                                                                        args.device)
    print(f"# host sync check: device {args.device}, C = {args.classes}, batch {args.batch}, forward+backward"
          + ("" if cuda else "; no CUDA: the steps run, the sync check is skipped"))
    width = max(map(len, cases)) + 2
    line, ok = control(logits)
    print(f"{'control: .item() (must sync)':<{width}} {'eager':<9} {line}")
    failed = not ok
    modes = {"eager": lambda fn: fn} | ({"compiled": compiled} if args.compile else {})
    for name, (fn, t) in cases.items():
        for mode, wrap in modes.items():
            line, ok = check(name, bind(wrap(fn), t), logits)
            failed |= not ok
            print(f"{name:<{width}} {mode:<9} {line}", flush=True)
    print("# " + ("some steps synchronise or fail (above)" if failed else
                  "every step ran without a host sync" if cuda else "every step ran (sync check skipped: no CUDA)"))
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
