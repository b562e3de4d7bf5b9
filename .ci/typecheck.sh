#!/usr/bin/env bash
# The type checker on the package (settings: [tool.mypy] in pyproject.toml; mypy comes with the
# `test` extra). .ci/run runs it after the tests.
#
# Usage: bash .ci/typecheck.sh [mypy options]   (PYTHON: the interpreter; default python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
"$PYTHON" -c "import mypy" 2>/dev/null || { echo "mypy is not installed: pip install -e '.[test]'" >&2; exit 2; }
exec "$PYTHON" -m mypy "$@"
