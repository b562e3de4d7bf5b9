"""taxosmooth: hierarchy-aware soft targets, losses, decisions and metrics for PyTorch.

A taxonomy of the classes gives distances between them; distances give soft
targets or misclassification costs; those feed losses that penalise close
mistakes (horse → zebra) less than far ones (horse → whale), decisions that
pick the cheapest class, and metrics of how bad the mistakes are.

The stages, and where they live:

* :class:`Taxonomy` (:mod:`taxosmooth.taxonomy`): the compiled tree, its files
  and target ids; :mod:`taxosmooth.wordnet` builds one from WordNet synsets;
* :mod:`taxosmooth.distances`, :mod:`taxosmooth.targets`, :mod:`taxosmooth.costs`:
  tree distances, soft targets, costs (one resolver of "a taxonomy or a matrix");
* :mod:`taxosmooth.losses` and :mod:`taxosmooth.functional`: drop-in losses;
  :mod:`taxosmooth.heads` and :mod:`taxosmooth.embeddings`: classifier heads
  built from the hierarchy;
* :mod:`taxosmooth.decision` and :mod:`taxosmooth.metrics`: decisions by expected
  cost and metrics; :mod:`taxosmooth.plots` (matplotlib) draws them;
* :mod:`taxosmooth.data`: the bundled animal taxonomy, and synthetic features
  shaped by any taxonomy (:func:`taxosmooth.data.make_tree_blobs`);
* :mod:`taxosmooth.parallel`: class shards for losses split over processes
  (every loss takes ``process_group=``).
"""

from types import ModuleType as _ModuleType

from taxosmooth import calibration, data, decision, embeddings, functional, heads, losses, metrics, parallel, tree_ops
from taxosmooth.costs import cost_matrix, node_costs
from taxosmooth.calibration import fit_temperature
from taxosmooth.decision import CRMClassifier, conditional_risk, crm_predict, node_probabilities, predict_node
from taxosmooth.distances import class_distances, lca_matrix, node_distance
from taxosmooth.embeddings import class_embeddings, class_similarity, haframe_weights
from taxosmooth.errors import (
    CycleError,
    MultipleParentsError,
    MultipleRootsError,
    TaxonomyError,
    TaxonomyFileError,
    UnknownClassError,
    WordNetDataError,
    WordNetLookupError,
)
from taxosmooth.heads import EmbeddingHead, FixedClassifier, HierarchicalSoftmax, LevelwiseHead
from taxosmooth.losses import (
    ExpectedCostLoss,
    HierarchicalSoftLabelLoss,
    HXELoss,
    LinearLoss,
    PairwiseCostLoss,
    SoftTargetCrossEntropy,
    TreeWassersteinLoss,
    linear_loss,
    set_checks,
)
from taxosmooth.targets import beta_for_mass, soft_targets
from taxosmooth.taxonomy import CompiledTree, Taxonomy
from taxosmooth.tree_ops import TreeTensors

__version__ = "0.2.0"

__all__ = [
    # the taxonomy
    "Taxonomy",
    "CompiledTree",
    # distances, targets, costs
    "class_distances",
    "node_distance",
    "lca_matrix",
    "soft_targets",
    "beta_for_mass",
    "cost_matrix",
    "node_costs",
    # losses
    "SoftTargetCrossEntropy",
    "HierarchicalSoftLabelLoss",
    "HXELoss",
    "ExpectedCostLoss",
    "TreeWassersteinLoss",
    "PairwiseCostLoss",
    "LinearLoss",
    "linear_loss",
    "set_checks",
    "TreeTensors",
    # heads and class vectors
    "HierarchicalSoftmax",
    "LevelwiseHead",
    "EmbeddingHead",
    "FixedClassifier",
    "class_embeddings",
    "class_similarity",
    "haframe_weights",
    # decisions
    "crm_predict",
    "conditional_risk",
    "CRMClassifier",
    "node_probabilities",
    "predict_node",
    "fit_temperature",
    # errors
    "TaxonomyError",
    "CycleError",
    "MultipleParentsError",
    "MultipleRootsError",
    "UnknownClassError",
    "TaxonomyFileError",
    "WordNetDataError",
    "WordNetLookupError",
    # modules
    "calibration",
    "data",
    "parallel",
    "decision",
    "embeddings",
    "functional",
    "heads",
    "losses",
    "metrics",
    "tree_ops",
]

_LAZY_MODULES = ("wordnet", "plots", "cli")


def __getattr__(name: str) -> _ModuleType:
    # modules with heavy or optional dependencies (nltk, matplotlib) load on first use
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f"taxosmooth.{name}")
    raise AttributeError(f"module 'taxosmooth' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(_LAZY_MODULES) | {"__version__"})
