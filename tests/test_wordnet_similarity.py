"""WordNet similarity matrices equal nltk's own functions, pair by pair.

Oracles: nltk's ``path_similarity`` / ``wup_similarity`` / ``lch_similarity`` /
``res_similarity`` / ``jcn_similarity`` / ``lin_similarity`` (every pair where
that is affordable, a fixed sample of pairs otherwise), and, for the full
1000 x 1000 noun square, a plain per-pair loop written here on top of nltk's
per-synset primitives (``_shortest_hypernym_paths``, ``min_depth``,
``max_depth``), itself checked against nltk on the sample.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict

import numpy as np
import pytest
from nltk.corpus.reader import wordnet as W

from taxosmooth.wordnet import compile_synsets, distance_matrix, intrinsic_ic, load_ic, similarity_matrix
from taxosmooth.wordnet.dag import pos_graph

TOL = 1e-12
SEED = 20240101


def _offsets(wordnet, pos):
    # every synset of the data file, in file order (the draw only needs a fixed list)
    with wordnet.abspath(f"data.{ {'n': 'noun', 'v': 'verb'}[pos]}").open() as fh:
        text = fh.read().decode("utf-8")
    return [int(line[:8]) for line in text.splitlines() if line and not line.startswith(" ")]


def _draw(wordnet, pos, k, seed):
    return [wordnet.synset_from_pos_and_offset(pos, o) for o in random.Random(seed).sample(_offsets(wordnet, pos), k)]


@pytest.fixture(scope="module")
def nouns(wordnet):
    return _draw(wordnet, "n", 1000, SEED)


@pytest.fixture(scope="module")
def dogs(wordnet):
    dog = wordnet.synset("dog.n.01")
    return [dog] + sorted(set(dog.closure(lambda s: s.hyponyms() + s.instance_hyponyms())))


@pytest.fixture(scope="module")
def verbs(wordnet):
    named = [wordnet.synset(n) for n in ("change.v.01", "be.v.01", "run.v.01", "travel.v.01", "move.v.02", "walk.v.01", "think.v.03")]
    drawn = [s for s in _draw(wordnet, "v", 160, SEED) if s not in named]
    return named + drawn


def _value(fn, *args):
    try:
        v = fn(*args)
    except ZeroDivisionError:
        return math.nan
    return math.nan if v is None else float(v)


def _assert_equal_to_nltk(matrix, synsets, fn, pairs, *extra):
    ref = np.array([_value(fn, synsets[i], synsets[j], *extra) for i, j in pairs])
    got = matrix[tuple(np.array(pairs).T)]
    same = (np.isnan(ref) & np.isnan(got)) | (np.abs(ref - got) <= TOL)
    if not same.all():
        k = int(np.flatnonzero(~same)[0])
        i, j = pairs[k]
        raise AssertionError(
            f"{(~same).sum()} of {len(pairs)} pairs differ, e.g. {synsets[i].name()} vs {synsets[j].name()}: "
            f"ours {got[k]!r}, nltk {ref[k]!r}"
        )


def _all_pairs(n):
    return [(i, j) for i in range(n) for j in range(n)]


def _upper_pairs(n):
    return [(i, j) for i in range(n) for j in range(i, n)]


def _sample_pairs(n, k, seed=SEED):
    rng = random.Random(seed)
    return [(rng.randrange(n), rng.randrange(n)) for _ in range(k)] + [(i, i) for i in range(n)]


NLTK = {"path": W.path_similarity, "wup": W.wup_similarity, "lch": W.lch_similarity}


# ---------------------------------------------------------------------------- brute-force oracle
class NltkLoop:
    """nltk's shortest_path_distance / wup_similarity as a plain loop over its per-synset tables."""

    def __init__(self):
        self.dist = {}

    def sd(self, s):
        if s not in self.dist:
            self.dist[s] = s._shortest_hypernym_paths(False)
        return self.dist[s]

    def path_length(self, a, b):
        if a == b:
            return 0
        da, db = self.sd(a), self.sd(b)
        common = [da[x] + db[x] for x in da if x in db]
        return min(common) if common else None

    def wup(self, a, b):  # nouns: no simulated root
        common = [x for x in self.sd(a) if x in self.sd(b)]
        top = max(x.min_depth() for x in common)
        subsumers = sorted(x for x in common if x.min_depth() == top)
        lcs = a if a in subsumers else subsumers[0]
        depth = lcs.max_depth() + 1
        return 2.0 * depth / (self.path_length(a, lcs) + depth + self.path_length(b, lcs) + depth)


