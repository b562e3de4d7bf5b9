"""The public surface: what ``dir()`` shows is the API, every name in it works, one name per concept."""

from __future__ import annotations

import importlib
import inspect

import pytest

import taxosmooth as ts

PUBLIC_MODULES = ["taxosmooth", "taxosmooth.functional", "taxosmooth.losses", "taxosmooth.decision",
                  "taxosmooth.distances", "taxosmooth.targets", "taxosmooth.costs", "taxosmooth.tree_ops",
                  "taxosmooth.embeddings", "taxosmooth.heads", "taxosmooth.metrics",
                  "taxosmooth.calibration", "taxosmooth.decision.nodes", "taxosmooth.metrics.curves", "taxosmooth.data"]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_dir_shows_only_the_public_api(name):
    module = importlib.import_module(name)
    shown = dir(module)
    leaked = [n for n in shown if n.startswith("_") and n != "__version__"]
    assert not leaked, f"{name} shows private names {leaked}"
    for helper in ("torch", "np", "numpy", "annotations", "nn", "cached", "contextlib"):
        assert helper not in shown, f"{name} shows {helper!r}"
    for n in shown:
        getattr(module, n)  # every shown name resolves (lazy modules load)
    assert set(getattr(module, "__all__", shown)) <= set(shown)


def test_version_is_the_packages():
    from importlib.metadata import version

    assert ts.__version__ == version("taxosmooth")


def test_one_name_for_a_taxonomy_or_matrix_argument():
    """Every public callable that accepts "a taxonomy or a matrix" names it ``source``, and ``distance``
    (never ``kind``) picks the tree distance."""
    callables = [ts.soft_targets, ts.beta_for_mass, ts.cost_matrix, ts.crm_predict, ts.conditional_risk,
                 ts.CRMClassifier, ts.ExpectedCostLoss, ts.PairwiseCostLoss, ts.class_embeddings,
                 ts.class_similarity, ts.haframe_weights, ts.functional.expected_cost_loss,
                 ts.functional.pairwise_cost_loss, ts.metrics.mistake_severity, ts.metrics.mean_hierarchical_distance_at_k,
                 ts.metrics.min_hierarchical_distance_at_k, ts.metrics.report]
    for f in callables:
        params = list(inspect.signature(f).parameters)
        assert "source" in params, f"{f.__qualname__}: {params}"
        assert "distance" in params and "kind" not in params, f.__qualname__
    for f in (ts.class_distances, ts.node_distance, ts.node_costs):
        params = list(inspect.signature(f).parameters)
        assert params[0] == "taxonomy" and "distance" in params and "kind" not in params, f.__qualname__
