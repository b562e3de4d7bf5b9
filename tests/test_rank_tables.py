"""Rank tables (issue 10, "labels at any node"): truncated rows, shared names, gaps, encode/decode, files, the CLI.

The oracle is a plain loop over the rows written here: every distinct row prefix is a node, a prefix
that no other prefix extends is a class (in order of first appearance), and shared names follow the
documented rule (cells without parentheses, so that a qualified name never equals a cell).
"""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth.cli import main
from taxosmooth.errors import TaxonomyError, TaxonomyFileError, UnknownClassError

T = ts.Taxonomy
RANKS = ["kingdom", "family", "genus", "species"]
ROWS = [
    ["Plantae", "Moraceae", "Morus", "Morus alba"],
    ["Plantae", "Moraceae", "Morus", "Morus nigra"],
    ["Animalia", "Sulidae", "Morus", "Morus bassanus"],
    ["Animalia", "Sulidae", "Sula", ""],  # a genus without species: a class at genus depth
    ["Animalia", "Sulidae", "Morus"],  # a specimen identified to the genus: a coarse label
    ["Animalia", "Sulidae"],
    ["Plantae", "Moraceae", "Morus", "Morus alba"],  # the same species again (another specimen)
]


def oracle(rows, ranks):
    """Nodes (paths), parents, classes and names by a plain loop, as documented."""
    rows = [tuple(c.strip() for c in r if c is not None and c.strip()) for r in rows]
    order = []
    for r in rows:
        for k in range(1, len(r) + 1):
            if r[:k] not in order:
                order.append(r[:k])
    classes = [p for p in order if not any(q[: len(p)] == p and len(q) > len(p) for q in order)]
    by_value: dict = {}
    for p in order:
        by_value.setdefault(p[-1], []).append(p)
    names = {}
    for value, group in by_value.items():
        if len(group) == 1:
            names[group[0]] = value
            continue
        parent = [p[-2] if len(p) > 1 else ranks[0] for p in group]
        rank = [ranks[len(p) - 1] for p in group]
        for p, a, b in zip(group, parent, rank):
            if len(set(parent)) == len(group):
                names[p] = f"{value} ({a})"
            elif len(set(rank)) == len(group):
                names[p] = f"{value} ({b})"
            else:
                names[p] = f"{value} ({b}: {'/'.join(p[:-1])})" if len(p) > 1 else f"{value} ({b})"
    parents = {names[p]: (names[p[:-1]] if len(p) > 1 else None) for p in order}
    return rows, order, [names[c] for c in classes], names, parents


def check_against_oracle(tax, rows, ranks):
    rows, order, classes, names, parents = oracle(rows, ranks)
    assert tax.classes == tuple(classes)
    assert tax.ranks == tuple(ranks)
    tops = {p[0] for p in order}
    for name, parent in parents.items():
        want = parent if parent is not None else (tax.root if len(tops) > 1 else None)
        assert tax.parent(name) == want, name
    assert set(tax.nodes) == set(parents) | ({tax.root} if len(tops) > 1 else set())
    ids = tax.encode(rows)
    assert ids.dtype == np.int64
    assert tax.decode(ids) == [names[r] for r in rows]
    assert ids.tolist() == [tax.encode([names[r]])[0] for r in rows]
    # a class keeps its column, an internal node an id >= C
    assert all((i < tax.num_classes) == (names[r] in classes) for i, r in zip(ids, rows))


def test_truncated_rows_and_a_genus_in_two_families():
    tax = T.from_rank_table(ROWS, ranks=RANKS)
    check_against_oracle(tax, ROWS, RANKS)
    assert tax.classes == ("Morus alba", "Morus nigra", "Morus bassanus", "Sula")
    assert tax.depth("Sula") == 3 and tax.parent("Morus bassanus") == "Morus (Sulidae)"
    assert tax.has_virtual_root and tax.root == "<root>"
    report = "\n".join(tax.report)
    assert "7 rows over 4 ranks" in report and "rows by last rank: family: 1, genus: 2, species: 4" in report
    assert "'Morus' names 2 different nodes, qualified as 'Morus (Moraceae)' (genus), 'Morus (Sulidae)' (genus)" in report
    # the bare name is no node: the error suggests the qualified ones
    with pytest.raises(UnknownClassError, match=r"'Morus'.*did you mean .*'Morus \(Moraceae\)'"):
        tax.encode(["Morus"])


