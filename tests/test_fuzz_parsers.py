"""Fuzzing every parser: whatever the input, a valid Taxonomy or an error that names the file.

Properties, for every reader (edge lists, node-link and nested JSON, path files, rank tables):

* random bytes and near-valid files (a valid file with characters inserted, deleted, lines
  duplicated or swapped) either load into a Taxonomy whose compiled arrays hold their invariants,
  or raise a ``TaxonomyError`` (``TaxonomyFileError`` included) whose message names the file;
  never another exception type (no ``IndexError``, ``AttributeError``, ``RecursionError``, ...);
* what ``save`` writes loads back as an equal taxonomy with the same target ids, for random
  trees with awkward names (quotes, commas, tabs, ``#``, braces), or ``save`` refuses before
  touching the file;
* the command line answers the same inputs with exit status 0 or 2, never a traceback;
* the iterative JSON parser agrees with ``json.loads``.

The examples are few per property (``CI=true`` selects the "ci" profile); a run takes seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from _trees import random_graphs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taxosmooth as ts
from taxosmooth.cli import main
from taxosmooth.errors import TaxonomyError

T = ts.Taxonomy
#: (file suffix, load options): every reader
READERS = [(".csv", {}), (".tsv", {}), (".json", {}), (".txt", {}), (".csv", {"format": "ranks"}), (".tsv", {"format": "ranks"})]
SPECIAL = '",\t\n\r#{}[]:/ x\\\x00é\ufeff\u2028"0-.e'
NAME = st.text(alphabet='abXY01 ,;"\'\t#é_-.{}[]:', min_size=1, max_size=6).filter(lambda s: s == s.strip())
fuzz = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much], deadline=None)


def check_invariants(tax: ts.Taxonomy) -> None:
    """What every compiled taxonomy must satisfy, whatever file it came from."""
    c = tax.compiled
    n = c.num_nodes
    assert c.parent[0] == -1 and np.all(c.parent[1:] < np.arange(1, n)) and np.all(c.parent[1:] >= 0)
    assert np.all(c.depth[1:] == c.depth[c.parent[1:]] + 1)
    assert sorted(c.target_node.tolist()) == list(range(n))
    assert len(set(tax.nodes)) == n and len(tax.classes) == c.num_classes >= 1
    assert all(tax.is_leaf(x) for x in tax.classes)
    assert np.all(np.isfinite(c.weighted_depth)) and np.all(c.weight[1:] > 0)
    assert tax.decode(tax.encode(list(tax.target_names))) == list(tax.target_names)


def load_or_refuse(path: Path, **options):
    """Load ``path``; a refusal must be a TaxonomyError naming the file. Returns the taxonomy or None."""
    try:
        tax = T.load(path, **options)
    except TaxonomyError as exc:
        assert str(path) in str(exc), f"{type(exc).__name__} does not name the file: {exc}"
        return None
    check_invariants(tax)
    return tax


def cli_status(path: Path, fmt: str) -> int:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["info", str(path), "--format", fmt])
    assert status in (0, 2) and "Traceback" not in err.getvalue()
    if status == 2:
        assert err.getvalue().startswith("taxosmooth info: error: ")
    return status


# ---------------------------------------------------------------------------- random bytes
@fuzz
@given(st.binary(max_size=400), st.sampled_from(READERS))
def test_random_bytes(data, reader):
    suffix, options = reader
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"fuzz{suffix}"
        path.write_bytes(data)
        load_or_refuse(path, **options)


@fuzz
@given(st.text(alphabet=SPECIAL + "abc", max_size=200), st.sampled_from(READERS))
def test_random_text_from_delimiters_and_quotes(text, reader):
    suffix, options = reader
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"fuzz{suffix}"
        path.write_text(text, encoding="utf-8")
        tax = load_or_refuse(path, **options)
        status = cli_status(path, options.get("format", "auto"))
        assert status == (0 if tax is not None else 2)


# ---------------------------------------------------------------------------- near-valid files
@st.composite
def named_taxonomies(draw, weighted=False):
    g, classes = draw(random_graphs(max_nodes=15, weighted=weighted))
    names = draw(st.lists(NAME, min_size=g.number_of_nodes(), max_size=g.number_of_nodes(), unique=True))
    g = nx.relabel_nodes(g, dict(enumerate(names)))
    return T.from_networkx(g, classes=[names[c] for c in classes])


@st.composite
def rank_taxonomies(draw):
    n_ranks = draw(st.integers(1, 3))
    cell = st.sampled_from(["a", "b", "c d", "e,f", '"q"', "#h"])
    rows = draw(st.lists(st.lists(cell, min_size=1, max_size=n_ranks), min_size=1, max_size=8))
    return T.from_rank_table(rows, ranks=[f"rank {k}" for k in range(n_ranks)])


def valid_text(tax, suffix, options) -> str | None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"t{suffix}"
        try:
            tax.save(path, **options)
        except TaxonomyError:
            return None
        return path.read_text(encoding="utf-8")


@st.composite
def mutations(draw, text: str) -> str:
    lines = text.split("\n")
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "duplicate", "swap", "truncate"]))
        if op == "insert":
            i = draw(st.integers(0, len(text)))
            text = text[:i] + draw(st.sampled_from(list(SPECIAL))) + text[i:]
        elif op == "delete" and text:
            i = draw(st.integers(0, len(text) - 1))
            text = text[:i] + text[i + 1 :]
        elif op == "duplicate" and lines:
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            text = "\n".join(lines)
        elif op == "swap" and len(lines) > 1:
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif op == "truncate":
            text = text[: draw(st.integers(0, len(text)))]
        lines = text.split("\n")
    return text


@fuzz
@given(st.data(), st.sampled_from(READERS))
def test_near_valid_files(data, reader):
    suffix, options = reader
    tax = data.draw(rank_taxonomies() if options.get("format") == "ranks" else named_taxonomies(weighted=suffix != ".txt"))
    text = valid_text(tax, suffix, options)
    if text is None:
        return
    mutated = data.draw(mutations(text))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"near{suffix}"
        path.write_text(mutated, encoding="utf-8")
        load_or_refuse(path, **options)


# ---------------------------------------------------------------------------- JSON structures
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(["a", "b", "nodes", "id", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["a", "b", "c", "nodes", "edges", "id"]), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def node_link_like(draw):
    ids = st.sampled_from(["a", "b", "c", 1, 2, True, None, 1.5, ["a"]])
    data = {"nodes": draw(st.lists(st.fixed_dictionaries({"id": ids}) | JSON, max_size=5))}
    key = draw(st.sampled_from(["edges", "links", "both", "none"]))
    link = st.fixed_dictionaries({"source": ids, "target": ids}, optional={"weight": JSON | st.integers(-1, 10**20)})
    for k in (["edges", "links"] if key == "both" else [] if key == "none" else [key]):
        data[k] = draw(st.lists(link | JSON, max_size=5))
    for k in ("directed", "multigraph", "graph"):
        if draw(st.booleans()):
            data[k] = draw(JSON | st.fixed_dictionaries({"classes": JSON}))
    return data


@fuzz
@given(JSON | node_link_like())
def test_json_structures(data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        load_or_refuse(path)
    try:
        tax = T.from_nested(data) if isinstance(data, (dict, list)) else None
    except TaxonomyError:
        return
    if tax is not None:
        check_invariants(tax)


@fuzz
@given(JSON, st.sampled_from([None, 0, 1, "\t"]))
def test_iterative_json_parser_agrees_with_json_loads(value, indent):
    from taxosmooth.taxonomy._json import parse_iterative

    text = json.dumps(value, indent=indent)
    assert parse_iterative(text) == json.loads(text)
    cut = text[: len(text) // 2]
    try:
        expected = json.loads(cut)
    except json.JSONDecodeError:
        with pytest.raises(TaxonomyError):
            parse_iterative(cut, "cut.json")
    else:
        assert parse_iterative(cut) == expected


# ---------------------------------------------------------------------------- save -> load
def same(a: ts.Taxonomy, b: ts.Taxonomy) -> None:
    assert a == b and a.target_names == b.target_names and a.nodes == b.nodes
    np.testing.assert_array_equal(a.encode(list(a.target_names)), b.encode(list(a.target_names)))
    np.testing.assert_array_equal(a.compiled.weight, b.compiled.weight)


@fuzz
@given(named_taxonomies(weighted=True), st.sampled_from([".csv", ".tsv", ".json", ".txt", ".CSV", ".Json"]))
def test_save_then_load_is_identity(tax, suffix):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"t{suffix}"
        try:
            tax.save(path)
        except TaxonomyError:
            assert not path.exists() and not list(Path(d).iterdir())  # refused before touching anything
            return
        same(T.load(path), tax)
        assert [p.name for p in Path(d).iterdir()] == [path.name]


@fuzz
@given(rank_taxonomies(), st.sampled_from([".csv", ".tsv"]))
def test_rank_tables_save_then_load_is_identity(tax, suffix):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"t{suffix}"
        tax.save(path, format="ranks")
        back = T.load(path, format="ranks")
        same(back, tax)
        assert back.ranks == tax.ranks


# ---------------------------------------------------------------------------- the Python constructors
ITEM = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.floats(), st.sampled_from(["a", "b", "", " "]),
                 st.lists(st.sampled_from(["a", "b"]), max_size=2), st.tuples(st.sampled_from(["a", "b"])))


@fuzz
@given(st.lists(st.one_of(st.tuples(ITEM, ITEM), st.tuples(ITEM, ITEM, ITEM), ITEM), max_size=6))
def test_from_edges_never_crashes(edges):
    try:
        tax = T.from_edges(edges)
    except TaxonomyError:
        return
    check_invariants(tax)


@fuzz
@given(st.lists(st.text(alphabet="ab/ #\t", max_size=8), max_size=6), st.sampled_from(["/", " ", "ab"]))
def test_from_paths_never_crashes(lines, sep):
    try:
        tax = T.from_paths(lines, sep=sep)
    except TaxonomyError:
        return
    check_invariants(tax)


@fuzz
@given(st.lists(st.lists(st.one_of(st.sampled_from(["a", "b", "", " ", None]), st.floats(), st.integers()), max_size=4), max_size=6))
def test_from_rank_table_never_crashes(rows):
    try:
        tax = T.from_rank_table(rows)
    except TaxonomyError:
        return
    check_invariants(tax)
