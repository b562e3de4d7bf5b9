"""The documentation builds (``mkdocs build --strict``) and its code runs.

Conventions of ``docs/*.md``: fenced ```` ```python ```` blocks run, in order, in
one namespace per page; ```` ```bash ```` blocks run with ``bash -euo pipefail``
in one folder per page that holds the bundled example files
(``animals.csv``, ``animals.txt``); ```` ```sh ````, ```` ```text ```` and
other blocks are shown only (installation commands, outputs). Pages that use
WordNet need its data (skipped without it, except under
``TAXOSMOOTH_REQUIRE_WORDNET=1``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p.name for p in DOCS.glob("*.md"))
WORDNET_PAGES = {"wordnet.md"}

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)


def blocks(page: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall((DOCS / page).read_text(encoding="utf-8")) if lang == language]


def test_pages_exist():
    expected = {
        "index.md", "getting-started.md", "concepts.md", "choosing-beta-alpha.md", "taxonomy-files.md",
        "wordnet.md", "cli.md", "benchmarks.md", "comparison.md",
    }
    assert expected <= set(PAGES)
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in expected:
        assert page in nav, f"{page} is not in the nav of mkdocs.yml"


def test_fences_are_balanced():
    for page in PAGES:
        lines = [ln for ln in (DOCS / page).read_text(encoding="utf-8").splitlines() if ln.startswith("```")]
        assert len(lines) % 2 == 0, f"{page}: unbalanced code fences"


@pytest.fixture
def page_env(request, tmp_path, monkeypatch):
    page = request.param
    if page in WORDNET_PAGES:
        request.getfixturevalue("wordnet")
    from taxosmooth.data import EXAMPLES, example_path

    for name in EXAMPLES:
        shutil.copy(example_path(name), tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return page, tmp_path


@pytest.mark.parametrize("page_env", [p for p in PAGES if blocks(p, "python")], indirect=True)
def test_python_blocks_run(page_env):
    page, _ = page_env
    namespace: dict = {"__name__": f"docs_{page}"}
    for i, code in enumerate(blocks(page, "python")):
        try:
            with contextlib.redirect_stdout(open(os.devnull, "w")):
                exec(compile(code, f"{page}[python block {i}]", "exec"), namespace)
        except Exception as exc:  # name the block in the failure
            raise AssertionError(f"{page}, python block {i} failed: {exc!r}\n{code}") from exc


@pytest.mark.parametrize("page_env", [p for p in PAGES if blocks(p, "bash")], indirect=True)
def test_bash_blocks_run(page_env):
    page, folder = page_env
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    for i, code in enumerate(blocks(page, "bash")):
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{page}, bash block {i} failed:\n{code}\n{proc.stdout}\n{proc.stderr}"


def test_mkdocs_build_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed (pip install -e '.[docs]'); under CI the docs build must run")
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    site = tmp_path / "site"
    for page in ("concepts", "choosing-beta-alpha", "api/losses", "api/metrics", "api/wordnet"):
        assert (site / page / "index.html").is_file(), page
    # the API reference is generated from the docstrings
    losses = (site / "api" / "losses" / "index.html").read_text(encoding="utf-8")
    for name in ("HierarchicalSoftLabelLoss", "HXELoss", "TreeWassersteinLoss", "ExpectedCostLoss"):
        assert f'id="taxosmooth.losses.{name}"' in losses, name


def test_experiment_results_match_the_page():
    """The table of 'Choosing β and α' is the one the experiment wrote (docs/data/...json)."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("wordnet_glosses", ROOT / "examples" / "wordnet_glosses.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = json.loads((DOCS / "data" / "wordnet_glosses_results.json").read_text(encoding="utf-8"))
    page = (DOCS / "choosing-beta-alpha.md").read_text(encoding="utf-8")
    shown = page.split("<!-- results-table:begin -->\n", 1)[1].split("\n<!-- results-table:end -->", 1)[0]
    assert shown == module.markdown_table(data["results"])
    # every seed is there, and the summary is the mean of the seeds
    for name, r in data["results"].items():
        assert len(r["runs"]) == data["setting"]["seeds"] >= 3, name
        mean = sum(run["top1_error"] for run in r["runs"]) / len(r["runs"])
        assert abs(mean - r["summary"]["top1_error"]["mean"]) < 1e-12, name
    assert (DOCS / "img" / "wordnet_glosses_tradeoff.png").stat().st_size > 10_000