def test_one_name_at_two_ranks_and_in_the_same_parent_name():
    rows = [["Aus", "Aus", "Aus x"], ["Aus", "Bus", "Bus y"], ["Cus", "Bus", "Bus z"]]
    tax = T.from_rank_table(rows, ranks=["genus", "subgenus", "species"])
    check_against_oracle(tax, rows, ["genus", "subgenus", "species"])
    # 'Aus' (genus, top rank) and 'Aus' (subgenus under Aus): parents differ -> rule 1
    assert tax.parent("Aus x") == "Aus (Aus)" and tax.parent("Aus (Aus)") == "Aus (genus)"
    # 'Bus' under 'Aus (genus)' and under 'Cus': parent cells 'Aus' and 'Cus' differ
    assert tax.parent("Bus y") == "Bus (Aus)" and tax.parent("Bus z") == "Bus (Cus)"


def test_same_parent_name_same_rank_falls_back_to_the_path():
    rows = [["A", "F", "G", "s1"], ["B", "F", "G", "s2"]]  # family F in two kingdoms, each with a genus G
    tax = T.from_rank_table(rows, ranks=RANKS)
    check_against_oracle(tax, rows, RANKS)
    assert tax.parent("s1") == "G (genus: A/F)" and tax.parent("s2") == "G (genus: B/F)"
    assert tax.parent("G (genus: A/F)") == "F (A)"


def test_a_qualified_name_that_equals_a_cell_moves_on():
    rows = [["Y", "X"], ["Z", "X"], ["X (Y)"]]
    tax = T.from_rank_table(rows, ranks=["r0", "r1"])
    # rule 0 would give 'X (Y)', already a node: the group moves to the rank rule
    assert set(tax.nodes) >= {"X (Y)", "X (r1: Y)", "X (r1: Z)"}
    assert tax.encode([["Y", "X"], ["X (Y)"]]).tolist() == [tax.class_index("X (r1: Y)"), tax.class_index("X (Y)")]


@pytest.mark.parametrize(
    "rows, match",
    [
        ([["A", "", "G"]], r"rows\[0\]: the family cell is empty but the genus cell \('G'\) is not"),
        ([["A", "F"], ["A", None, "G", "s"]], r"rows\[1\]: the family cell is empty"),
        ([["A", "F", "G", "s", "extra"]], r"rows\[0\]: 5 cells, but there are 4 ranks"),
        ([["A", "F"], []], r"rows\[1\]: the row is empty"),
        ([["A", 3]], r"rows\[0\]: the family cell is int 3; cells must be strings"),
        (["A/F/G"], r"rows\[0\]: a row must be a list or tuple of cells"),
        ([], "no rows"),
    ],
)
def test_bad_rows_are_named(rows, match):
    with pytest.raises(TaxonomyError, match=match):
        T.from_rank_table(rows, ranks=RANKS)


def test_default_rank_names_and_missing_cells_from_pandas():
    tax = T.from_rank_table([("A", "B"), np.array(["A", "C"]), ["A", float("nan")]])
    assert tax.ranks == ("rank0", "rank1") and tax.classes == ("B", "C")
    assert tax.decode(tax.encode([("A", None), ("A", "C")])) == ["A", "C"]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_rank_table_files(tmp_path):
    text = "kingdom,family,genus,species\n# a comment\n" + "".join(",".join(r) + "\n" for r in ROWS) + ",,,\n"
    csv = write(tmp_path, "inat.csv", text)
    tsv = write(tmp_path, "gbif.tsv", text.replace(",", "\t"))
    want = T.from_rank_table(ROWS, ranks=RANKS)
    for path in (csv, tsv):
        for tax in (T.from_rank_table(path), T.load(path, format="ranks")):
            assert tax == want and tax.ranks == tuple(RANKS) and tax.report[0] == want.report[0]
    quoted = write(tmp_path, "q.csv", 'kingdom,"genus, sensu lato"\nA,"Morus, s.l."\n')
    assert T.load(quoted, format="ranks").classes == ("Morus, s.l.",)


