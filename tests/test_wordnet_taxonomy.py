"""Synset input, WordNet taxonomies (tree policies against ``hypernym_paths()``), the CLI."""

from __future__ import annotations

import random

import numpy as np
import pytest

from taxosmooth import Taxonomy
from taxosmooth.cli import main
from taxosmooth.errors import TaxonomyError, WordNetLookupError
from taxosmooth.wordnet import distance_matrix, resolve_synsets, similarity_matrix, taxonomy_from_wordnet, wnid


# ---------------------------------------------------------------------------- synset input
def test_every_input_form_resolves(wordnet):
    horse = wordnet.synset("horse.n.01")
    report: list = []
    got = resolve_synsets(
        ["horse.n.01", "n02391049", "02062744-n", ("n", 1503061), wordnet.synset("dog.n.01"), "sea lion", " cat "],
        report=report,
    )
    assert [s.name() for s in got] == ["horse.n.01", "zebra.n.01", "whale.n.02", "bird.n.01", "dog.n.01",
                                       "sea_lion.n.01", "cat.n.01"]
    assert wnid(horse) == "n02374451" and resolve_synsets(["n02374451"]) == [horse]
    assert report == ["lemma 'sea lion' -> sea_lion.n.01 (its only noun sense)",
                      f"lemma ' cat ' -> cat.n.01 (first of {len(wordnet.synsets('cat', 'n'))} noun senses)"]


@pytest.mark.parametrize(
    "bad, message",
    [
        ("horse.x.01", r"synsets\[1\] = 'horse.x.01': malformed synset name"),
        ("horse.n.99", r"'horse.n.99': no such WordNet synset"),
        ("n0237445", r"'n0237445': not a synset name"),
        ("n00000012", r"no WordNet synset with part of speech 'n' at offset 00000012"),
        (("q", 100), r"part of speech must be one of"),
        (("n", "abc"), r"the offset must be an integer"),
        ("", r"empty synset"),
        (3.5, r"got float"),
        ("xqzwv", r"not a synset name"),
    ],
)
def test_bad_items_are_named(wordnet, bad, message):
    with pytest.raises(WordNetLookupError, match=message):
        resolve_synsets(["dog.n.01", bad])


@pytest.mark.parametrize(
    "bad, message",
    [
        (("n", 2374451.7), r"the offset must be an integer, got float 2374451\.7"),
        (("n", 2374451.0), r"the offset must be an integer, got float"),
        (("n", True), r"the offset must be an integer, got bool"),
        (("n", "2374451 "), r"the offset must be an integer"),
        (("n", "\u0662374451"), r"the offset must be an integer"),
        (("nn", 2374451), r"part of speech must be one of"),
        ("horse.n.00", r"'horse.n.00': sense numbers start at 01"),
        # an offset too large for the file to seek to is the user's item, not damaged WordNet data
        (("n", 10**30), r"no WordNet synset with part of speech 'n' at offset 1000000000000000000000000000000"),
        (("v", 10**8), r"at offset 100000000 \(offsets have at most 8 digits\)"),
    ],
)
def test_offsets_and_senses_are_taken_as_written(wordnet, bad, message):
    # issue 11 item 8: int(2374451.7) would silently be horse.n.01; nltk reads sense 00 as the last sense
    with pytest.raises(WordNetLookupError, match=message):
        resolve_synsets(["dog.n.01", bad])
    horse = wordnet.synset("horse.n.01")
    assert resolve_synsets([("n", 2374451), ("n", "02374451"), ("n", np.int64(2374451))][:1]) == [horse]
    assert resolve_synsets([("n", np.int64(2374451))]) == [horse]


def test_duplicates_and_empty_lists_are_refused(wordnet):
    with pytest.raises(WordNetLookupError, match=r"dog.n.01 is given twice \(synsets\[0\] and synsets\[2\]: 'dog' and 'n02084071'\)"):
        resolve_synsets(["dog", "cat.n.01", "n02084071"])
    with pytest.raises(WordNetLookupError, match="empty"):
        resolve_synsets([])
    with pytest.raises(WordNetLookupError, match="single one"):
        resolve_synsets("dog.n.01")


# ---------------------------------------------------------------------------- tree policies
def _step_key(child, parent):
    # the documented parent order: hypernyms() before instance_hypernyms(), each by name
    return (0 if parent in child.hypernyms() else 1, parent.name())


def _expected_path(synset, policy):
    """From Synset.hypernym_paths(): the path (class first) each policy documents."""
    paths = [list(reversed(p)) for p in synset.hypernym_paths()]
    if policy == "longest":
        paths = [p for p in paths if len(p) == max(map(len, paths))]
    elif policy == "shortest":
        paths = [p for p in paths if len(p) == min(map(len, paths))]
    return min(paths, key=lambda p: [_step_key(c, q) for c, q in zip(p, p[1:])])


@pytest.fixture(scope="module")
def multi_path_nouns(wordnet):
    """Noun synsets with several hypernym paths, none above another, drawn with a fixed seed."""
    with wordnet.abspath("data.noun").open() as fh:
        offsets = [int(line[:8]) for line in fh.read().decode("utf-8").splitlines() if line and not line.startswith(" ")]
    rng = random.Random(5)
    chosen, above = [], set()
    for o in rng.sample(offsets, 3000):
        s = wordnet.synset_from_pos_and_offset("n", o)
        paths = s.hypernym_paths()
        ancestors = {h for p in paths for h in p[:-1]}
        if len(paths) > 1 and s not in above and not ancestors & set(chosen):
            chosen.append(s)
            above |= ancestors
        if len(chosen) == 60:
            break
    return chosen


