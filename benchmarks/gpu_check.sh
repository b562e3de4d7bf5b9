#!/usr/bin/env bash
# The GPU check, in one call: on a machine with CUDA, run the CUDA cases of the tests that are
# parametrised over devices (each gets a "cuda" case when torch sees a GPU) and the 100,000-class
# scale tests; check that no loss makes the host wait for the GPU (benchmarks/sync_check.py: every
# loss on every kind of target, eager and compiled, under torch.cuda.set_sync_debug_mode("error"));
# then the loss benchmark on the GPU, eager and compiled (torch.compile, fullgraph), at 1,000 and
# 10,000 classes and again at 100,000, and the decision benchmark; their tables are printed last.
# Each step has a time limit, and the whole check ends within 8 minutes; each step's duration is
# printed.
#
#     bash benchmarks/gpu_check.sh
#
# It needs a Python whose torch sees a GPU (PYTHON, default python3), with numpy, networkx,
# pytest, hypothesis, scipy and torchmetrics; nltk is not needed (no WordNet test runs here).
# taxosmooth itself is taken from this checkout (PYTHONPATH), so nothing is installed and no
# network is needed. Wheels of missing packages placed in .whl/ (at the checkout's root) are
# unpacked into a temporary folder first (pip --no-index --no-deps --target).
#
# Without CUDA it stops at once, with exit status 2. It exits 1 if a step failed or ran out of
# time (a host synchronisation found by the sync check fails its step), 0 otherwise. Where OUT
# names a folder, the log and the tables are written there too.
#
# The Python parts run on a CPU too, as a dry run of their code paths (no sync check there):
#     python benchmarks/sync_check.py --device cpu
#     python benchmarks/losses.py --classes 1000 --rounds 5
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="${PYTHON:-python3}"
BUDGET_S=465  # all steps together, so that the check ends within 8 minutes
START=$(date +%s)
RESULTS="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/taxosmooth-gpu-check.XXXXXX")}"
mkdir -p "$RESULTS"

export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg
unset CI  # the hypothesis "dev" profile: fewer examples, so the check fits its time

SUMMARY=()
FAILED=0

# run_step NAME LIMIT_S COMMAND...: run with a time limit (cut to what is left of the budget),
# print how long it took, and remember the outcome.
run_step() {
  local name="$1" limit="$2"
  shift 2
  local left=$((BUDGET_S - ($(date +%s) - START)))
  if [ "$left" -lt "$limit" ]; then
    limit="$left"
  fi
  if [ "$limit" -le 5 ]; then
    SUMMARY+=("$(printf '%-28s %-10s %6s' "$name" "skipped" "-") (no time left)")
    FAILED=1
    return
  fi
  echo
  echo "== $name (limit ${limit}s)"
  local t0 rc=0 status
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" || rc=$?
  local took
  took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  case "$rc" in
    0) status="ok" ;;
    124 | 137) status="timed out"; FAILED=1 ;;
    *) status="failed ($rc)"; FAILED=1 ;;
  esac
  echo "== $name: $status in ${took}s"
  SUMMARY+=("$(printf '%-28s %-10s %6ss' "$name" "$status" "$took")")
}

main() {
echo "== GPU check of taxosmooth ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git'))"

# Wheels carried for packages the machine lacks.
if compgen -G ".whl/*.whl" >/dev/null; then
  SITE="$(mktemp -d "${TMPDIR:-/tmp}/taxosmooth-gpu-site.XXXXXX")"
  echo "== installing the wheels of .whl/ into $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl || return 1
  export PYTHONPATH="$PYTHONPATH:$SITE"
fi

# Fail fast: a torch that sees a GPU, and what the tests import.
echo "== environment"
local rc=0
timeout 120 "$PY" - <<'EOF' || rc=$?
import importlib
import platform
import sys

try:
    import torch
except ImportError as exc:
    sys.exit(f"no CUDA: {sys.executable} has no torch ({exc}); this check needs a GPU and a CUDA build of torch")
if not torch.cuda.is_available():
    sys.exit(f"no CUDA: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}) sees no GPU; "
             "this check needs a machine with one")
missing = []
for name in ("numpy", "networkx", "pytest", "hypothesis", "scipy", "torchmetrics"):
    try:
        importlib.import_module(name)
    except ImportError:
        missing.append(name)
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)} (carry their wheels in .whl/)")
import taxosmooth

try:
    import triton
except ImportError:
    sys.exit(f"torch {torch.__version__} has no triton: torch.compile cannot run on the GPU")

p = torch.cuda.get_device_properties(0)
print(f"python {platform.python_version()} ({sys.executable}), torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"triton {triton.__version__}")
print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs; "
      f"taxosmooth from {taxosmooth.__file__}")
EOF
if [ "$rc" -ne 0 ]; then
  if [ "$rc" -eq 124 ]; then
    echo "no CUDA: torch did not answer within 120 s"
  fi
  echo "GPU check stopped: no usable CUDA device ($(( $(date +%s) - START ))s)"
  return 2
fi
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader || true
fi

# the CUDA cases only (the CPU cases run everywhere else), within the time of the check
run_step "tests (cuda cases)" 90 \
  "$PY" -m pytest tests/test_losses*.py tests/test_decision.py tests/test_metrics*.py -q -p no:cacheprovider -k cuda
# the 100,000-class scale tests (marked slow; seconds each), the CUDA one measured by allocator peak
run_step "slow scale tests" 40 \
  "$PY" -m pytest tests/test_losses_scale.py tests/test_decision.py -m slow -q -p no:cacheprovider
# every loss x kind of target, eager and compiled, under torch.cuda.set_sync_debug_mode("error")
run_step "host sync check" 120 \
  bash -o pipefail -c "'$PY' benchmarks/sync_check.py --device cuda | tee '$RESULTS/sync_cuda.txt'"
# eager and compiled (compiling is warm-up, not timed; the compile caches of the sync check help here)
run_step "benchmarks/losses.py" 110 \
  bash -o pipefail -c "'$PY' benchmarks/losses.py --device cuda --markdown | tee '$RESULTS/losses_cuda.md'"
run_step "losses at 100,000 classes" 60 \
  bash -o pipefail -c "'$PY' benchmarks/losses.py --device cuda --classes 100000 --rounds 10 --block 6 --markdown \
    | tee '$RESULTS/losses_100k_cuda.md'"
run_step "benchmarks/decision.py" 45 \
  bash -o pipefail -c "'$PY' benchmarks/decision.py --device cuda --markdown | tee '$RESULTS/decision_cuda.md'"

echo
echo "== the results"
for result in sync_cuda.txt losses_cuda.md losses_100k_cuda.md decision_cuda.md; do
  echo
  echo "### $result"
  cat "$RESULTS/$result" 2>/dev/null || echo "(none: the step failed)"
done
echo
echo "== summary (total $(( $(date +%s) - START ))s; results in $RESULTS)"
printf '%s\n' "${SUMMARY[@]}"
return "$FAILED"
}

# (errexit and pipefail: the script's status is main's)
main 2>&1 | tee "$RESULTS/gpu_check.log"
