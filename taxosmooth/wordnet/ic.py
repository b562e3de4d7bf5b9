"""Information-content (IC) tables for ``res``, ``jcn`` and ``lin``.

A table has nltk's format (what ``nltk.corpus.wordnet_ic.ic("ic-brown.dat")``
returns): ``{pos: {offset: count}}`` for ``pos`` in ``"n"``, ``"v"``, where
``table[pos][0]`` is the count of the (virtual) root, and nltk's
``information_content`` is ``IC(s) = -log(count(s) / table[pos][0])``
(``1e300`` for a count of 0; adjective satellites use ``"a"``).

Two sources, both offline:

* :func:`load_ic` reads a file in nltk's IC format (``ic-brown.dat``,
  ``ic-semcor.dat``, ... from nltk's ``wordnet_ic`` data, or one made by
  WordNet::Similarity): a header line, then ``<offset><pos> <count> [ROOT]``.
* :func:`intrinsic_ic` computes the *intrinsic* IC of Seco, Veale & Hayes
  (2004), "An intrinsic information content metric for semantic similarity in
  WordNet" (ECAI): ``IC(s) = 1 - log(hypo(s) + 1) / log(N)``, ``hypo(s)`` the
  number of distinct hyponyms of ``s`` (transitively, along hyponym and
  instance-hyponym edges) and ``N`` the number of synsets of that part of
  speech. Leaves get 1, ``entity.n.01`` gets 0. It is stored in nltk's format
  as ``count(s) = exp(-IC(s))`` with a root count of 1, so nltk's own
  functions accept it and give the same numbers as ours.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

_intrinsic_cache: dict = {}


def load_ic(path: str | os.PathLike) -> dict:
    """Read an IC file in nltk's format; same result as nltk's ``WordNetICCorpusReader.ic``.

    Raises
    ------
    FileNotFoundError, ValueError
        A missing file; a malformed line (the message gives file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such information-content file")
    ic: dict = {"n": defaultdict(float), "v": defaultdict(float)}
    with path.open(encoding="utf-8") as fh:
        for num, line in enumerate(fh):
            if num == 0:  # the header
                continue
            fields = line.split()
            if not fields:
                continue
            try:
                offset = int(fields[0][:-1])
                value = float(fields[1])
            except (ValueError, IndexError):
                raise ValueError(f"{path}, line {num + 1}: expected '<offset><pos> <count> [ROOT]', got {line.strip()!r}") from None
            pos = fields[0][-1]
            if pos not in ("n", "v"):
                raise ValueError(f"{path}, line {num + 1}: unknown part of speech {pos!r} in {fields[0]!r}")
            if len(fields) == 3 and fields[2] == "ROOT":
                ic[pos][0] += value
            if value != 0:
                ic[pos][offset] = value
    return ic


def intrinsic_ic(wordnet: WordNetCorpusReader | None = None, pos: tuple[str, ...] = ("n", "v")) -> dict:
    """Seco et al. (2004) intrinsic IC of every noun and verb synset, in nltk's format.

    ``IC(s) = 1 - log(hypo(s) + 1) / log(N)`` (module docstring); stored as
    ``count = exp(-IC)``, root count 1. Computed from the data files in about
    a second and cached per reader.

    Examples
    --------
    >>> from nltk.corpus.reader.wordnet import information_content
    >>> from taxosmooth.wordnet import load_wordnet
    >>> ic = intrinsic_ic()
    >>> abs(information_content(load_wordnet().synset("entity.n.01"), ic))  # the root: log 1
    0.0
    """
    from taxosmooth.wordnet.dag import pos_graph

    if wordnet is None:
        from taxosmooth.wordnet.data import load_wordnet

        wordnet = load_wordnet()
    out: dict = {}
    for p in pos:
        key = (id(wordnet), p)
        hit = _intrinsic_cache.get(key)
        if hit is None or hit[0] is not wordnet:
            g = pos_graph(wordnet, p)
            hypo = g.hyponym_counts()
            n = len(hypo)
            ic_values = 1.0 - np.log(hypo + 1.0) / math.log(n) if n > 1 else np.zeros(n)
            table = defaultdict(float, zip(g.offsets.tolist(), np.exp(-ic_values).tolist()))
            table[0] = 1.0
            _intrinsic_cache[key] = hit = (wordnet, table)
        out[p] = hit[1].copy()
    return out


def resolve_ic(ic: str | os.PathLike | Mapping, *, wordnet: WordNetCorpusReader | None = None) -> Mapping:
    """``"intrinsic"``, an nltk-format dict, or the path of an IC file -> a table."""
    if isinstance(ic, str) and ic == "intrinsic":
        return intrinsic_ic(wordnet)
    if isinstance(ic, Mapping):
        for p, table in ic.items():
            if not isinstance(table, Mapping):
                raise ValueError(
                    f"ic[{p!r}] must map synset offsets to counts, with the root count at key 0 (nltk's format), "
                    f"got {type(table).__name__}"
                )
        return ic
    if isinstance(ic, (str, os.PathLike)):
        return load_ic(ic)
    if ic is None:
        raise ValueError("res, jcn and lin need an information-content table: ic='intrinsic', a dict or a file")
    raise ValueError(f"ic must be 'intrinsic', an nltk IC dict or a file path, got {type(ic).__name__}")
