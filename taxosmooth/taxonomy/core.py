"""The :class:`Taxonomy`: an immutable, validated, compiled class hierarchy."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import networkx as nx
import numpy as np

from taxosmooth.errors import TaxonomyError, UnknownClassError
from taxosmooth.taxonomy._build import DEFAULT_ROOT_NAME, Locations, build_tree, graph_from_edges
from taxosmooth.taxonomy._compiled import CompiledTree, compile_tree

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


class Taxonomy:
    """A class hierarchy: a rooted tree whose leaves are the classes.

    Build one with a constructor (:meth:`from_networkx`, :meth:`from_edges`,
    :meth:`from_paths`, :meth:`from_nested`, :meth:`from_rank_table`,
    :meth:`load`, or :func:`taxosmooth.wordnet.taxonomy_from_wordnet`); it is validated once and
    compiled into flat arrays (:attr:`compiled`) that every distance, target,
    loss and metric uses.

    Parameters (shared by all constructors)
    ----------------------------------------
    classes : sequence of hashable, optional
        The classes in the order of the model's logit columns: a list, tuple,
        array or other ordered sequence (a set or a dict view is refused with a
        ``TypeError``: its order would change from run to run). Each must be a
        leaf of the graph (an internal node or the root is an error naming it:
        label samples with an internal node through :meth:`encode`); the tree is then
        restricted to the classes and their ancestors (reported), and every
        depth, height and distance is that of the restricted tree — the
        taxonomy *of these classes*: ``lca_height`` between two kept classes
        can be smaller than in the full graph. By default: every leaf,
        in the order the leaves first appear in the input (file order, or
        ``graph.nodes`` order). ``"tree"``: every leaf, in depth-first order
        (siblings in the order of their first leaf in the default order), so
        that each subtree's classes are consecutive logit columns and the
        class order is the leaf order (``compiled.position_class`` is the
        identity): for a head laid out by subtree, and the structured losses
        then skip the permutation of the logit columns; the tree is the same
        as with the default order. Saving and loading keeps the order.
    multiple_parents : {"error", "first", "shortest", "longest"}, default "error"
        What to do when a node has several parents (a DAG): refuse, keep the
        first parent listed, or keep the parent on the shortest / longest path
        (in edges) to the root; ties go to the first listed. Every choice is
        recorded in :attr:`report`.
    multiple_roots : {"join", "error"}, default "join"
        Several roots (a forest) are joined under a virtual root named
        ``root_name`` (reported), or refused.
    root_name : hashable, default "<root>"
        Name of the virtual root; it must not already be a node.
    contract_unary : bool, default False
        Remove every non-class node that has exactly one child (its child takes
        its place; edge weights add up). Reported.

    Examples
    --------
    >>> tax = Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    >>> tax.classes
    ('horse', 'zebra', 'whale', 'shark')
    >>> tax.target_names  # target ids: the classes, then the internal nodes in depth-first order
    ('horse', 'zebra', 'whale', 'shark', 'animal', 'mammal', 'sea')
    """

    __slots__ = ("_classes", "_names", "_index", "_class_index", "_target_names", "_target_index", "_compiled",
                 "_report", "_virtual_root", "_ranks", "_cells", "_row_index", "_fingerprint", "__weakref__")
    _classes: tuple
    _names: tuple
    _index: dict[Hashable, int]
    _class_index: dict[Hashable, int]
    _target_names: tuple
    _target_index: dict[Hashable, int]
    _compiled: CompiledTree
    _report: tuple[str, ...]
    _virtual_root: bool
    _ranks: tuple | None
    _cells: dict | None  # a rank table's nodes: name -> (rank index, cell)
    _row_index: dict | None  # built on first use (rank-table rows in encode)
    _fingerprint: str  # set on first use (fingerprint)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("build a Taxonomy with Taxonomy.from_networkx, from_edges, from_paths, from_nested, "
                        "from_rank_table or load (or taxosmooth.wordnet.taxonomy_from_wordnet)")

    # ------------------------------------------------------------------ construction
    _OPTIONS = ("multiple_parents", "multiple_roots", "root_name", "contract_unary")

    @classmethod
    def _check_options(cls, options: dict, where: str) -> None:
        unknown = sorted(set(options) - set(cls._OPTIONS))
        if unknown:
            raise TypeError(
                f"Taxonomy.{where}() got unexpected option(s) {', '.join(map(repr, unknown))}; "
                f"the options are {', '.join(cls._OPTIONS)}"
            )

    @classmethod
    def _from_graph(
        cls,
        graph: nx.DiGraph,
        classes: Sequence[Hashable] | Literal["tree"] | None = None,
        *,
        multiple_parents: str = "error",
        multiple_roots: str = "join",
        root_name: Hashable = DEFAULT_ROOT_NAME,
        contract_unary: bool = False,
        report: Iterable[str] = (),
        locations: Locations | None = None,
        ranks: tuple | None = None,
        cells: dict | None = None,
    ) -> Taxonomy:
        built = build_tree(
            graph, classes, multiple_parents=multiple_parents, multiple_roots=multiple_roots,
            root_name=root_name, contract_unary=contract_unary, locations=locations,
        )
        compiled, names = compile_tree(built.root, built.children, built.weight, built.classes)
        self = object.__new__(cls)
        self._classes = tuple(built.classes)
        self._names = tuple(names)
        self._index = {n: i for i, n in enumerate(names)}
        self._class_index = {c: i for i, c in enumerate(self._classes)}
        self._target_names = tuple(self._names[v] for v in compiled.target_node)
        self._target_index = {n: i for i, n in enumerate(self._target_names)}
        self._compiled = compiled
        self._report = tuple(report) + tuple(built.report)
        self._virtual_root = built.virtual_root
        self._ranks = None if ranks is None else tuple(ranks)
        # a rank table's nodes: name -> (rank index, cell), for the nodes that are left
        self._cells = None if cells is None else {n: cells[n] for n in self._names if n in cells}
        self._row_index = None
        return self

    @classmethod
    def from_networkx(cls, graph: nx.DiGraph, classes: Sequence[Hashable] | Literal["tree"] | None = None,
                      **options: Any) -> Taxonomy:
        """From a directed graph with edges ``parent -> child``.

        An edge attribute ``weight`` (finite, > 0) sets the length of that edge
        for ``path_length``; it is 1 by default. ``lca_height`` and
        ``lca_depth_complement`` count edges and ignore weights. The graph is
        not modified.
        Options: see the class docstring.
        """
        cls._check_options(options, "from_networkx")
        return cls._from_graph(graph, classes, **options)

    @classmethod
    def from_edges(cls, edges: Iterable, classes: Sequence[Hashable] | Literal["tree"] | None = None,
                   **options: Any) -> Taxonomy:
        """From ``(parent, child)`` or ``(parent, child, weight)`` pairs.

        >>> Taxonomy.from_edges([("animal", "horse"), ("animal", "whale")]).classes
        ('horse', 'whale')
        """
        cls._check_options(options, "from_edges")
        return cls._from_graph(graph_from_edges(edges), classes, **options)

    @classmethod
    def from_paths(cls, lines: Iterable[str], sep: str = "/",
                   classes: Sequence[Hashable] | Literal["tree"] | None = None, **options: Any) -> Taxonomy:
        """From root-to-leaf paths, one per line, e.g. ``Animalia/Chordata/Mammalia/Equus/zebra``.

        Blank lines and lines starting with ``#`` are skipped; names are
        stripped of surrounding white space. An empty component is an error
        naming the line.
        """
        cls._check_options(options, "from_paths")
        from taxosmooth.taxonomy._text import physical_lines
        from taxosmooth.taxonomy.io import graph_from_paths

        if isinstance(lines, str):  # split as a file is: at \n, \r\n and \r only
            lines = physical_lines(lines)
        return cls._from_graph(graph_from_paths(lines, sep=sep), classes, **options)

    @classmethod
    def from_nested(cls, mapping: Mapping | Sequence, classes: Sequence[Hashable] | Literal["tree"] | None = None,
                    **options: Any) -> Taxonomy:
        """From nested dicts and lists: ``{"animal": {"mammal": ["horse", "zebra"]}}``.

        A dict maps each node to its children (a dict, a list, or ``None`` /
        an empty container for a leaf); a list holds leaf names or dicts.
        """
        cls._check_options(options, "from_nested")
        from taxosmooth.taxonomy.io import graph_from_nested

        return cls._from_graph(graph_from_nested(mapping), classes, **options)

    @classmethod
    def from_rank_table(cls, path_or_rows: str | os.PathLike | Iterable[Sequence[Any]],
                        ranks: Sequence[str] | None = None,
                        classes: Sequence[Hashable] | Literal["tree"] | None = None, **options: Any) -> Taxonomy:
        """From a rank table: one column per rank (kingdom … species), as iNaturalist and GBIF export them.

        Parameters
        ----------
        path_or_rows : path or sequence of rows
            A CSV/TSV file (``.tsv``: tabs) whose header row names the ranks, or
            a list of rows, each a list/tuple of cells (strings; ``""``,
            ``None`` or NaN for an empty cell).
        ranks : sequence of str, optional
            With a list of rows: the rank of each column (default ``"rank0"``,
            ``"rank1"``, …). A file names its ranks in its header.
        classes : sequence of hashable, optional
            As for every constructor (see the class docstring).
        **options
            ``multiple_roots`` and ``root_name`` (several values in the first
            column are joined under a virtual root); ``contract_unary=True``
            is refused: it would remove ranks.

        Returns
        -------
        Taxonomy
            With :attr:`ranks`; :meth:`encode` takes rows.

        Notes
        -----
        A row may stop early, with empty trailing cells: a coarse label, such
        as a specimen identified only to the genus. An empty cell before a
        filled one is an error naming the file, the line and the rank. Every
        distinct row prefix is a node, and the nodes without children are the
        classes, in the order they first appear; so a genus without species
        rows is a class at genus depth. A name used by several nodes (the
        same genus in two families, or one name at two ranks) is qualified,
        e.g. ``"Morus (Moraceae)"``, and reported, never merged;
        ``docs/taxonomy-files.md`` gives the rule.

        Examples
        --------
        >>> rows = [["Plantae", "Moraceae", "Morus", "Morus alba"],
        ...         ["Animalia", "Sulidae", "Morus", "Morus bassanus"],
        ...         ["Animalia", "Sulidae", "Sula"]]
        >>> tax = Taxonomy.from_rank_table(rows, ranks=["kingdom", "family", "genus", "species"])
        >>> tax.classes
        ('Morus alba', 'Morus bassanus', 'Sula')
        >>> tax.decode(tax.encode([("Animalia", "Sulidae", "Morus"), ["Plantae"]]))
        ['Morus (Sulidae)', 'Plantae']
        """
        from taxosmooth.taxonomy._ranks import read_rank_table

        cls._check_options(options, "from_rank_table")
        _refuse_contract_unary(options)
        table = read_rank_table(path_or_rows, ranks)
        with _naming_the_file(path_or_rows if isinstance(path_or_rows, (str, os.PathLike)) else None):
            return cls._from_graph(table.graph, classes, report=table.report, locations=table.locations,
                                   ranks=table.ranks, cells=table.cells, **options)

    @classmethod
    def load(cls, path: str | os.PathLike, classes: Sequence[Hashable] | Literal["tree"] | None = None,
             format: str = "auto", **options: Any) -> Taxonomy:
        """Read a taxonomy file.

        ``format="auto"`` picks the reader by the extension (case-insensitive):
        ``.csv`` / ``.tsv``: edge list ``parent,child[,weight]`` with an
        optional header row; ``.json``: networkx node-link data (``nodes`` and
        ``edges`` or ``links``) or a nested dict; ``.txt``: one root-to-leaf
        path per line (``/``-separated). ``format="edges"``, ``"json"``,
        ``"paths"`` or ``"ranks"`` (a rank table, see :meth:`from_rank_table`)
        names the reader instead. Errors name the file and line; the rules are
        in ``docs/taxonomy-files.md``.

        ``classes`` as for every constructor (see the class docstring); by
        default the class order stored in the file (node-link JSON), else the
        order in which the leaves first appear. ``classes="tree"``: the
        leaves in depth-first order.
        """
        from taxosmooth.taxonomy import formats

        cls._check_options(options, "load")
        fmt = formats.resolve(path, format)
        if fmt.keeps_ranks:
            _refuse_contract_unary(options)
        parsed = fmt.read(Path(path))
        if classes is None:
            classes = parsed.classes
        with _naming_the_file(path):
            return cls._from_graph(parsed.graph, classes, report=parsed.report, locations=parsed.locations,
                                   ranks=parsed.ranks, cells=parsed.cells, **options)

    def save(self, path: str | os.PathLike, format: str = "auto") -> None:
        """Write the taxonomy; :meth:`load` with the same ``format`` reads back an equal one.

        ``format`` as in :meth:`load`; ``"ranks"`` (a taxonomy built from a
        rank table) writes a rank table with one row per class and keeps the
        ranks, which the other formats do not. Node names must be strings
        (JSON: strings or integers). The file is written beside ``path`` and
        renamed over it once complete: a failure leaves an existing file as it was.
        """
        from taxosmooth.taxonomy import formats

        formats.write(self, path, format)

    # ------------------------------------------------------------------ basic facts
    @property
    def classes(self) -> tuple:
        """The classes, in logit order."""
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self._classes)

    @property
    def nodes(self) -> tuple:
        """All node names, in depth-first pre-order (the compiled node ids)."""
        return self._names

    @property
    def num_nodes(self) -> int:
        return len(self._names)

    @property
    def root(self) -> Hashable:
        return self._names[0]

    @property
    def max_depth(self) -> int:
        """``D``: the largest depth of a class."""
        return self._compiled.max_depth

    @property
    def compiled(self) -> CompiledTree:
        """The read-only arrays behind every computation (see :class:`CompiledTree`)."""
        return self._compiled

    @property
    def fingerprint(self) -> str:
        """A digest of what a model's parameters are tied to: the classes in order, the node names in
        id order, every node's parent and every edge weight (32 hex digits, stable across processes).

        Losses and heads store it in their ``state_dict`` and refuse a checkpoint made on a taxonomy
        with another fingerprint: the same tree with its classes in another order, or another tree.
        Equal taxonomies (``==``) have equal fingerprints.
        """
        fp = getattr(self, "_fingerprint", None)
        if fp is None:
            c = self._compiled
            h = hashlib.sha256()
            h.update(repr(tuple(self._classes)).encode("utf-8", "backslashreplace"))
            h.update(repr(tuple(self._names)).encode("utf-8", "backslashreplace"))
            h.update(np.ascontiguousarray(c.parent).tobytes())
            h.update(np.ascontiguousarray(c.weight).tobytes())
            fp = self._fingerprint = h.hexdigest()[:32]
        return fp

    @property
    def report(self) -> tuple[str, ...]:
        """Every decision taken while building: DAG parents, virtual root, pruning, contractions."""
        return self._report

    @property
    def has_virtual_root(self) -> bool:
        return self._virtual_root

    @property
    def ranks(self) -> tuple | None:
        """The rank names of a taxonomy built from a rank table (kingdom … species), else ``None``.

        Node ``v`` of such a taxonomy sits at rank ``ranks[depth(v) - 1]`` under a
        virtual root, ``ranks[depth(v)]`` otherwise.
        """
        return self._ranks

    # ------------------------------------------------------------------ lookups by name
    def node_index(self, name: Hashable) -> int:
        """Compiled id of a node."""
        try:
            return self._index[name]
        except (KeyError, TypeError):
            raise UnknownClassError(f"{name!r} is not a node of this taxonomy") from None

    def class_index(self, name: Hashable) -> int:
        """Logit column of a class."""
        try:
            return self._class_index[name]
        except (KeyError, TypeError):
            what = "an internal node, not a class" if name in self else "not a class of this taxonomy"
            raise UnknownClassError(f"{name!r} is {what}") from None

    def parent(self, name: Hashable) -> Hashable | None:
        p = self._compiled.parent[self.node_index(name)]
        return None if p < 0 else self._names[p]

    def children(self, name: Hashable) -> tuple:
        v = self.node_index(name)
        c = self._compiled
        kids = np.arange(v + 1, c.subtree_end[v])
        return tuple(self._names[i] for i in kids[c.parent[kids] == v])

    def depth(self, name: Hashable) -> int:
        """Edges from the root to ``name``."""
        return int(self._compiled.depth[self.node_index(name)])

    def height(self, name: Hashable) -> int:
        """Edges from ``name`` down to its deepest leaf (0 for a leaf)."""
        return int(self._compiled.height[self.node_index(name)])

    def is_leaf(self, name: Hashable) -> bool:
        return bool(self._compiled.is_leaf[self.node_index(name)])

    def ancestors(self, name: Hashable, include_self: bool = False) -> tuple:
        """Ancestors of ``name`` from its parent up to the root."""
        v = self.node_index(name)
        out = [self._names[v]] if include_self else []
        parent = self._compiled.parent
        while parent[v] >= 0:
            v = int(parent[v])
            out.append(self._names[v])
        return tuple(out)

    def descendants(self, name: Hashable) -> tuple:
        v = self.node_index(name)
        return self._names[v + 1 : int(self._compiled.subtree_end[v])]

    def leaves_under(self, name: Hashable) -> tuple:
        """Classes in the subtree of ``name`` (in class order)."""
        v = self.node_index(name)
        c = self._compiled
        pos = np.arange(c.leaf_lo[v], c.leaf_hi[v])
        return tuple(self._classes[i] for i in np.sort(c.position_class[pos]))

    def lca(self, a: Hashable, b: Hashable) -> Hashable:
        """Lowest common ancestor of two nodes."""
        u, v = self.node_index(a), self.node_index(b)
        end = self._compiled.subtree_end
        parent = self._compiled.parent
        # climb from u until its subtree contains v (pre-order ranges)
        while not (u <= v < end[u]):
            u = int(parent[u])
        return self._names[u]

    # ------------------------------------------------------------------ target ids
    @property
    def target_names(self) -> tuple:
        """The name of every target id: the classes (ids ``0 … C-1``, class order), then the
        internal nodes (ids ``C … N-1``, depth-first order). See :meth:`encode`."""
        return self._target_names

    def encode(self, labels: Hashable | Iterable[Any]) -> np.ndarray:
        """Target ids of node names: int64, one per label.

        A class keeps its class index in ``[0, C)`` (its logit column); an
        internal node — a coarse label such as a genus — gets an id in
        ``[C, num_nodes)``, in depth-first order. Losses and metrics accept ids
        ``>= C`` only with ``coarse_labels=True``.

        Parameters
        ----------
        labels : str or sequence of node names
            One name (a 0-dim array is returned) or a sequence of names. For a
            taxonomy built from a rank table an item may also be a row (a
            list, tuple or array of cells; trailing cells may be empty): its
            id is that of the node of its last non-empty cell.

        Raises
        ------
        UnknownClassError
            Naming every unknown label (the first ten), its position and the
            closest names.

        Examples
        --------
        >>> tax = Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
        >>> tax.encode(["zebra", "sea", "horse"]).tolist()
        [1, 6, 0]
        >>> tax.decode([1, 6, 0])
        ['zebra', 'sea', 'horse']
        """
        index = self._target_index
        if isinstance(labels, (str, bytes)):
            return np.asarray(self._encode_one(labels, None), dtype=np.int64)
        if not isinstance(labels, Iterable):
            raise TypeError(f"labels must be a node name or a sequence of node names, got {type(labels).__name__}")
        out = []
        unknown = []
        ranked = self._ranks is not None
        for i, name in enumerate(labels):
            if ranked and isinstance(name, (list, tuple, np.ndarray)):
                node = self._row_node(name, i)
                if node is None:
                    unknown.append((i, name))
                    out.append(-1)
                else:
                    out.append(index[node])
                continue
            try:
                out.append(index[name])
            except (KeyError, TypeError):
                unknown.append((i, name))
                out.append(-1)
        if unknown:
            raise UnknownClassError(self._unknown_message(unknown))
        return np.asarray(out, dtype=np.int64).reshape(len(out))

    def _row_node(self, row, position):
        """The node named by a rank-table row, or ``None`` when no row of the table has these cells."""
        from taxosmooth.taxonomy._ranks import normalise_row, row_paths

        if self._row_index is None:
            self._row_index = row_paths(self)
        assert self._ranks is not None  # only rank-table taxonomies read rows
        cells = normalise_row(row, self._ranks, f"labels[{position}]")
        if not cells:
            raise UnknownClassError(f"labels[{position}] is an empty row")
        return self._row_index.get(cells)

    def _encode_one(self, name, position) -> int:
        try:
            return self._target_index[name]
        except (KeyError, TypeError):
            raise UnknownClassError(self._unknown_message([(position, name)])) from None

    def _unknown_message(self, unknown: list) -> str:
        import difflib

        strings = [n for n in self._target_names if isinstance(n, str)]
        parts = []
        for i, name in unknown[:10]:
            where = f" (position {i})" if i is not None else ""
            close = difflib.get_close_matches(name, strings, n=3) if isinstance(name, str) else []
            if isinstance(name, str):  # a name qualified because several nodes share it (rank tables)
                close = [n for n in strings if n.startswith(name + " (")][:3] + [c for c in close if not c.startswith(name + " (")]
                close = close[:3]
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            parts.append(f"{name!r}{where}{hint}")
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        noun = "label is" if len(unknown) == 1 else f"{len(unknown)} labels are"
        return f"{noun} not a node of this taxonomy: " + "; ".join(parts) + more

    def _check_ids(self, ids, name: str = "ids") -> np.ndarray:
        """Target ids as an int64 array after checking their range; the error names the first bad one."""
        if hasattr(ids, "detach"):  # a torch tensor
            ids = ids.detach().cpu().numpy()
        arr = np.asarray(ids)
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
            raise TypeError(f"{name} must be integer target ids, got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
        bad = (arr < 0) | (arr >= self.num_nodes)
        if bad.any():
            k = tuple(int(i) for i in np.argwhere(bad)[0])
            raise IndexError(f"{name}{list(k)} = {int(arr[k])} is not a target id in [0, {self.num_nodes})")
        return arr

    def decode(self, ids: ArrayLike) -> Hashable | list:
        """Node names of target ids (the inverse of :meth:`encode`).

        ``ids``: an int, or a sequence / numpy array / tensor of ints (any
        shape: nested lists come back). Ids outside ``[0, num_nodes)`` raise
        ``IndexError`` naming the first one.
        """
        arr = self._check_ids(ids)
        names = self._target_names
        if arr.ndim == 0:
            return names[int(arr)]
        return np.vectorize(names.__getitem__, otypes=[object])(arr).tolist() if arr.size else arr.tolist()

    def target_depth(self, ids: ArrayLike) -> np.ndarray:
        """Depth (edges from the root) of each target id."""
        c = self._compiled
        return c.depth[c.target_node[self._check_ids(ids)]]

    def ancestor_at_depth(self, ids: ArrayLike, depth: int) -> np.ndarray:
        """Target id of the ancestor at ``depth`` of each target id (the id itself at its own depth).

        ``-1`` where the node is shallower than ``depth`` (it has no ancestor
        there: a coarse label above that rank). No table: the ancestor at depth
        ``k`` of node ``v`` is the last node of depth ``k`` before ``v`` in
        pre-order, found by binary search. O(len(ids) · log N).

        Examples
        --------
        >>> tax = Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
        >>> tax.decode(tax.ancestor_at_depth(tax.encode(["horse", "whale"]), 1))
        ['mammal', 'sea']
        """
        import numbers

        if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 0:
            raise ValueError(f"depth must be an int >= 0, got {depth!r}")
        arr = self._check_ids(ids)
        c = self._compiled
        if depth > int(c.depth.max()):
            return np.full(arr.shape, -1, dtype=np.int64)
        node = c.target_node[arr]
        level = c.levels[depth]
        k = np.searchsorted(level, node, side="right") - 1
        u = level[np.maximum(k, 0)]
        inside = (k >= 0) & (node < c.subtree_end[u]) & (c.depth[node] >= depth)
        return np.where(inside, c.node_target[u], -1).astype(np.int64)

    # ------------------------------------------------------------------ conversion
    def to_networkx(self) -> nx.DiGraph:
        """The tree as a DiGraph (``parent -> child``, with ``weight`` on each edge)."""
        g = nx.DiGraph()
        g.add_nodes_from(self._names)
        c = self._compiled
        g.add_weighted_edges_from(
            (self._names[p], self._names[i], float(c.weight[i])) for i, p in enumerate(c.parent) if p >= 0
        )
        g.graph["classes"] = list(self._classes)
        return g

    def edges(self) -> list[tuple]:
        """``(parent, child, weight)`` for every edge, in pre-order of the child."""
        c = self._compiled
        return [(self._names[p], self._names[i], float(c.weight[i])) for i, p in enumerate(c.parent) if p >= 0]

    @property
    def is_weighted(self) -> bool:
        return bool(np.any(self._compiled.weight[1:] != 1.0))

    def describe(self) -> str:
        """A short human summary: sizes, depth, unary chains and every decision taken."""
        c = self._compiled
        leaf_depth = c.depth[c.leaf_node]
        n_children = np.bincount(c.parent[1:], minlength=self.num_nodes)
        unary = int(np.sum(n_children == 1))
        lines = [
            f"Taxonomy with {self.num_classes} classes and {self.num_nodes} nodes",
            f"  root: {self.root!r}" + (" (virtual: joins several roots)" if self._virtual_root else ""),
            f"  class depth: min {leaf_depth.min()}, max {leaf_depth.max()}, mean {leaf_depth.mean():.2f}",
            f"  internal nodes: {self.num_nodes - self.num_classes} ({unary} with a single child)",
            f"  edge weights: {'yes' if self.is_weighted else 'no (all 1)'}",
        ]
        if self._ranks is not None:
            lines.append(f"  ranks ({len(self._ranks)}): {', '.join(self._ranks)}")
        if self._report:
            lines.append(f"  decisions ({len(self._report)}):")
            lines.extend(f"    - {r}" for r in self._report[:20])
            if len(self._report) > 20:
                lines.append(f"    ... and {len(self._report) - 20} more (see Taxonomy.report)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        return f"<Taxonomy: {self.num_classes} classes, {self.num_nodes} nodes, depth {self.max_depth}, root {self.root!r}>"

    def __len__(self) -> int:
        return self.num_classes

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._index
        except TypeError:
            return False

    def _key(self):
        c = self._compiled
        parents = {self._names[i]: (None if p < 0 else self._names[p], float(c.weight[i])) for i, p in enumerate(c.parent)}
        return self._classes, parents

    def __eq__(self, other: object) -> bool:
        """Equal when the classes (in order), the parent of every node and every edge weight agree.

        Equal taxonomies also have the same node ids and target ids (children
        are laid out in the order of their first class). Ranks and the report
        are not compared.
        """
        if not isinstance(other, Taxonomy):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self._classes, self.num_nodes, self.root))

    def __reduce__(self) -> tuple[Callable[..., Taxonomy], tuple]:
        ranks = None if self._ranks is None else (self._ranks, self._cells)
        return (_rebuild, (self.edges(), self._classes, self.root, self._report, self._virtual_root, ranks))


def _refuse_contract_unary(options: dict) -> None:
    """A rank table keeps its ranks: ``contract_unary=True`` is refused (``False`` is dropped from ``options``)."""
    if options.get("contract_unary"):
        raise ValueError("contract_unary=True cannot be used with a rank table: it would remove ranks "
                         "(a genus with one species), so that rows could no longer be encoded")
    options.pop("contract_unary", None)


@contextmanager
def _naming_the_file(path):
    """Errors found while building a taxonomy read from ``path`` name the file (if they do not already)."""
    try:
        yield
    except TaxonomyError as exc:
        if path is None or str(path) in str(exc):
            raise
        raise type(exc)(f"{path}: {exc}") from None


def _rebuild(edges, classes, root, report, virtual, ranks=None):
    g = nx.DiGraph()
    g.add_node(root)
    g.add_weighted_edges_from(edges)
    if ranks is None:
        tax = Taxonomy._from_graph(g, classes, report=report)
    else:
        tax = Taxonomy._from_graph(g, classes, report=report, ranks=ranks[0], cells=ranks[1])
    tax._virtual_root = virtual
    return tax
