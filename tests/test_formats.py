"""The registry of taxonomy file formats: ``Taxonomy.load``, ``Taxonomy.save`` and the command line use it alone.

The proof that there is one registry: a format added to it (a toy format written here) is read by
``Taxonomy.load`` (by its extension and by its name), written by ``save``, named in the error for an
unknown extension, and offered and read by the command line — with no other change.
"""

from __future__ import annotations

import argparse

import pytest

import taxosmooth as ts
from _trees import seed_taxonomy
from taxosmooth.cli import build_parser, main
from taxosmooth.errors import TaxonomyError, TaxonomyFileError
from taxosmooth.taxonomy import formats
from taxosmooth.taxonomy.formats import FileFormat, ParsedFile

T = ts.Taxonomy


def _read_arrows(path):
    """The toy format: one path per line, written ``root > ... > class``."""
    from taxosmooth.taxonomy._build import Locations
    from taxosmooth.taxonomy.io import graph_from_paths

    locations = Locations()
    graph = graph_from_paths(path.read_text(encoding="utf-8").splitlines(), sep=">", source=str(path), locations=locations)
    return ParsedFile(graph, locations)


def _render_arrows(tax, path):
    return "".join(" > ".join(reversed(tax.ancestors(c, include_self=True))) + "\n" for c in tax.classes)


ARROWS = FileFormat("arrows", (".arrows",), "one path per line, names separated by '>'", _read_arrows, _render_arrows)


@pytest.fixture
def arrows(monkeypatch):
    monkeypatch.setitem(formats.FORMATS, "arrows", ARROWS)
    return ARROWS


def _format_choices(parser: argparse.ArgumentParser, command: str) -> tuple | None:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    action = next((a for a in sub._actions if "--format" in a.option_strings), None)
    return None if action is None else tuple(action.choices)


def test_the_formats_and_their_extensions():
    assert formats.format_names() == ("auto", "edges", "json", "paths", "ranks")
    assert {s: f.name for s, f in formats.auto_suffixes().items()} == {
        ".csv": "edges", ".tsv": "edges", ".json": "json", ".txt": "paths"}
    assert formats.FORMATS["ranks"].keeps_ranks and not formats.FORMATS["edges"].keeps_ranks
    for name in ("T.CSV", "t.Tsv", "x.JSON", "p.txt"):
        assert formats.resolve(name).name == {"csv": "edges", "tsv": "edges", "json": "json", "txt": "paths"}[
            name.rsplit(".", 1)[1].lower()]
    assert formats.resolve("t.txt", "ranks").name == "ranks"


@pytest.mark.parametrize("bad", ["yaml", "Edges", "", None, 3])
def test_an_unknown_format_name_is_refused_with_the_names(bad, tmp_path):
    with pytest.raises(ValueError, match=r"format must be one of auto, edges, json, paths, ranks, got"):
        T.load(tmp_path / "t.csv", format=bad)
    with pytest.raises(ValueError, match=r"format must be one of auto, edges, json, paths, ranks, got"):
        seed_taxonomy().save(tmp_path / "t.csv", format=bad)
    assert not (tmp_path / "t.csv").exists()


def test_the_unknown_extension_error_lists_the_registry(tmp_path):
    with pytest.raises(TaxonomyFileError, match=r"t\.yaml: unknown taxonomy file extension '\.yaml'; use one of "
                                                r"\.csv, \.tsv, \.json, \.txt \(or name the format: "
                                                r"format='edges', 'json', 'paths' or 'ranks'\)"):
        T.load(tmp_path / "t.yaml")


def test_every_command_reading_a_taxonomy_offers_the_registry_formats():
    parser = build_parser()
    for command in ("info", "targets", "costs", "plot", "evaluate"):
        assert _format_choices(parser, command) == formats.format_names(), command


def test_an_extension_claimed_by_two_formats_is_a_registry_bug(monkeypatch):
    monkeypatch.setitem(formats.FORMATS, "other", FileFormat("other", (".txt",), "x", _read_arrows, _render_arrows))
    with pytest.raises(RuntimeError, match=r"extension '\.txt' is claimed by formats 'paths' and 'other'"):
        formats.auto_suffixes()


def test_a_registered_format_is_read_and_written_by_load_and_save(arrows, tmp_path):
    tax = seed_taxonomy()
    path = tmp_path / "seed.arrows"
    tax.save(path)
    assert path.read_text() == ("animal > mammal > horse\nanimal > mammal > zebra\n"
                                "animal > sea > whale\nanimal > sea > shark\n")
    assert T.load(path) == tax
    assert T.load(path, format="arrows") == tax
    # by name, from any extension
    tax.save(tmp_path / "seed.data", format="arrows")
    assert (tmp_path / "seed.data").read_text() == path.read_text()
    assert T.load(tmp_path / "seed.data", format="arrows") == tax
    with pytest.raises(TaxonomyFileError, match=r"use one of \.csv, \.tsv, \.json, \.txt, \.arrows .*'ranks' or 'arrows'"):
        T.load(tmp_path / "seed.data")


def test_a_registered_format_is_offered_and_read_by_the_command_line(arrows, tmp_path, capsys):
    tax = seed_taxonomy()
    tax.save(tmp_path / "seed.arrows")
    tax.save(tmp_path / "seed.data", format="arrows")
    assert _format_choices(build_parser(), "info") == ("auto", "edges", "json", "paths", "ranks", "arrows")
    capsys.readouterr()
    assert main(["info", str(tmp_path / "seed.arrows"), "--list-classes"]) == 0
    assert capsys.readouterr().out.split() == list(tax.classes)
    assert main(["info", str(tmp_path / "seed.data"), "--format", "arrows", "--list-classes"]) == 0
    assert capsys.readouterr().out.split() == list(tax.classes)


def test_a_format_that_keeps_ranks_refuses_contract_unary(tmp_path):
    (tmp_path / "t.csv").write_text("kingdom,genus\nA,G\nA,H\n")
    with pytest.raises(ValueError, match="contract_unary=True cannot be used with a rank table"):
        T.load(tmp_path / "t.csv", format="ranks", contract_unary=True)
    assert T.load(tmp_path / "t.csv", format="ranks", contract_unary=False).ranks == ("kingdom", "genus")


def test_each_writer_refuses_what_its_reader_would_not_give_back(tmp_path):
    tax = T.from_edges([(1, 2), (1, 3)])
    for fmt in ("edges", "paths"):
        with pytest.raises(TaxonomyError, match=r"cannot write node 1 \(int\) to .*: node names must be strings"):
            formats.render(tax, tmp_path / "t.x", fmt)
    tax.save(tmp_path / "t.json")  # JSON holds integer names
    assert T.load(tmp_path / "t.json") == tax
    with pytest.raises(TaxonomyError, match="not built from a rank table"):
        formats.render(tax, tmp_path / "t.csv", "ranks")
