"""The suite's warning filters (pyproject.toml, ``filterwarnings``).

A DeprecationWarning attributed to taxosmooth or to the tests fails the test that
raised it; one that a third-party library raises about its own code does not.
The oracle is Python's own ``warnings`` machinery: code run under a module name
of our choosing is attributed to that module.
"""

from __future__ import annotations

import warnings

import pytest

WARN = "import warnings\nwarnings.warn('old API', {category})\n"


def warn_from(module: str, category: type[Warning]) -> None:
    exec(compile(WARN.format(category=category.__name__), f"<{module}>", "exec"), {"__name__": module})


@pytest.mark.parametrize("module", ["taxosmooth", "taxosmooth.losses.hxe", "test_losses", "conftest", "_trees"])
@pytest.mark.parametrize("category", [DeprecationWarning, PendingDeprecationWarning])
def test_our_deprecation_warnings_are_errors(module, category):
    with pytest.raises(category, match="old API"):
        warn_from(module, category)


@pytest.mark.parametrize("module", ["torch.nn.modules.module", "numpy", "nltk.corpus.reader", "mytaxosmooth"])
def test_third_party_deprecation_warnings_are_not_errors(module):
    with warnings.catch_warnings(record=True) as caught:  # keeps the filters, records instead of printing
        warn_from(module, DeprecationWarning)
    assert [str(w.message) for w in caught] == ["old API"]


def test_torch_script_method_warning_is_ignored():
    """torch warns about torch.jit.script_method when torch._inductor imports torch.utils.mkldnn."""
    with warnings.catch_warnings(record=True) as caught:
        warn = "import warnings\nwarnings.warn('`torch.jit.script_method` is deprecated. Please switch', DeprecationWarning)"
        exec(compile(warn, "<torch.jit._script>", "exec"), {"__name__": "torch.jit._script"})
    assert caught == []
