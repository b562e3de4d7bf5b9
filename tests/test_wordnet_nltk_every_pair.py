"""Every ordered pair of the 1,000 seeded nouns against nltk's own functions.

The oracle is nltk itself — ``path_similarity``, ``wup_similarity`` and
``lch_similarity`` called on each of the 1,000,000 ordered pairs, diagonal
included — split over two worker processes, each with its own WordNet reader
(a reader's open files must not be shared across a fork). Minutes of nltk
time, so ``slow`` (CI runs it).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os

import numpy as np
import pytest
from test_wordnet_similarity import SEED, TOL, _draw

from taxosmooth.wordnet import similarity_matrix

MEASURES = ("path", "wup", "lch")
_SYNSETS: list = []


def _init(names):
    from taxosmooth.wordnet import load_wordnet

    wn = load_wordnet()
    _SYNSETS[:] = [wn.synset(n) for n in names]


def _rows(bounds):
    lo, hi = bounds
    out = {}
    for m in MEASURES:
        rows = np.empty((hi - lo, len(_SYNSETS)))
        for r, a in enumerate(_SYNSETS[lo:hi]):
            fn = getattr(a, f"{m}_similarity")
            for c, b in enumerate(_SYNSETS):
                try:
                    v = fn(b)
                except ZeroDivisionError:
                    v = None
                rows[r, c] = math.nan if v is None else float(v)
        out[m] = rows
    return lo, out


@pytest.mark.slow
def test_every_pair_of_1000_nouns_equals_nltk(wordnet):
    synsets = _draw(wordnet, "n", 1000, SEED)
    ours = {m: similarity_matrix(synsets, m) for m in MEASURES}
    n = len(synsets)
    chunks = [(i, min(n, i + 50)) for i in range(0, n, 50)]
    ctx = mp.get_context("spawn")
    with ctx.Pool(max(1, min(2, os.cpu_count() or 1)), initializer=_init, initargs=([s.name() for s in synsets],)) as pool:
        parts = dict(pool.map(_rows, chunks))
    for m in MEASURES:
        ref = np.vstack([parts[lo][m] for lo, _ in chunks])
        got = ours[m]
        assert ref.shape == got.shape == (n, n)
        same = (np.isnan(ref) & np.isnan(got)) | (np.abs(ref - got) <= TOL)
        if not same.all():
            i, j = np.argwhere(~same)[0]
            raise AssertionError(
                f"{m}: {(~same).sum()} of {n * n} pairs differ, e.g. {synsets[i].name()} vs "
                f"{synsets[j].name()}: ours {got[i, j]!r}, nltk {ref[i, j]!r}"
            )