@pytest.mark.parametrize(
    "text, match",
    [
        ("kingdom,family,genus\nA,,G\n", r"t\.csv:2: the family cell is empty but the genus cell \('G'\) is not"),
        ("kingdom,family\n\nA,F\n# x\nA,F,G\n", r"t\.csv:5: 3 cells, but there are 2 ranks"),
        ("kingdom,,genus\nA,F,G\n", r"t\.csv:1: rank name 2 is ''.*names the ranks"),
        ("kingdom,genus,genus\nA,F,G\n", r"t\.csv:1: rank 'genus' is named twice \(columns 2 and 3\)"),
        ("kingdom,genus\n", r"t\.csv: no rows below the header row"),
        ('kingdom,genus\nA,"G\n', r"t\.csv:2: the quoted field"),
    ],
)
def test_bad_rank_table_files_name_file_and_line(tmp_path, text, match):
    with pytest.raises(TaxonomyFileError, match=match):
        T.load(write(tmp_path, "t.csv", text), format="ranks")


def test_a_cell_named_like_the_virtual_root_names_its_line(tmp_path):
    with pytest.raises(TaxonomyError, match=r"t\.csv:3: root_name '<root>' is already a node"):
        T.load(write(tmp_path, "t.csv", "kingdom,genus\nA,G\n<root>,H\n"), format="ranks")


def test_options_and_classes():
    tax = T.from_rank_table(ROWS, ranks=RANKS, classes=["Sula", "Morus alba"], root_name="life")
    assert tax.classes == ("Sula", "Morus alba") and tax.root == "life"
    assert tax.decode(tax.encode([["Animalia", "Sulidae"]])) == ["Sulidae"]
    with pytest.raises(UnknownClassError, match=r"Morus bassanus"):
        tax.encode([["Animalia", "Sulidae", "Morus", "Morus bassanus"]])  # pruned by classes=
    with pytest.raises(ValueError, match="contract_unary=True cannot be used with a rank table"):
        T.from_rank_table(ROWS, ranks=RANKS, contract_unary=True)
    with pytest.raises(TypeError, match="ranks= goes with a list of rows"):
        T.from_rank_table("t.csv", ranks=RANKS)
    with pytest.raises(TaxonomyError, match="class 'Morus \\(Sulidae\\)' is an internal node"):
        T.from_rank_table(ROWS, ranks=RANKS, classes=["Morus (Sulidae)"])


def test_encode_rows_errors():
    tax = T.from_rank_table(ROWS, ranks=RANKS)
    with pytest.raises(UnknownClassError, match=r"\('Plantae', 'Sulidae'\) \(position 1\)"):
        tax.encode([["Plantae"], ("Plantae", "Sulidae")])
    with pytest.raises(TaxonomyError, match=r"labels\[0\]: the family cell is empty but the genus cell"):
        tax.encode([["Plantae", "", "Morus"]])
    # a plain taxonomy treats a tuple as a node name, as before
    plain = T.from_edges([("r", ("a", 1)), ("r", "b")])
    assert plain.encode([("a", 1)]).tolist() == [0]


def test_equality_pickling_and_saving():
    tax = T.from_rank_table(ROWS, ranks=RANKS)
    back = pickle.loads(pickle.dumps(tax))
    assert back == tax and back.ranks == tax.ranks and back.report == tax.report
    assert back.encode(ROWS).tolist() == tax.encode(ROWS).tolist()
    with tempfile.TemporaryDirectory() as d:
        ranks = Path(d) / "t.csv"
        tax.save(ranks, format="ranks")
        again = T.load(ranks, format="ranks")
        assert again == tax and again.ranks == tax.ranks
        assert again.encode(ROWS).tolist() == tax.encode(ROWS).tolist()
        # the other formats keep the tree (and the qualified names), not the ranks
        for ext in ("csv", "json", "txt"):
            path = Path(d) / f"tree.{ext}"
            tax.save(path)
            plain = T.load(path)
            assert plain == tax and plain.ranks is None
        with pytest.raises(TaxonomyError, match="not built from a rank table"):
            plain.save(Path(d) / "x.csv", format="ranks")
        # a subset that lost a homonym would read back under another name: refused, not renamed
        sub = T.from_rank_table(ROWS, ranks=RANKS, classes=["Morus alba", "Sula"])
        with pytest.raises(TaxonomyError, match=r"'Morus \(Moraceae\)' would be read back as 'Morus'"):
            sub.save(Path(d) / "sub.csv", format="ranks")


