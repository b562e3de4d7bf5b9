"""The examples in the docstrings run and print what they show.

Every module of the package is searched with :mod:`doctest`; the WordNet
modules run only where WordNet data is found (the ``wordnet`` fixture skips,
or fails under ``TAXOSMOOTH_REQUIRE_WORDNET=1``).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import taxosmooth

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(taxosmooth.__path__, "taxosmooth.")
    if not m.name.endswith("__main__")
)
WORDNET = [m for m in MODULES if m.startswith("taxosmooth.wordnet")]
OTHERS = [m for m in MODULES if m not in WORDNET]


def _run(name: str) -> int:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    attempted = 0
    for test in finder.find(module, name):
        result = runner.run(test)
        attempted += result.attempted
        assert result.failed == 0, f"{test.name}: {result.failed} failing example(s) (see the output above)"
    return attempted


def test_the_package_has_docstring_examples():
    assert sum(_run(m) for m in ("taxosmooth.losses.hxe", "taxosmooth.targets", "taxosmooth.decision")) > 0


@pytest.mark.parametrize("name", OTHERS)
def test_docstring_examples(name):
    _run(name)


@pytest.mark.parametrize("name", WORDNET)
def test_wordnet_docstring_examples(name, wordnet):
    _run(name)


# a Sphinx role (:func:`~taxosmooth.x`) or a cross-reference the API docs resolve ([text][taxosmooth.x])
REFERENCE = re.compile(r":(?:func|class|meth|data|attr|mod|exc|obj):`~?(taxosmooth[\w.]*)`|\]\[(taxosmooth[\w.]*)\]")


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_reference_to_a_package_object_resolves():
    """Docstrings name objects that exist (a reference to ``taxosmooth.DISTANCE_KINDS``, which does not, was
    a broken link of the API reference)."""
    root = Path(taxosmooth.__file__).parent
    found, broken = 0, []
    for path in sorted(root.rglob("*.py")):
        for m in REFERENCE.finditer(path.read_text(encoding="utf-8")):
            found += 1
            target = m.group(1) or m.group(2)
            if not _resolves(target):
                broken.append(f"{path.relative_to(root.parent)}: {target}")
    assert found > 100 and not broken, broken
