"""The hypernym DAG above a set of synsets, compiled once into arrays.

The "hypernyms" of a synset are nltk's ``hypernyms() + instance_hypernyms()``
(what every nltk similarity walks). The closure of the input synsets under
that relation is upward closed, so the depths computed inside it equal
WordNet's. Everything the similarity matrices need is tabulated here, with one
pass over the closure nodes (never over pairs):

* ``min_depth`` / ``max_depth``: shortest / longest hypernym path to a root
  (nltk's ``Synset.min_depth`` / ``Synset.max_depth``);
* the ancestor table: for every node ``v`` and every ancestor-or-self ``x``,
  the BFS distance ``sd(v, x)`` (nltk's ``_shortest_hypernym_paths``), as CSR
  arrays ``anc_ptr`` / ``anc_node`` / ``anc_dist``;
* ``max_shortest``: ``max_x sd(v, x)``, where nltk places its simulated root.

:func:`pos_graph` parses a whole data file (for the taxonomy depth of
``lch`` and the intrinsic information content), much faster than loading every
synset through nltk.

Parent order: nltk keeps a synset's pointers in a ``set``, so the order of
``hypernyms()`` changes between Python processes (string hashing is
randomised). The DAG lists each node's parents as ``hypernyms()`` then
``instance_hypernyms()``, each sorted by synset name, so that everything
built on "the first parent" is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from taxosmooth.errors import TaxonomyError

if TYPE_CHECKING:
    from nltk.corpus.reader.wordnet import Synset, WordNetCorpusReader

#: the name nltk gives its simulated root (it sorts before every synset name)
FAKE_ROOT_NAME = "*ROOT*"


def _topological_order(parents: list) -> tuple[list, list]:
    """Kahn's algorithm, parents first. Returns the order and the count of unvisited
    parents per node: a cycle leaves nodes out of the order (with a count > 0)."""
    n = len(parents)
    children: list = [[] for _ in range(n)]
    pending = [len(ps) for ps in parents]
    for v, ps in enumerate(parents):
        for p in ps:
            children[p].append(v)
    order = [v for v in range(n) if pending[v] == 0]
    for v in order:
        for c in children[v]:
            pending[c] -= 1
            if pending[c] == 0:
                order.append(c)
    return order, pending


def ordered_hypernyms(synset: Synset) -> list:
    """``hypernyms()`` then ``instance_hypernyms()``, each sorted by name (see module docstring)."""
    return sorted(synset.hypernyms(), key=_name) + sorted(synset.instance_hypernyms(), key=_name)


def _name(synset) -> str:
    return synset.name()


@dataclass(frozen=True, eq=False)
class HypernymDAG:
    """Arrays describing the hypernym closure of some synsets.

    Node ids are ``0 .. M-1`` in topological order (every parent before its
    children). ``inputs[i]`` is the node of the ``i``-th input synset.
    """

    synsets: tuple
    names: tuple
    pos: np.ndarray  # (M,) '<U1'
    parent_ptr: np.ndarray  # CSR over nodes
    parent_node: np.ndarray
    min_depth: np.ndarray
    max_depth: np.ndarray
    max_shortest: np.ndarray
    anc_ptr: np.ndarray  # CSR: ancestors-or-self of each node, self first
    anc_node: np.ndarray
    anc_dist: np.ndarray
    inputs: np.ndarray

    @property
    def num_nodes(self) -> int:
        return len(self.names)

    def parents(self, v: int) -> np.ndarray:
        return self.parent_node[self.parent_ptr[v] : self.parent_ptr[v + 1]]

    def input_ancestors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(i, x, sd)`` for every input ``i`` and every ancestor-or-self ``x`` of it."""
        starts = self.anc_ptr[self.inputs]
        counts = self.anc_ptr[self.inputs + 1] - starts
        rows = np.repeat(np.arange(len(self.inputs)), counts)
        flat = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts) + np.arange(counts.sum())
        return rows, self.anc_node[flat], self.anc_dist[flat]


def compile_dag(synsets: Sequence[Synset]) -> HypernymDAG:
    """Walk the hypernym closure of ``synsets`` (distinct nltk Synsets) and tabulate it."""
    index: dict = {}
    nodes: list = []
    parents_of: list = []
    stack = list(synsets)
    for s in stack:
        if s not in index:
            index[s] = len(nodes)
            nodes.append(s)
    while stack:  # discover the closure
        s = stack.pop()
        for h in ordered_hypernyms(s):
            if h not in index:
                index[h] = len(nodes)
                nodes.append(h)
                stack.append(h)
    parents_of = [[index[h] for h in ordered_hypernyms(s)] for s in nodes]

    m = len(nodes)
    order, pending = _topological_order(parents_of)
    if len(order) != m:
        stuck = next(nodes[v].name() for v in range(m) if pending[v])
        raise TaxonomyError(f"the WordNet hypernym graph has a cycle through {stuck!r}")
    new_id = np.empty(m, dtype=np.int64)
    new_id[order] = np.arange(m)
    nodes = [nodes[v] for v in order]
    parents_of = [[int(new_id[p]) for p in parents_of[v]] for v in order]

    min_depth = np.zeros(m, dtype=np.int64)
    max_depth = np.zeros(m, dtype=np.int64)
    max_shortest = np.zeros(m, dtype=np.int64)
    anc: list = [None] * m
    for v, ps in enumerate(parents_of):
        dist = {v: 0}
        if ps:
            min_depth[v] = 1 + min(min_depth[p] for p in ps)
            max_depth[v] = 1 + max(max_depth[p] for p in ps)
            for p in ps:
                for x, d in anc[p].items():
                    if d + 1 < dist.get(x, m + 1):
                        dist[x] = d + 1
        anc[v] = dist
        max_shortest[v] = max(dist.values())

    counts = np.fromiter((len(a) for a in anc), dtype=np.int64, count=m)
    anc_ptr = np.concatenate(([0], np.cumsum(counts)))
    anc_node = np.fromiter((x for a in anc for x in a), dtype=np.int64, count=int(anc_ptr[-1]))
    anc_dist = np.fromiter((d for a in anc for d in a.values()), dtype=np.int64, count=int(anc_ptr[-1]))
    pcounts = np.fromiter((len(ps) for ps in parents_of), dtype=np.int64, count=m)
    parent_ptr = np.concatenate(([0], np.cumsum(pcounts)))
    parent_node = np.fromiter((p for ps in parents_of for p in ps), dtype=np.int64, count=int(parent_ptr[-1]))
    inputs = new_id[[index[s] for s in synsets]] if len(synsets) else np.zeros(0, dtype=np.int64)
    return HypernymDAG(
        synsets=tuple(nodes),
        names=tuple(s.name() for s in nodes),
        pos=np.array([s.pos() for s in nodes], dtype="<U1"),
        parent_ptr=parent_ptr,
        parent_node=parent_node,
        min_depth=min_depth,
        max_depth=max_depth,
        max_shortest=max_shortest,
        anc_ptr=anc_ptr,
        anc_node=anc_node,
        anc_dist=anc_dist,
        inputs=np.asarray(inputs, dtype=np.int64),
    )


