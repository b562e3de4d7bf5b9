"""Class taxonomies: validation, DAG resolution, compilation, files, target ids."""

from taxosmooth.taxonomy._compiled import CompiledTree
from taxosmooth.taxonomy.core import Taxonomy

__all__ = ["Taxonomy", "CompiledTree"]
