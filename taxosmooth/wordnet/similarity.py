"""WordNet similarity and distance matrices, equal to nltk's, without a per-pair loop.

:func:`similarity_matrix` returns ``S[i, j] = nltk_measure(synsets[i], synsets[j])``
for ``path``, ``wup``, ``lch`` (nltk's ``path_similarity``, ``wup_similarity``,
``lch_similarity`` with their default ``simulate_root=True``) and ``res``,
``jcn``, ``lin`` (nltk's ``res_similarity``, ``jcn_similarity``,
``lin_similarity`` with an information-content table, see
:mod:`taxosmooth.wordnet.ic`). Values agree with nltk's to rounding (tested:
``|diff| <= 1e-12`` on every pair, the diagonal included).

How: the hypernym closure of the synsets is compiled once
(:mod:`taxosmooth.wordnet.dag`); then, for every closure node ``x``, one numpy
block update over the pairs of inputs below ``x``. The cost is
``sum_x |inputs below x|^2`` array operations, no Python per pair (1,000
nouns: about 0.2 s per matrix, thousands of times nltk's per-pair loop; see
``benchmarks/wordnet.py``). Memory: a few dense ``(n, n)`` arrays.

nltk's conventions, reproduced
-------------------------------
* ``shortest_path_distance(a, b)``: ``min`` over common ancestors-or-self
  ``x`` of ``sd(a, x) + sd(b, x)`` (BFS distances along hypernym and instance
  hypernym edges); ``0`` when ``a == b``.
* Simulated root: for a pair in which one synset is not a noun (WordNet 3.0
  nouns share ``entity.n.01``; verbs have hundreds of roots), nltk adds a fake
  root ``*ROOT*`` above each synset ``a`` at distance ``max_x sd(a, x) + 1``,
  with depth 0. ``path`` and ``wup`` use it when *either* synset needs it,
  ``lch`` when the first does. ``simulate_root=False`` turns it off, as in nltk.
* ``wup``: the subsumer is, among the common ancestors-or-self (plus the fake
  root), the ones of largest ``min_depth``, sorted by name, the first taken
  -- except that the *first* synset wins when it is among them (so ``wup`` is
  not always symmetric). Then ``depth = max_depth(subsumer) + 1`` and
  ``wup = 2 depth / (sd'(a, lcs) + sd'(b, lcs) + 2 depth)``, ``sd'`` the
  shortest path distance. A synset's ``wup`` with itself is below 1 when one
  of its ancestors has a larger ``min_depth`` than itself.
* ``lch = -log((p + 1) / (2 D))``, ``p`` the shortest path length and ``D``
  nltk's taxonomy depth for the part of speech (its largest ``max_depth``,
  ``+1`` when that part of speech needs a root: 19 for WordNet 3.0 nouns, 13
  for verbs). Both synsets must have the same part of speech.
* ``res = IC(lcs)``, the largest IC of a common ancestor-or-self (0 when
  there is none); ``jcn = 1 / (IC(a) + IC(b) - 2 IC(lcs))``, with nltk's
  special cases (``1e300`` when ``a == b`` or the difference is 0, ``0``
  when ``IC(a)`` or ``IC(b)`` is 0); ``lin = 2 IC(lcs) / (IC(a) + IC(b))``.
  ``IC(s) = -log(count(s) / count(root))``, ``1e300`` for a count of 0
  (nltk's ``information_content``). Both synsets must have the same part of
  speech.

Missing values
--------------
Where nltk returns ``None`` (no connecting path, e.g. two verbs of different
roots with ``simulate_root=False``), the matrix holds ``nan``; ``lin`` also
gives ``nan`` where nltk raises ``ZeroDivisionError`` (``IC(a) + IC(b) = 0``:
the root with itself). nltk's "infinity" ``1e300`` is kept as is.

Distances (:func:`distance_matrix`)
-----------------------------------
================  ======================================================
measure           distance
================  ======================================================
``path``          ``p``, the shortest path length in edges (``1/path - 1``)
``wup``           ``1 - wup``
``lch``           ``log(1 + p)`` (``= lch(a, a) - lch(a, b)``)
``res``, ``jcn``  ``IC(a) + IC(b) - 2 IC(lcs)``, the Jiang-Conrath distance
                  (Resnik's similarity has no distance of its own; this is
                  the standard one built from it)
``lin``           ``1 - lin``
================  ======================================================

Every distance is 0 on the diagonal, by definition: nltk's ``wup`` of a synset
with itself can be below 1 and ``lin`` of the root with itself is undefined,
but a synset is at distance 0 from itself (so the matrix is a valid input to
:func:`taxosmooth.soft_targets` and :func:`taxosmooth.cost_matrix`). Off the
diagonal ``nan`` stays ``nan``, and ``wup``'s rare asymmetric pairs stay
asymmetric.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from taxosmooth.wordnet.dag import FAKE_ROOT_NAME, HypernymDAG, compile_dag, taxonomy_depth

if TYPE_CHECKING:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

MEASURES = ("path", "wup", "lch", "res", "jcn", "lin")
IC_MEASURES = ("res", "jcn", "lin")
#: nltk's stand-in for infinity in ``jcn`` and ``information_content``
NLTK_INF = 1e300
#: largest inputs x closure-nodes table kept dense (else sorted keys + searchsorted)
_DENSE_LIMIT = 30_000_000


class _Pairs:
    """The compiled closure plus the (input, ancestor) incidence, grouped both ways."""

    def __init__(self, dag: HypernymDAG):
        self.dag = dag
        self.n = len(dag.inputs)
        m = dag.num_nodes
        rows, x, d = dag.input_ancestors()  # grouped by input, self first
        self.by_input = (rows, x, d)
        self.input_ptr = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=self.n))))
        order = np.argsort(x, kind="stable")
        self.rows, self.x, self.d = rows[order], x[order], d[order]
        starts = np.flatnonzero(np.concatenate(([True], self.x[1:] != self.x[:-1]))) if len(x) else np.zeros(0, int)
        self.starts = starts
        self.ends = np.concatenate((starts[1:], [len(self.x)])).astype(np.int64)
        self.group_node = self.x[starts]
        self.m = m
        # path_to_ancestor's table, built on first use: dense (n, M), or sorted keys and values
        self._spd: np.ndarray | tuple[np.ndarray, np.ndarray] | None = None

    def groups(self, min_size: int = 2):
        sizes = self.ends - self.starts
        return np.flatnonzero(sizes >= min_size)

    # ---------------------------------------------------------------- reductions over common ancestors
    def shortest_paths(self) -> np.ndarray:
        """``min_x sd(i, x) + sd(j, x)`` over common ancestors-or-self; ``inf`` when none; 0 diagonal."""
        n = self.n
        dist = np.full((n, n), np.inf)
        dd = self.d.astype(np.float64)
        for g in self.groups(2):
            lo, hi = self.starts[g], self.ends[g]
            r = self.rows[lo:hi]
            a = dd[lo:hi]
            ix = np.ix_(r, r)
            dist[ix] = np.minimum(dist[ix], a[:, None] + a[None, :])
        np.fill_diagonal(dist, 0.0)
        return dist

    def best_common(self, key: np.ndarray) -> np.ndarray:
        """The common ancestor-or-self of largest ``key`` for every pair (``-1`` when none)."""
        n = self.n
        best = np.full((n, n), -1, dtype=np.int64)
        groups = self.groups(2)
        groups = groups[np.argsort(key[self.group_node[groups]], kind="stable")]
        for g in groups:  # increasing key: the last write wins
            r = self.rows[self.starts[g] : self.ends[g]]
            best[np.ix_(r, r)] = self.group_node[g]
        # the diagonal: over all ancestors-or-self of i
        rows, x, _ = self.by_input
        order = np.lexsort((key[x], rows))
        last = order[self.input_ptr[1:] - 1]
        best[np.arange(n), np.arange(n)] = x[last]
        return best

    def is_ancestor(self) -> np.ndarray:
        """``A[i, j]``: input ``i`` is an ancestor-or-self of input ``j``."""
        node_to_input = np.full(self.m, -1, dtype=np.int64)
        node_to_input[self.dag.inputs] = np.arange(self.n)
        who = node_to_input[self.x]
        mask = who >= 0
        out = np.zeros((self.n, self.n), dtype=bool)
        out[who[mask], self.rows[mask]] = True
        return out

    def path_to_ancestor(self, i: np.ndarray, v: np.ndarray) -> np.ndarray:
        """nltk's ``shortest_path_distance(input i, node v)`` for ``v`` an ancestor-or-self of ``i``."""
        if self._spd is None:
            keys, values = self._ancestor_path_table()
            if self.n * self.m <= _DENSE_LIMIT:  # a dense (n, M) table: one gather per lookup
                dense = np.full((self.n, self.m), -1, dtype=np.int32)
                dense[keys // self.m, keys % self.m] = values
                self._spd = dense
            else:
                self._spd = (keys, values)
        if isinstance(self._spd, np.ndarray):
            return self._spd[i, v]
        keys, values = self._spd
        pos = np.searchsorted(keys, i.astype(np.int64) * self.m + v)
        return values[np.minimum(pos, len(keys) - 1)]

    def _ancestor_path_table(self):
        dag, m = self.dag, self.m
        rows, v, dv = self.by_input
        key_iv = rows * m + v
        o = np.argsort(key_iv)
        sorted_keys, sorted_d = key_iv[o], dv[o]
        # expand every (i, v) over x in anc*(v): sd(i, x) + sd(v, x)
        cnt = dag.anc_ptr[v + 1] - dag.anc_ptr[v]
        pair = np.repeat(np.arange(len(v)), cnt)
        offs = np.arange(cnt.sum()) - np.repeat(np.concatenate(([0], np.cumsum(cnt)[:-1])), cnt)
        flat = dag.anc_ptr[v][pair] + offs
        xx, dx = dag.anc_node[flat], dag.anc_dist[flat]
        d_ix = sorted_d[np.searchsorted(sorted_keys, rows[pair] * m + xx)]
        starts = np.concatenate(([0], np.cumsum(cnt)[:-1]))
        spd = np.minimum.reduceat(d_ix + dx, starts)
        return key_iv[o], spd[o]


# ---------------------------------------------------------------------------- the measures
def _needs_root(dag: HypernymDAG) -> np.ndarray:
    """nltk's ``Synset._needs_root()`` for every input (asked once per part of speech)."""
    syn = [dag.synsets[v] for v in dag.inputs]
    by_pos: dict = {}
    out = np.zeros(len(syn), dtype=bool)
    for k, s in enumerate(syn):
        p = s.pos()
        if p not in by_pos:
            by_pos[p] = bool(s._needs_root())
        out[k] = by_pos[p]
    return out


def _path_lengths(pairs: _Pairs, need_root: np.ndarray) -> np.ndarray:
    dist = pairs.shortest_paths()
    if need_root.any():
        ms = pairs.dag.max_shortest[pairs.dag.inputs].astype(np.float64) + 1.0
        via_root = ms[:, None] + ms[None, :]
        dist = np.where(need_root, np.minimum(dist, via_root), dist)
        np.fill_diagonal(dist, 0.0)
    return dist


def _pair_root_mask(need: np.ndarray, simulate_root: bool, either: bool = True) -> np.ndarray:
    if not simulate_root:
        return np.zeros((len(need), len(need)), dtype=bool)
    if either:
        return need[:, None] | need[None, :]
    return np.repeat(need[:, None], len(need), axis=1)


def _wup(pairs: _Pairs, root: np.ndarray) -> np.ndarray:
    dag, n, m = pairs.dag, pairs.n, pairs.m
    names = list(dag.names) + [FAKE_ROOT_NAME]
    rank = np.empty(m + 1, dtype=np.int64)
    rank[sorted(range(m + 1), key=names.__getitem__)] = np.arange(m + 1)
    key = dag.min_depth * (m + 1) + (m - rank[:m])  # deeper first, then the smaller name
    fake_key = m - rank[m]
    best = pairs.best_common(key)
    has = best >= 0
    safe = np.where(has, best, 0)
    best_key = np.where(has, key[safe], -1)
    use_fake = root & (best_key < fake_key)
    sub_min_depth = np.where(use_fake, 0, dag.min_depth[safe])
    inputs = dag.inputs
    self_wins = pairs.is_ancestor() & (dag.min_depth[inputs][:, None] == sub_min_depth)
    sub = np.where(self_wins, inputs[:, None], safe)
    use_fake &= ~self_wins
    found = has | use_fake | self_wins

    ms = dag.max_shortest[inputs] + 1
    len1 = np.broadcast_to(ms[:, None], (n, n)).copy()  # via the fake root
    len2 = np.broadcast_to(ms[None, :], (n, n)).copy()
    real = found & ~use_fake
    if real.all():
        len1 = pairs.path_to_ancestor(np.arange(n)[:, None], sub)
        len2 = pairs.path_to_ancestor(np.arange(n)[None, :], sub)
    else:
        ri, rj = np.nonzero(real)
        len1[ri, rj] = pairs.path_to_ancestor(ri, sub[ri, rj])
        len2[ri, rj] = pairs.path_to_ancestor(rj, sub[ri, rj])
    depth = dag.max_depth[sub] + 1
    if use_fake.any():
        depth[use_fake] = 1
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (2.0 * depth) / ((len1 + depth) + (len2 + depth))
    out[~found] = np.nan
    return out


def _single_pos(dag: HypernymDAG, measure: str) -> str:
    pos = {dag.synsets[v].pos() for v in dag.inputs}
    if len(pos) > 1:
        raise ValueError(
            f"{measure} compares synsets of one part of speech (nltk raises otherwise); "
            f"got parts of speech {sorted(pos)}"
        )
    return pos.pop()


def _lch(pairs: _Pairs, simulate_root: bool) -> np.ndarray:
    dag = pairs.dag
    pos = _single_pos(dag, "lch")
    need = _needs_root(dag)
    first = dag.synsets[dag.inputs[0]]
    depth = taxonomy_depth(first._wordnet_corpus_reader, pos) + (1 if need[0] else 0)
    dist = _path_lengths(pairs, _pair_root_mask(need, simulate_root, either=False))
    if depth == 0:
        return np.full(dist.shape, np.nan)
    with np.errstate(divide="ignore"):
        out = -np.log((dist + 1) / (2.0 * depth))
    out[np.isinf(dist)] = np.nan
    return out


def _ic_values(dag: HypernymDAG, ic) -> np.ndarray:
    """nltk's ``information_content`` of every closure node (same float operations)."""
    out = np.empty(dag.num_nodes)
    for v, s in enumerate(dag.synsets):
        pos = "a" if s.pos() == "s" else s.pos()
        try:
            table = ic[pos]
        except KeyError:
            raise ValueError(
                f"the information-content table has no entries for part of speech {pos!r} (synset {s.name()!r})"
            ) from None
        count = table.get(s.offset(), 0.0)
        if count == 0:
            out[v] = NLTK_INF
            continue
        root = table.get(0, 0.0)
        if not root:
            raise ValueError(f"the information-content table for part of speech {pos!r} has no root count (key 0)")
        out[v] = -math.log(count / root)
    return out


def _ic_parts(pairs: _Pairs, ic, measure: str):
    dag = pairs.dag
    _single_pos(dag, measure)
    values = _ic_values(dag, ic)
    best = pairs.best_common(values)
    lcs = np.where(best >= 0, values[np.where(best >= 0, best, 0)], 0.0)
    own = values[dag.inputs]
    return own[:, None], own[None, :], lcs


def _res(pairs, ic):
    return _ic_parts(pairs, ic, "res")[2]


def _jcn(pairs, ic):
    ic1, ic2, lcs = _ic_parts(pairs, ic, "jcn")
    diff = ic1 + ic2 - 2 * lcs
    with np.errstate(divide="ignore"):
        out = np.where(diff == 0, NLTK_INF, 1 / np.where(diff == 0, 1.0, diff))
    out = np.where((ic1 == 0) | (ic2 == 0), 0.0, out)
    np.fill_diagonal(out, NLTK_INF)
    return out


def _lin(pairs, ic):
    ic1, ic2, lcs = _ic_parts(pairs, ic, "lin")
    total = ic1 + ic2
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (2.0 * lcs) / total
    return np.where(total == 0, np.nan, out)


def _jc_distance(pairs, ic, measure):
    ic1, ic2, lcs = _ic_parts(pairs, ic, measure)
    out = ic1 + ic2 - 2 * lcs
    np.fill_diagonal(out, 0.0)
    return out


# ---------------------------------------------------------------------------- public API
def _check_measure(measure: str) -> str:
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    return measure


def compile_synsets(synsets: Iterable, *, wordnet: WordNetCorpusReader | None = None,
                    report: list | None = None) -> HypernymDAG:
    """Resolve ``synsets`` (any accepted form) and compile their hypernym closure."""
    from taxosmooth.wordnet.synsets import resolve_synsets

    return compile_dag(resolve_synsets(synsets, wordnet=wordnet, report=report))


def _prepare(synsets, measure, ic, wordnet):
    _check_measure(measure)
    dag = synsets if isinstance(synsets, HypernymDAG) else compile_synsets(synsets, wordnet=wordnet)
    table = None
    if measure in IC_MEASURES:
        from taxosmooth.wordnet.ic import resolve_ic

        first = dag.synsets[dag.inputs[0]]
        table = resolve_ic(ic, wordnet=first._wordnet_corpus_reader)
    return _Pairs(dag), table


def similarity_matrix(
    synsets: Iterable | HypernymDAG,
    measure: str = "wup",
    *,
    ic: str | os.PathLike | Mapping = "intrinsic",
    simulate_root: bool = True,
    wordnet: WordNetCorpusReader | None = None,
) -> np.ndarray:
    """Pairwise WordNet similarities, equal to nltk's on every pair.

    ``S[i, j] = measure(synsets[i], synsets[j])`` (nltk's
    ``Synset.<measure>_similarity``; row synset first, which matters for the
    rare asymmetric ``wup`` pairs). Conventions and formulas: module docstring.

    Parameters
    ----------
    synsets : iterable
        Synset names (``"horse.n.01"``), ImageNet ids (``"n02374451"``),
        ``(pos, offset)`` pairs, nltk ``Synset`` objects or plain lemmas
        (first noun sense); see :func:`taxosmooth.wordnet.resolve_synsets`.
        Duplicates are refused. Or the result of :func:`compile_synsets`, to
        compute several measures on one compiled closure.
    measure : {"path", "wup", "lch", "res", "jcn", "lin"}, default "wup"
    ic : "intrinsic", dict, str or path, default "intrinsic"
        Information content for ``res``/``jcn``/``lin``: ``"intrinsic"``
        (Seco et al. 2004, computed from WordNet, offline), a dict in nltk's
        format (``nltk.corpus.wordnet_ic.ic(...)``) or the path of an nltk IC
        file (``ic-brown.dat``). Ignored by the other measures.
    simulate_root : bool, default True
        nltk's flag of the same name (``path``, ``wup``, ``lch``).
    wordnet : WordNetCorpusReader, optional
        The reader that resolves names; by default :func:`load_wordnet`.

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` float64; ``nan`` where nltk returns ``None``.

    Examples
    --------
    >>> S = similarity_matrix(["horse.n.01", "zebra.n.01", "whale.n.02"], "path")
    >>> S.round(3).tolist()
    [[1.0, 0.333, 0.125], [0.333, 1.0, 0.125], [0.125, 0.125, 1.0]]
    """
    pairs, table = _prepare(synsets, measure, ic, wordnet)
    if measure == "path":
        need = _needs_root(pairs.dag)
        dist = _path_lengths(pairs, _pair_root_mask(need, simulate_root))
        with np.errstate(divide="ignore"):
            out = 1.0 / (dist + 1)
        out[np.isinf(dist)] = np.nan
        return out
    if measure == "wup":
        need = _needs_root(pairs.dag)
        return _wup(pairs, _pair_root_mask(need, simulate_root))
    if measure == "lch":
        return _lch(pairs, simulate_root)
    return {"res": _res, "jcn": _jcn, "lin": _lin}[measure](pairs, table)


def distance_matrix(
    synsets: Iterable | HypernymDAG,
    measure: str = "wup",
    *,
    ic: str | os.PathLike | Mapping = "intrinsic",
    simulate_root: bool = True,
    wordnet: WordNetCorpusReader | None = None,
) -> np.ndarray:
    """The distance that goes with each measure (table in the module docstring).

    ``path``: shortest path length in edges; ``wup``: ``1 - wup``; ``lch``:
    ``log(1 + path length)``; ``res`` and ``jcn``: the Jiang-Conrath distance
    ``IC(a) + IC(b) - 2 IC(lcs)``; ``lin``: ``1 - lin``. 0 on the diagonal
    for every measure. Arguments as in :func:`similarity_matrix`; ``nan``
    where nltk has no value.

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` float64.
    """
    pairs, table = _prepare(synsets, measure, ic, wordnet)
    if measure in ("path", "lch"):
        need = _needs_root(pairs.dag)
        if measure == "lch":
            _single_pos(pairs.dag, "lch")
        root = _pair_root_mask(need, simulate_root, either=measure == "path")
        dist = _path_lengths(pairs, root)
        dist[np.isinf(dist)] = np.nan
        out = dist if measure == "path" else np.log1p(dist)
    elif measure == "wup":
        out = 1.0 - _wup(pairs, _pair_root_mask(_needs_root(pairs.dag), simulate_root))
    elif measure == "lin":
        out = 1.0 - _lin(pairs, table)
    else:
        out = _jc_distance(pairs, table, measure)
    np.fill_diagonal(out, 0.0)
    return out