# hypothesis: random rank tables with many shared names
CELL = st.sampled_from(["a", "b", "c", "ab", " a ", "b "])


@st.composite
def rank_tables(draw):
    n_ranks = draw(st.integers(1, 4))
    rows = draw(st.lists(st.lists(CELL, min_size=1, max_size=n_ranks), min_size=1, max_size=12))
    padded = [r + [draw(st.sampled_from(["", " ", None]))] * draw(st.integers(0, n_ranks - len(r))) for r in rows]
    return padded, [f"r{k}" for k in range(n_ranks)]


@given(rank_tables())
def test_random_rank_tables_against_the_loop_oracle(table):
    rows, ranks = table
    tax = T.from_rank_table(rows, ranks=ranks)
    check_against_oracle(tax, rows, ranks)
    assert pickle.loads(pickle.dumps(tax)).encode(rows).tolist() == tax.encode(rows).tolist()
    with tempfile.TemporaryDirectory() as d:
        for ext in ("csv", "tsv"):
            path = Path(d) / f"t.{ext}"
            tax.save(path, format="ranks")
            back = T.load(path, format="ranks")
            assert back == tax and back.ranks == tax.ranks and back.encode(rows).tolist() == tax.encode(rows).tolist()


def test_cli_info_on_a_rank_table(tmp_path, capsys):
    path = write(tmp_path, "taxa.csv", ",".join(RANKS) + "\n" + "".join(",".join(r) + "\n" for r in ROWS))
    assert main(["info", "--format", "ranks", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ranks (4): kingdom, family, genus, species" in out
    assert "rows by last rank: family: 1, genus: 2, species: 4" in out
    assert "'Morus' names 2 different nodes" in out
    assert "classes by rank: genus: 1, species: 3" in out
    assert main(["targets", "--format", "ranks", str(path), "--beta", "1", "-o", str(tmp_path / "q.npy")]) == 0
    assert np.load(tmp_path / "q.npy").shape == (4, 4)


# ---------------------------------------------------------------------------- issue 19, item 3: a rank table in a .csv
CIFAR = "superclass,class\naquatic_mammals,beaver\naquatic_mammals,dolphin\nfish,aquarium_fish\nfish,trout\n"


@pytest.mark.parametrize(
    "header",
    ["superclass,class", "genus,species", "Family, Genus", "coarse_label,fine_label", "coarse_label_name,fine",
     "level1,level2", "Kingdom,Phylum,Class,Order,Family,Genus,Species", "kingdom,genus,species"],
)
def test_a_rank_table_header_is_refused_as_an_edge_and_the_way_out_named(tmp_path, header, capsys):
    ranks = [f.strip() for f in header.split(",")]
    full = [["A", "B1", "C1", "D1", "E1", "F1", "G1"], ["A", "B2", "C2", "D2", "E2", "F2", "G2"],
            ["Z", "B3", "C3", "D3", "E3", "F3", "G3"]]
    rows = [r[: len(ranks)] for r in full]
    path = write(tmp_path, "t.csv", header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    with pytest.raises(TaxonomyFileError, match=rf"t\.csv:1: the first row '{','.join(ranks)}' looks like the header of a "
                                                r"rank table, not an edge: .* is read with format='ranks'"):
        T.load(path)
    with pytest.raises(TaxonomyFileError, match="format='ranks'"):
        T.load(path, format="edges")
    # read as what it is
    check_against_oracle(T.load(path, format="ranks"), rows, ranks)
    # the command line says the same in its words
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--format ranks" in err[0] and "format='ranks'" not in err[0]


def test_cifar_superclass_class_loads_as_ranks_not_with_a_class_named_class(tmp_path):
    path = write(tmp_path, "cifar.csv", CIFAR)
    with pytest.raises(TaxonomyFileError, match="cifar.csv:1: the first row 'superclass,class'"):
        T.load(path)
    tax = T.load(path, format="ranks")
    assert tax.classes == ("beaver", "dolphin", "aquarium_fish", "trout") and "class" not in tax
    assert tax.parent("trout") == "fish" and tax.ranks == ("superclass", "class")
    # an edge list with the edge-list header gives the same tree, without the ranks
    edges = T.load(write(tmp_path, "edges.csv", CIFAR.replace("superclass,class", "parent,child")))
    assert edges == tax and edges.ranks is None


def test_a_first_row_that_no_other_row_touches_is_refused_as_a_header_in_disguise(tmp_path, capsys):
    # a header of words that are not rank names: it would be a tree of its own, its child the first class
    path = write(tmp_path, "t.csv", "coarse category,fine category\naquatic_mammals,beaver\nfish,trout\naquatic_mammals,otter\n")
    with pytest.raises(TaxonomyFileError, match=r"t\.csv:1: the first row 'coarse category,fine category' is an edge "
                                                r"that no other row touches .*: is it a header row\? .*format='ranks'"):
        T.load(path)
    assert T.load(path, format="ranks").classes == ("beaver", "trout", "otter")
    assert main(["info", str(path)]) == 2
    assert "--format ranks" in capsys.readouterr().err
    # a forest whose first tree is a single edge: the edge-list header, or quotes, say that the row is an edge
    forest = "plant,rose\nanimal,cat\nanimal,dog\n"
    with pytest.raises(TaxonomyFileError, match=r"f\.csv:1: the first row 'plant,rose' is an edge that no other row"):
        T.load(write(tmp_path, "f.csv", forest))
    want = T.from_edges([("plant", "rose"), ("animal", "cat"), ("animal", "dog")])
    assert want.classes == ("rose", "cat", "dog")
    assert T.load(write(tmp_path, "h.csv", "parent,child\n" + forest)) == want
    assert T.load(write(tmp_path, "q.csv", '"plant",rose\nanimal,cat\nanimal,dog\n')) == want
    # what save writes always has the header: it reads back
    want.save(tmp_path / "saved.tsv")
    assert T.load(tmp_path / "saved.tsv") == want
    # a first row that touches another row is an edge as before; so is a file of one row
    assert T.load(write(tmp_path, "c.csv", "a,x\nb,y\na,z\n")).classes == ("x", "y", "z")
    assert T.load(write(tmp_path, "one.csv", "a,x\n")).classes == ("x",)


def test_a_first_row_of_more_than_three_fields_names_format_ranks(tmp_path, capsys):
    path = write(tmp_path, "t.csv", "id,name,parent name,rank\n1,Animalia,,kingdom\n")
    with pytest.raises(TaxonomyFileError, match=r"t\.csv:1: expected 2 fields \(parent, child\) or 3 \(parent, child, "
                                                r"weight\), got 4: 'id,name,parent name,rank'; a rank table .* is read "
                                                r"with format='ranks'"):
        T.load(path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "got 4" in err and "is read with --format ranks" in err
    # a later row of 4 fields is a malformed edge: no advice about rank tables
    with pytest.raises(TaxonomyFileError, match=r"t2\.csv:2: expected 2 fields .* got 4: 'a,b,c,d'$"):
        T.load(write(tmp_path, "t2.csv", "r,a\na,b,c,d\n"))


# ---------------------------------------------------------------------------- issue 19, item 10: a lone surrogate
@pytest.mark.parametrize(
    ("rows", "ranks", "match"),
    [
        ([["A", "G\udc80"], ["A", "H"]], ["genus", "species"], r"cannot write node 'G\\udc80' to a rank table: it "
                                                               r"cannot be encoded as UTF-8"),
        ([["A", "G\udc80"], ["B", "G\udc80"]], ["genus", "species"], r"cannot write node 'G\\udc80 \(A\)' \(its cell "
                                                                     r"'G\\udc80'\) to a rank table: it cannot be encoded"),
        ([["A", "G"], ["A", "H"]], ["genus", "spe\udc80cies"], r"cannot write the rank 'spe\\udc80cies' to a rank "
                                                               r"table: it cannot be encoded as UTF-8"),
    ],
)
def test_saving_a_lone_surrogate_as_a_rank_table_names_the_node(tmp_path, rows, ranks, match):
    tax = T.from_rank_table(rows, ranks=ranks)
    path = tmp_path / "t.csv"
    path.write_text("before\n")
    with pytest.raises(TaxonomyError, match=match):
        tax.save(path, format="ranks")
    assert path.read_text() == "before\n" and [p.name for p in tmp_path.iterdir()] == ["t.csv"]
