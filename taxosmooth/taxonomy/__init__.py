"""Class taxonomies: validation, DAG resolution, compilation, files."""

from taxosmooth.taxonomy._compiled import CompiledTree
from taxosmooth.taxonomy.core import DISTANCE_KINDS, Taxonomy

__all__ = ["Taxonomy", "CompiledTree", "DISTANCE_KINDS"]
