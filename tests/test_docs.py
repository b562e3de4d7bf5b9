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

import ast
import contextlib
import html
import importlib
import importlib.util
import inspect
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


# --- the API reference: what the renderer made of the numpydoc docstrings -------------------------------

# each documented object starts at its heading (a module without one at its anchor)
OBJECT_START = re.compile(r'<(?:h[1-6]|a) id="(taxosmooth(?:\.\w+)*)"')
PARAMETER_TABLE = re.compile(
    r'<span class="doc-section-title">(?:Other )?Parameters:</span></p>\s*<table>(.*?)</table>', re.S)
ROW = re.compile(r'<tr class="doc-section-item">(.*?)</tr>', re.S)
CELL = re.compile(r"<td>(.*?)</td>", re.S)
SIGNATURE = re.compile(r'<div class="doc-signature highlight"><pre>(.*?)</pre></div>', re.S)


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def full_text_of(fragment: str) -> str:
    """The text of a rendered type or default, each name as its full path (``torch.float32`` where the page
    shows ``float32`` with the path as the title)."""
    named = re.sub(r'<(span|a)\b[^>]*?\btitle="([^"]*)"[^>]*>.*?</\1>',
                   lambda m: m.group(2).split(" (")[0], fragment, flags=re.S)
    return text_of(named)


def api_pages(site: Path) -> list[Path]:
    return sorted((site / "api").glob("*/index.html"))


def documented_objects(site: Path):
    """``(page, dotted name, live object, the HTML of its entry up to the next entry)`` for every object of
    the API reference."""
    for page in api_pages(site):
        text = page.read_text(encoding="utf-8")
        starts = list(OBJECT_START.finditer(text))
        for m, nxt in zip(starts, [*starts[1:], None]):
            obj = live_object(m.group(1))
            if obj is not None:
                yield page.parent.name, m.group(1), obj, text[m.end():nxt.start() if nxt else len(text)]


