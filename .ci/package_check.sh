#!/usr/bin/env bash
# The package as a user gets it: build the sdist and the wheel (the wheel from the sdist, as
# `python -m build` does), check that every file of taxosmooth/ that git tracks is in both,
# install the wheel (not editable) into a fresh venv, run `taxosmooth demo` from a folder
# outside the checkout, and import every public module of the installed package: first with
# no extra (a module may then only refuse with the message that names its extra), then with
# the extras plot and metrics (every module imports).
#
# Usage: bash .ci/package_check.sh   (PYTHON: the interpreter that builds; default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PYTHON="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

WORK="$(mktemp -d "${TMPDIR:-/tmp}/taxosmooth-package.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "== package: build the sdist and the wheel"
"$PYTHON" -c "import build" 2>/dev/null || "$PYTHON" -m pip install -q build
# From a copy of git's files alone (tracked, and new ones not ignored): a taxosmooth.egg-info
# left by `pip install -e .` holds a SOURCES.txt that setuptools would read as the file list,
# which would hide a file the configuration leaves out.
mkdir "$WORK/src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | xargs -0 cp --parents -t "$WORK/src"
"$PYTHON" -m build --outdir "$WORK/dist" "$WORK/src" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
SDIST=("$WORK"/dist/taxosmooth-*.tar.gz)
WHEEL=("$WORK"/dist/taxosmooth-*.whl)
[ "${#SDIST[@]}" -eq 1 ] && [ -f "${SDIST[0]}" ] && [ "${#WHEEL[@]}" -eq 1 ] && [ -f "${WHEEL[0]}" ] \
  || { echo "expected one sdist and one wheel in $WORK/dist:"; ls "$WORK/dist"; exit 1; }
echo "built $(basename "${SDIST[0]}") and $(basename "${WHEEL[0]}")"

echo "== package: every tracked file of taxosmooth/ is in the sdist and the wheel"
git ls-files -z -- taxosmooth >"$WORK/tracked"
"$PYTHON" - "$WORK/tracked" "${SDIST[0]}" "${WHEEL[0]}" <<'EOF'
import sys
import tarfile
import zipfile

tracked_file, sdist, wheel = sys.argv[1:]
tracked = sorted(p for p in open(tracked_file, encoding="utf-8").read().split("\0") if p)
assert tracked, "git lists no file under taxosmooth/"
with zipfile.ZipFile(wheel) as z:
    in_wheel = set(z.namelist())
with tarfile.open(sdist) as t:
    top = t.getnames()[0].split("/")[0]
    in_sdist = {name.split("/", 1)[1] for name in t.getnames() if "/" in name}
problems = [f"not in the wheel: {p}" for p in tracked if p not in in_wheel]
problems += [f"not in the sdist: {p}" for p in tracked if p not in in_sdist]
if not any(n.endswith(".dist-info/licenses/LICENSE") for n in in_wheel):
    problems.append("not in the wheel: LICENSE (.dist-info/licenses/LICENSE)")
if "LICENSE" not in in_sdist:
    problems.append("not in the sdist: LICENSE")
if problems:
    sys.exit("package check failed:\n  " + "\n  ".join(problems))
print(f"{len(tracked)} tracked files of taxosmooth/ in both (sdist {top}), and the LICENSE")
EOF

echo "== package: install the wheel into a fresh venv"
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --upgrade pip
# The CPU build of torch first; an unpinned torch would pull the multi-GB CUDA build.
"$VPY" -m pip install -q torch==2.13.0
"$VPY" -m pip install -q "${WHEEL[0]}"

mkdir "$WORK/outside"
cd "$WORK/outside"  # nothing of the checkout on sys.path from here on

cat >"$WORK/import_all.py" <<'EOF'
"""Import every public module of the installed taxosmooth, found by walking the package."""
import importlib
import pkgutil
import sys
import sysconfig
from pathlib import Path

strict = sys.argv[1] == "strict"
import taxosmooth

site = Path(sysconfig.get_paths()["purelib"]).resolve()
where = Path(taxosmooth.__file__).resolve()
if site not in where.parents:
    sys.exit(f"taxosmooth was imported from {where}, not from the installed wheel in {site}")
names = ["taxosmooth"] + sorted(
    m.name for m in pkgutil.walk_packages(taxosmooth.__path__, "taxosmooth.")
    if not any(part.startswith("_") for part in m.name.split("."))
)
failed, needs_extra = [], []
for name in names:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        # without extras, a module may only refuse with the message that names its extra
        if not strict and "pip install" in str(exc) and "taxosmooth[" in str(exc):
            needs_extra.append(name)
        else:
            failed.append(f"{name}: {exc!r}")
    except Exception as exc:  # any other failure at import is a bug
        failed.append(f"{name}: {exc!r}")
if failed:
    sys.exit("import failed:\n  " + "\n  ".join(failed))
print(f"imported {len(names) - len(needs_extra)} public modules from {where.parent}"
      + (f"; needing an extra: {', '.join(needs_extra)}" if needs_extra else ""))
EOF

echo "== package: taxosmooth demo, installed wheel, outside the checkout"
"$WORK/venv/bin/taxosmooth" demo
"$VPY" -m taxosmooth --help >/dev/null

echo "== package: import every public module (no extra)"
"$VPY" "$WORK/import_all.py" lenient

echo "== package: import every public module (extras plot, metrics)"
"$VPY" -m pip install -q "${WHEEL[0]}[plot,metrics]"
"$VPY" "$WORK/import_all.py" strict

cd "$ROOT"
echo "== package: ok"
