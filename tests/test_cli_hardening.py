"""The command line under attack (issue 11): class lists, atomic outputs, messages in CLI words, no tracebacks.

Items 9 (class lists, extensions), 11 (atomic writes), 13 (no traceback), 23 (flags, WordNet line numbers),
25 (names matplotlib cannot draw) and the removed "command not written yet" path.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import taxosmooth as ts
from taxosmooth import cli
from taxosmooth.cli import main
from taxosmooth.cli._common import classes_path, read_matrix
from taxosmooth.data import example_path

ANIMALS = str(example_path("animals.csv"))


def run(capsys, *argv):
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exc:
        status = exc.code
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return status, out.out, out.err


def listing(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


# ---------------------------------------------------------------------------- item 9: class lists
def test_each_output_gets_its_own_class_list(tmp_path, capsys):
    a, b = ["horse", "zebra", "whale"], ["whale", "shark", "horse", "zebra"]
    (tmp_path / "a.txt").write_text("\n".join(a))
    (tmp_path / "b.txt").write_text("\n".join(b))
    npy, csv = tmp_path / "t.npy", tmp_path / "t.csv"
    assert run(capsys, "targets", ANIMALS, "--beta", "2", "--classes", tmp_path / "a.txt", "-o", npy)[0] == 0
    assert run(capsys, "targets", ANIMALS, "--beta", "2", "--classes", tmp_path / "b.txt", "-o", csv)[0] == 0
    assert classes_path(npy).name == "t.npy.classes.txt" and classes_path(csv).name == "t.csv.classes.txt"
    assert read_matrix(npy)[1] == a and read_matrix(csv)[1] == b
    assert not (tmp_path / "t.classes.txt").exists()
    # plot finds the list written with the matrix
    assert run(capsys, "plot", npy, "-o", tmp_path / "f.svg")[0] == 0
    assert run(capsys, "plot", npy, "--taxonomy", ANIMALS, "-o", tmp_path / "g.svg")[0] == 0


def test_a_class_list_of_another_matrix_is_an_error(tmp_path, capsys):
    npy = tmp_path / "t.npy"
    assert run(capsys, "costs", ANIMALS, "-o", npy)[0] == 0
    np.save(npy, np.zeros((40, 40)))  # replaced by another program: the list beside it is stale
    status, _, err = run(capsys, "plot", npy, "-o", tmp_path / "f.png")
    assert status == 2 and "t.npy.classes.txt was written for another t.npy" in err
    classes_path(npy).write_text("".join(f"c{i}\n" for i in range(40)))  # a hand-made list, no header
    status, _, err = run(capsys, "plot", npy, "-o", tmp_path / "f.png")
    assert status == 2 and "not a class list written by taxosmooth" in err and "--classes" in err
    assert not (tmp_path / "f.png").exists()
    # given on purpose, it is used
    assert run(capsys, "plot", npy, "--classes", classes_path(npy), "-o", tmp_path / "f.png")[0] == 0


@pytest.mark.parametrize("name", ["T.NPY", "C.Csv", "Q.PT"])
def test_the_path_written_is_the_path_reported(tmp_path, capsys, name):
    out = tmp_path / name
    status, _, err = run(capsys, "costs", ANIMALS, "-o", out)
    assert status == 0 and f"wrote {out} " in err
    assert listing(tmp_path) == sorted([name, name + ".classes.txt"])
    matrix, classes = read_matrix(out)
    np.testing.assert_array_equal(matrix, ts.cost_matrix(ts.Taxonomy.load(ANIMALS)).double().numpy())
    assert classes == list(ts.Taxonomy.load(ANIMALS).classes)


def test_figure_extensions_in_any_case(tmp_path, capsys):
    out = tmp_path / "F.PNG"
    assert run(capsys, "plot", ANIMALS, "-o", out)[0] == 0
    assert listing(tmp_path) == ["F.PNG"] and out.read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------- item 11: atomic outputs
@pytest.fixture
def old_outputs(tmp_path, capsys):
    """Good outputs of an earlier run, to be kept by every failed run."""
    out = tmp_path / "q.npy"
    assert run(capsys, "targets", ANIMALS, "--beta", "1", "-o", out)[0] == 0
    return {p: p.read_bytes() for p in (out, classes_path(out))}


def _unchanged(files, folder):
    assert all(p.read_bytes() == data for p, data in files.items())
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in files)  # no temporary file left


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError(28, "No space left on device")])
def test_an_interrupted_targets_run_keeps_the_old_files(tmp_path, capsys, monkeypatch, old_outputs, error):
    real_save = np.save

    def save_half(fh, arr, allow_pickle=False):
        fh.write(b"\x93NUMPY half")  # some bytes are out, then the run stops
        raise error

    monkeypatch.setattr(np, "save", save_half)
    status, _, err = run(capsys, "targets", ANIMALS, "--beta", "3", "-o", tmp_path / "q.npy")
    assert status == (130 if error is KeyboardInterrupt else 2)
    monkeypatch.setattr(np, "save", real_save)
    _unchanged(old_outputs, tmp_path)


def test_a_failure_between_the_matrix_and_its_class_list_keeps_both(tmp_path, capsys, monkeypatch, old_outputs):
    from taxosmooth.cli import _common

    real = _common._sha256

    def broken(path):
        real(path)
        raise KeyboardInterrupt  # after the matrix is complete, before the class list

    monkeypatch.setattr(_common, "_sha256", broken)
    assert run(capsys, "targets", ANIMALS, "--beta", "3", "-o", tmp_path / "q.npy")[0] == 130
    _unchanged(old_outputs, tmp_path)


def test_an_interrupted_csv_and_plot_keep_the_old_files(tmp_path, capsys, monkeypatch):
    import csv

    big = tmp_path / "c.csv"
    fig = tmp_path / "f.png"
    assert run(capsys, "costs", ANIMALS, "-o", big)[0] == 0
    assert run(capsys, "plot", ANIMALS, "-o", fig)[0] == 0
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    rows = []

    class Writer:
        def __init__(self, fh, **kw):
            self.inner = real_writer(fh, **kw)

        def writerow(self, row):
            rows.append(row)
            if len(rows) == 10:
                raise KeyboardInterrupt
            self.inner.writerow(row)

    real_writer = csv.writer
    monkeypatch.setattr(csv, "writer", Writer)
    assert run(capsys, "costs", ANIMALS, "--power", "2", "-o", big)[0] == 130
    monkeypatch.setattr(csv, "writer", real_writer)
    from matplotlib.figure import Figure

    def savefig(self, fh, **kw):
        fh.write(b"\x89PNG partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", savefig)
    assert run(capsys, "plot", ANIMALS, "--matrix", "costs", "-o", fig)[0] == 130
    _unchanged(before, tmp_path)


def test_taxonomy_save_is_atomic(tmp_path, monkeypatch):
    from taxosmooth import _atomic

    path = tmp_path / "t.csv"
    good = ts.Taxonomy.from_edges([("r", "a"), ("r", "b")])
    good.save(path)
    before = path.read_bytes()
    # a name that cannot be encoded used to be found halfway through the file
    with pytest.raises(ts.TaxonomyError, match="UTF-8"):
        ts.Taxonomy.from_edges([("r", "a"), ("r", "b\udc80")]).save(path)
    assert path.read_bytes() == before

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(_atomic.os, "replace", interrupted)
    for ext in ("csv", "json", "txt"):
        target = tmp_path / f"t.{ext}"
        monkeypatch.undo()
        good.save(target)
        kept = target.read_bytes()
        monkeypatch.setattr(_atomic.os, "replace", interrupted)
        with pytest.raises(KeyboardInterrupt):
            ts.Taxonomy.from_edges([("r", "x"), ("r", "y"), ("r", "z")]).save(target)
        assert target.read_bytes() == kept
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.json", "t.txt"]


def test_save_keeps_the_permissions_and_writes_through_links(tmp_path):
    tax = ts.Taxonomy.from_edges([("r", "a"), ("r", "b")])
    path = tmp_path / "t.csv"
    tax.save(path)
    os.chmod(path, 0o640)
    link = tmp_path / "link.csv"
    link.symlink_to(path)
    ts.Taxonomy.from_edges([("r", "x"), ("r", "y")]).save(link)
    assert link.is_symlink() and ts.Taxonomy.load(path).classes == ("x", "y")
    assert (os.stat(path).st_mode & 0o777) == 0o640


def test_a_failing_wordnet_run_writes_nothing(wordnet, tmp_path, capsys):
    listing_file = tmp_path / "one.txt"
    listing_file.write_text("entity.n.01\n")
    out = tmp_path / "wup.npy"
    out.write_bytes(b"an older matrix")
    # one synset: its tree is a single node, which an edge list cannot hold; found before anything is written
    status, _, err = run(capsys, "wordnet", listing_file, "-o", out, "--tree", tmp_path / "t.csv")
    assert status == 2 and "single node" in err
    assert out.read_bytes() == b"an older matrix"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.txt", "wup.npy"]


# ---------------------------------------------------------------------------- item 13: no traceback
@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"graph": [1], "nodes": [{"id": "a"}], "edges": []}', "'graph' must be an object"),
        ('{"nodes": [{"id": "a"}]}', "needs an 'edges' list"),
        ('{"a": [1, 2]}', "cannot be a node name"),
        ("[" * 5000 + "]" * 5000, "[0] is a list inside a list"),
        ("".join(f'{{"n{i}": ' for i in range(3000)) + '"leaf"' + "}" * 3000, ""),
    ],
)
def test_bad_json_is_one_line_without_traceback(tmp_path, capsys, text, fragment):
    path = tmp_path / "t.json"
    path.write_text(text)
    status, out, err = run(capsys, "info", path)
    if not fragment:  # deep but valid
        assert status == 0 and "Taxonomy with 1 classes and 3001 nodes" in out
        return
    assert status == 2 and len(err.strip().splitlines()) == 1 and fragment in err


# ---------------------------------------------------------------------------- item 23: the CLI's words
def test_messages_name_flags_not_keyword_arguments(tmp_path, capsys):
    dag = tmp_path / "dag.csv"
    dag.write_text("a,b\na,c\nb,x\nc,x\n")
    status, _, err = run(capsys, "info", dag)
    assert status == 2 and "Pass --multiple-parents first, shortest or longest" in err
    forest = tmp_path / "forest.csv"
    forest.write_text("parent,child\na,x\nb,y\n")
    status, _, err = run(capsys, "costs", forest, "--multiple-roots", "error", "-o", tmp_path / "c.npy")
    assert status == 2 and "pass --multiple-roots join to join them" in err
    named = tmp_path / "named.csv"
    named.write_text("parent,child\na,x\n<root>,y\n")
    status, _, err = run(capsys, "info", named)
    assert status == 2 and "--root-name '<root>' is already a node" in err and "choose another --root-name" in err
    assert run(capsys, "info", named, "--root-name", "top")[0] == 0
    for text in (err,):
        assert "multiple_parents" not in text and "root_name" not in text and "='" not in text


def test_rank_table_options_in_cli_words(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("kingdom,genus,species\nAnimalia,Equus,Equus zebra\n")
    status, _, err = run(capsys, "info", "--format", "ranks", table, "--contract-unary")
    assert status == 2 and "--contract-unary cannot be used with a rank table" in err


def test_wordnet_errors_give_file_lines_and_all_of_them(wordnet, tmp_path, capsys):
    path = tmp_path / "synsets.txt"
    path.write_text("# my classes\n\nhorse.n.01\nhrose.n.01\n# more\nzebra.n.01\nn99999999\nhorse\nqxzvw\n")
    status, _, err = run(capsys, "wordnet", path, "-o", tmp_path / "m.npy")
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 4, err
    assert f"{path}:4: 'hrose.n.01'" in lines[0]
    assert f"{path}:7: 'n99999999'" in lines[1]
    assert f"{path}:8: synset horse.n.01 is given twice (lines 3 and 8)" in lines[2]
    assert f"{path}:9: 'qxzvw'" in lines[3]
    assert not (tmp_path / "m.npy").exists()


# ---------------------------------------------------------------------------- item 25 and the stale import guard
def test_plot_of_names_matplotlib_cannot_draw(tmp_path, capsys):
    tax = tmp_path / "odd.csv"
    tax.write_text("r,$x^$\nr,日本\nr,plain\n")
    status, _, err = run(capsys, "plot", tax, "-o", tmp_path / "f.png")
    assert status == 0, err
    assert "note: 1 class name(s) have characters that the font" in err
    assert "Warning" not in err and "site-packages" not in err and ".py:" not in err


def test_every_command_module_must_exist(monkeypatch):
    # the parser used to skip a missing command module silently
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + ("nosuchcommand",))
    with pytest.raises(ModuleNotFoundError, match="nosuchcommand"):
        cli.build_parser()


def test_matrix_csv_is_read_line_by_line(tmp_path, capsys):
    bad = tmp_path / "m.csv"
    bad.write_text('class,a,"b\n' + "a,0,1\nb,1,0\n")
    status, _, err = run(capsys, "plot", bad, "-o", tmp_path / "f.png")
    assert status == 2 and "m.csv:1: the quoted field" in err
    odd = tmp_path / "w.csv"
    odd.write_text("class,a,b\na,0,1_0\nb,1,0\n")
    status, _, err = run(capsys, "plot", odd, "-o", tmp_path / "f.png")
    assert status == 2 and "w.csv:2: '1_0' is not a number" in err


def test_pt_with_complex_matrix_is_refused(tmp_path, capsys):
    path = tmp_path / "c.pt"
    torch.save({"matrix": torch.zeros(2, 2, dtype=torch.complex64), "classes": ["a", "b"]}, path)
    status, _, err = run(capsys, "plot", path, "-o", tmp_path / "f.png")
    assert status == 2 and "complex" in err
    assert json  # imported for the JSON cases above


def test_a_closed_pipe_ends_quietly(tmp_path):
    import subprocess
    import sys

    big = tmp_path / "big.csv"
    big.write_text("".join(f"r,c{i}\n" for i in range(20000)))
    # `taxosmooth info big.csv --list-classes | head -1`, without a shell
    proc = subprocess.Popen([sys.executable, "-m", "taxosmooth", "info", str(big), "--list-classes"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"c0\n"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and err == ""


# ---------------------------------------------------------------------------- an output that is an input
@pytest.mark.parametrize(
    "argv",
    [
        ["targets", "{tax}", "--beta", "2", "-o", "{tax}"],
        ["costs", "{tax}", "-o", "./{tax_name}"],
        ["costs", "{tax}", "-o", "{link}"],
        ["costs", "{tax}", "--classes", "{tax_dir}/m.csv.classes.txt", "-o", "{tax_dir}/m.csv"],
        ["plot", "{tax_png}", "--format", "edges", "-o", "{tax_png}"],
    ],
    ids=["targets -o FILE", "costs -o ./FILE", "costs -o a link to FILE", "-o beside --classes", "plot -o FILE"],
)
def test_an_output_that_is_an_input_is_refused(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    text = "animal,mammal\nmammal,horse\nmammal,zebra\nanimal,whale\n"
    (tmp_path / "t.csv").write_text(text)
    (tmp_path / "t.png").write_text(text)  # a taxonomy under an odd name, read with --format
    (tmp_path / "m.csv.classes.txt").write_text("horse\nwhale\n")
    os.symlink("t.csv", tmp_path / "link.csv")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    fields = dict(tax="t.csv", tax_name="t.csv", link="link.csv", tax_dir=str(tmp_path), tax_png="t.png")
    status, _, err = run(capsys, *[a.format(**fields) for a in argv])
    assert status == 2 and "it is the input file" in err and "would be overwritten" in err, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_wordnet_tree_over_its_synset_list_is_refused(wordnet, tmp_path, capsys):
    listing_file = tmp_path / "synsets.txt"
    listing_file.write_text("horse.n.01\nzebra.n.01\n")
    status, _, err = run(capsys, "wordnet", listing_file, "--tree", listing_file)
    assert status == 2 and f"cannot write {listing_file}: it is the input file" in err
    assert listing_file.read_text() == "horse.n.01\nzebra.n.01\n"


def test_evaluate_figure_keeps_permissions_like_every_output(tmp_path, capsys):
    from taxosmooth.data import load_animals

    tax = load_animals()
    np.save(tmp_path / "p.npy", np.full((4, tax.num_classes), 1.0 / tax.num_classes))
    (tmp_path / "y.txt").write_text("".join(tax.classes[i] + "\n" for i in range(4)))
    fig = tmp_path / "curve.png"
    fig.write_bytes(b"old")
    os.chmod(fig, 0o644)
    argv = ["evaluate", tmp_path / "p.npy", tmp_path / "y.txt", "--taxonomy", ANIMALS, "--operating-curve", fig]
    assert run(capsys, *argv)[0] == 0
    assert fig.read_bytes()[:4] == b"\x89PNG" and (os.stat(fig).st_mode & 0o777) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.png", "p.npy", "y.txt"]


def test_a_class_list_error_names_its_line(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("animal,mammal\nmammal,horse\nmammal,zebra\nanimal,whale\n")
    (tmp_path / "unknown.txt").write_text("# mine\nhorse\nzebr\n")
    (tmp_path / "internal.txt").write_text("whale\n\nmammal\n")
    status, _, err = run(capsys, "info", tmp_path / "t.csv", "--classes", tmp_path / "unknown.txt")
    assert status == 2 and f"{tmp_path / 'unknown.txt'}:3: " in err and "class 'zebr' is not a node" in err, err
    status, _, err = run(capsys, "targets", tmp_path / "t.csv", "--beta", "1", "-o", tmp_path / "o.npy",
                         "--classes", tmp_path / "internal.txt")
    assert status == 2 and f"{tmp_path / 'internal.txt'}:3: " in err and "'mammal' is an internal node" in err, err
    assert "Taxonomy.encode" not in err and "give 'mammal' as a label to 'taxosmooth evaluate --coarse-labels'" in err


# ---------------------------------------------------------------------------- item 14: extreme numbers
def test_extreme_powers_and_betas_give_files_not_tracebacks_or_warnings(tmp_path, capsys):
    tax = ts.Taxonomy.load(ANIMALS)
    out = tmp_path / "c.npy"
    status, _, err = run(capsys, "costs", ANIMALS, "--power", "1000", "--transform", "normalize", "--dtype", "float32",
                         "-o", out)
    assert status == 0 and "Warning" not in err, err
    d = ts.class_distances(tax)
    want = (d / d.max()) ** 1000  # the normalised cost, computed without forming d ** 1000
    np.testing.assert_allclose(np.load(out), want.astype(np.float32), rtol=1e-6, atol=0)
    status, _, err = run(capsys, "costs", ANIMALS, "--power", "1000", "-o", tmp_path / "raw.npy")
    assert status == 2 and "power=1000 overflows" in err and "callable" not in err, err
    for beta in ("1e300", "1e308"):
        status, _, err = run(capsys, "targets", ANIMALS, "--beta", beta, "-o", tmp_path / "q.npy")
        assert status == 0 and "Warning" not in err, err
        q = np.load(tmp_path / "q.npy")
        assert np.isfinite(q).all()
        np.testing.assert_allclose(q, np.eye(tax.num_classes), atol=0)  # all mass on the true class


# ---------------------------------------------------------------------------- issue 19, item 13: a rank table read as edges
def test_info_on_a_rank_table_without_format_ranks_names_the_flag(tmp_path, capsys):
    # a rank table of 7 ranks, as iNaturalist exports it, read by default as an edge list
    table = tmp_path / "inat.csv"
    table.write_text("id,kingdom,phylum,class,order,family,genus\n1,Animalia,Chordata,Mammalia,Perissodactyla,Equidae,Equus\n")
    status, _, err = run(capsys, "info", table)
    assert status == 2 and err.count("\n") == 1
    assert "expected 2 fields (parent, child) or 3 (parent, child, weight), got 7" in err
    assert err.rstrip().endswith("is read with --format ranks")
    status, out, _ = run(capsys, "info", table, "--format", "ranks")
    assert status == 0 and "ranks (7): id, kingdom" in out


# ---------------------------------------------------------------------------- issue 19, item 13: too large to plot
def _big_taxonomy(tmp_path, n=10_001, group=100):
    path = tmp_path / "big.txt"
    path.write_text("".join(f"root/g{i // group}/x{i}\n" for i in range(n)))
    return path


def test_plot_refuses_a_taxonomy_too_large_in_one_line_naming_size_and_way_out(tmp_path, capsys):
    big = _big_taxonomy(tmp_path)
    status, _, err = run(capsys, "plot", big, "-o", tmp_path / "f.png")
    assert status == 2 and err.count("\n") == 1
    assert err == (f"taxosmooth plot: error: {big} has 10,001 classes, and plot draws at most 10,000 (the 10001x10001 "
                   "distances matrix alone would take 0.7 GiB); draw a part: --subtree NODE (the classes under NODE), "
                   "or --classes FILE (one class per line)\n")
    assert listing(tmp_path) == ["big.txt"]
    status, _, err = run(capsys, "plot", big, "--matrix", "targets", "--beta", "4", "-o", tmp_path / "f.png")
    assert status == 2 and "the 10001x10001 targets matrix alone" in err


def test_the_size_named_is_that_of_the_float64_matrix():
    from taxosmooth.cli import plot

    args = cli.build_parser().parse_args(["plot", "icd10cm.csv", "-o", "f.png"])
    with pytest.raises(cli._common.CLIError, match=r"icd10cm\.csv has 74,719 classes, .* \(the 74719x74719 distances "
                                                   r"matrix alone would take 41\.6 GiB"):
        plot._check_size(74_719, args)
    assert 74_719**2 * 8 / 2**30 == pytest.approx(41.6, abs=0.05)
    plot._check_size(plot.MAX_CLASSES, args)  # the limit itself is drawn


def test_plot_subtree_draws_the_classes_under_a_node(tmp_path, capsys, monkeypatch):
    from taxosmooth import plots

    drawn = []
    original = plots.plot_matrix

    def spy(matrix, tax, *args, **kwargs):
        drawn.append((matrix.shape, tax.classes, kwargs.get("title")))
        return original(matrix, tax, *args, **kwargs)

    monkeypatch.setattr(plots, "plot_matrix", spy)
    big = _big_taxonomy(tmp_path)
    assert run(capsys, "plot", big, "--subtree", "g7", "-o", tmp_path / "g7.png")[0] == 0
    assert drawn[-1][0] == (100, 100) and drawn[-1][1] == tuple(f"x{i}" for i in range(700, 800))
    assert drawn[-1][2] == "lca_height distances of big.txt (100 classes under 'g7')"
    full = ts.Taxonomy.load(ANIMALS)
    assert run(capsys, "plot", ANIMALS, "--subtree", "even-toed ungulate", "--matrix", "costs", "-o", tmp_path / "e.png")[0] == 0
    assert drawn[-1][1] == full.leaves_under("even-toed ungulate") == ("cow", "goat", "deer", "giraffe")
    assert (tmp_path / "g7.png").stat().st_size > 0 and (tmp_path / "e.png").stat().st_size > 0
    # what --subtree does not take, in one line each
    for argv, message in [
        (["--subtree", "zebr"], "--subtree 'zebr' is not a node of"),
        (["--subtree", "equid", "--classes", tmp_path / "c.txt"], "give --subtree or --classes, not both"),
    ]:
        status, _, err = run(capsys, "plot", ANIMALS, *argv, "-o", tmp_path / "x.png")
        assert status == 2 and err.count("\n") == 1 and message in err, err
    assert run(capsys, "costs", ANIMALS, "-o", tmp_path / "m.npy")[0] == 0
    status, _, err = run(capsys, "plot", tmp_path / "m.npy", "--subtree", "equid", "-o", tmp_path / "x.png")
    assert status == 2 and "--subtree goes with a taxonomy file as INPUT, not with a saved matrix" in err
    assert not (tmp_path / "x.png").exists()
