"""Rank tables: one column per rank (kingdom … species), one row per taxon or specimen.

This is how iNaturalist and GBIF export a taxonomy. Each row is a path from
the top rank down; a row may stop early (empty trailing cells: a specimen
identified only to the genus). Every distinct prefix of a row is a node; the
nodes without children are the classes.

**Names.** A node is named by its cell, unless the same cell value names
several nodes — the same genus name in two families (*Morus*, the mulberries
and the gannets), or one name at two ranks. Then each of them is qualified,
by the first rule that tells them all apart:

1. ``"value (parent)"``: the parent's cell value (the rank's name for a
   node of the top rank), e.g. ``"Morus (Moraceae)"`` / ``"Morus (Sulidae)"``;
2. ``"value (rank)"``, e.g. ``"Aus (genus)"`` / ``"Aus (subgenus)"``;
3. ``"value (rank: top/…/parent)"``: the whole path above it.

A qualified name that collides with another name moves its group to the next
rule; a collision left after rule 3 is an error. Every qualification is
recorded in the report: nothing is merged silently.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np

from taxosmooth.errors import TaxonomyError, TaxonomyFileError
from taxosmooth.taxonomy._build import Locations
from taxosmooth.taxonomy._text import LINE_BREAKS, delimiter_of, physical_lines, quote_field, read_text, split_fields

if TYPE_CHECKING:
    from taxosmooth.taxonomy.formats import ParsedFile


@dataclass
class RankTable:
    """A parsed rank table: the graph to build, and what the taxonomy keeps of the ranks."""

    graph: nx.DiGraph
    ranks: tuple
    cells: dict  # node name -> (rank index, cell value)
    report: list = field(default_factory=list)
    locations: Locations = field(default_factory=Locations)


def _is_empty(cell) -> bool:
    # None and NaN are what pandas and numpy give for a missing cell
    return cell is None or (isinstance(cell, float) and math.isnan(cell)) or (isinstance(cell, str) and not cell.strip())


def normalise_row(row, ranks: tuple, where: str) -> tuple:
    """The non-empty cells of one row, stripped; a gap (an empty cell before a filled one) is an error."""
    if isinstance(row, (str, bytes)) or not isinstance(row, (Sequence, np.ndarray)):
        raise TaxonomyError(f"{where}: a row must be a list or tuple of cells, got {type(row).__name__} {row!r:.60}")
    cells = list(row)
    if len(cells) > len(ranks):
        raise TaxonomyError(f"{where}: {len(cells)} cells, but there are {len(ranks)} ranks ({', '.join(ranks)})")
    out = []
    gap = None
    for k, cell in enumerate(cells):
        if _is_empty(cell):
            if gap is None:
                gap = k
            continue
        if isinstance(cell, np.str_):
            cell = str(cell)
        if not isinstance(cell, str):
            raise TaxonomyError(f"{where}: the {ranks[k]} cell is {type(cell).__name__} {cell!r:.40}; cells must be strings")
        if gap is not None:
            raise TaxonomyError(
                f"{where}: the {ranks[gap]} cell is empty but the {ranks[k]} cell ({cell.strip()!r}) is not; "
                "a row may only stop early (its empty cells at the end)"
            )
        out.append(cell.strip())
    return tuple(out)


def _check_ranks(ranks, where: str) -> tuple:
    if isinstance(ranks, (str, bytes)) or not isinstance(ranks, Iterable):
        raise TypeError(f"ranks must be a list of rank names, got {type(ranks).__name__}")
    ranks = tuple(ranks)
    if not ranks:
        raise TaxonomyError(f"{where}: no ranks")
    seen: dict = {}
    for k, r in enumerate(ranks):
        if not isinstance(r, str) or not r.strip():
            raise TaxonomyError(f"{where}: rank name {k + 1} is {r!r}; rank names must be non-empty strings")
        if r in seen:
            raise TaxonomyError(f"{where}: rank {r!r} is named twice (columns {seen[r] + 1} and {k + 1})")
        seen[r] = k
    return ranks


def read_rank_table(path_or_rows, ranks=None) -> RankTable:
    """Parse a rank-table file (CSV/TSV with a header row of rank names) or a list of rows."""
    if isinstance(path_or_rows, (str, os.PathLike)):
        if ranks is not None:
            raise TypeError("ranks= goes with a list of rows; a rank-table file names its ranks in its header row")
        return _from_file(Path(path_or_rows))
    if isinstance(path_or_rows, bytes) or not isinstance(path_or_rows, Iterable):
        raise TypeError(f"expected a file path or a list of rows, got {type(path_or_rows).__name__}")
    rows = list(path_or_rows)
    if not rows:
        raise TaxonomyError("the rank table has no rows")
    if ranks is None:
        width = max(len(r) if isinstance(r, (Sequence, np.ndarray)) and not isinstance(r, (str, bytes)) else 0 for r in rows)
        ranks = tuple(f"rank{k}" for k in range(max(width, 1)))
    ranks = _check_ranks(ranks, "ranks")
    parsed = [(normalise_row(r, ranks, f"rows[{i}]"), f"rows[{i}]") for i, r in enumerate(rows)]
    empty = next((w for cells, w in parsed if not cells), None)
    if empty is not None:
        raise TaxonomyError(f"{empty}: the row is empty")
    return _build(parsed, ranks)


def _from_file(path: Path) -> RankTable:
    text = read_text(path)
    delimiter = delimiter_of(path)
    ranks = None
    parsed = []
    for lineno, line in enumerate(physical_lines(text), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{lineno}"
        fields, quoted = split_fields(line, delimiter, where)
        if ranks is None:
            try:
                ranks = _check_ranks(fields, where)
            except TaxonomyError as exc:
                raise TaxonomyFileError(f"{exc} (the first row of a rank table names the ranks)") from None
            continue
        if not any(quoted) and not any(fields):
            continue  # a row of empty cells, as spreadsheets export
        if len(fields) > len(ranks) and not any(quoted[len(ranks):]) and not any(fields[len(ranks):]):
            fields = fields[: len(ranks)]  # trailing delimiters
        try:
            cells = normalise_row(fields, ranks, where)
        except TaxonomyError as exc:
            raise TaxonomyFileError(str(exc)) from None
        parsed.append((cells, where))
    if not parsed:
        raise TaxonomyFileError(f"{path}: no rows below the header row")
    assert ranks is not None  # the header row comes before the first parsed row
    try:
        return _build(parsed, ranks)
    except TaxonomyFileError:
        raise
    except TaxonomyError as exc:
        raise TaxonomyFileError(str(exc)) from None


def read_rank_file(path: Path) -> ParsedFile:
    """A rank-table file, as the format registry reads it (``format="ranks"``)."""
    from taxosmooth.taxonomy.formats import ParsedFile

    table = _from_file(path)
    return ParsedFile(table.graph, table.locations, report=table.report, ranks=table.ranks, cells=table.cells)


def _build(parsed: list, ranks: tuple) -> RankTable:
    nodes: dict = {}  # path -> location of its first row
    order: list = []
    stops = [0] * len(ranks)
    for cells, where in parsed:
        stops[len(cells) - 1] += 1
        for k in range(len(cells)):
            path = cells[: k + 1]
            if path not in nodes:
                nodes[path] = where
                order.append(path)
    names, qualified = name_nodes(order, ranks)
    graph = nx.DiGraph()
    locations = Locations()
    cells = {}
    for path in order:
        name = names[path]
        graph.add_node(name)
        cells[name] = (len(path) - 1, path[-1])
        locations.nodes[name] = nodes[path]
        if len(path) > 1:
            graph.add_edge(names[path[:-1]], name)
            locations.edges[names[path[:-1]], name] = nodes[path]
    by_rank = ", ".join(f"{r}: {n}" for r, n in zip(ranks, stops) if n)
    report = [f"rank table: {len(parsed)} rows over {len(ranks)} ranks ({', '.join(ranks)}); rows by last rank: {by_rank}"]
    for value, group in qualified:
        where = ", ".join(f"{names[p]!r} ({ranks[len(p) - 1]})" for p in group)
        report.append(f"rank table: {value!r} names {len(group)} different nodes, qualified as {where}")
    return RankTable(graph, ranks, cells, report, locations)


def name_nodes(paths: Sequence[tuple], ranks: tuple) -> tuple[dict, list]:
    """The name of every node (a path of cells), by the rules of the module docstring.

    Returns ``{path: name}`` and the qualified groups ``[(value, [paths])]``.
    """
    groups: dict = {}
    for p in paths:
        groups.setdefault(p[-1], []).append(p)
    shared = [(v, g) for v, g in groups.items() if len(g) > 1]

    def qualify(p: tuple, rule: int) -> str:
        rank = ranks[len(p) - 1]
        if rule == 0:
            return f"{p[-1]} ({p[-2] if len(p) > 1 else rank})"
        if rule == 1 or len(p) == 1:
            return f"{p[-1]} ({rank})"
        return f"{p[-1]} ({rank}: {'/'.join(p[:-1])})"

    def first_rule(group: list, rule: int) -> int:
        # the first rule from ``rule`` on that tells the group apart (rule 2 always does: paths are unique)
        while rule < 2 and len({qualify(p, rule) for p in group}) < len(group):
            rule += 1
        return rule

    level = {value: first_rule(group, 0) for value, group in shared}

    def current() -> dict:
        return {p: qualify(p, level[p[-1]]) if p[-1] in level else p[-1] for p in paths}

    # a qualified name may equal another node's name: move its group on to the next rule
    for _ in range(3):
        names = current()
        owner: dict = {}
        clash: set = set()
        for p, n in names.items():
            q = owner.setdefault(n, p)
            if q is not p:
                clash.update(x[-1] for x in (q, p) if x[-1] in level and level[x[-1]] < 2)
        if not clash:
            break
        for value in clash:
            level[value] = first_rule(groups[value], level[value] + 1)
    names = current()
    owner = {}
    for p, n in names.items():
        q = owner.setdefault(n, p)
        if q is not p:
            raise TaxonomyError(
                f"rank table: two nodes would both be named {n!r} ({'/'.join(q)} and {'/'.join(p)}); rename one of them"
            )
    return names, shared


def row_paths(tax) -> dict:
    """``{tuple of cells: node name}`` for every node of a rank-table taxonomy (the keys :meth:`encode` accepts)."""
    cells = tax._cells
    out = {}
    c = tax.compiled
    names = tax.nodes
    paths: list = [None] * len(names)
    for v in range(len(names)):  # pre-order: a parent's path is ready before its children's
        name = names[v]
        p = int(c.parent[v])
        above = paths[p] if p >= 0 and paths[p] is not None else ()
        if name in cells:
            paths[v] = above + (cells[name][1],)
            out[paths[v]] = name
        else:
            paths[v] = ()  # the virtual root
    return out


def render_rank_table(tax, delimiter: str) -> str:
    """A rank table with one row per class (class order) that loads back as ``tax``."""
    if tax.ranks is None:
        raise TaxonomyError("this taxonomy was not built from a rank table (tax.ranks is None); save it as .csv, .json or .txt")
    ranks = tax.ranks
    name_of = row_paths(tax)
    path_of = {n: p for p, n in name_of.items()}
    # the names are derived from the cells again on loading: they must come out the same
    names, _ = name_nodes(list(name_of), ranks)
    changed = next((p for p in name_of if names[p] != name_of[p]), None)
    if changed is not None:
        raise TaxonomyError(
            f"cannot write this taxonomy as a rank table: node {name_of[changed]!r} would be read back as "
            f"{names[changed]!r} (classes= removed the nodes its name was told apart from); save it as .json"
        )
    # every cell written is a rank name or the last cell of a node's path
    texts = [(f"the rank {r!r}", r) for r in ranks]
    texts += [(f"node {n!r}" + ("" if n == p[-1] else f" (its cell {p[-1]!r})"), p[-1]) for p, n in name_of.items()]
    for what, text in texts:
        if LINE_BREAKS.intersection(text) or text != text.strip():
            raise TaxonomyError(f"cannot write {what} to a rank table: it contains a line break or surrounding blanks")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise TaxonomyError(f"cannot write {what} to a rank table: it cannot be encoded as UTF-8 (a lone surrogate)") from None
    if ranks and ranks[0].startswith("\ufeff"):
        # the first characters of the file: the reader drops a byte order mark there
        raise TaxonomyError(f"cannot write the rank {ranks[0]!r} first in a rank table: a U+FEFF at the start of a "
                            "file is read as a byte order mark and dropped")
    lines = [delimiter.join(quote_field(r, delimiter) for r in ranks)]
    lines.extend(delimiter.join(quote_field(cell, delimiter) for cell in path_of[c]) for c in tax.classes)
    return "\n".join(lines) + "\n"


def render_rank_file(tax, path: Path) -> str:
    """:func:`render_rank_table` with the delimiter of ``path`` (``.tsv``: tabs), as the format registry writes it."""
    return render_rank_table(tax, delimiter_of(path))
