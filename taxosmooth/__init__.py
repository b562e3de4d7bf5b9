"""taxosmooth: hierarchy-aware soft targets, losses, decisions and metrics for PyTorch.

A taxonomy of the classes gives distances between them; distances give soft
targets or misclassification costs; those feed losses that penalise close
mistakes (horse → zebra) less than far ones (horse → whale).
"""

from taxosmooth import metrics
from taxosmooth.costs import cost_matrix, node_costs
from taxosmooth.decision import CRMClassifier, conditional_risk, crm_predict
from taxosmooth.distances import class_distances, lca_matrix, node_distance
from taxosmooth import functional
from taxosmooth.losses import (
    ExpectedCostLoss,
    HierarchicalSoftLabelLoss,
    HXELoss,
    PairwiseCostLoss,
    SoftTargetCrossEntropy,
    TreeWassersteinLoss,
    set_checks,
)
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
from taxosmooth.targets import soft_targets
from taxosmooth.taxonomy import CompiledTree, Taxonomy
from taxosmooth.tree_ops import TreeTensors

__version__ = "0.1.0"

__all__ = [
    "set_checks",
    "Taxonomy",
    "CompiledTree",
    "class_distances",
    "node_distance",
    "lca_matrix",
    "soft_targets",
    "cost_matrix",
    "node_costs",
    "crm_predict",
    "conditional_risk",
    "CRMClassifier",
    "metrics",
    "functional",
    "TreeTensors",
    "SoftTargetCrossEntropy",
    "HierarchicalSoftLabelLoss",
    "HXELoss",
    "ExpectedCostLoss",
    "TreeWassersteinLoss",
    "PairwiseCostLoss",
    "TaxonomyError",
    "CycleError",
    "MultipleParentsError",
    "MultipleRootsError",
    "UnknownClassError",
    "TaxonomyFileError",
    "WordNetDataError",
    "WordNetLookupError",
]
