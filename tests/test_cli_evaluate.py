"""``taxosmooth evaluate``: the printed numbers are the library's, bad input is one line naming file and line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import taxosmooth as ts
from taxosmooth.cli import main
from taxosmooth.data import example_path, load_animals

ANIMALS = str(example_path("animals.csv"))


@pytest.fixture
def files(tmp_path):
    tax = load_animals()
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(120, tax.num_classes, generator=g, dtype=torch.float64)
    y = torch.randint(0, tax.num_classes, (120,), generator=g)
    logits[torch.arange(120), y] += 2
    np.save(tmp_path / "logits.npy", logits.numpy())
    np.save(tmp_path / "probs.npy", torch.softmax(logits, 1).numpy())
    (tmp_path / "labels.txt").write_text("".join(tax.classes[i] + "\n" for i in y.tolist()), encoding="utf-8")
    return tmp_path, tax, logits, y


def expected(tax, logits, y, coarse=False):
    probs = torch.softmax(logits, 1)
    out = ts.metrics.report(logits, y, tax, k=(1, 5), probs=probs, coarse_labels=coarse)
    curve = ts.metrics.operating_curve(probs, y, tax, coarse_labels=coarse)
    return out | {f"operating_curve {k}": v.item() for k, v in curve.areas().items()}


def test_end_to_end_prints_the_librarys_numbers(files):
    d, tax, logits, y = files
    r = subprocess.run([sys.executable, "-m", "taxosmooth", "evaluate", d / "logits.npy", d / "labels.txt", "--taxonomy",
                        ANIMALS, "--from-logits", "--operating-curve", d / "curve.png"],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert r.returncode == 0, r.stderr
    want = expected(tax, logits, y)
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "120 samples, 40 classes (logits.npy)"
    got = {line.rsplit(None, 1)[0].strip(): float(line.rsplit(None, 1)[1]) for line in lines[1:]}
    assert got.keys() == want.keys()
    assert got == pytest.approx(want, rel=1e-5)
    assert (d / "curve.png").stat().st_size > 5000 and "wrote" in r.stderr


def test_json_probabilities_and_coarse_labels(files, capsys):
    d, tax, logits, y = files
    assert main(["evaluate", str(d / "probs.npy"), str(d / "labels.txt"), "--taxonomy", ANIMALS, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got == pytest.approx(expected(tax, logits, y), rel=1e-12, nan_ok=True)
    coarse = y.clone()
    coarse[::2] = torch.from_numpy(tax.ancestor_at_depth(y[::2].numpy(), 2))
    (d / "coarse.txt").write_text("".join(str(tax.target_names[i]) + "\n" for i in coarse.tolist()), encoding="utf-8")
    assert main(["evaluate", str(d / "probs.npy"), str(d / "coarse.txt"), "--taxonomy", ANIMALS, "--json",
                 "--coarse-labels", "-k", "3"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["top3_error"] == pytest.approx(ts.metrics.topk_error(logits, coarse, 3, taxonomy=tax, coarse_labels=True).item())
    assert got["mistake_severity"] == pytest.approx(ts.metrics.mistake_severity(logits, coarse, tax, coarse_labels=True).item())


def one_line(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0], err
    for f in fragments:
        assert f in err[0], (f, err[0])


def test_bad_input_is_one_line(files, capsys):
    d, tax, logits, y = files
    base = ["evaluate", str(d / "logits.npy"), str(d / "labels.txt"), "--taxonomy", ANIMALS]
    one_line(capsys, base, f"{d / 'logits.npy'}[0, ", "is not a probability", "pass --from-logits")
    with_nan = logits.clone()
    with_nan[7, 3] = float("nan")
    np.save(d / "nan.npy", with_nan.numpy())
    one_line(capsys, ["evaluate", str(d / "nan.npy"), *base[2:], "--from-logits"], f"{d / 'nan.npy'}[7, 3] is NaN")
    lines = (d / "labels.txt").read_text().splitlines()
    (d / "bad.txt").write_text("\n".join(lines[:3] + ["zebro"] + lines[4:]) + "\n")
    one_line(capsys, [*base[:2], str(d / "bad.txt"), *base[3:], "--from-logits"], "bad.txt:4:", "'zebro' is not a node")
    (d / "bad.txt").write_text("\n".join(lines[:5] + ["mammal"] + lines[6:]) + "\n")
    one_line(capsys, [*base[:2], str(d / "bad.txt"), *base[3:], "--from-logits"], "bad.txt:6:", "internal node",
             "--coarse-labels")
    (d / "bad.txt").write_text("\n".join(lines[:2] + [""] + lines[3:]) + "\n")
    one_line(capsys, [*base[:2], str(d / "bad.txt"), *base[3:], "--from-logits"], "bad.txt:3: empty line")
    (d / "bad.txt").write_text("\n".join(lines[:-1]) + "\n")
    one_line(capsys, [*base[:2], str(d / "bad.txt"), *base[3:], "--from-logits"], "has 119 labels but", "120 rows")
    np.save(d / "narrow.npy", logits[:, :39].numpy())
    one_line(capsys, ["evaluate", str(d / "narrow.npy"), *base[2:]], "39 columns but", "40 classes")
    np.save(d / "ints.npy", np.zeros((3, 40), dtype=np.int64))
    one_line(capsys, ["evaluate", str(d / "ints.npy"), *base[2:]], "floating point", "int64")
    one_line(capsys, [*base, "--operating-curve", str(d / "curve.jpg")], "unknown output extension '.jpg'")
    one_line(capsys, [*base, "--from-logits", "-k", "41"], "-k 41 is more than the 40 classes")
    one_line(capsys, ["evaluate", str(d / "missing.npy"), *base[2:]], "no such scores file")
    torch.save({"scores": logits}, d / "dict.pt")
    one_line(capsys, ["evaluate", str(d / "dict.pt"), *base[2:]], "expected a floating point tensor, got dict")


def test_a_failed_drawing_leaves_the_old_figure(files, capsys, monkeypatch):
    d, *_ = files
    (d / "curve.png").write_bytes(b"old figure")
    from matplotlib.figure import Figure

    def fail(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", fail)
    one_line(capsys, ["evaluate", str(d / "logits.npy"), str(d / "labels.txt"), "--taxonomy", ANIMALS, "--from-logits",
                      "--operating-curve", str(d / "curve.png")], "disk full")
    assert (d / "curve.png").read_bytes() == b"old figure"
    assert sorted(p.name for p in d.iterdir()) == ["curve.png", "labels.txt", "logits.npy", "probs.npy"]


def test_an_empty_set_says_so(files, capsys):
    d, *_ = files
    np.save(d / "empty.npy", np.zeros((0, 40)))
    (d / "empty.txt").write_text("", encoding="utf-8")
    for extra in ([], ["--json"], ["--from-logits", "--operating-curve", str(d / "empty.png")]):
        one_line(capsys, ["evaluate", str(d / "empty.npy"), str(d / "empty.txt"), "--taxonomy", ANIMALS, *extra],
                 "the evaluation set is empty", "empty.npy has no rows", "empty.txt no labels")
    assert not (d / "empty.png").exists()


def strict_json(text):
    """json.loads that refuses the bare tokens NaN and Infinity, which are not JSON (RFC 8259)."""

    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_writes_null_for_an_undefined_value(files, capsys):
    d, tax, logits, y = files
    # every label the argmax: no mistakes, so the mistake severity is undefined (NaN)
    right = logits.argmax(1)
    (d / "right.txt").write_text("".join(tax.classes[i] + "\n" for i in right.tolist()), encoding="utf-8")
    assert main(["evaluate", str(d / "logits.npy"), str(d / "right.txt"), "--taxonomy", ANIMALS, "--from-logits",
                 "--json"]) == 0
    got = strict_json(capsys.readouterr().out)
    want = expected(tax, logits, right)
    assert np.isnan(want["mistake_severity"]) and got["mistake_severity"] is None
    assert got.keys() == want.keys()
    assert {k: v for k, v in got.items() if v is not None} == pytest.approx(
        {k: v for k, v in want.items() if not np.isnan(v)}, rel=1e-12)
    # the plain listing prints the undefined value as nan
    assert main(["evaluate", str(d / "logits.npy"), str(d / "right.txt"), "--taxonomy", ANIMALS, "--from-logits"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("mistake_severity "))
    assert line.split()[-1] == "nan"
