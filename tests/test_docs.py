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
        "wordnet.md", "cli.md", "benchmarks.md", "comparison.md", "targets.md",
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


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site that ``mkdocs build --strict`` writes, and what the build printed."""
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed (pip install -e '.[docs]'); under CI the docs build must run")
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("docs") / "site"
    # NO_MKDOCS_2_WARNING: the theme's notice about its end of life, printed before the build starts
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out, proc.stdout + proc.stderr


def test_mkdocs_build_strict(site):
    site, log = site
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert not warnings, "mkdocs printed warnings:\n" + "\n".join(warnings)
    for page in ("concepts", "choosing-beta-alpha", "api/losses", "api/metrics", "api/wordnet"):
        assert (site / page / "index.html").is_file(), page
    # the API reference is generated from the docstrings
    losses = (site / "api" / "losses" / "index.html").read_text(encoding="utf-8")
    for name in ("HierarchicalSoftLabelLoss", "HXELoss", "TreeWassersteinLoss", "ExpectedCostLoss"):
        assert f'id="taxosmooth.losses.{name}"' in losses, name


def test_the_distance_kinds_link_resolves(site):
    """The metrics page links ``DISTANCE_KINDS`` to its entry in the reference (it printed a raw role to a
    name that does not exist)."""
    site, _ = site
    metrics = (site / "api" / "metrics" / "index.html").read_text(encoding="utf-8")
    assert 'href="../taxosmooth/#taxosmooth.distances.DISTANCE_KINDS"' in metrics
    assert "DISTANCE_KINDS</code>;" not in metrics  # no raw :data: role left
    top = (site / "api" / "taxosmooth" / "index.html").read_text(encoding="utf-8")
    assert 'id="taxosmooth.distances.DISTANCE_KINDS"' in top and "lca_depth_complement" in top


TAG = re.compile(r"<(script|link)\b[^>]*>", re.I)
ATTR = re.compile(r"""\b(src|href)\s*=\s*["']?([^"'\s>]+)""", re.I)
REMOTE = re.compile(r"^(https?:)?//", re.I)
CSS_REMOTE = re.compile(r"""@import\s+(url\(\s*)?["']?\s*(https?:)?//|url\(\s*["']?\s*(https?:)?//""", re.I)


def remote_references(site: Path) -> list[str]:
    """Every remote script, stylesheet or font the site would load, as 'file: reference'."""
    found = []
    for page in site.rglob("*.html"):
        for tag in TAG.finditer(page.read_text(encoding="utf-8")):
            for _, url in ATTR.findall(tag.group(0)):
                if REMOTE.match(url):
                    found.append(f"{page.relative_to(site)}: {tag.group(0)}")
    for sheet in site.rglob("*.css"):
        for m in CSS_REMOTE.finditer(sheet.read_text(encoding="utf-8", errors="replace")):
            found.append(f"{sheet.relative_to(site)}: {m.group(0)}")
    return found


def test_remote_reference_finder_finds_them(tmp_path):
    """The oracle of the next test: it sees each kind of remote load, and no local one."""
    (tmp_path / "a.html").write_text(
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">'
        "<script src='//cdn.example.org/x.js'></script><link rel=preconnect href=http://fonts.gstatic.com>"
        '<script src="../vendor/katex/katex.min.js"></script><a href="https://example.org">a link</a>',
        encoding="utf-8",
    )
    (tmp_path / "b.css").write_text(
        '@import url("https://fonts.example.org/a.css");@import "http://x.org/b.css";'
        "@font-face{src:url(https://x.org/f.woff2)}.i{background:url(\"data:image/svg+xml;"
        "xmlns='http://www.w3.org/2000/svg'\")}.j{src:url(fonts/KaTeX_Main-Regular.woff2)}",
        encoding="utf-8",
    )
    assert len(remote_references(tmp_path)) == 6


def test_site_loads_nothing_remote(site):
    site, _ = site
    found = remote_references(site)
    assert not found, "the docs load remote resources:\n" + "\n".join(found[:20])


KATEX = ("vendor/katex/katex.min.js", "vendor/katex/contrib/auto-render.min.js", "js/katex-init.js")


def test_formula_page_carries_katex(site):
    site, _ = site
    html = (site / "concepts" / "index.html").read_text(encoding="utf-8")
    assert html.count('class="arithmatex"') > 10, "concepts.md has formulas: arithmatex should mark them"
    scripts = re.findall(r'<script src="\.\./([^"]+)"', html)
    assert [s for s in scripts if s in KATEX] == list(KATEX), scripts  # in load order
    assert '<link rel="stylesheet" href="../vendor/katex/katex.min.css">' in html
    for asset in (*KATEX, "vendor/katex/katex.min.css", "vendor/katex/LICENSE"):
        assert (site / asset).is_file(), asset
    # every font the stylesheet names first (woff2, what a browser loads) is there
    css = (site / "vendor" / "katex" / "katex.min.css").read_text(encoding="utf-8")
    fonts = re.findall(r"@font-face\{[^}]*?src:url\(([^)]+)\)", css)
    assert len(fonts) == 20 and all(f.endswith(".woff2") for f in fonts), fonts
    for font in fonts:
        assert (site / "vendor" / "katex" / font).is_file(), font


def test_formulas_render_in_a_browser(site):
    """Headless Chromium runs the page's scripts: every formula becomes KaTeX markup, none an error."""
    site, _ = site
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium (apt-get install chromium); under CI the formulas must be rendered")
        pytest.skip("no Chromium to render the page (apt-get install chromium)")
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--virtual-time-budget=10000", "--dump-dom", (site / "concepts" / "index.html").as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    dom = proc.stdout
    assert proc.returncode == 0 and "</html>" in dom, proc.stderr[-2000:]
    formulas = len(re.findall(r'class="arithmatex"', dom))
    # auto-render puts KaTeX's output in a <span> in place of the TeX text
    rendered = len(re.findall(r'class="arithmatex"><span><span class="katex(-display)?">', dom))
    assert formulas > 10 and rendered == formulas, f"{rendered} of {formulas} formulas rendered"
    assert "katex-error" not in dom


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
