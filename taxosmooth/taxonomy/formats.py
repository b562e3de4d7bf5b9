"""The taxonomy file formats: one registry that :meth:`Taxonomy.load`, :meth:`Taxonomy.save` and the command line use.

Each :class:`FileFormat` names a format (the value of ``format=`` and of the
command line's ``--format``), the extensions ``format="auto"`` reads it from,
its reader and its writer. Everything that depends on the format — which
reader a file gets, the extensions a command accepts for a taxonomy it
writes, the choices and help of ``--format``, the message for an unknown
extension — is derived from :data:`FORMATS`; nothing else dispatches on a
format name or an extension.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import networkx as nx

from taxosmooth.errors import TaxonomyFileError
from taxosmooth.taxonomy._build import Locations

if TYPE_CHECKING:
    from taxosmooth.taxonomy.core import Taxonomy

#: the value of ``format=`` that picks the format by the file's extension
AUTO = "auto"


@dataclass
class ParsedFile:
    """What a reader found in a file: the graph to build, and what the taxonomy keeps beside it."""

    graph: nx.DiGraph
    locations: Locations
    classes: list | None = None  # a class order stored in the file (node-link JSON's graph.classes)
    report: list[str] = field(default_factory=list)
    ranks: tuple | None = None  # a rank table's rank names
    cells: dict | None = None  # a rank table's nodes: name -> (rank index, cell)


@dataclass(frozen=True)
class FileFormat:
    """One taxonomy file format.

    Attributes
    ----------
    name : str
        The value of ``format=`` (and ``--format``) that selects it.
    suffixes : tuple of str
        Lower-case extensions that ``format="auto"`` reads with it (any case in
        a file name); empty for a format that is only read when named.
    summary : str
        One line for help texts: what a file of this format holds.
    read : callable ``(path) -> ParsedFile``
        Errors name the file and the line (or the place in a document).
    render : callable ``(taxonomy, path) -> str``
        The text that loads back as an equal taxonomy; refuses (``TaxonomyError``
        naming the node) what would not, before anything is written.
    keeps_ranks : bool
        The format holds rank names (a rank table): options that would remove
        ranks (``contract_unary=True``) are refused.
    """

    name: str
    suffixes: tuple[str, ...]
    summary: str
    read: Callable[[Path], ParsedFile]
    render: Callable[[Taxonomy, Path], str]
    keeps_ranks: bool = False


def _formats() -> dict[str, FileFormat]:
    from taxosmooth.taxonomy import _ranks, io

    formats = (
        FileFormat("edges", (".csv", ".tsv"), "edge list, one parent,child[,weight] per line", io.read_edges_file,
                   io.render_edges),
        FileFormat("json", (".json",), "networkx node-link data or a nested object", io.read_json_file, io.render_json),
        FileFormat("paths", (".txt",), "one root-to-leaf path per line, names separated by '/'", io.read_paths_file,
                   io.render_paths),
        FileFormat("ranks", (), "rank table, CSV or TSV: one column per rank under a header row of rank names",
                   _ranks.read_rank_file, _ranks.render_rank_file, keeps_ranks=True),
    )
    return {f.name: f for f in formats}


#: every format, by name, in the order help texts list them
FORMATS: dict[str, FileFormat] = _formats()


def format_names() -> tuple[str, ...]:
    """The values ``format=`` takes: ``"auto"``, then every format's name."""
    return (AUTO, *FORMATS)


def auto_suffixes() -> dict[str, FileFormat]:
    """The extension -> format map of ``format="auto"``; an extension claimed twice is a bug in the registry."""
    out: dict[str, FileFormat] = {}
    for fmt in FORMATS.values():
        for suffix in fmt.suffixes:
            if suffix in out:
                raise RuntimeError(f"extension {suffix!r} is claimed by formats {out[suffix].name!r} and {fmt.name!r}")
            out[suffix] = fmt
    return out


def resolve(path: str | os.PathLike, format: str = AUTO) -> FileFormat:
    """The format of ``path``: the one named by ``format``, or by the extension (any case) for ``"auto"``."""
    if format == AUTO:
        path = Path(path)
        by_suffix = auto_suffixes()
        fmt = by_suffix.get(path.suffix.lower())
        if fmt is None:
            raise TaxonomyFileError(
                f"{path}: unknown taxonomy file extension {path.suffix!r}; use one of {', '.join(by_suffix)} "
                f"(or name the format: format={_one_of(FORMATS)})"
            )
        return fmt
    if not isinstance(format, str) or format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(format_names())}, got {format!r}")
    return FORMATS[format]


def _one_of(names) -> str:
    """``"'a', 'b' or 'c'"``."""
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def describe_auto() -> str:
    """``".csv/.tsv: edges, .json: json, .txt: paths"``: what ``format="auto"`` reads each extension as."""
    return ", ".join(f"{'/'.join(f.suffixes)}: {f.name}" for f in FORMATS.values() if f.suffixes)


def read(path: str | os.PathLike, format: str = AUTO) -> ParsedFile:
    """Read a taxonomy file with the reader of its format."""
    return resolve(path, format).read(Path(path))


def render(tax: Taxonomy, path: str | os.PathLike, format: str = AUTO) -> str:
    """The text :func:`write` writes (checked first: nothing is rendered that would not load back)."""
    return resolve(path, format).render(tax, Path(path))


def write(tax: Taxonomy, path: str | os.PathLike, format: str = AUTO) -> None:
    """Write ``tax`` so that loading the file gives an equal taxonomy.

    The file is written beside ``path`` and renamed over it at the end: an
    error or an interruption leaves an existing file as it was.
    """
    from taxosmooth._atomic import atomic_write

    data = render(tax, path, format).encode("utf-8")
    with atomic_write(path) as fh:
        fh.write(data)