@pytest.mark.parametrize("policy", ["longest", "shortest", "first"])
def test_each_policy_keeps_the_documented_hypernym_path(multi_path_nouns, policy):
    tax = taxonomy_from_wordnet(multi_path_nouns, multiple_parents=policy)
    assert tax.classes == tuple(s.name() for s in multi_path_nouns)
    differs = 0
    for s in multi_path_nouns:
        expected = [x.name() for x in _expected_path(s, policy)]
        assert [s.name(), *tax.ancestors(s.name())] == expected, s.name()
        differs += expected != [x.name() for x in _expected_path(s, "first")]
    if policy != "first":
        assert differs  # the sample distinguishes the policies
    assert any(line.startswith("multiple parents:") for line in tax.report)


def test_longest_policy_puts_each_class_at_its_max_depth(multi_path_nouns):
    tax = taxonomy_from_wordnet(multi_path_nouns)  # default: longest
    assert [tax.depth(s.name()) for s in multi_path_nouns] == [s.max_depth() for s in multi_path_nouns]
    tax = taxonomy_from_wordnet(multi_path_nouns, multiple_parents="shortest")
    assert [tax.depth(s.name()) for s in multi_path_nouns] == [s.min_depth() for s in multi_path_nouns]


def test_error_policy_names_a_synset_with_several_hypernyms(wordnet):
    with pytest.raises(TaxonomyError, match="person.n.01"):
        taxonomy_from_wordnet(["person.n.01", "dog.n.01"], multiple_parents="error")


def test_report_lists_every_choice(wordnet):
    tax = taxonomy_from_wordnet(["horse", "zebra.n.01", "person.n.01"])
    report = "\n".join(tax.report)
    assert "WordNet data:" in report
    assert "lemma 'horse' -> horse.n.01" in report
    assert "'person.n.01' keeps parent 'organism.n.01' (longest path" in report
    assert "dropped 'causal_agent.n.01'" in report


def test_class_above_another_class_is_refused(wordnet):
    with pytest.raises(TaxonomyError, match="class 'dog.n.01' is a hypernym of class 'puppy.n.01'"):
        taxonomy_from_wordnet(["dog.n.01", "puppy.n.01"])


def test_verbs_are_joined_under_a_virtual_root(wordnet):
    tax = taxonomy_from_wordnet(["run.v.01", "think.v.03", "walk.v.01"])
    assert tax.root == "<root>" and tax.has_virtual_root
    assert any("virtual root" in line for line in tax.report)
    assert tax.ancestors("walk.v.01")[-2:] == ("travel.v.01", "<root>")


def test_contraction_and_wnid_names(wordnet):
    names = ["horse.n.01", "zebra.n.01", "whale.n.02"]
    full = taxonomy_from_wordnet(names)
    short = taxonomy_from_wordnet(names, contract_unary=True, node_names="wnid")
    assert short.classes == tuple(wnid(wordnet.synset(n)) for n in names)
    assert short.num_nodes < full.num_nodes
    # contraction keeps the branching nodes: horse and zebra meet at equine, then placental mammals
    assert short.ancestors("n02374451")[0] == wnid(wordnet.synset("equine.n.01"))
    assert all(len(short.children(v)) != 1 for v in short.nodes if not short.is_leaf(v))


def test_taxonomy_knows_no_wordnet():
    # adapters stand above the core: a Taxonomy is built by taxonomy_from_wordnet, not by a classmethod
    assert not hasattr(Taxonomy, "from_wordnet")


# ---------------------------------------------------------------------------- CLI
def test_cli_matrix_and_tree_round_trip(wordnet, tmp_path, capsys):
    listing = tmp_path / "synsets.txt"
    listing.write_text("# classes\nn01440764 tench, Tinca tinca\nhorse\n\nzebra.n.01\nsea lion\nrun.v.01\n")
    names = ["tench.n.01", "horse.n.01", "zebra.n.01", "sea_lion.n.01", "run.v.01"]
    out, tree = tmp_path / "wup.npy", tmp_path / "tree.csv"
    assert main(["wordnet", str(listing), "--measure", "wup", "-o", str(out), "--tree", str(tree)]) == 0
    assert np.array_equal(np.load(out), similarity_matrix(names, "wup"))
    assert (tmp_path / "wup.npy.classes.txt").read_text().split("\n")[1:-1] == names
    tax = Taxonomy.load(tree, classes=names)
    ref = taxonomy_from_wordnet(names)
    assert {v: tax.parent(v) for v in tax.nodes} == {v: ref.parent(v) for v in ref.nodes}
    err = capsys.readouterr().err
    assert "wrote" in err and "WordNet data:" in err

    csv_out = tmp_path / "d.csv"
    assert main(["wordnet", str(listing), "--measure", "path", "--distance", "-o", str(csv_out), "--dtype", "float32"]) == 0
    rows = csv_out.read_text().splitlines()
    assert rows[0] == "class," + ",".join(names)
    values = np.array([[float(x) for x in row.split(",")[1:]] for row in rows[1:]])
    assert np.array_equal(values, distance_matrix(names, "path").astype(np.float32))


def test_cli_errors_are_one_line(wordnet, tmp_path, capsys):
    listing = tmp_path / "synsets.txt"
    listing.write_text("horse\nhorse.n.01\n")
    assert main(["wordnet", str(listing), "-o", str(tmp_path / "m.npy")]) == 2
    assert "given twice" in capsys.readouterr().err
    listing.write_text("dog.n.01\nrun.v.01\n")
    assert main(["wordnet", str(listing), "--measure", "lch", "-o", str(tmp_path / "m.npy")]) == 2
    assert "one part of speech" in capsys.readouterr().err
    assert main(["wordnet", str(listing), "-o", str(tmp_path / "m.txt")]) == 2
    assert main(["wordnet", str(listing)]) == 2
    assert "nothing to write" in capsys.readouterr().err
