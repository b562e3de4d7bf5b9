"""Taxonomy files: edge lists (CSV/TSV), JSON (node-link or nested), path-per-line text.

Each format's reader and writer (``read_*_file``, ``render_*``) is registered
in :mod:`taxosmooth.taxonomy.formats`, which picks them; rank tables are in
:mod:`taxosmooth.taxonomy._ranks`. Every reader reports malformed input with
the file name and line (or, in a JSON document, the place in it), and records
where each edge was read
(:class:`~taxosmooth.taxonomy._build.Locations`) so that the errors found
later, while building the tree (a cycle, several parents), cite it too.
``docs/taxonomy-files.md`` states the rules; this module implements them.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import networkx as nx

from taxosmooth.errors import TaxonomyError, TaxonomyFileError
from taxosmooth.taxonomy._build import Locations, check_name
from taxosmooth.taxonomy._json import load_json
from taxosmooth.taxonomy._text import (
    DECIMAL,
    LINE_BREAKS,
    NON_FINITE,
    delimiter_of,
    is_number_text,
    physical_lines,
    quote_field,
    read_text,
    split_fields,
)

if TYPE_CHECKING:
    from taxosmooth.taxonomy.core import Taxonomy
    from taxosmooth.taxonomy.formats import ParsedFile

# a weight is a plain decimal number: float() would also take "1_0", "١٠" (Arabic-Indic digits), " 1 "
#: the header row of an edge list
HEADER = ("parent", "child")
#: words that make a first row look like a header (source,target / from,to / child,parent ...)
HEADER_WORDS = frozenset(
    "parent child weight source target from to src dst node id name label head tail edge cost length distance "
    "parent_id child_id parent_name child_name superclass subclass hypernym hyponym broader narrower".split()
)


# ---------------------------------------------------------------------------- the files of each format
def read_edges_file(path: Path) -> ParsedFile:
    """An edge-list file (``.tsv``: tabs)."""
    from taxosmooth.taxonomy.formats import ParsedFile

    graph, locations = read_edges(read_text(path), str(path), delimiter_of(path))
    return ParsedFile(graph, locations)


def read_paths_file(path: Path) -> ParsedFile:
    """A file of root-to-leaf paths, one per line."""
    from taxosmooth.taxonomy.formats import ParsedFile

    locations = Locations()
    graph = graph_from_paths(physical_lines(read_text(path)), source=str(path), locations=locations)
    return ParsedFile(graph, locations)


def read_json_file(path: Path) -> ParsedFile:
    """A JSON file: node-link data (with its stored class order, if any) or a nested object."""
    from taxosmooth.taxonomy.formats import ParsedFile

    graph, classes, locations = _read_json(read_text(path), path)
    return ParsedFile(graph, locations, classes=classes)


# ---------------------------------------------------------------------------- edge lists
def parse_weight(text: str, where: str) -> float:
    """A weight field: a plain ASCII decimal number, finite and > 0."""
    if DECIMAL.fullmatch(text):
        value = float(text)
    elif NON_FINITE.fullmatch(text):
        value = math.nan
    else:
        raise TaxonomyFileError(f"{where}: weight {text!r} is not a number (write it as e.g. 2, 0.5 or 1e-3)")
    if not math.isfinite(value) or value <= 0:
        raise TaxonomyFileError(f"{where}: weight {text!r} must be finite and > 0")
    return value


def _is_header(fields: list[str], quoted: list[bool]) -> bool:
    low = [f.lower() for f in fields]
    return not any(quoted) and (low == list(HEADER) or low == [*HEADER, "weight"])


def _looks_like_header(fields: list[str], quoted: list[bool]) -> bool:
    if any(quoted):
        return False
    low = [f.lower() for f in fields]
    if any(f in HEADER for f in low) or all(f in HEADER_WORDS for f in low):
        return True
    return len(fields) == 3 and not is_number_text(fields[2])


_RANKS = "domain kingdom phylum division class order family tribe genus section series species variety form".split()
#: column names of a rank table (taxonomic ranks, and the names datasets give their levels): a first row
#: of these is a rank table's header (superclass,class as CIFAR-100 ships it; genus,species), not an edge
RANK_WORDS = frozenset(
    [prefix + rank for rank in _RANKS for prefix in ("", "super", "sub", "infra", "parv")]
    + "realm clade cohort strain forma taxon rank level coarse fine category subcategory supercategory".split()
)
_NUMBERED_LEVEL = re.compile(r"(?:level|rank|tier|depth)_?\d+", re.ASCII)
_COLUMN_SUFFIX = re.compile(r"_(?:name|names|label|labels|id)$")


def _is_rank_word(field: str) -> bool:
    word = re.sub(r"[\s-]+", "_", field.strip().lower())
    while (shorter := _COLUMN_SUFFIX.sub("", word)) != word:  # coarse_label_name -> coarse
        word = shorter
    return word in RANK_WORDS or bool(_NUMBERED_LEVEL.fullmatch(word))


def _looks_like_rank_header(fields: list[str], quoted: list[bool]) -> bool:
    return not any(quoted) and len(fields) >= 2 and all(_is_rank_word(f) for f in fields)


#: the way out named by every error about a first row that is not an edge
_RANKS_ADVICE = "a rank table (one column per rank, a header row of rank names) is read with format='ranks'"


def read_edges(text: str, source: str, delimiter: str = ",") -> tuple[nx.DiGraph, Locations]:
    """An edge list: one ``parent,child[,weight]`` per line (rules in ``docs/taxonomy-files.md``)."""
    graph = nx.DiGraph()
    locations = Locations()
    edge_lines, node_lines = locations.edges, locations.nodes
    width = None
    header_line = None
    first_line = None  # the first non-blank row, when it is not the header
    first_edge = None  # its edge, when it may be a header row in disguise (two unquoted names)
    for lineno, line in enumerate(physical_lines(text), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{source}:{lineno}"
        fields, quoted = split_fields(line, delimiter, where)
        if not any(quoted) and not any(fields):
            continue  # a row of empty cells, as spreadsheets export
        shown = delimiter.join(fields)
        if first_line is None and header_line is None:
            if _is_header(fields, quoted):
                width = len(fields)
                header_line = lineno
                continue
            first_line = lineno
            if _looks_like_rank_header(fields, quoted):
                raise TaxonomyFileError(
                    f"{where}: the first row {shown!r} looks like the header of a rank table, not an edge: "
                    f"{_RANKS_ADVICE}. The header of an edge list is 'parent{delimiter}child' (parent first); if "
                    "these are node names, put that header row above them or quote the names"
                )
            if _looks_like_header(fields, quoted):
                if len(fields) == 3 and not is_number_text(fields[2]) and not any(f.lower() in HEADER_WORDS for f in fields[:2]):
                    why = f"its third field, weight {fields[2]!r}, is not a number"
                else:
                    why = "it looks like a header row"
                raise TaxonomyFileError(
                    f"{where}: the first row {shown!r} is not an edge: {why}. The header of an edge list must be "
                    f"'parent{delimiter}child' or 'parent{delimiter}child{delimiter}weight' (parent first); if these "
                    f"are node names, put that header row above them or quote the names; {_RANKS_ADVICE}"
                )
            if len(fields) == 2 and not any(quoted):
                first_edge = (fields[0], fields[1], where, shown)
        elif _is_header(fields, quoted):
            first_at = f" (the header is on line {header_line})" if header_line else ""
            raise TaxonomyFileError(
                f"{where}: a header row {shown!r} in the middle of the file{first_at}: were two files joined? "
                "(to use 'parent' and 'child' as node names, quote them)"
            )
        if len(fields) not in (2, 3):
            hint = f"; {_RANKS_ADVICE}" if lineno == first_line else ""
            raise TaxonomyFileError(
                f"{where}: expected 2 fields (parent, child) or 3 (parent, child, weight), got {len(fields)}: {shown!r}{hint}"
            )
        if width is not None and len(fields) != width:
            raise TaxonomyFileError(f"{where}: expected {width} fields as in the header, got {len(fields)}: {shown!r}")
        parent, child = fields[0], fields[1]
        for what, name in (("parent", parent), ("child", child)):
            if not name:
                raise TaxonomyFileError(f"{where}: empty {what} name in {shown!r}")
        if graph.has_edge(parent, child):
            raise TaxonomyFileError(
                f"{where}: edge {parent!r} -> {child!r} is listed twice (first on {edge_lines[parent, child]})"
            )
        if len(fields) == 3:
            graph.add_edge(parent, child, weight=parse_weight(fields[2], where))
        else:
            graph.add_edge(parent, child)
        edge_lines[parent, child] = where
        node_lines.setdefault(parent, where)
        node_lines.setdefault(child, where)
    if graph.number_of_nodes() == 0:
        raise TaxonomyFileError(f"{source}: no edges found")
    if first_edge is not None:
        _refuse_detached_first_row(graph, *first_edge, delimiter)
    return graph, locations


def _refuse_detached_first_row(graph: nx.DiGraph, u: str, v: str, where: str, shown: str, delimiter: str) -> None:
    """A first row whose names no other row mentions is a header row in disguise until the file says otherwise.

    A header read as an edge (``coarse_label,fine_label``) becomes a tree of its
    own, and its child the first class, shifting every other class; a real
    one-edge tree first in a file is rare, and a ``parent,child`` header above it
    (or quotes) says that it is meant.
    """
    if graph.number_of_edges() > 1 and graph.degree(u) == 1 and graph.degree(v) == 1 and u != v:
        raise TaxonomyFileError(
            f"{where}: the first row {shown!r} is an edge that no other row touches (neither {u!r} nor {v!r} appears "
            f"again): is it a header row? If so, {_RANKS_ADVICE}, and the header of an edge list is "
            f"'parent{delimiter}child'. If it is an edge (a tree of its own), put the header row "
            f"'parent{delimiter}child' above it or quote its names"
        )


# ---------------------------------------------------------------------------- path per line
def graph_from_paths(
    lines: Iterable[str], sep: str = "/", source: str = "paths", locations: Locations | None = None
) -> nx.DiGraph:
    """A DiGraph from root-to-leaf paths, one per line."""
    if not isinstance(sep, str) or not sep:
        raise ValueError(f"sep must be a non-empty string, got {sep!r}")
    graph = nx.DiGraph()
    loc = locations if locations is not None else Locations()
    ends: dict = {}  # class -> first line of a path to it
    seen: dict = {}  # path -> line
    for lineno, line in enumerate(lines, start=1):
        if not isinstance(line, str):
            raise TaxonomyError(f"{source}: line {lineno} is not a string: {line!r}")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source}:{lineno}"
        parts = [p.strip() for p in stripped.split(sep)]
        if any(not p for p in parts):
            raise TaxonomyFileError(f"{where}: empty name in path {stripped!r}")
        if len(set(parts)) != len(parts):
            dup = next(p for p in parts if parts.count(p) > 1)
            raise TaxonomyFileError(f"{where}: name {dup!r} appears twice in path {stripped!r} (a cycle)")
        # the same class by another path is a DAG (multiple_parents decides); the same path twice is a slip
        key = tuple(parts)
        if key in seen:
            raise TaxonomyFileError(f"{where}: the path to {parts[-1]!r} is listed twice (lines {seen[key]} and {lineno})")
        seen[key] = lineno
        ends.setdefault(parts[-1], lineno)
        for p in parts:
            loc.nodes.setdefault(p, where)
        if len(parts) == 1:
            graph.add_node(parts[0])
        for u, v in zip(parts, parts[1:]):
            if not graph.has_edge(u, v):
                graph.add_edge(u, v)
                loc.edges[u, v] = where
    if graph.number_of_nodes() == 0:
        raise TaxonomyFileError(f"{source}: no paths found")
    # every line ends at a class: a path may not run through another line's class
    succ = graph._succ
    inner = next((n for n in ends if succ[n]), None)
    if inner is not None:
        below = next(iter(succ[inner]))
        raise TaxonomyFileError(
            f"{source}:{ends[inner]}: the path ends at {inner!r}, which other lines continue below "
            f"(to {below!r}, {loc.of_edge(inner, below)}); a class cannot contain another class"
        )
    return graph


# ---------------------------------------------------------------------------- nested data
class DocPath:
    """A place in a nested document, rendered only when an error needs it (``["animal"]["mammal"][2]``).

    A linked list, so that a document 100,000 levels deep costs O(1) per node.
    """

    __slots__ = ("up", "step", "source")

    def __init__(self, up: DocPath | None, step: str, source: str | None = None) -> None:
        self.up, self.step, self.source = up, step, source

    def __str__(self) -> str:
        steps = []
        node: DocPath | None = self
        source = None
        while node is not None:
            steps.append(node.step)
            source = node.source or source
            node = node.up
        inside = "".join(reversed(steps)) or "the top level"
        return f"{source}: {inside}" if source else inside

    def key(self, name: Hashable) -> DocPath:
        return DocPath(self, f"[{_show_key(name)}]")

    def index(self, i: int) -> DocPath:
        return DocPath(self, f"[{i}]")


def _show_key(name) -> str:
    if isinstance(name, str):
        import json

        return json.dumps(name, ensure_ascii=False)
    return repr(name)


def graph_from_nested(
    mapping: Mapping | Sequence,
    source: str | None = None,
    *,
    json_names: bool = False,
    locations: Locations | None = None,
) -> nx.DiGraph:
    """A DiGraph from nested dicts and lists (no recursion: any depth).

    A dict maps each node to its children: a dict, a list, ``None`` or an empty
    container (a leaf), or a single name. A list holds names and dicts.
    Names: strings, or (from Python) any hashable that is not a bool, ``None``
    or a container; ``json_names=True`` (a JSON file) allows strings only, so
    that a number or ``true`` is never turned into a class.
    """
    graph = nx.DiGraph()
    loc = locations if locations is not None else Locations()
    top = DocPath(None, "", source)
    if not isinstance(mapping, (Mapping, list, tuple)):
        raise TaxonomyError(f"{top}: expected a dict or a list at the top, got {type(mapping).__name__}")

    def children(value, where: DocPath, parent) -> list:
        """``(name, subtree, place)`` for every child in ``value``, in order."""
        if value is None:
            return []
        if isinstance(value, Mapping):
            return [(k, v, where.key(k)) for k, v in value.items()]
        if isinstance(value, (list, tuple)):
            out: list = []
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    here = where.index(i)
                    out.extend((k, v, here.key(k)) for k, v in item.items())
                elif isinstance(item, (list, tuple)):
                    raise TaxonomyError(
                        f"{where.index(i)} is a list inside a list; use a dict to name the node it belongs to"
                    )
                else:
                    out.append((item, None, where.index(i)))
            return out
        if parent is not None and (isinstance(value, str) or (not json_names and isinstance(value, int) and not isinstance(value, bool))):
            return [(value, None, where)]
        kind = _json_kind(value) if json_names else type(value).__name__
        raise TaxonomyError(f"{where} must be an object, a list, a name or null, got {kind} {_short(value)}")

    # depth first with an explicit stack, children in order: the nodes come in the order a reader sees them
    pending = [(None, item) for item in reversed(children(mapping, top, None))]
    while pending:
        parent, (name, sub, where) = pending.pop()
        _check_nested_name(name, where, json_names)
        if parent is None:
            graph.add_node(name)
        else:
            if graph.has_edge(parent, name):
                raise TaxonomyError(f"{where}: {name!r} is listed twice under {parent!r}")
            graph.add_edge(parent, name)
            loc.edges[parent, name] = where
        loc.nodes.setdefault(name, where)
        kids = children(sub, where, name)
        pending.extend((name, item) for item in reversed(kids))
    if graph.number_of_nodes() == 0:
        raise TaxonomyError(f"{top}: no nodes found")
    return graph


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return f"a {type(value).__name__}"


def _short(value) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else "(a long integer)"
    return text if len(text) <= 40 else text[:37] + "..."


def _check_nested_name(name, where: DocPath, json_names: bool) -> None:
    if json_names and not isinstance(name, str):
        raise TaxonomyError(
            f"{where}: {_json_kind(name)}{'' if name is None else ' ' + _short(name)} cannot be a node name; "
            "names in a JSON taxonomy are strings"
            + (" (write it in quotes if it is one)" if isinstance(name, (int, float)) and not isinstance(name, bool) else "")
        )
    if isinstance(name, bool):
        raise TaxonomyError(f"{where}: {name!r} cannot be a node name (a bool)")
    if isinstance(name, (list, tuple, dict, set)):
        raise TaxonomyError(f"{where}: a {type(name).__name__} cannot be a node name")
    try:
        check_name(name, "node")
    except TaxonomyError as exc:
        raise TaxonomyError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------------- JSON files
def _read_json(text: str, path: Path) -> tuple[nx.DiGraph, list | None, Locations]:
    data = load_json(text, str(path))
    locations = Locations()
    # a dict with a 'nodes' key is node-link data; anything else is a nested taxonomy
    if isinstance(data, dict) and "nodes" in data:
        graph, classes = _node_link(data, path, locations)
        return graph, classes, locations
    try:
        return graph_from_nested(data, source=str(path), json_names=True, locations=locations), None, locations
    except TaxonomyFileError:
        raise
    except TaxonomyError as exc:
        raise TaxonomyFileError(str(exc)) from None


_NODE_LINK_KEYS = ("directed", "multigraph", "graph", "nodes", "edges", "links")


def _node_link(data: dict, path: Path, locations: Locations) -> tuple[nx.DiGraph, list | None]:
    unknown = [k for k in data if k not in _NODE_LINK_KEYS]
    if unknown:
        raise TaxonomyFileError(
            f"{path}: node-link data (an object with a 'nodes' key) has unknown key(s) "
            f"{', '.join(map(repr, unknown[:5]))}; its keys are {', '.join(_NODE_LINK_KEYS)}. A nested "
            "taxonomy cannot have a top-level node named 'nodes'"
        )
    if "edges" in data and "links" in data:
        raise TaxonomyFileError(f"{path}: node-link data has both 'edges' and 'links'; keep one of them")
    if "edges" not in data and "links" not in data:
        raise TaxonomyFileError(
            f"{path}: node-link data (an object with a 'nodes' key) needs an 'edges' list (or 'links', as older "
            "networkx writes); a nested taxonomy cannot have a top-level node named 'nodes'"
        )
    for flag, want in (("directed", True), ("multigraph", False)):
        if flag in data and type(data[flag]) is not bool:
            raise TaxonomyFileError(f"{path}: {flag!r} must be true or false, got {_json_kind(data[flag])} {_short(data[flag])}")
    if data.get("directed", True) is False:
        raise TaxonomyFileError(f"{path}: node-link data is undirected ('directed': false); a taxonomy needs directed parent -> child edges")
    if data.get("multigraph", False) is True:
        raise TaxonomyFileError(f"{path}: node-link data is a multigraph ('multigraph': true); give each parent -> child edge once")
    attrs = data.get("graph", {})
    if not isinstance(attrs, dict):
        raise TaxonomyFileError(f"{path}: 'graph' must be an object (graph attributes), got {_json_kind(attrs)} {_short(attrs)}")
    key = "edges" if "edges" in data else "links"
    for part in ("nodes", key):
        if not isinstance(data[part], list):
            raise TaxonomyFileError(f"{path}: {part!r} must be a list, got {_json_kind(data[part])}")
    graph = nx.DiGraph()
    declared: dict = {}
    for i, node in enumerate(data["nodes"]):
        if not isinstance(node, dict) or "id" not in node:
            raise TaxonomyFileError(f"{path}: nodes[{i}] has no 'id': {_short(node)}")
        name = node["id"]
        _check_json_name(name, path, f"nodes[{i}]")
        if name in declared:
            raise TaxonomyFileError(f"{path}: nodes[{i}]: node {name!r} is declared twice (also nodes[{declared[name]}])")
        declared[name] = i
        graph.add_node(name)
        locations.nodes[name] = f"{path}: nodes[{i}]"
    for i, link in enumerate(data[key]):
        where = f"{path}: {key}[{i}]"
        if not isinstance(link, dict) or "source" not in link or "target" not in link:
            raise TaxonomyFileError(f"{where} needs 'source' and 'target': {_short(link)}")
        u, v = link["source"], link["target"]
        _check_json_name(u, path, f"{key}[{i}].source")
        _check_json_name(v, path, f"{key}[{i}].target")
        for end, name in (("source", u), ("target", v)):
            if name not in declared:
                raise TaxonomyFileError(f"{where}: {end} {name!r} is not declared in 'nodes'")
        if graph.has_edge(u, v):
            raise TaxonomyFileError(f"{where}: edge {u!r} -> {v!r} is listed twice (first in {locations.edges[u, v]})")
        if "weight" in link:
            w = link["weight"]
            ok = not isinstance(w, bool) and isinstance(w, numbers.Real)
            try:
                ok = ok and math.isfinite(w) and w > 0
            except OverflowError:  # an integer beyond the float range
                ok = False
            if not ok:
                raise TaxonomyFileError(f"{where}: weight {_short(w)} of edge {u!r} -> {v!r} must be a finite number > 0")
            graph.add_edge(u, v, weight=float(w))
        else:
            graph.add_edge(u, v)
        locations.edges[u, v] = where
    classes = attrs.get("classes")
    if classes is not None:
        if not isinstance(classes, list):
            raise TaxonomyFileError(f"{path}: graph.classes must be a list, got {_json_kind(classes)}")
        for i, c in enumerate(classes):
            _check_json_name(c, path, f"graph.classes[{i}]")
    return graph, classes


def _check_json_name(name, path, where) -> None:
    # JSON names are strings or integers (networkx writes integer nodes as numbers); true, 1.5, null are not names
    if isinstance(name, bool) or not isinstance(name, (str, int)):
        raise TaxonomyFileError(f"{path}: {where} is {_json_kind(name)}{'' if name is None else ' ' + _short(name)}, "
                                "not a node name (a string or an integer)")
    try:
        check_name(name, where)
    except TaxonomyError as exc:
        raise TaxonomyFileError(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------- writing
# Each renderer refuses first (TaxonomyError naming the node) what its reader would not give back unchanged.
def check_json_names(tax: Taxonomy) -> None:
    """JSON holds string and integer names."""
    bad = next((n for n in tax.nodes if type(n) not in (str, int)), None)
    if bad is not None:
        raise TaxonomyError(f"cannot write node {bad!r} ({type(bad).__name__}) to JSON: node names must be strings or integers")


def check_line_names(tax: Taxonomy, target: str) -> None:
    """A line-based file (``target``: ``.csv``, ``paths``, ...) holds names that are strings, read back as written."""
    bad = next((n for n in tax.nodes if not isinstance(n, str)), None)
    if bad is not None:
        raise TaxonomyError(f"cannot write node {bad!r} ({type(bad).__name__}) to {target}: node names must be strings")
    for n in tax.nodes:
        if LINE_BREAKS.intersection(n):
            raise TaxonomyError(f"cannot write node {n!r} to {target}: it contains a line break")
        if n != n.strip():
            raise TaxonomyError(f"cannot write node {n!r} to {target}: it starts or ends with white space, which the reader strips")
        try:
            n.encode("utf-8")
        except UnicodeEncodeError:
            raise TaxonomyError(f"cannot write node {n!r} to {target}: it cannot be encoded as UTF-8 (a lone surrogate)") from None


def _target(path: Path, format: str) -> str:
    return path.suffix or format


def render_edges(tax: Taxonomy, path: Path) -> str:
    """An edge list with a header row, in class order (``.tsv``: tabs)."""
    check_line_names(tax, _target(path, "edges"))
    if tax.num_nodes == 1:
        raise TaxonomyError(f"cannot write a taxonomy with a single node ({tax.root!r}) as an edge list; use .json or .txt")
    d = delimiter_of(path)
    weighted = tax.is_weighted
    lines = [d.join(["parent", "child", "weight"] if weighted else ["parent", "child"])]
    for u, v, wt in _edges_in_class_order(tax):
        # quote 'parent' / 'child' so that a row can never read as a repeated header
        fields = [quote_field(u, d, u.lower() in HEADER), quote_field(v, d, v.lower() in HEADER)]
        lines.append(d.join(fields + [repr(wt)] if weighted else fields))
    return "\n".join(lines) + "\n"


def render_paths(tax: Taxonomy, path: Path) -> str:
    """One root-to-leaf path per class, in class order."""
    target = _target(path, "paths")
    check_line_names(tax, target)
    root = tax.root
    assert isinstance(root, str)  # every node is a string (checked above)
    # a line starting with '#' is a comment
    if root.startswith("#"):
        raise TaxonomyError(f"cannot write node {root!r} to {target}: a line starting with '#' is read as a comment")
    if root.startswith("\ufeff"):
        raise TaxonomyError(f"cannot write node {root!r} to {target}: every line starts with it, and "
                            "a U+FEFF at the start of a file is read as a byte order mark and dropped")
    bad = next((n for n in tax.nodes if "/" in n), None)
    if bad is not None:
        raise TaxonomyError(f"cannot write node {bad!r} to a path file: it contains the separator '/'")
    if tax.is_weighted:
        raise TaxonomyError("a path file cannot hold edge weights; save as .csv or .json")
    return "".join("/".join(reversed(tax.ancestors(c, include_self=True))) + "\n" for c in tax.classes)


def render_json(tax: Taxonomy, path: Path) -> str:
    """Node-link data with the class order in ``graph.classes``."""
    import json

    check_json_names(tax)
    data = {
        "directed": True,
        "multigraph": False,
        "graph": {"classes": list(tax.classes)},
        "nodes": [{"id": n} for n in tax.nodes],
        "edges": [
            ({"source": u, "target": v, "weight": wt} if wt != 1.0 else {"source": u, "target": v})
            for u, v, wt in _edges_in_class_order(tax)
        ],
    }
    return json.dumps(data, indent=1) + "\n"


def _edges_in_class_order(tax) -> list[tuple]:
    """Edges ordered so that the leaves first appear in class order."""
    parent_of = {v: (u, w) for u, v, w in tax.edges()}
    seen = set()
    out = []
    for c in tax.classes:
        chain = []
        v = c
        while v in parent_of and v not in seen:
            seen.add(v)
            u, w = parent_of[v]
            chain.append((u, v, w))
            v = u
        out.extend(reversed(chain))
    return out
