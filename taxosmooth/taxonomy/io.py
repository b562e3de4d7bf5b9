"""Taxonomy files: edge lists (CSV/TSV), JSON (node-link or nested), path-per-line text.

Every reader reports malformed input with the file name and line number.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import networkx as nx

from taxosmooth.errors import TaxonomyError, TaxonomyFileError
from taxosmooth.taxonomy._build import check_name

FORMATS = {".csv": "edges", ".tsv": "edges", ".json": "json", ".txt": "paths"}


def _format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise TaxonomyFileError(
            f"{path}: unknown taxonomy file extension {path.suffix!r}; use one of {', '.join(FORMATS)}"
        )
    return fmt


def read_graph(path: str | os.PathLike) -> tuple[nx.DiGraph, list | None]:
    """Read a taxonomy file into a DiGraph; also returns a stored class order, if any."""
    path = Path(path)
    fmt = _format_of(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such taxonomy file")
    if path.is_dir():
        raise TaxonomyFileError(f"{path}: is a folder, not a taxonomy file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TaxonomyFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise TaxonomyFileError(f"{path}: the file is empty")
    if fmt == "edges":
        return _read_edges(text, path, "\t" if path.suffix.lower() == ".tsv" else ","), None
    if fmt == "paths":
        return graph_from_paths(text.splitlines(), source=str(path)), None
    return _read_json(text, path)


def _read_edges(text: str, path: Path, delimiter: str) -> nx.DiGraph:
    graph = nx.DiGraph()
    # a file object (not splitlines) so that line numbers count quoted line breaks
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    first = True
    width = None
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:
            raise TaxonomyFileError(f"{path}:{rows.line_num}: {exc}") from None
        lineno = rows.line_num
        if not row or row[0].lstrip().startswith("#") or not "".join(row).strip():
            continue
        fields = [f.strip() for f in row]
        if first:
            first = False
            if [f.lower() for f in fields[:2]] == ["parent", "child"]:
                if len(fields) == 3 and fields[2].lower() != "weight" or len(fields) > 3:
                    raise TaxonomyFileError(f"{path}:{lineno}: header must be 'parent,child' or 'parent,child,weight', got {row!r}")
                width = len(fields)
                continue
        if len(fields) not in (2, 3):
            raise TaxonomyFileError(f"{path}:{lineno}: expected 2 fields (parent, child) or 3 (parent, child, weight), got {len(fields)}: {row!r}")
        if width is not None and len(fields) != width:
            raise TaxonomyFileError(f"{path}:{lineno}: expected {width} fields as in the header, got {len(fields)}: {row!r}")
        parent, child = fields[0], fields[1]
        for what, name in (("parent", parent), ("child", child)):
            if not name:
                raise TaxonomyFileError(f"{path}:{lineno}: empty {what} name in {row!r}")
        if graph.has_edge(parent, child):
            raise TaxonomyFileError(f"{path}:{lineno}: edge {parent!r} -> {child!r} is listed twice")
        if len(fields) == 3:
            try:
                weight = float(fields[2])
            except ValueError:
                raise TaxonomyFileError(f"{path}:{lineno}: weight {fields[2]!r} is not a number") from None
            if not math.isfinite(weight) or weight <= 0:
                raise TaxonomyFileError(f"{path}:{lineno}: weight {fields[2]!r} must be finite and > 0")
            graph.add_edge(parent, child, weight=weight)
        else:
            graph.add_edge(parent, child)
    if graph.number_of_nodes() == 0:
        raise TaxonomyFileError(f"{path}: no edges found")
    return graph


def graph_from_paths(lines: Iterable[str], sep: str = "/", source: str = "paths") -> nx.DiGraph:
    """A DiGraph from root-to-leaf paths, one per line."""
    if not sep:
        raise ValueError("sep must be a non-empty string")
    graph = nx.DiGraph()
    ends: dict = {}  # class -> first line of a path to it
    seen: dict = {}  # path -> line
    for lineno, line in enumerate(lines, start=1):
        if not isinstance(line, str):
            raise TaxonomyError(f"{source}: line {lineno} is not a string: {line!r}")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = [p.strip() for p in stripped.split(sep)]
        if any(not p for p in parts):
            raise TaxonomyFileError(f"{source}:{lineno}: empty name in path {stripped!r}")
        if len(set(parts)) != len(parts):
            dup = next(p for p in parts if parts.count(p) > 1)
            raise TaxonomyFileError(f"{source}:{lineno}: name {dup!r} appears twice in path {stripped!r} (a cycle)")
        # the same class by another path is a DAG (multiple_parents decides); the same path twice is a slip
        key = tuple(parts)
        if key in seen:
            raise TaxonomyFileError(f"{source}:{lineno}: the path to {parts[-1]!r} is listed twice (lines {seen[key]} and {lineno})")
        seen[key] = lineno
        ends.setdefault(parts[-1], lineno)
        if len(parts) == 1:
            graph.add_node(parts[0])
        for u, v in zip(parts, parts[1:]):
            graph.add_edge(u, v)
    if graph.number_of_nodes() == 0:
        raise TaxonomyFileError(f"{source}: no paths found")
    # every line ends at a class: a path may not run through another line's class
    succ = graph._succ
    inner = next((n for n in ends if succ[n]), None)
    if inner is not None:
        raise TaxonomyFileError(
            f"{source}:{ends[inner]}: the path ends at {inner!r}, which other lines continue below "
            f"(to {next(iter(succ[inner]))!r}); a class cannot contain another class"
        )
    return graph


def graph_from_nested(mapping: Mapping | Sequence, source: str = "nested") -> nx.DiGraph:
    """A DiGraph from nested dicts and lists."""
    graph = nx.DiGraph()

    def add(parent, value, where):
        if value is None:
            return
        if isinstance(value, Mapping):
            items = value.items()
        elif isinstance(value, (list, tuple)):
            items = []
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    items.extend(item.items())
                elif isinstance(item, (list, tuple)):
                    raise TaxonomyError(f"{source}: {where}[{i}] is a list inside a list; use a dict to name the node it belongs to")
                else:
                    items.append((item, None))
        elif isinstance(value, (str, int)) and parent is not None:
            items = [(value, None)]
        else:
            raise TaxonomyError(f"{source}: {where} must be a dict, a list or None, got {type(value).__name__}")
        for name, sub in items:
            check_name(name, f"{source}: node under {where}")
            if parent is None:
                graph.add_node(name)
            else:
                if graph.has_edge(parent, name):
                    raise TaxonomyError(f"{source}: {name!r} is listed twice under {parent!r}")
                graph.add_edge(parent, name)
            add(name, sub, repr(name))

    if not isinstance(mapping, (Mapping, list, tuple)):
        raise TaxonomyError(f"{source}: expected a dict or a list at the top, got {type(mapping).__name__}")
    add(None, mapping, "the top level")
    if graph.number_of_nodes() == 0:
        raise TaxonomyError(f"{source}: no nodes found")
    return graph


def _read_json(text: str, path: Path) -> tuple[nx.DiGraph, list | None]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaxonomyFileError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno})") from None
    if isinstance(data, dict) and "nodes" in data and ("links" in data or "edges" in data):
        return _node_link(data, path)
    return graph_from_nested(data, source=str(path)), None


def _node_link(data: dict, path: Path) -> tuple[nx.DiGraph, list | None]:
    if data.get("directed") is False:
        raise TaxonomyFileError(f"{path}: node-link data is undirected; a taxonomy needs directed parent -> child edges")
    key = "edges" if "edges" in data else "links"
    for part in ("nodes", key):
        if not isinstance(data[part], list):
            raise TaxonomyFileError(f"{path}: {part!r} must be a list, got {type(data[part]).__name__}")
    graph = nx.DiGraph()
    for i, node in enumerate(data["nodes"]):
        if not isinstance(node, dict) or "id" not in node:
            raise TaxonomyFileError(f"{path}: nodes[{i}] has no 'id': {node!r}")
        _check_json_name(node["id"], path, f"nodes[{i}]")
        graph.add_node(node["id"])
    for i, link in enumerate(data[key]):
        if not isinstance(link, dict) or "source" not in link or "target" not in link:
            raise TaxonomyFileError(f"{path}: {key}[{i}] needs 'source' and 'target': {link!r}")
        u, v = link["source"], link["target"]
        _check_json_name(u, path, f"{key}[{i}].source")
        _check_json_name(v, path, f"{key}[{i}].target")
        if graph.has_edge(u, v):
            raise TaxonomyFileError(f"{path}: {key}[{i}]: edge {u!r} -> {v!r} is listed twice")
        if "weight" in link:
            w = link["weight"]
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w <= 0:
                raise TaxonomyFileError(f"{path}: {key}[{i}]: weight {w!r} of edge {u!r} -> {v!r} must be a finite number > 0")
            graph.add_edge(u, v, weight=w)
        else:
            graph.add_edge(u, v)
    classes = (data.get("graph") or {}).get("classes")
    if classes is not None and not isinstance(classes, list):
        raise TaxonomyFileError(f"{path}: graph.classes must be a list")
    return graph, classes


def _check_json_name(name, path, where) -> None:
    if isinstance(name, (list, dict)):
        raise TaxonomyFileError(f"{path}: {where} is a {type(name).__name__}, not a node name")
    try:
        check_name(name, where)
    except TaxonomyError as exc:
        raise TaxonomyFileError(f"{path}: {exc}") from None


# str.splitlines() breaks lines at all of these
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _check_writable(tax, path: Path, fmt: str) -> None:
    """Refuse what the reader would not give back unchanged (before the file is created)."""
    if fmt == "json":
        bad = next((n for n in tax.nodes if type(n) not in (str, int)), None)
        if bad is not None:
            raise TaxonomyError(f"cannot write node {bad!r} ({type(bad).__name__}) to JSON: node names must be strings or integers")
        return
    bad = next((n for n in tax.nodes if not isinstance(n, str)), None)
    if bad is not None:
        raise TaxonomyError(f"cannot write node {bad!r} ({type(bad).__name__}) to {path.suffix}: node names must be strings")
    for n in tax.nodes:
        if _LINE_BREAKS.intersection(n):
            raise TaxonomyError(f"cannot write node {n!r} to {path.suffix}: it contains a line break")
        if n != n.strip():
            raise TaxonomyError(f"cannot write node {n!r} to {path.suffix}: it starts or ends with white space, which the reader strips")
    # a line that starts with '#' is a comment: the root in a path file, a parent in an edge list
    first_column = (tax.root,) if fmt == "paths" else (n for n in tax.nodes if not tax.is_leaf(n))
    bad = next((n for n in first_column if n.startswith("#")), None)
    if bad is not None:
        raise TaxonomyError(f"cannot write node {bad!r} to {path.suffix}: a line starting with '#' is read as a comment")
    if fmt == "edges" and tax.num_nodes == 1:
        raise TaxonomyError(f"cannot write a taxonomy with a single node ({tax.root!r}) as an edge list; use .json or .txt")


def write_taxonomy(tax, path: str | os.PathLike) -> None:
    """Write ``tax`` so that :func:`read_graph` + the default class order give it back."""
    path = Path(path)
    fmt = _format_of(path)
    _check_writable(tax, path, fmt)
    if fmt == "paths":
        bad = next((n for n in tax.nodes if "/" in n), None)
        if bad is not None:
            raise TaxonomyError(f"cannot write node {bad!r} to a path file: it contains the separator '/'")
        if tax.is_weighted:
            raise TaxonomyError("a path file cannot hold edge weights; save as .csv or .json")
        lines = ["/".join(reversed(tax.ancestors(c, include_self=True))) for c in tax.classes]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return
    edges = _edges_in_class_order(tax)
    if fmt == "edges":
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, delimiter=delimiter, lineterminator="\n")
            weighted = tax.is_weighted
            w.writerow(["parent", "child", "weight"] if weighted else ["parent", "child"])
            for u, v, wt in edges:
                w.writerow([u, v, repr(wt)] if weighted else [u, v])
        return
    data = {
        "directed": True,
        "multigraph": False,
        "graph": {"classes": list(tax.classes)},
        "nodes": [{"id": n} for n in tax.nodes],
        "edges": [
            ({"source": u, "target": v, "weight": wt} if wt != 1.0 else {"source": u, "target": v})
            for u, v, wt in edges
        ],
    }
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


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
