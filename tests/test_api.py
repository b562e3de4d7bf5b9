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


def _import_graph():
    """Module -> the package modules it imports (anywhere in the file, functions included); importing
    ``a.b.c`` also runs the package ``a.b``'s ``__init__``."""
    import ast
    import pathlib

    import networkx as nx

    root = pathlib.Path(ts.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        name = ".".join(("taxosmooth",) + path.relative_to(root).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path

    def packages(name):
        parts = name.split(".")
        return {".".join(parts[:i]) for i in range(2, len(parts))}  # not the top package: it imports everything

    graph = nx.DiGraph()
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in (t for t in targets if t in modules):
                for m in {target} | packages(target):
                    if m != name and m not in packages(name):
                        graph.add_edge(name, m)
    return graph


def test_no_import_cycles_outside_the_taxonomy_package():
    """(``taxonomy.core`` and ``taxonomy.io`` import each other: the loaders are methods of ``Taxonomy``.)"""
    import networkx as nx

    cycles = [c for c in nx.simple_cycles(_import_graph()) if not all(m.startswith("taxosmooth.taxonomy.") for m in c)]
    assert not cycles
