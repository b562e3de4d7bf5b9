"""Example data bundled with taxosmooth.

``animals.csv`` (edge list) and ``animals.txt`` (one root-to-leaf path per
line) hold the same small animal taxonomy: 40 classes (horse, zebra, whale,
shark, ...) under ``animal``, with common names and ranks after the Linnaean
classification (simplified). Class depths range from 2 to 5, and two internal
nodes (``amphibian``, ``arthropod``) have a single child.

>>> from taxosmooth.data import load_animals
>>> tax = load_animals()
>>> tax.num_classes, tax.lca("horse", "whale"), tax.lca("horse", "shark")
(40, 'mammal', 'vertebrate')
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taxosmooth.taxonomy import Taxonomy

__all__ = ["EXAMPLES", "example_path", "load_animals"]

#: the bundled example files
EXAMPLES = ("animals.csv", "animals.txt")


def example_path(name: str = "animals.csv") -> Path:
    """Path of a bundled example file (one of :data:`EXAMPLES`)."""
    if name not in EXAMPLES:
        raise ValueError(f"unknown example file {name!r}; choose one of {', '.join(EXAMPLES)}")
    return Path(str(resources.files(__name__).joinpath(name)))


def load_animals(**options: Any) -> Taxonomy:
    """The bundled animal taxonomy as a :class:`~taxosmooth.Taxonomy` (options as in ``Taxonomy.load``)."""
    from taxosmooth import Taxonomy

    return Taxonomy.load(example_path("animals.csv"), **options)