# ---------------------------------------------------------------------------- nouns
@pytest.mark.slow
@pytest.mark.parametrize("measure", ["path", "wup", "lch"])
def test_1000_nouns_equal_nltk_on_a_sample_of_pairs(nouns, measure):
    S = similarity_matrix(nouns, measure)
    assert S.shape == (1000, 1000) and S.dtype == np.float64
    _assert_equal_to_nltk(S, nouns, NLTK[measure], _sample_pairs(1000, 1000))


@pytest.mark.slow
def test_1000_nouns_full_square_equals_the_nltk_loop(nouns):
    loop = NltkLoop()
    for i, j in _sample_pairs(1000, 200, seed=7)[:400]:  # the loop is nltk, pair for pair
        assert loop.path_length(nouns[i], nouns[j]) == nouns[i].shortest_path_distance(nouns[j])
        assert loop.wup(nouns[i], nouns[j]) == nouns[i].wup_similarity(nouns[j])
    # path: every one of the 1,000,000 pairs
    path = similarity_matrix(nouns, "path")
    ref_path = np.array([[1.0 / (loop.path_length(a, b) + 1) for b in nouns] for a in nouns])
    assert np.abs(path - ref_path).max() <= TOL
    # wup: 100,000 pairs (and the diagonal)
    wup = similarity_matrix(nouns, "wup")
    pairs = _sample_pairs(1000, 100_000, seed=8)
    ref_wup = np.array([loop.wup(nouns[i], nouns[j]) for i, j in pairs])
    assert np.abs(wup[tuple(np.array(pairs).T)] - ref_wup).max() <= TOL


def test_wup_self_similarity_below_one_and_asymmetry_match_nltk(nouns):
    S = similarity_matrix(nouns, "wup")
    below = np.flatnonzero(np.diag(S) < 1)
    i, j = np.nonzero(np.abs(S - S.T) > 0)
    assert len(below) and len(i)  # the sample has both quirks; check them against nltk
    _assert_equal_to_nltk(S, nouns, W.wup_similarity, [(k, k) for k in below])
    _assert_equal_to_nltk(S, nouns, W.wup_similarity, list(zip(i[:40], j[:40])) + list(zip(j[:40], i[:40])))


def test_a_few_noun_pairs_equal_nltk(wordnet):
    synsets = [wordnet.synset(n) for n in ("horse.n.01", "zebra.n.01", "whale.n.02", "chef.n.01", "fireman.n.04",
                                            "entity.n.01", "dog.n.01", "person.n.01", "paris.n.01", "city.n.01")]
    for measure in ("path", "wup"):  # lch: in the slow tests (nltk's noun depth takes seconds)
        _assert_equal_to_nltk(similarity_matrix(synsets, measure), synsets, NLTK[measure], _all_pairs(len(synsets)))


@pytest.mark.slow
def test_dog_hyponym_closure_equals_nltk_on_every_pair(dogs):
    assert len(dogs) > 150
    n = len(dogs)
    _assert_equal_to_nltk(similarity_matrix(dogs, "wup"), dogs, W.wup_similarity, _all_pairs(n))
    # path and lch are symmetric in nltk (one shortest_path_distance): the upper triangle covers every pair
    for measure in ("path", "lch"):
        S = similarity_matrix(dogs, measure)
        assert np.array_equal(S, S.T)
        _assert_equal_to_nltk(S, dogs, NLTK[measure], _upper_pairs(n))


# ---------------------------------------------------------------------------- verbs: many roots
@pytest.mark.parametrize("measure", ["path", "wup", "lch"])
def test_verbs_equal_nltk_on_every_pair(verbs, measure):
    S = similarity_matrix(verbs, measure)
    _assert_equal_to_nltk(S, verbs, NLTK[measure], _all_pairs(len(verbs)))


