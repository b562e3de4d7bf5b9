#!/usr/bin/env bash
# The GPU check, in one call: on a machine with CUDA, run the tests that are parametrised over
# devices (each gets a "cuda" case when torch sees a GPU) and the 100,000-class scale tests, then
# the loss and decision benchmarks on the GPU, and print their tables last. Each step has a time limit, and the whole check ends
# within 8 minutes; each step's duration is printed.
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
# time, 0 otherwise. Where OUT names a folder, the log and the tables are written there too.
set -uo pipefail
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
  [ "$left" -lt "$limit" ] && limit="$left"
  if [ "$limit" -le 5 ]; then
    SUMMARY+=("$(printf '%-28s %-10s %6s' "$name" "skipped" "-") (no time left)")
    FAILED=1
    return
  fi
  echo
  echo "== $name (limit ${limit}s)"
  local t0 rc status
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
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
timeout 120 "$PY" - <<'EOF'
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

p = torch.cuda.get_device_properties(0)
print(f"python {platform.python_version()} ({sys.executable}), torch {torch.__version__}, CUDA {torch.version.cuda}")
print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs; "
      f"taxosmooth {taxosmooth.__version__} from {taxosmooth.__file__}")
EOF
rc=$?
if [ "$rc" -ne 0 ]; then
  [ "$rc" -eq 124 ] && echo "no CUDA: torch did not answer within 120 s"
  echo "GPU check stopped: no usable CUDA device ($(( $(date +%s) - START ))s)"
  return 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader

run_step "tests (cpu and cuda)" 220 \
  "$PY" -m pytest tests/test_losses*.py tests/test_decision.py tests/test_metrics*.py -q -p no:cacheprovider
# the 100,000-class scale tests (marked slow; seconds each), the CUDA one measured by allocator peak
run_step "slow scale tests" 45 \
  "$PY" -m pytest tests/test_losses_scale.py tests/test_decision.py -m slow -q -p no:cacheprovider
run_step "benchmarks/losses.py" 120 \
  bash -o pipefail -c "'$PY' benchmarks/losses.py --device cuda --markdown | tee '$RESULTS/losses_cuda.md'"
run_step "benchmarks/decision.py" 75 \
  bash -o pipefail -c "'$PY' benchmarks/decision.py --device cuda --markdown | tee '$RESULTS/decision_cuda.md'"

echo
echo "== the tables"
for table in losses_cuda decision_cuda; do
  echo
  echo "### benchmarks/${table%_cuda}.py --device cuda --markdown"
  cat "$RESULTS/$table.md" 2>/dev/null || echo "(none: the step failed)"
done
echo
echo "== summary (total $(( $(date +%s) - START ))s; results in $RESULTS)"
printf '%s\n' "${SUMMARY[@]}"
return "$FAILED"
}

main 2>&1 | tee "$RESULTS/gpu_check.log"
exit "${PIPESTATUS[0]}"
