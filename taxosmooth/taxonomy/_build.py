"""From a directed graph to a validated tree: checks, roots, DAG policy, pruning.

Everything here runs once, when a :class:`~taxosmooth.Taxonomy` is built.
The output is a plain parent map; :mod:`taxosmooth.taxonomy._compiled` turns
it into arrays.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from taxosmooth.errors import (
    CycleError,
    MultipleParentsError,
    MultipleRootsError,
    TaxonomyError,
    UnknownClassError,
)

MULTIPLE_PARENTS = ("error", "first", "shortest", "longest")
MULTIPLE_ROOTS = ("join", "error")
DEFAULT_ROOT_NAME = "<root>"


@dataclass
class BuiltTree:
    """A validated tree: ``parent[child] = parent`` (the root maps to ``None``)."""

    root: Hashable
    parent: dict
    children: dict
    weight: dict  # weight of the edge above each node (root: 0.0)
    classes: tuple
    report: list[str] = field(default_factory=list)
    virtual_root: bool = False


def _describe(name: Hashable) -> str:
    return repr(name)


def check_name(name: object, what: str = "node") -> None:
    """Reject names that cannot identify a node: unhashable, ``None``, blank strings."""
    try:
        hash(name)
    except TypeError:
        raise TaxonomyError(f"{what} name {name!r} is not hashable ({type(name).__name__})") from None
    if name is None:
        raise TaxonomyError(f"{what} name is None")
    if isinstance(name, str) and not name.strip():
        raise TaxonomyError(f"{what} name {name!r} is blank")
    if isinstance(name, float) and math.isnan(name):
        raise TaxonomyError(f"{what} name is NaN")


def _check_graph(graph: nx.DiGraph) -> None:
    if not isinstance(graph, nx.DiGraph):
        kind = type(graph).__name__
        if isinstance(graph, nx.Graph):
            raise TaxonomyError(
                f"the taxonomy must be a directed graph (parent -> child), got an undirected {kind}"
            )
        raise TaxonomyError(f"expected a networkx.DiGraph, got {kind}")
    if graph.is_multigraph():
        raise TaxonomyError("multigraphs are not supported: give each parent -> child edge once")
    if graph.number_of_nodes() == 0:
        raise TaxonomyError("the taxonomy graph is empty")
    for node in graph.nodes:
        check_name(node)
    loops = list(nx.selfloop_edges(graph))
    if loops:
        raise CycleError(f"self-loop on node {_describe(loops[0][0])}")
    if nx.is_directed_acyclic_graph(graph):  # a fast check; find_cycle only to name the cycle
        return
    cycle = nx.find_cycle(graph)
    path = " -> ".join(_describe(u) for u, _ in cycle) + f" -> {_describe(cycle[0][0])}"
    raise CycleError(f"the taxonomy has a cycle: {path}")


def _edge_weight(graph: nx.DiGraph, u: Hashable, v: Hashable) -> float:
    w = graph._succ[u][v].get("weight", 1.0)  # the edge's data dict, without building a view
    # no silent conversion: "2" or True are not edge lengths
    if isinstance(w, (bool, np.bool_)) or not isinstance(w, numbers.Real):
        raise TaxonomyError(f"edge {_describe(u)} -> {_describe(v)} has a non-numeric weight {w!r}")
    w = float(w)
    if not math.isfinite(w) or w <= 0:
        raise TaxonomyError(f"edge {_describe(u)} -> {_describe(v)} has weight {w!r}; weights must be finite and > 0")
    return w


def _check_classes(graph: nx.DiGraph, classes: Sequence[Hashable] | None) -> tuple:
    if classes is None:
        succ = graph._succ
        leaves = tuple(n for n in graph.nodes if not succ[n])
        return leaves
    if isinstance(classes, (str, bytes)):
        raise TaxonomyError("classes must be a sequence of class names, not a single string")
    classes = tuple(classes)
    if not classes:
        raise TaxonomyError("classes is empty")
    seen: dict = {}
    for i, c in enumerate(classes):
        check_name(c, "class")
        if c in seen:
            raise TaxonomyError(f"class {_describe(c)} is given twice (positions {seen[c]} and {i})")
        seen[c] = i
        if c not in graph:
            raise UnknownClassError(f"class {_describe(c)} is not a node of the taxonomy{_suggest(c, graph)}")
    return classes


def _suggest(name: Hashable, graph: nx.DiGraph) -> str:
    if not isinstance(name, str):
        return ""
    import difflib

    strings = [n for n in graph.nodes if isinstance(n, str)]
    close = difflib.get_close_matches(name, strings, n=3)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


def _restrict_to_ancestors(graph: nx.DiGraph, classes: tuple) -> nx.DiGraph:
    """Keep only the classes and their ancestors (in the DAG)."""
    keep = set(classes)
    stack = list(classes)
    pred = graph._pred
    while stack:
        for p in pred[stack.pop()]:
            if p not in keep:
                keep.add(p)
                stack.append(p)
    if len(keep) == graph.number_of_nodes():
        return graph
    return graph.subgraph([n for n in graph.nodes if n in keep])


def _check_no_nested_classes(graph: nx.DiGraph, classes: tuple) -> None:
    """A class may not lie above another class (classes must be mutually exclusive)."""
    class_set = set(classes)
    for c in classes:
        if graph.out_degree(c):
            below = next(d for d in nx.descendants(graph, c) if d in class_set)
            raise TaxonomyError(
                f"class {_describe(c)} is an ancestor of class {_describe(below)}; "
                "classes must be leaves of the taxonomy (no class may contain another)"
            )


def _hop_distances(graph: nx.DiGraph, order: list, longest: bool) -> dict:
    """Shortest or longest number of edges from a root to every node of a DAG."""
    dist: dict = {}
    pick = max if longest else min
    pred = graph._pred
    for n in order:
        ps = pred[n]
        dist[n] = pick(dist[p] for p in ps) + 1 if ps else 0
    return dist


def _choose_parents(graph: nx.DiGraph, policy: str, report: list[str]) -> dict:
    if policy not in MULTIPLE_PARENTS:
        raise ValueError(f"multiple_parents must be one of {MULTIPLE_PARENTS}, got {policy!r}")
    pred = graph._pred
    multi = [n for n in graph.nodes if len(pred[n]) > 1]
    if multi and policy == "error":
        n = multi[0]
        parents = ", ".join(map(_describe, pred[n]))
        raise MultipleParentsError(
            f"node {_describe(n)} has {len(pred[n])} parents ({parents}); the taxonomy is a DAG, not a tree "
            f"({len(multi)} such node(s)). Pass multiple_parents='first', 'shortest' or 'longest' to choose one."
        )
    dist = None
    if policy in ("shortest", "longest") and multi:
        dist = _hop_distances(graph, list(nx.topological_sort(graph)), longest=policy == "longest")
    parent: dict = {}
    for n in graph.nodes:
        ps = list(pred[n])
        if not ps:
            parent[n] = None
        elif len(ps) == 1:
            parent[n] = ps[0]
        else:
            if policy == "first":
                chosen = ps[0]
                why = "first listed"
            else:
                better = (lambda a, b: a > b) if policy == "longest" else (lambda a, b: a < b)
                chosen = ps[0]
                for p in ps[1:]:
                    if better(dist[p], dist[chosen]):
                        chosen = p
                why = f"{policy} path to the root, {dist[chosen] + 1} edges"
            parent[n] = chosen
            others = ", ".join(_describe(p) for p in ps if p != chosen)
            report.append(f"multiple parents: {_describe(n)} keeps parent {_describe(chosen)} ({why}); dropped {others}")
    return parent


def build_tree(
    graph: nx.DiGraph,
    classes: Sequence[Hashable] | None = None,
    *,
    multiple_parents: str = "error",
    multiple_roots: str = "join",
    root_name: Hashable = DEFAULT_ROOT_NAME,
    contract_unary: bool = False,
) -> BuiltTree:
    """Validate ``graph`` and turn it into a tree whose leaves are ``classes``."""
    if multiple_roots not in MULTIPLE_ROOTS:
        raise ValueError(f"multiple_roots must be one of {MULTIPLE_ROOTS}, got {multiple_roots!r}")
    _check_graph(graph)
    report: list[str] = []
    given = classes is not None
    classes = _check_classes(graph, classes)
    sub = _restrict_to_ancestors(graph, classes)
    if given:
        _check_no_nested_classes(sub, classes)
        dropped = graph.number_of_nodes() - sub.number_of_nodes()
        if dropped:
            report.append(f"pruned {dropped} node(s) that are not above any of the {len(classes)} classes")

    sub_pred = sub._pred
    roots = [n for n in sub.nodes if not sub_pred[n]]
    virtual = False
    if len(roots) > 1:
        shown = ", ".join(map(_describe, roots[:5])) + (", ..." if len(roots) > 5 else "")
        if multiple_roots == "error":
            raise MultipleRootsError(f"the taxonomy has {len(roots)} roots ({shown}); pass multiple_roots='join' to join them")
        check_name(root_name, "root")
        if root_name in graph:
            raise TaxonomyError(f"root_name {_describe(root_name)} is already a node of the taxonomy; choose another root_name")
        # keep the new root first and every other node in its original order;
        # add the edges into each node in their original order, so that the
        # "first listed" parent stays the first one
        rest = nx.DiGraph()
        rest.add_node(root_name)
        rest.add_nodes_from(sub.nodes)
        rest.add_edges_from((root_name, r) for r in roots)
        pred = sub._pred
        rest.add_edges_from((p, n, d) for n in sub.nodes for p, d in pred[n].items())
        sub = rest
        virtual = True
        report.append(f"joined {len(roots)} roots ({shown}) under a virtual root {_describe(root_name)}")

    parent = _choose_parents(sub, multiple_parents, report)
    weight = {n: (_edge_weight(sub, p, n) if p is not None else 0.0) for n, p in parent.items()}

    children: dict = {n: [] for n in parent}
    for n, p in parent.items():
        if p is not None:
            children[p].append(n)

    # Dropping parents can leave nodes with no class below them: prune those.
    class_set = set(classes)
    dead = [n for n, ch in children.items() if not ch and n not in class_set]
    removed = []
    while dead:
        n = dead.pop()
        removed.append(n)
        p = parent.pop(n)
        del children[n], weight[n]
        if p is not None:
            children[p].remove(n)
            if not children[p] and p not in class_set:
                dead.append(p)
    if removed:
        shown = ", ".join(map(_describe, removed[:5])) + (", ..." if len(removed) > 5 else "")
        report.append(f"pruned {len(removed)} node(s) left without classes by the parent choices: {shown}")

    root = next(n for n, p in parent.items() if p is None)
    if contract_unary:
        root = _contract_unary(root, parent, children, weight, class_set, report)
        virtual = virtual and root_name in parent  # the virtual root itself may have been contracted
    return BuiltTree(root, parent, children, weight, classes, report, virtual)


def _contract_unary(root, parent, children, weight, class_set, report) -> Hashable:
    contracted = []
    for n in list(parent):
        if len(children.get(n, ())) == 1 and n not in class_set:
            (c,) = children[n]
            p = parent[n]
            parent[c] = p
            if p is None:
                weight[c] = 0.0
                root = c
            else:
                weight[c] += weight[n]
                ch = children[p]
                ch[ch.index(n)] = c
            del parent[n], children[n], weight[n]
            contracted.append(n)
    if contracted:
        shown = ", ".join(map(_describe, contracted[:5])) + (", ..." if len(contracted) > 5 else "")
        report.append(f"contracted {len(contracted)} single-child node(s): {shown}")
    return root


def graph_from_edges(edges: Iterable, *, source: str = "edges") -> nx.DiGraph:
    """A DiGraph from ``(parent, child)`` or ``(parent, child, weight)`` items."""
    graph = nx.DiGraph()
    for i, edge in enumerate(edges):
        try:
            n = len(edge)
        except TypeError:
            raise TaxonomyError(f"{source} item {i}: expected (parent, child) or (parent, child, weight), got {edge!r}") from None
        if n not in (2, 3) or isinstance(edge, (str, bytes)):
            raise TaxonomyError(f"{source} item {i}: expected (parent, child) or (parent, child, weight), got {edge!r}")
        u, v = edge[0], edge[1]
        check_name(u, f"{source} item {i}: parent")
        check_name(v, f"{source} item {i}: child")
        if graph.has_edge(u, v):
            raise TaxonomyError(f"{source} item {i}: edge {_describe(u)} -> {_describe(v)} is given twice")
        if n == 3:
            graph.add_edge(u, v, weight=edge[2])
        else:
            graph.add_edge(u, v)
    return graph
