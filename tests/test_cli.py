"""The command line: every command end to end in a subprocess, file formats, and one-line errors.

Each ``python -m taxosmooth`` start imports torch (seconds), so the subprocess
tests are few; the many error cases call ``taxosmooth.cli.main`` in-process,
which is the same code path minus the interpreter start.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import taxosmooth as ts
from taxosmooth.cli import main
from taxosmooth.cli._common import classes_path, is_matrix_file, read_matrix, write_matrix
from taxosmooth.data import EXAMPLES, example_path, load_animals

ANIMALS = str(example_path("animals.csv"))


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "taxosmooth", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "error:" in lines[0] and "Traceback" not in stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


# ---------------------------------------------------------------- bundled data
def test_bundled_files_hold_the_same_taxonomy():
    csv_tax = ts.Taxonomy.load(example_path("animals.csv"))
    txt_tax = ts.Taxonomy.load(example_path("animals.txt"))
    assert csv_tax == txt_tax == load_animals()
    assert csv_tax.num_classes == 40 and set(EXAMPLES) == {"animals.csv", "animals.txt"}
    # the seed question inside it: horse -> zebra is the smallest mistake, horse -> shark a larger one than -> whale
    d = ts.class_distances(csv_tax)
    h, z, w, s = (csv_tax.class_index(c) for c in ("horse", "zebra", "whale", "shark"))
    assert d[h, z] < d[h, w] < d[h, s]
    with pytest.raises(ValueError, match="unknown example"):
        example_path("plants.csv")


# ---------------------------------------------------------------- end to end (subprocesses)
def test_info_end_to_end():
    r = run_cli("info", ANIMALS)
    assert r.returncode == 0, r.stderr
    assert "Taxonomy with 40 classes and 64 nodes" in r.stdout
    assert "amphibian -> frog" in r.stdout and "arthropod -> insect" in r.stdout
    assert "classes by depth: 2: 2, 3: 8, 4: 19, 5: 11" in r.stdout


def test_targets_end_to_end_with_class_order(tmp_path):
    order = ["shark", "horse", "whale", "zebra", "octopus"]
    (tmp_path / "classes.txt").write_text("# my logit order\n" + "\n".join(order) + "\n")
    out = tmp_path / "q.npy"
    r = run_cli("targets", ANIMALS, "--beta", "3", "--mix", "0.4", "--classes", tmp_path / "classes.txt", "-o", out)
    assert r.returncode == 0, r.stderr
    want = ts.soft_targets(ts.Taxonomy.load(ANIMALS, classes=order), 3.0, mix=0.4)
    np.testing.assert_array_equal(np.load(out), want.numpy())
    listed = (tmp_path / "q.npy.classes.txt").read_text().split("\n")[:-1]
    assert listed[0].startswith("# taxosmooth class list of q.npy: 5 classes, sha256 ") and listed[1:] == order


def test_costs_end_to_end_csv(tmp_path):
    out = tmp_path / "c.csv"
    r = run_cli("costs", ANIMALS, "--distance", "path_length", "--transform", "normalize", "--power", "2", "-o", out)
    assert r.returncode == 0, r.stderr
    tax = load_animals()
    matrix, classes = read_matrix(out)
    want = ts.cost_matrix(tax, distance="path_length", transform="normalize", power=2.0)
    assert classes == list(tax.classes)
    np.testing.assert_array_equal(matrix.astype(np.float32), want.numpy())
    header = out.read_text().splitlines()[0].split(",")
    assert header == ["class", *tax.classes]


def test_plot_end_to_end(tmp_path):
    import matplotlib.image as mpimg

    out = tmp_path / "targets.png"
    r = run_cli("plot", ANIMALS, "--matrix", "targets", "--beta", "4", "-o", out)
    assert r.returncode == 0, r.stderr
    img = mpimg.imread(out)
    assert 600 <= img.shape[0] <= 3000 and 600 <= img.shape[1] <= 3000
    assert img[..., :3].std() > 0.05  # not blank


def test_demo_end_to_end():
    r = run_cli("demo", "--quick")
    assert r.returncode == 0, r.stderr
    assert "horse" in r.stdout and "whale" in r.stdout
    for method in ("cross entropy", "soft labels (beta=4)", "HXE (alpha=0.5)", "cross entropy + CRM"):
        assert method in r.stdout
    assert "mistake severity" in r.stdout


def test_bad_input_in_a_subprocess_is_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("parent,child\nanimal,mammal\nmammal,horse,zebra,whale\n")
    r = run_cli("info", bad)
    assert r.returncode == 2
    assert r.stdout == ""
    assert_one_line_error(r.stderr, "bad.csv:3")


# ---------------------------------------------------------------- outputs (in-process)
@pytest.mark.parametrize("suffix", [".npy", ".pt", ".csv"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_targets_every_format_loads_back(tmp_path, capsys, suffix, dtype):
    out = tmp_path / f"q{suffix}"
    assert main(["targets", ANIMALS, "--beta", "4", "--scale", "2.5", "--dtype", dtype, "-o", str(out)]) == 0
    tax = load_animals()
    want = ts.soft_targets(tax, 4.0, scale=2.5, dtype=getattr(torch, dtype))
    if suffix == ".npy":
        got = torch.from_numpy(np.load(out))
    elif suffix == ".pt":
        data = torch.load(out, weights_only=True)
        got = data["matrix"]
        assert data["classes"] == list(tax.classes)
    else:
        got = torch.from_numpy(read_matrix(out)[0]).to(want.dtype)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert classes_path(out).read_text().splitlines()[1:] == list(tax.classes)
    assert "wrote" in capsys.readouterr().err


def test_costs_and_options_reach_the_library(tmp_path):
    out = tmp_path / "c.pt"
    assert main(["costs", ANIMALS, "--contract-unary", "--distance", "lca_depth_complement", "-o", str(out)]) == 0
    tax = ts.Taxonomy.load(ANIMALS, contract_unary=True)
    data = torch.load(out, weights_only=True)
    torch.testing.assert_close(data["matrix"], ts.cost_matrix(tax, distance="lca_depth_complement"), rtol=0, atol=0)


def test_dag_options(tmp_path, capsys):
    dag = tmp_path / "dag.csv"
    dag.write_text("a,b\na,c\nb,x\nc,x\nc,y\nb,z\n")
    assert main(["info", str(dag)]) == 2
    assert_one_line_error(capsys.readouterr().err, "'x'")
    assert main(["info", str(dag), "--multiple-parents", "first"]) == 0
    out = capsys.readouterr().out
    assert "multiple parents" in out and "keeps parent 'b'" in out


def test_info_lists_classes_and_roots(tmp_path, capsys):
    forest = tmp_path / "forest.txt"
    forest.write_text("plants/tree/oak\nplants/grass\nanimals/cat\nanimals/dog\n")
    assert main(["info", str(forest), "--list-classes"]) == 0
    assert capsys.readouterr().out.split("\n")[:-1] == ["oak", "grass", "cat", "dog"]
    assert main(["info", str(forest), "--all"]) == 0
    out = capsys.readouterr().out
    assert "roots (2): plants, animals" in out and "plants -> tree" not in out and "tree -> oak" in out
    assert main(["info", str(forest), "--multiple-roots", "error"]) == 2
    assert_one_line_error(capsys.readouterr().err, "root")


def test_matrix_round_trip_and_detection(tmp_path):
    m = torch.tensor([[0.0, 1.5], [1.0 / 3.0, 0.0]], dtype=torch.float64)
    for suffix in (".npy", ".pt", ".csv"):
        path = tmp_path / f"m{suffix}"
        write_matrix(path, m, ["a, with comma", "b"])
        got, classes = read_matrix(path)
        np.testing.assert_array_equal(got, m.numpy())
        assert classes == ["a, with comma", "b"]
        assert is_matrix_file(path)
    assert not is_matrix_file(example_path("animals.csv"))
    weighted = tmp_path / "w.csv"
    weighted.write_text("class,mammal,2.0\nmammal,horse,1\n")  # an edge list whose root is named 'class'
    assert not is_matrix_file(weighted)


# ---------------------------------------------------------------- one-line errors (in-process)
def _error(capsys, argv, *fragments):
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse usage errors
        status = exc.code
    captured = capsys.readouterr()
    assert status == 2
    assert_one_line_error(captured.err, *fragments)
    return captured.err


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["info", "no/such/file.csv"], ["no/such/file.csv", "no such taxonomy file"]),
        (["info", ANIMALS, "--multiple-parents", "maybe"], ["--multiple-parents", "maybe"]),
        (["targets", ANIMALS, "--beta", "hot", "-o", "q.npy"], ["--beta", "'hot'"]),
        (["targets", ANIMALS, "--beta", "-1", "-o", "q.npy"], ["--beta", ">= 0"]),
        (["targets", ANIMALS, "--beta", "nan", "-o", "q.npy"], ["--beta", "finite"]),
        (["targets", ANIMALS, "--beta", "1", "--scale", "huge", "-o", "q.npy"], ["--scale", "'huge'"]),
        (["targets", ANIMALS, "--beta", "1", "--mix", "2", "-o", "q.npy"], ["--mix", "[0, 1]"]),
        (["targets", ANIMALS, "-o", "q.npy"], ["--beta"]),
        (["costs", ANIMALS, "--power", "0", "-o", "c.npy"], ["--power"]),
        (["costs", ANIMALS, "--distance", "euclid", "-o", "c.npy"], ["--distance", "euclid"]),
        (["costs", ANIMALS, "-o", "c.xlsx"], ["c.xlsx", ".xlsx", ".npy"]),
        (["costs", ANIMALS, "-o", "no/such/folder/c.npy"], ["no/such/folder", "does not exist"]),
        (["plot", ANIMALS, "--matrix", "targets", "-o", "f.png"], ["--beta"]),
        (["plot", ANIMALS, "-o", "f.gif"], [".gif"]),
        (["plot", ANIMALS, "--cmap", "rainbowish", "-o", "f.png"], ["rainbowish"]),
        (["plot", "no/such/matrix.npy", "-o", "f.png"], ["no/such/matrix.npy"]),
        (["demo", "--beta", "x"], ["--beta"]),
        (["frobnicate"], ["frobnicate"]),
    ],
)
def test_bad_options_give_one_line(tmp_path, monkeypatch, capsys, argv, fragments):
    monkeypatch.chdir(tmp_path)
    _error(capsys, argv, *fragments)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_bad_files_give_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "malformed.txt").write_text("animal/mammal/horse\nanimal//zebra\n")
    _error(capsys, ["info", "malformed.txt"], "malformed.txt:2", "empty name")
    (tmp_path / "cycle.csv").write_text("a,b\nb,c\nc,a\n")
    _error(capsys, ["targets", "cycle.csv", "--beta", "1", "-o", "q.npy"], "cycle")
    (tmp_path / "tax.weird").write_text("a,b\n")
    _error(capsys, ["info", "tax.weird"], ".weird")
    (tmp_path / "classes.txt").write_text("horse\nunicorn\n")
    _error(capsys, ["targets", ANIMALS, "--beta", "1", "--classes", "classes.txt", "-o", "q.npy"], "unicorn")
    (tmp_path / "twice.txt").write_text("horse\nzebra\nhorse\n")
    _error(capsys, ["costs", ANIMALS, "--classes", "twice.txt", "-o", "c.npy"], "twice.txt:3", "'horse'")
    (tmp_path / "inner.txt").write_text("horse\nmammal\n")
    _error(capsys, ["costs", ANIMALS, "--classes", "inner.txt", "-o", "c.npy"], "mammal")
    _error(capsys, ["costs", ANIMALS, "--classes", "missing.txt", "-o", "c.npy"], "missing.txt")
    (tmp_path / "folder.npy").mkdir()
    _error(capsys, ["costs", ANIMALS, "-o", "folder.npy"], "folder.npy", "folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["malformed.txt", "cycle.csv", "tax.weird", "classes.txt", "twice.txt", "inner.txt", "folder.npy"]
    )


def test_bad_matrix_files_give_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "rect.npy", np.zeros((2, 3)))
    _error(capsys, ["plot", "rect.npy", "-o", "f.png"], "rect.npy", "square")
    np.save(tmp_path / "m.npy", np.zeros((3, 3)))
    (tmp_path / "m.npy.classes.txt").write_text("a\nb\n")
    _error(capsys, ["plot", "m.npy", "-o", "f.png"], "m.npy.classes.txt:1: not a class list written by taxosmooth")
    (tmp_path / "m.npy.classes.txt").unlink()
    _error(capsys, ["plot", "m.npy", "--classes", "c2.txt", "-o", "f.png"], "c2.txt")
    (tmp_path / "c2.txt").write_text("a\nb\n")
    _error(capsys, ["plot", "m.npy", "--classes", "c2.txt", "-o", "f.png"], "2 class names", "3x3")
    (tmp_path / "m.csv").write_text("class,a,b\na,0,1\nb,x,0\n")
    _error(capsys, ["plot", "m.csv", "-o", "f.png"], "m.csv:3", "'x'")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    _error(capsys, ["plot", "junk.pt", "-o", "f.png"], "junk.pt")
    np.save(tmp_path / "big.npy", np.zeros((5, 5)))
    _error(capsys, ["plot", "big.npy", "--taxonomy", ANIMALS, "-o", "f.png"], "5x5", "40 classes")
    assert not (tmp_path / "f.png").exists()


def test_plot_saved_matrix_in_tree_order(tmp_path, capsys):
    from taxosmooth import plots

    out = tmp_path / "q.csv"
    order = ["whale", "horse", "shark", "zebra"]
    (tmp_path / "c.txt").write_text("\n".join(order))
    assert main(["targets", ANIMALS, "--beta", "2", "--classes", str(tmp_path / "c.txt"), "-o", str(out)]) == 0
    for extra in ([], ["--taxonomy", ANIMALS]):
        fig_path = tmp_path / f"f{len(extra)}.svg"
        assert main(["plot", str(out), *extra, "-o", str(fig_path)]) == 0
        assert fig_path.stat().st_size > 1000
    # the figure's matrix is the saved one, rows in tree order when the taxonomy is given
    tax = ts.Taxonomy.load(ANIMALS, classes=order)
    q = ts.soft_targets(tax, 2.0).double().numpy()
    fig = plots.plot_matrix(read_matrix(out)[0], tax)
    perm = plots.tree_order(tax)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), q[np.ix_(perm, perm)], rtol=1e-7)


def test_help_shows_examples(capsys):
    for command in ("info", "targets", "costs", "plot", "demo"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out and f"taxosmooth {command}" in out
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("info", "targets", "costs", "plot", "demo"):
        assert command in out


def test_progress_goes_to_stderr(tmp_path, capsys):
    assert main(["costs", ANIMALS, "--progress", "-o", str(tmp_path / "c.npy")]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "loading" in captured.err and "computing the 40x40 costs" in captured.err and "done" in captured.err


def test_demo_without_training(capsys):
    assert main(["demo", "--no-train", "--beta", "2"]) == 0
    out = capsys.readouterr().out
    tax = load_animals()
    q = ts.soft_targets(tax, 2.0)
    h, z = tax.class_index("horse"), tax.class_index("zebra")
    assert f"{q[h, z].item():.3f}" in out
    assert "zebra, donkey" in out


def test_plot_without_matplotlib_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    _error(capsys, ["plot", ANIMALS, "-o", str(tmp_path / "f.png")], "taxosmooth[plot]")