@pytest.mark.parametrize("measure", ["path", "wup", "lch"])
def test_verbs_without_simulated_root_equal_nltk(verbs, measure):
    S = similarity_matrix(verbs, measure, simulate_root=False)
    assert np.isnan(S).any()  # verbs of different roots have no path: nltk's None
    fn = NLTK[measure]
    _assert_equal_to_nltk(S, verbs, lambda a, b: fn(a, b, simulate_root=False), _all_pairs(len(verbs)))


def test_mixed_parts_of_speech_equal_nltk(wordnet, verbs):
    synsets = _draw(wordnet, "n", 30, 3) + verbs[:30] + [wordnet.synset(n) for n in ("good.a.01", "quickly.r.01", "red.s.01")]
    for measure in ("path", "wup"):
        _assert_equal_to_nltk(similarity_matrix(synsets, measure), synsets, NLTK[measure], _all_pairs(len(synsets)))
    for measure in ("lch", "res"):
        with pytest.raises(ValueError, match="one part of speech"):
            similarity_matrix(synsets, measure)


# ---------------------------------------------------------------------------- information content
def _count_table(wordnet, synsets, seed=1):
    """A corpus-like nltk IC table: random counts propagated to the hypernyms, some synsets unseen (0)."""
    rng = random.Random(seed)
    ic = {"n": defaultdict(float), "v": defaultdict(float)}
    for s in synsets:
        if rng.random() < 0.2:
            continue
        weight = rng.choice([1.0, 2.5, 7.0])
        for level in s._iter_hypernym_lists():
            for h in level:
                ic[s.pos()][h.offset()] += weight
        ic[s.pos()][0] += weight
    return ic


@pytest.mark.parametrize("table", ["intrinsic", "counts"])
@pytest.mark.parametrize("measure", ["res", "jcn", "lin"])
def test_ic_measures_equal_nltk(wordnet, nouns, verbs, measure, table):
    fn = {"res": W.res_similarity, "jcn": W.jcn_similarity, "lin": W.lin_similarity}[measure]
    for synsets, pairs in ((nouns[:400], _sample_pairs(400, 20000)), (verbs, _all_pairs(len(verbs)))):
        ic = intrinsic_ic(wordnet) if table == "intrinsic" else _count_table(wordnet, synsets)
        S = similarity_matrix(synsets, measure, ic=ic)
        _assert_equal_to_nltk(S, synsets, fn, pairs, ic)


def test_lin_of_the_root_with_itself_is_nan_where_nltk_divides_by_zero(wordnet):
    synsets = [wordnet.synset("entity.n.01"), wordnet.synset("dog.n.01")]
    ic = intrinsic_ic(wordnet)
    with pytest.raises(ZeroDivisionError):
        W.lin_similarity(synsets[0], synsets[0], ic)
    S = similarity_matrix(synsets, "lin", ic=ic)
    assert np.isnan(S[0, 0]) and S[1, 1] == 1.0
    assert similarity_matrix(synsets, "jcn", ic=ic)[0, 1] == 0  # nltk: IC(entity) = 0 gives 0


def test_intrinsic_ic_is_seco_formula(wordnet):
    ic = intrinsic_ic(wordnet)
    n_nouns = len(_offsets(wordnet, "n"))
    n_verbs = len(_offsets(wordnet, "v"))
    for name, n in (("dog.n.01", n_nouns), ("horse.n.01", n_nouns), ("poodle.n.01", n_nouns),
                    ("paris.n.01", n_nouns), ("move.v.02", n_verbs), ("run.v.01", n_verbs)):
        s = wordnet.synset(name)
        hypo = len(set(s.closure(lambda x: x.hyponyms() + x.instance_hyponyms())))
        expected = 1.0 - math.log(hypo + 1) / math.log(n)
        assert abs(W.information_content(s, ic) - expected) <= TOL, name
    assert W.information_content(wordnet.synset("entity.n.01"), ic) == 0.0  # every other noun is below it