# ---------------------------------------------------------------------- whole data files

_FILE_OF_POS = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
_pos_graph_cache: dict = {}


@dataclass(frozen=True, eq=False)
class PosGraph:
    """All synsets of one data file with their hypernym edges, parents before children.

    ``offsets[k]``, ``ss_type[k]`` (``n v a s r``) and the CSR
    ``parent_ptr`` / ``parent_node`` (indices into the same arrays);
    ``max_depth[k]`` is nltk's ``Synset.max_depth``.
    """

    offsets: np.ndarray
    ss_type: np.ndarray
    parent_ptr: np.ndarray
    parent_node: np.ndarray
    max_depth: np.ndarray

    def hyponym_counts(self) -> np.ndarray:
        """Number of distinct descendants (transitive hyponyms) of every synset."""
        n = len(self.offsets)
        anc: list[frozenset[int]] = [frozenset()] * n
        counts = np.zeros(n, dtype=np.int64)
        for v in range(n):  # parents come first
            ps = self.parent_node[self.parent_ptr[v] : self.parent_ptr[v + 1]]
            a: frozenset[int]
            if len(ps) == 0:
                a = frozenset()
            elif len(ps) == 1:
                p = int(ps[0])
                a = anc[p] | {p}
            else:
                a = frozenset().union(*(anc[int(p)] | {int(p)} for p in ps))
            anc[v] = a
            for x in a:
                counts[x] += 1
        return counts


def pos_graph(reader: WordNetCorpusReader, pos: str) -> PosGraph:
    """Parse the data file of ``pos`` once per reader (cached)."""
    fileid = f"data.{_FILE_OF_POS[pos]}"
    key = (id(reader), fileid)
    hit = _pos_graph_cache.get(key)
    if hit is not None and hit[0] is reader:
        return hit[1]
    with reader.abspath(fileid).open() as fh:
        raw = fh.read()
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    offsets: list = []
    types: list = []
    hyper: list = []
    for line in text.splitlines():
        if not line or line[0] == " ":
            continue
        fields = line.split("|", 1)[0].split()  # the gloss follows '|' 
        k = 4 + 2 * int(fields[3], 16)
        n_ptr = int(fields[k])
        hs = [int(fields[j + 1]) for j in range(k + 1, k + 1 + 4 * n_ptr, 4) if fields[j] == "@"]
        hi = [int(fields[j + 1]) for j in range(k + 1, k + 1 + 4 * n_ptr, 4) if fields[j] == "@i"]
        offsets.append(int(fields[0]))
        types.append(fields[2])
        hyper.append(hs + hi)
    where = {o: k for k, o in enumerate(offsets)}
    n = len(offsets)
    parents = [[where[o] for o in hs] for hs in hyper]
    order, _ = _topological_order(parents)
    if len(order) != n:
        raise TaxonomyError(f"the WordNet hypernym graph in {fileid} has a cycle")
    new_id = np.empty(n, dtype=np.int64)
    new_id[order] = np.arange(n)
    parents = [[int(new_id[p]) for p in parents[v]] for v in order]
    max_depth = np.zeros(n, dtype=np.int64)
    for v, ps in enumerate(parents):
        if ps:
            max_depth[v] = 1 + max(max_depth[p] for p in ps)
    pcounts = np.fromiter((len(ps) for ps in parents), dtype=np.int64, count=n)
    graph = PosGraph(
        offsets=np.asarray(offsets, dtype=np.int64)[order],
        ss_type=np.asarray(types, dtype="<U1")[order],
        parent_ptr=np.concatenate(([0], np.cumsum(pcounts))),
        parent_node=np.fromiter((p for ps in parents for p in ps), dtype=np.int64, count=int(pcounts.sum())),
        max_depth=max_depth,
    )
    _pos_graph_cache[key] = (reader, graph)
    return graph


def taxonomy_depth(reader: WordNetCorpusReader, pos: str) -> int:
    """nltk's ``_compute_max_depth(pos, False)``: the largest ``max_depth`` of a synset of ``pos``.

    For ``pos="a"`` nltk counts the satellites too (its ``all_synsets("a")``
    includes them); for ``"s"`` only the satellites.
    """
    g = pos_graph(reader, pos)
    depths = g.max_depth[g.ss_type == "s"] if pos == "s" else g.max_depth
    return int(depths.max()) if len(depths) else 0