def live_object(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = inspect.getattr_static(obj, attr, None)
            if isinstance(obj, (staticmethod, classmethod)):
                obj = obj.__func__
            if obj is None:
                return None
        return obj
    return None


def signature_of(obj) -> inspect.Signature | None:
    if not callable(obj) or isinstance(obj, property):
        return None
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def same_default(shown: str, expected, namespace: dict) -> bool:
    """Whether the default the page shows (source text, or "required") is the parameter's default."""
    if shown == "required":
        return expected is inspect.Parameter.empty
    if expected is inspect.Parameter.empty:
        return False
    root = shown.split(".")[0]
    try:  # the text of a default: a literal, a name of the module or a full path (numpy.float64)
        value = eval(shown, dict(namespace))
    except NameError:
        try:
            value = eval(shown, {root: importlib.import_module(root)})
        except Exception:
            return False
    except Exception:
        return False
    if value is expected:
        return True
    try:
        return bool(value == expected) or (value != value and expected != expected)
    except Exception:
        return False


def rendered_parameters(entry: str) -> list[tuple[str, str, str]]:
    """``(name, type, default)`` of each row of the entry's own parameter tables."""
    body = entry.split('<div class="doc doc-children">', 1)[0]  # not the members' tables
    rows = []
    for table in PARAMETER_TABLE.findall(body):
        for row in ROW.findall(table):
            cells = CELL.findall(row)
            if len(cells) == 4:
                rows.append((text_of(cells[0]).lstrip("*"), full_text_of(cells[1]), full_text_of(cells[3])))
    return rows


def test_rendered_defaults_are_the_signatures(site):
    """Every default the API reference shows, in a signature or a parameter table, is the live object's
    (numpydoc entries that name several parameters were all given the first one's type and default)."""
    site, _ = site
    checked, wrong = 0, []
    for page, name, obj, entry in documented_objects(site):
        sig = signature_of(obj)
        if sig is None:
            continue
        namespace = vars(inspect.getmodule(obj) or sys.modules["taxosmooth"])
        shown = [(p, "table", default) for p, _, default in rendered_parameters(entry)]
        m = SIGNATURE.search(entry.split('<div class="doc doc-contents', 1)[0])
        if m:
            tree = ast.parse(f"def {text_of(m.group(1))}: pass").body[0]
            args = [*tree.args.posonlyargs, *tree.args.args]
            defaults = [None] * (len(args) - len(tree.args.defaults)) + tree.args.defaults
            pairs = [*zip(args, defaults), *zip(tree.args.kwonlyargs, tree.args.kw_defaults)]
            shown += [(a.arg, "signature", "required" if d is None else ast.unparse(d)) for a, d in pairs]
        for param, where, default in shown:
            if param not in sig.parameters or sig.parameters[param].kind in (inspect.Parameter.VAR_POSITIONAL,
                                                                                inspect.Parameter.VAR_KEYWORD):
                continue
            checked += 1
            expected = sig.parameters[param].default
            if not same_default(default, expected, namespace):
                wrong.append(f"{page}: {name}({param}): the {where} shows {default}, the default is "
                             f"{'required' if expected is inspect.Parameter.empty else repr(expected)}")
    assert checked > 300 and not wrong, f"{len(wrong)} wrong defaults:\n" + "\n".join(wrong)


def untyped_entries(doc: str) -> set[str]:
    """The parameters whose numpydoc entry gives no type (``name`` or ``a, b`` alone on its line)."""
    lines, found, inside = doc.splitlines(), set(), False
    for line, under in zip(lines, [*lines[1:], ""]):
        if line.strip() and re.fullmatch(r"\s*-{3,}\s*", under):
            inside = line.strip() in ("Parameters", "Other Parameters")
        elif inside and re.fullmatch(r"\*{0,2}\w+(, \*{0,2}\w+)*", line):
            found.update(n.lstrip("*") for n in line.split(", "))
    return found


def brief(annotation: str) -> str:
    """An annotation with each dotted name cut to its last part, without spaces."""
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", re.sub(r"\s+", "", annotation))


def test_untyped_parameters_show_their_own_annotation(site):
    """A parameter documented without a type shows its own annotation (not the one of the first name of
    its entry: ``ignore_index`` was shown as ``ArrayLike | None``)."""
    site, _ = site
    checked, wrong = 0, []
    for page, name, obj, entry in documented_objects(site):
        sig = signature_of(obj)
        if sig is None:
            continue
        untyped = untyped_entries(inspect.getdoc(obj) or "")
        for param, shown, _ in rendered_parameters(entry):
            if param in untyped and param in sig.parameters:
                annotation = sig.parameters[param].annotation
                if annotation is inspect.Parameter.empty:
                    continue
                expected = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
                checked += 1
                if brief(shown) != brief(expected):
                    wrong.append(f"{page}: {name}({param}): shows the type {shown}, annotated {expected}")
    assert checked > 30 and not wrong, f"{len(wrong)} wrong types:\n" + "\n".join(wrong)


# a Sphinx role the renderer did not read, printed as text (":func:" before the name in code)
RAW_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|mod|exc|obj|const|ref|math|term|doc):(?=<code>|`)")


def test_no_raw_sphinx_roles(site):
    """No page prints a Sphinx role (``:func:`x```) as text: the docstrings' roles are links or code."""
    site, _ = site
    raw = {}
    for page in sorted(site.rglob("*.html")):
        count = len(RAW_ROLE.findall(page.read_text(encoding="utf-8")))
        if count:
            raw[str(page.relative_to(site))] = count
    assert not raw, f"{sum(raw.values())} raw Sphinx roles: {raw}"


def math_directives() -> list[tuple[str, str]]:
    """``(where, TeX)`` of every ``.. math::`` directive in the package's docstrings."""
    found = []
    for path in sorted((ROOT / "taxosmooth").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node) or ""
            lines = doc.splitlines()
            for i, line in enumerate(lines):
                m = re.match(r"(\s*)\.\. math::(.*)$", line)
                if not m:
                    continue
                body = [m.group(2)]
                for nxt in lines[i + 1:]:
                    if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= len(m.group(1)):
                        break
                    body.append(nxt)
                where = f"{path.relative_to(ROOT)}:{getattr(node, 'name', '<module>')}"
                found.append((where, " ".join(" ".join(body).split())))
    return found


def test_docstring_formulas_render_as_math(site):
    """Every ``.. math::`` of a docstring that the API reference shows is a formula (marked for KaTeX), not
    a code block that prints the directive."""
    site, _ = site
    directives = math_directives()
    assert len(directives) > 30
    pages = {}
    for page in sorted(site.rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        found = re.findall(r'class="arithmatex">(.*?)</(?:div|span)>', text, re.S)
        maths = {" ".join(text_of(m).split()) for m in found}
        pages[str(page.relative_to(site))] = (" ".join(text_of(text).split()), " ".join(maths))
    shown, wrong = 0, []
    for where, tex in directives:
        for page, (plain, maths) in pages.items():
            if tex in plain:
                shown += 1
                if tex not in maths:
                    wrong.append(f"{page}: {where}: {tex[:60]}")
    printed = [page for page, (plain, _) in pages.items() if ".. math::" in plain]
    assert shown > 25 and not wrong and not printed, (
        f"{len(wrong)} formulas of docstrings shown as text or code:\n" + "\n".join(wrong)
        + f"\npages that print '.. math::': {printed}")


def test_references_to_documented_objects_are_links(site):
    """A role that names an object of the API reference links to it, whatever path it names it by
    (``:class:`Taxonomy``` in a module that imports it from ``taxosmooth.taxonomy``)."""
    site, _ = site
    documented = {id(obj) for _, _, obj, _ in documented_objects(site) if callable(obj) or inspect.ismodule(obj)}
    links = unlinked = 0
    wrong = []
    for page in api_pages(site):
        text = page.read_text(encoding="utf-8")
        links += len(re.findall(r'<a class="autorefs autorefs-internal"[^>]*><code>', text))
        for target in sorted(set(re.findall(r'<span title="(taxosmooth[\w.]*)"><code>', text))):
            unlinked += 1
            obj = live_object(target)
            if obj is not None and id(obj) in documented:
                wrong.append(f"{page.parent.name}: {target}")
    assert links > 200 and unlinked < 30 and not wrong, wrong


# --- the griffe extension that translates the docstrings' markup (docs/_ext, configured in mkdocs.yml) ---

@pytest.fixture(scope="module")
def ext():
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("sphinx_docstrings", DOCS / "_ext" / "sphinx_docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_extension_is_configured():
    assert "docs/_ext/sphinx_docstrings.py:SphinxDocstrings" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def test_roles_become_references(ext):
    ref = ext.roles_to_references
    assert ref("as in :func:`~taxosmooth.cost_matrix`.") == (
        'as in <autoref identifier="taxosmooth.cost_matrix" optional>`cost_matrix`</autoref>.')
    assert ref(":mod:`taxosmooth.losses`") == (
        '<autoref identifier="taxosmooth.losses" optional>`taxosmooth.losses`</autoref>')
    assert ref(":py:meth:`the encoder <taxosmooth.Taxonomy.encode>`") == (
        '<autoref identifier="taxosmooth.Taxonomy.encode" optional>`the encoder`</autoref>')
    # outside the package, unresolvable or not to be linked: code
    assert ref("like :func:`torch.nn.functional.cross_entropy`") == "like `torch.nn.functional.cross_entropy`"
    assert ref(":meth:`~torch.nn.Module.load_state_dict`, :class:`Foo`") == "`load_state_dict`, `Foo`"
    assert ref(":func:`!taxosmooth.cost_matrix`") == "`taxosmooth.cost_matrix`"
    assert ref("``:func:`` and :term:`x`") == "``:func:`` and :term:`x`"  # not a role the API reference links


def test_roles_resolve_in_the_docstrings_scope(ext):
    griffe = pytest.importorskip("griffe")
    pkg = griffe.load("taxosmooth", search_paths=[str(ROOT)], resolve_aliases=True)
    crm, nodes = pkg["decision.crm"], pkg["decision.nodes"]
    assert ext.resolve(crm, "Taxonomy") == "taxosmooth.taxonomy.core.Taxonomy"  # imported: its own path
    assert ext.resolve(crm, "Taxonomy.encode") == "taxosmooth.taxonomy.core.Taxonomy.encode"
    assert ext.resolve(nodes["predict_node"], "node_probabilities") == (
        "taxosmooth.decision.nodes.node_probabilities")
    assert ext.resolve(crm, "taxosmooth.HXELoss") == "taxosmooth.losses.hxe.HXELoss"
    assert ext.resolve(crm, "torch") is None and ext.resolve(crm, "no_such_name") is None


def test_math_becomes_blocks(ext):
    math = ext.math_to_blocks
    assert math("A\n\n.. math:: x^2\n\nB") == "A\n\n$$\nx^2\n$$\n\nB"
    assert math("A:\n.. math::\n\n    a = b\n        + c\n\n    d = e\nB") == (
        "A:\n\n$$\na = b\n+ c\n$$\n\n$$\nd = e\n$$\n\nB")  # one block per equation, the text apart
    assert math("term\n:   text\n\n    .. math:: y\n\n    more") == (
        "term\n:   text\n\n    $$\n    y\n    $$\n\n    more")  # inside a definition (def_list)
    assert math("* item\n\n  .. math::\n\n      z\n") == "* item\n\n$$\nz\n$$"  # 2 spaces nest nothing in Markdown
    assert math("no math here\n    x") == "no math here\n    x"


def test_entry_types(ext):
    doc = ("Text\n\nParameters\n----------\nweight, ignore_index\n    As in torch.\nx, y : str\n    Names.\n"
           "mode : {\"a\", \"b\"} or bool\n**options\n    More.\n\nReturns\n-------\nz : int\n")
    assert ext.entry_types(doc) == {"weight": None, "ignore_index": None, "x": "str", "y": "str",
                                    "mode": '{"a", "b"} or bool', "options": None}
    assert ext.same_default('"wup"', "'wup'") and ext.same_default("float32", "torch.float32")
    assert not ext.same_default("0.5", "None")


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


# pages with formulas, and how many each has at least (the API pages: the docstrings' ``.. math::``)
FORMULA_PAGES = {"concepts": 11, "api/losses": 5, "api/metrics": 5, "api/decision": 5, "api/heads": 5,
                 "api/taxosmooth": 2}


@pytest.mark.parametrize("page", FORMULA_PAGES)
def test_formulas_render_in_a_browser(site, page):
    """Headless Chromium runs the page's scripts: every formula becomes KaTeX markup, none an error."""
    site, _ = site
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium (apt-get install chromium); under CI the formulas must be rendered")
        pytest.skip("no Chromium to render the page (apt-get install chromium)")
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--virtual-time-budget=10000", "--dump-dom", (site / page / "index.html").as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    dom = proc.stdout
    assert proc.returncode == 0 and "</html>" in dom, proc.stderr[-2000:]
    formulas = len(re.findall(r'class="arithmatex"', dom))
    # auto-render puts KaTeX's output in a <span> in place of the TeX text
    rendered = len(re.findall(r'class="arithmatex"><span><span class="katex(-display)?">', dom))
    assert formulas >= FORMULA_PAGES[page] and rendered == formulas, f"{rendered} of {formulas} formulas rendered"
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
