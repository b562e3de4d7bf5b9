"""Exceptions raised by taxosmooth.

Every error names the offending node, class, file or value. They subclass the
built-in exception a user would otherwise expect (``ValueError``, ``KeyError``)
so that generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "TaxonomyError",
    "CycleError",
    "MultipleParentsError",
    "MultipleRootsError",
    "UnknownClassError",
    "TaxonomyFileError",
    "WordNetDataError",
    "WordNetLookupError",
]


class TaxonomyError(ValueError):
    """The graph or the class list does not describe a valid class taxonomy."""


class CycleError(TaxonomyError):
    """The graph has a directed cycle (or a self-loop); the message lists it."""


class MultipleParentsError(TaxonomyError):
    """A node has several parents and ``multiple_parents="error"`` was asked for."""


class MultipleRootsError(TaxonomyError):
    """The graph has several roots and ``multiple_roots="error"`` was asked for."""


class UnknownClassError(TaxonomyError, KeyError):
    """A class or node name that is not in the taxonomy."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class TaxonomyFileError(TaxonomyError):
    """A taxonomy file is malformed; the message gives the file and line."""


class WordNetDataError(RuntimeError):
    """No usable WordNet data was found; the message says how to install it."""


class WordNetLookupError(ValueError):
    """A synset name, id, offset or lemma that WordNet does not know."""
