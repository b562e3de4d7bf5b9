"""The examples in the docstrings run and print what they show.

Every module of the package is searched with :mod:`doctest`; the WordNet
modules run only where WordNet data is found (the ``wordnet`` fixture skips,
or fails under ``TAXOSMOOTH_REQUIRE_WORDNET=1``).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

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
