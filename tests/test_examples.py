"""The scripts of ``examples/`` run end to end with small settings (each in its own process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, cwd: Path, timeout: float = 600) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"{name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_every_example_is_tested():
    tested = {"quickstart.py", "custom_taxonomy.py", "wordnet_synsets.py", "wordnet_glosses.py", "class_parallel.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


@pytest.mark.parametrize("name", ["quickstart.py", "custom_taxonomy.py", "wordnet_synsets.py", "wordnet_glosses.py",
                                  "class_parallel.py"])
def test_help(name, tmp_path):
    out = run_example(name, "--help", cwd=tmp_path)
    assert "--quick" in out


def test_quickstart(tmp_path):
    out = run_example("quickstart.py", "--quick", cwd=tmp_path)
    assert "('horse', 'zebra', 'whale', 'shark')" in out
    for name in ("cross entropy", "soft labels", "HXE", "tree-Wasserstein"):
        assert name in out
    # the soft-target row of horse, as printed: zebra gets more than whale
    import taxosmooth as ts

    tax = ts.Taxonomy.from_nested({"animal": {"mammal": ["horse", "zebra"], "sea": ["whale", "shark"]}})
    q = ts.soft_targets(tax, beta=4.0)
    assert f"{float(q[0, 1]):.4f}" in out and float(q[0, 1]) > float(q[0, 2])


def test_custom_taxonomy(tmp_path):
    out = run_example("custom_taxonomy.py", "--out", str(tmp_path / "files"), cwd=tmp_path)
    assert "'amphibious car'" in out  # the DAG node is named by the default policy's error
    files = tmp_path / "files"
    import taxosmooth as ts

    classes = (files / "classes.txt").read_text().split("\n")[:-1]
    tax = ts.Taxonomy.load(files / "vehicles.txt", classes=classes)
    np.testing.assert_allclose(np.load(files / "targets.npy"), ts.soft_targets(tax, beta=4.0).numpy())
    np.testing.assert_allclose(np.load(files / "costs.npy"), ts.cost_matrix(tax, transform="normalize").numpy())
    assert ts.Taxonomy.load(files / "vehicles_saved.json") == tax
    # the CSV and the path file describe the same road-vehicle subtree
    csv_tax = ts.Taxonomy.load(files / "vehicles.csv", multiple_parents="first")
    assert csv_tax.lca("taxi", "road bike") == tax.lca("taxi", "road bike") == "road vehicle"


def test_wordnet_synsets(wordnet, tmp_path):
    out = run_example("wordnet_synsets.py", "--synsets", "horse.n.01", "zebra.n.01", "car.n.01", cwd=tmp_path)
    assert "equine.n.01" in out  # LCA of horse and zebra
    s = [wordnet.synset(n) for n in ("horse.n.01", "zebra.n.01")]
    assert f"{s[0].wup_similarity(s[1]):.3f}" in out


def test_wordnet_glosses_quick(wordnet, tmp_path):
    out_dir = tmp_path / "res"
    out = run_example("wordnet_glosses.py", "--quick", "--out", str(out_dir), cwd=tmp_path)
    assert "| method |" in out
    data = json.loads((out_dir / "results.json").read_text())
    results, setting = data["results"], data["setting"]
    assert {"cross entropy", "cross entropy + CRM", "tree-Wasserstein + CE", "expected cost + CE"} <= set(results)
    assert any(k.startswith("soft labels") for k in results) and any(k.startswith("HXE") for k in results)
    assert 100 <= setting["classes"] <= 300
    for r in results.values():
        s = r["summary"]
        assert 0.0 <= s["top1_error"]["mean"] <= 1.0
        assert s["hdist@1"]["mean"] <= s["mistake_severity"]["mean"] + 1e-9  # @1 averages in the correct ones as 0
    classes = (out_dir / "classes.txt").read_text().split()
    assert len(classes) == setting["classes"]
    # the classes do not contain one another (hypernym closure of each vs the others)
    chosen = {wordnet.synset(c) for c in classes}
    for c in list(chosen)[:50]:
        above = {h for path in c.hypernym_paths() for h in path[:-1]}
        assert not (above & chosen), c
    png = out_dir / "tradeoff.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.distributed
def test_class_parallel_spawns_two_processes_and_equals_one(tmp_path):
    out = run_example("class_parallel.py", "--quick", cwd=tmp_path, timeout=300)
    assert "process 0: classes 0-" in out and "process 1: classes" in out
    assert "(equal within float32)" in out


@pytest.mark.distributed
def test_class_parallel_under_torchrun(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(EXAMPLES / "class_parallel.py"), "--quick", "--no-check"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "process 1: classes" in proc.stdout and "losses:" in proc.stdout
