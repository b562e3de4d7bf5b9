"""WordNet similarity matrices: taxosmooth vs nltk's per-pair loop, measured in one run.

1,000 noun synsets drawn with a fixed seed. Reported:

* the one-time cost of opening WordNet (nltk's reader, first use);
* for each measure, the full ``(1000, 1000)`` matrix with
  :func:`taxosmooth.wordnet.similarity_matrix` (closure compiled from the
  synsets each time; best of 3), and nltk's own ``<measure>_similarity``
  called pair by pair on a fixed sample of pairs, extrapolated to the full
  square; the ratio is nltk's extrapolated time / ours. The sampled values are
  compared too (``max abs diff``).

nltk's ``lch`` computes the taxonomy depth of all nouns on first use (seconds);
that one-time cost is excluded from its per-pair time by a warm-up call.

    python benchmarks/wordnet.py                 # text table
    python benchmarks/wordnet.py --markdown      # a table for the docs
    python benchmarks/wordnet.py --pairs 500 --measures wup path
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time

import numpy as np
from _util import best_of, fmt_seconds, table

from taxosmooth.wordnet import intrinsic_ic, load_wordnet, similarity_matrix, wordnet_source


def noun_sample(reader, k: int, seed: int) -> list:
    with reader.abspath("data.noun").open() as fh:
        offsets = [int(line[:8]) for line in fh.read().decode("utf-8").splitlines() if line and not line.startswith(" ")]
    return [reader.synset_from_pos_and_offset("n", o) for o in random.Random(seed).sample(offsets, k)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="number of noun synsets")
    ap.add_argument("--pairs", type=int, default=2000, help="pairs timed with nltk, per measure")
    ap.add_argument("--measures", nargs="+", default=["wup", "path", "lch", "res"])
    ap.add_argument("--seed", type=int, default=20240101)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    reader = load_wordnet()
    load_s = time.perf_counter() - t0
    synsets = noun_sample(reader, args.n, args.seed)
    ic = intrinsic_ic(reader)  # one-time too (parses the noun file)
    ic_s = time.perf_counter() - t0 - load_s

    from nltk.corpus.reader import wordnet as W

    rng = random.Random(args.seed + 1)
    pairs = [(rng.randrange(args.n), rng.randrange(args.n)) for _ in range(args.pairs)]
    rows = []
    for measure in args.measures:
        extra = (ic,) if measure in ("res", "jcn", "lin") else ()
        kwargs = {"ic": ic} if extra else {}
        matrix = similarity_matrix(synsets, measure, **kwargs)  # warm-up (lch: taxonomy depth)
        ours = best_of(lambda: similarity_matrix(synsets, measure, **kwargs), repeat=3)
        fn = getattr(W, f"{measure}_similarity")
        fn(synsets[0], synsets[1], *extra)  # warm-up (nltk's lch: taxonomy depth)
        t = time.perf_counter()
        ref = [fn(synsets[i], synsets[j], *extra) for i, j in pairs]
        per_pair = (time.perf_counter() - t) / len(pairs)
        ref = np.array([math.nan if v is None else v for v in ref])
        got = matrix[tuple(np.array(pairs).T)]
        diff = float(np.nanmax(np.abs(got - ref))) if np.isfinite(ref).any() else 0.0
        full = per_pair * args.n * args.n
        rows.append({
            "measure": measure,
            f"taxosmooth {args.n}x{args.n}": fmt_seconds(ours),
            "nltk per pair": fmt_seconds(per_pair),
            f"nltk {args.n}x{args.n} (extrapolated)": fmt_seconds(full),
            "ratio": f"{full / ours:,.0f}x",
            "max abs diff": f"{diff:.1e}",
        })
    print(wordnet_source().describe(), file=sys.stderr)
    print(f"one-time: opening WordNet {fmt_seconds(load_s)}, intrinsic IC table {fmt_seconds(ic_s)}\n")
    print(table(rows, args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
