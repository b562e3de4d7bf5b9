"""From a directed graph to a validated tree: checks, roots, DAG policy, pruning.

Everything here runs once, when a :class:`~taxosmooth.Taxonomy` is built.
The output is a plain parent map; :mod:`taxosmooth.taxonomy._compiled` turns
it into arrays.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Iterable, Mapping, MappingView, Sequence, Set
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

#: ``classes=TREE_ORDER``: every leaf, in depth-first order (the class order equals the leaf order)
TREE_ORDER = "tree"
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


@dataclass
class Locations:
    """Where a file reader found each edge and node: ``"tree.csv:12"``, ``"tree.json: edges[3]"``.

    A side table, so that the graph keeps only the user's own attributes; the
    build errors cite it (a cycle, several parents, a root-name collision).
    """

    edges: dict = field(default_factory=dict)  # (parent, child) -> location
    nodes: dict = field(default_factory=dict)  # node -> location of its first mention

    def of_edge(self, u: Hashable, v: Hashable) -> str | None:
        where = self.edges.get((u, v))
        return None if where is None else str(where)

    def of_node(self, n: Hashable) -> str | None:
        where = self.nodes.get(n)
        return None if where is None else str(where)


def _at(where: str | None) -> str:
    """``" (tree.csv:12)"``, or nothing when the location is unknown."""
    return f" ({where})" if where else ""


def _prefix(where: str | None) -> str:
    return f"{where}: " if where else ""


def _big_int(w: numbers.Integral) -> str:
    """An integer too large for a float, shown by its size (its repr may not even exist: int max_str_digits)."""
    digits = int(int(w).bit_length() * math.log10(2)) + 1
    return f"{'-' if w < 0 else ''}an integer of about {digits} digits (too large for a float)"


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


def _check_graph(graph: nx.DiGraph, locations: Locations | None = None) -> None:
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
    loc = locations or Locations()
    loops = list(nx.selfloop_edges(graph))
    if loops:
        n = loops[0][0]
        where = loc.of_edge(n, n)
        raise CycleError(f"{_prefix(where)}self-loop on node {_describe(n)}")
    if nx.is_directed_acyclic_graph(graph):  # a fast check; find_cycle only to name the cycle
        return
    cycle = nx.find_cycle(graph)
    path = " -> ".join(_describe(u) for u, _ in cycle) + f" -> {_describe(cycle[0][0])}"
    lines = [w for w in (loc.of_edge(u, v) for u, v in cycle) if w]
    where = f" (edges at {', '.join(lines)})" if lines else ""
    raise CycleError(f"the taxonomy has a cycle: {path}{where}")


def _edge_weight(graph: nx.DiGraph, u: Hashable, v: Hashable, where: str | None = None) -> float:
    w = graph._succ[u][v].get("weight", 1.0)  # the edge's data dict, without building a view
    # no silent conversion: "2" or True are not edge lengths
    if isinstance(w, (bool, np.bool_)) or not isinstance(w, numbers.Real):
        raise TaxonomyError(f"{_prefix(where)}edge {_describe(u)} -> {_describe(v)} has a non-numeric weight {w!r}")
    try:
        value = float(w)
    except OverflowError:  # an int such as 10**400
        value = math.inf
    if not math.isfinite(value) or value <= 0:
        shown = repr(w) if math.isfinite(value) or not isinstance(w, numbers.Integral) else _big_int(w)
        raise TaxonomyError(f"{_prefix(where)}edge {_describe(u)} -> {_describe(v)} has weight {shown}; weights must be finite and > 0")
    return value


def _check_classes(graph: nx.DiGraph, classes: Sequence[Hashable] | None) -> tuple:
    if classes is None:
        succ = graph._succ
        leaves = tuple(n for n in graph.nodes if not succ[n])
        return leaves
    if isinstance(classes, (str, bytes)):
        raise TaxonomyError(f"classes must be a sequence of class names (or {TREE_ORDER!r}: every leaf in depth-first "
                            f"order), not a single string: {classes!r}")
    # the class order is the logit order: a collection without a fixed order would make it change
    # from run to run (a set's order follows PYTHONHASHSEED)
    if isinstance(classes, (Set, Mapping, MappingView)):
        kind = type(classes).__name__
        raise TypeError(
            f"classes must be an ordered sequence (a list, a tuple, an array), got a {kind}: its order is not the "
            "logit order (a set's order changes from run to run with PYTHONHASHSEED); pass a list in the order "
            "of the model's outputs, e.g. sorted(classes)"
        )
    try:
        classes = tuple(classes)
    except TypeError:
        raise TypeError(f"classes must be a sequence of class names, got {type(classes).__name__}") from None
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


def _check_leaf_classes(graph: nx.DiGraph, classes: tuple, locations: Locations | None) -> None:
    """Every class must be a leaf: an internal node (or the root) as a class would hide its subtree."""
    succ, pred = graph._succ, graph._pred
    for c in classes:
        kids = succ[c]
        if kids:
            where = (locations or Locations()).of_node(c)
            what = "the root" if not pred[c] else "an internal node"
            shown = ", ".join(map(_describe, list(kids)[:3])) + (", ..." if len(kids) > 3 else "")
            raise TaxonomyError(
                f"{_prefix(where)}class {_describe(c)} is {what} of the taxonomy ({len(kids)} children: {shown}); "
                "classes must be leaves. To label samples with it as a coarse label, keep the leaves as classes and "
                f"use Taxonomy.encode([{_describe(c)}]) for its target id; to make it a class, remove the nodes below it"
            )


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


def _hop_distances(graph: nx.DiGraph, order: list, longest: bool) -> dict:
    """Shortest or longest number of edges from a root to every node of a DAG."""
    dist: dict = {}
    pick = max if longest else min
    pred = graph._pred
    for n in order:
        ps = pred[n]
        dist[n] = pick(dist[p] for p in ps) + 1 if ps else 0
    return dist


def _choose_parents(graph: nx.DiGraph, policy: str, report: list[str], locations: Locations | None = None) -> dict:
    if policy not in MULTIPLE_PARENTS:
        raise ValueError(f"multiple_parents must be one of {MULTIPLE_PARENTS}, got {policy!r}")
    pred = graph._pred
    multi = [n for n in graph.nodes if len(pred[n]) > 1]
    if multi and policy == "error":
        n = multi[0]
        loc = locations or Locations()
        wheres = [loc.of_edge(p, n) for p in pred[n]]
        parents = ", ".join(_describe(p) + _at(w) for p, w in zip(pred[n], wheres))
        raise MultipleParentsError(
            f"{_prefix(next((w for w in reversed(wheres) if w), None))}"
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
                assert dist is not None  # computed above for "shortest" and "longest"
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
    classes: Sequence[Hashable] | str | None = None,
    *,
    multiple_parents: str = "error",
    multiple_roots: str = "join",
    root_name: Hashable = DEFAULT_ROOT_NAME,
    contract_unary: bool = False,
    locations: Locations | None = None,
) -> BuiltTree:
    """Validate ``graph`` and turn it into a tree whose leaves are ``classes``.

    ``locations`` (from a file reader) lets the errors cite the file and line.
    ``classes=TREE_ORDER`` keeps every leaf and puts the classes in the
    depth-first order of the tree that the default order gives.
    """
    if multiple_roots not in MULTIPLE_ROOTS:
        raise ValueError(f"multiple_roots must be one of {MULTIPLE_ROOTS}, got {multiple_roots!r}")
    if not isinstance(contract_unary, (bool, np.bool_)):
        raise TypeError(f"contract_unary must be True or False, got {contract_unary!r}")
    loc = locations or Locations()
    _check_graph(graph, loc)
    report: list[str] = []
    tree_order = isinstance(classes, str) and classes == TREE_ORDER
    if tree_order:
        classes = None
    given = classes is not None
    classes = _check_classes(graph, classes)
    sub = _restrict_to_ancestors(graph, classes)
    if given:
        _check_leaf_classes(graph, classes, loc)
        dropped = graph.number_of_nodes() - sub.number_of_nodes()
        if dropped:
            report.append(f"pruned {dropped} node(s) that are not above any of the {len(classes)} classes")

    sub_pred = sub._pred
    roots = [n for n in sub.nodes if not sub_pred[n]]
    virtual = False
    if len(roots) > 1:
        shown = ", ".join(map(_describe, roots[:5])) + (", ..." if len(roots) > 5 else "")
        if multiple_roots == "error":
            located = ", ".join(_describe(r) + _at(loc.of_node(r)) for r in roots[:5]) + (", ..." if len(roots) > 5 else "")
            raise MultipleRootsError(f"the taxonomy has {len(roots)} roots ({located}); pass multiple_roots='join' to join them")
        check_name(root_name, "root")
        if root_name in graph:
            where = loc.of_node(root_name)
            raise TaxonomyError(
                f"{_prefix(where)}root_name {_describe(root_name)} is already a node of the taxonomy, so it cannot name "
                f"the virtual root that joins the {len(roots)} roots ({shown}); choose another root_name"
            )
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

    parent = _choose_parents(sub, multiple_parents, report, loc)
    weight = {n: (_edge_weight(sub, p, n, loc.of_edge(p, n)) if p is not None else 0.0) for n, p in parent.items()}

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
    _order_children(root, children, classes)
    if tree_order:
        # the leaves in depth-first order; the children keep their order (each child's first class comes
        # before its next sibling's in this order too), so the layout is that of the default order
        classes = _leaves_depth_first(root, children)
    return BuiltTree(root, parent, children, weight, classes, report, virtual)


def _leaves_depth_first(root, children: dict) -> tuple:
    """The leaves under ``root`` in depth-first order (no recursion: any depth)."""
    leaves = []
    stack = [root]
    while stack:
        n = stack.pop()
        kids = children.get(n)
        if kids:
            stack.extend(reversed(kids))
        else:
            leaves.append(n)
    return tuple(leaves)


def _order_children(root, children: dict, classes: tuple) -> None:
    """Put every node's children in the order of their first class (in class order).

    The depth-first layout — node ids, and so the target ids of internal
    nodes — then follows from the classes and the parents alone: two equal
    taxonomies (same classes in the same order, same parents) have the same
    ids, whatever order the input listed siblings in, and a file written in
    class order reads back with the same ids.
    """
    first = {c: i for i, c in enumerate(classes)}
    order = [root]  # breadth first: every parent before its children
    for n in order:
        order.extend(children.get(n, ()))
    for n in reversed(order):
        kids = children.get(n)
        if kids:
            kids.sort(key=first.__getitem__)
            first[n] = first[kids[0]]


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
