"""WordNet data discovery: the search order, the generated nltk corpus folder, the missing-data error."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import nltk.data
import pytest

from taxosmooth.errors import WordNetDataError
from taxosmooth.wordnet import data as wndata

SYSTEM = next((d for d in wndata.SYSTEM_WORDNET_DIRS if not wndata.missing_files(d)), None)


@pytest.fixture
def no_wordnet(monkeypatch, tmp_path):
    """An environment without any WordNet: empty nltk path, no env var, no system folder, fresh cache."""
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk_data")])
    monkeypatch.delenv(wndata.ENV_VAR, raising=False)
    monkeypatch.setattr(wndata, "SYSTEM_WORDNET_DIRS", (str(tmp_path / "no_such_wordnet"),))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def system_wordnet():
    """These tests need the Debian/Ubuntu WordNet folder itself: skip without it, fail under
    TAXOSMOOTH_REQUIRE_WORDNET=1 (CI installs wordnet-base and wordnet-sense-index)."""
    if SYSTEM is None:
        msg = "no system WordNet folder (apt-get install wordnet-base wordnet-sense-index)"
        if os.environ.get("TAXOSMOOTH_REQUIRE_WORDNET") == "1":
            pytest.fail(f"TAXOSMOOTH_REQUIRE_WORDNET=1 but {msg}", pytrace=False)
        pytest.skip(msg)


def test_missing_data_is_one_clear_error(no_wordnet):
    with pytest.raises(WordNetDataError) as info:
        wndata.find_wordnet_data()
    message = str(info.value)
    assert "nltk.download('wordnet')" in message  # way 1
    assert "wordnet-base" in message and "wordnet-sense-index" in message  # way 2
    assert wndata.ENV_VAR in message
    with pytest.raises(WordNetDataError):
        wndata.load_wordnet(refresh=True)
    assert not (no_wordnet / "cache" / "taxosmooth" / "nltk_data" / "corpora" / "wordnet").exists()


def test_env_var_naming_a_wrong_folder_is_an_error(no_wordnet, monkeypatch):
    empty = no_wordnet / "empty"
    empty.mkdir()
    monkeypatch.setenv(wndata.ENV_VAR, str(empty))
    with pytest.raises(WordNetDataError, match=wndata.ENV_VAR + ".*lacks data.noun"):
        wndata.find_wordnet_data()
    monkeypatch.setenv(wndata.ENV_VAR, str(no_wordnet / "nowhere"))
    with pytest.raises(WordNetDataError, match="is not a folder"):
        wndata.find_wordnet_data()


def test_lexnames_is_wordnets_list_of_45_files():
    lines = wndata.lexnames_text().splitlines()
    assert len(lines) == 45
    fields = [line.split("\t") for line in lines]
    assert [int(f[0]) for f in fields] == list(range(45))
    category = {"noun": "1", "verb": "2", "adj": "3", "adv": "4"}
    assert all(category[name.split(".")[0]] == cat for _, name, cat in fields)
    # a few entries of lexnames(5WN)
    assert fields[3][1] == "noun.Tops" and fields[5][1] == "noun.animal"
    assert fields[29][1] == "verb.body" and fields[43][1] == "verb.weather" and fields[44][1] == "adj.ppl"


def test_lexnames_agree_with_every_synset_of_the_data_files(wordnet):
    # the lex_filenum of every synset must name a lexicographer file of its own part of speech
    names = [line.split("\t")[1] for line in wndata.lexnames_text().splitlines()]
    prefix = {"noun": "noun.", "verb": "verb.", "adj": "adj.", "adv": "adv."}
    for pos in ("noun", "verb", "adj", "adv"):
        with wordnet.abspath(f"data.{pos}").open() as fh:
            text = fh.read().decode("utf-8")
        numbers = {int(line.split(" ", 2)[1]) for line in text.splitlines() if line and not line.startswith(" ")}
        assert numbers and all(names[k].startswith(prefix[pos]) for k in numbers), pos
    assert wordnet.synset("dog.n.01").lexname() == "noun.animal"
    assert wordnet.synset("entity.n.01").lexname() == "noun.Tops"
    assert wordnet.synset("run.v.01").lexname() == "verb.motion"


@pytest.mark.usefixtures("system_wordnet")
def test_dictionary_folder_becomes_an_nltk_corpus_in_the_cache(no_wordnet, monkeypatch):
    monkeypatch.setenv(wndata.ENV_VAR, SYSTEM)
    source = wndata.find_wordnet_data()
    assert source.kind == "env" and source.path == os.path.abspath(SYSTEM)
    corpus = wndata.prepare_corpus(source)
    assert corpus == no_wordnet / "cache" / "taxosmooth" / "nltk_data" / "corpora" / "wordnet"
    assert not wndata.missing_files(corpus)
    assert (corpus / "lexnames").read_text() == wndata.lexnames_text()
    assert (corpus / "data.noun").read_bytes() == (Path(SYSTEM) / "data.noun").read_bytes()
    assert "TAXOSMOOTH_WORDNET_DIR" in source.describe()
    # a second call reuses it; nothing else is left in the cache folder
    before = (corpus / "data.noun").stat().st_mtime_ns
    assert wndata.prepare_corpus(source) == corpus
    assert (corpus / "data.noun").stat().st_mtime_ns == before
    assert sorted(p.name for p in corpus.parent.iterdir()) == ["wordnet"]
    # without the variable, the system folder is found and shares the same cache
    monkeypatch.delenv(wndata.ENV_VAR)
    monkeypatch.setattr(wndata, "SYSTEM_WORDNET_DIRS", (SYSTEM,))
    system = wndata.find_wordnet_data()
    assert system.kind == "system" and system.corpus == str(corpus)


def _build(cache, source, barrier, results):
    os.environ["XDG_CACHE_HOME"] = cache
    corpus = str(Path(cache) / "taxosmooth" / "nltk_data" / "corpora" / "wordnet")
    barrier.wait(timeout=60)  # start together
    results.put(str(wndata.prepare_corpus(wndata.WordNetSource("system", source, corpus))))


@pytest.mark.usefixtures("system_wordnet")
def test_concurrent_builds_leave_one_valid_cache(tmp_path):
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    workers = [ctx.Process(target=_build, args=(str(tmp_path / "cache"), SYSTEM, barrier, results)) for _ in range(4)]
    for w in workers:
        w.start()
    paths = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    corpus = Path(paths[0])
    assert set(paths) == {str(corpus)}
    assert not wndata.missing_files(corpus) and (corpus / "lexnames").read_text() == wndata.lexnames_text()
    assert sorted(p.name for p in corpus.parent.iterdir()) == ["wordnet"]  # no temporary folders left


@pytest.mark.usefixtures("system_wordnet")
def test_stale_cache_from_another_source_is_rebuilt(no_wordnet):
    corpus = no_wordnet / "cache" / "taxosmooth" / "nltk_data" / "corpora" / "wordnet"
    corpus.mkdir(parents=True)
    (corpus / "lexnames").write_text("garbage")
    source = wndata.WordNetSource("system", SYSTEM, str(corpus))
    assert wndata.prepare_corpus(source) == corpus
    assert (corpus / "lexnames").read_text() == wndata.lexnames_text()
    assert sorted(p.name for p in corpus.parent.iterdir()) == ["wordnet"]


def test_source_is_reported(wordnet):
    source = wndata.wordnet_source()
    assert source.kind in ("nltk", "env", "system")
    assert source.describe().startswith("WordNet data: ")
    assert wordnet.synset("horse.n.01").lexname() == "noun.animal"