def test_ic_file_reads_like_nltks_reader(wordnet, tmp_path, monkeypatch):
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetICCorpusReader

    monkeypatch.setattr(nltk.data, "path", [*nltk.data.path, str(tmp_path)])  # recent nltk reads only from there

    lines = ["wnver::eOS9lXC6GvMWznF1wkZofDdtbBU", "1740n 1915712 ROOT", "1930n 787360", "2137n 0",
             "2684n 510289", "2452v 44.5 ROOT", "2604v 0.5"]
    path = tmp_path / "ic-test.dat"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o644)
    ours = load_ic(path)
    theirs = WordNetICCorpusReader(str(tmp_path), ["ic-test.dat"]).ic("ic-test.dat")
    assert {p: dict(t) for p, t in ours.items()} == {p: dict(t) for p, t in theirs.items()}
    S = similarity_matrix(["entity.n.01", "physical_entity.n.01", "abstraction.n.06"], "res", ic=str(path))
    assert S[0, 1] == W.res_similarity(wordnet.synset("entity.n.01"), wordnet.synset("physical_entity.n.01"), theirs)


# ---------------------------------------------------------------------------- distances
def test_distances_follow_the_documented_formulas(wordnet, nouns):
    synsets = nouns[:200]
    path = similarity_matrix(synsets, "path")
    assert np.array_equal(distance_matrix(synsets, "path"), np.rint(1 / path - 1))
    wup = similarity_matrix(synsets, "wup")
    d_wup = distance_matrix(synsets, "wup")
    assert (np.diag(wup) < 1).any() and np.all(np.diag(d_wup) == 0)  # a distance is 0 from a synset to itself
    off = ~np.eye(len(synsets), dtype=bool)
    assert np.array_equal(d_wup[off], 1 - wup[off])
    lch = similarity_matrix(synsets, "lch")
    d_lch = distance_matrix(synsets, "lch")
    assert np.abs(d_lch - (np.diag(lch)[:, None] - lch)).max() <= TOL
    assert np.all(np.diag(d_lch) == 0)
    ic = intrinsic_ic(wordnet)
    own = np.array([W.information_content(s, ic) for s in synsets])
    jc = own[:, None] + own[None, :] - 2 * similarity_matrix(synsets, "res", ic=ic)
    np.fill_diagonal(jc, 0)
    for measure in ("res", "jcn"):
        assert np.abs(distance_matrix(synsets, measure, ic=ic) - jc).max() <= TOL
    assert np.array_equal(distance_matrix(synsets, "lin", ic=ic)[off], 1 - similarity_matrix(synsets, "lin", ic=ic)[off])


def test_one_compiled_closure_serves_every_measure(wordnet, verbs):
    dag = compile_synsets(verbs)
    for measure in ("path", "wup", "lch"):
        assert np.array_equal(similarity_matrix(dag, measure), similarity_matrix(verbs, measure), equal_nan=True)


def test_bad_measure_and_ic_are_refused(wordnet):
    with pytest.raises(ValueError, match="measure must be one of"):
        similarity_matrix(["dog.n.01"], "cosine")
    with pytest.raises(ValueError, match="information-content table"):
        similarity_matrix(["dog.n.01", "cat.n.01"], "res", ic=None)
    with pytest.raises(ValueError, match="no entries for part of speech 'v'"):
        similarity_matrix(["run.v.01", "walk.v.01"], "res", ic={"n": {0: 1.0}})


def test_taxonomy_depth_of_lch_matches_nltk(wordnet):
    from taxosmooth.wordnet.dag import taxonomy_depth

    # nltk's _compute_max_depth walks every synset: verbs take a second or two (nouns: via the lch tests)
    assert taxonomy_depth(wordnet, "v") == wordnet._compute_max_depth("v", False)
    g = pos_graph(wordnet, "n")
    for o in g.offsets[g.max_depth == g.max_depth.max()][:3]:
        assert wordnet.synset_from_pos_and_offset("n", int(o)).max_depth() == taxonomy_depth(wordnet, "n")


@pytest.mark.parametrize("measure", ["path", "wup", "lch", "jcn", "lin"])
def test_distance_matrices_feed_soft_targets(wordnet, nouns, measure):
    from taxosmooth import soft_targets

    d = distance_matrix(nouns[:100], measure)
    q = soft_targets(d, beta=5.0)
    assert q.shape == (100, 100)
    assert np.allclose(q.sum(dim=1).numpy(), 1.0, atol=1e-5)
    assert bool((q.argmax(dim=1) == np.arange(100)).all())  # each synset is closest to itself
