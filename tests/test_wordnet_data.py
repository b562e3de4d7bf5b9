"""WordNet data discovery: the search order, the generated nltk corpus folder, the missing-data error."""

from __future__ import annotations

import multiprocessing
import os
import warnings
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


# ---------------------------------------------------------------------------- damaged caches (issue 11 item 18)
@pytest.fixture
def fake_source(tmp_path):
    """A dictionary folder with every required file (tiny contents): building a cache does not parse them."""
    src = tmp_path / "dict"
    src.mkdir()
    for k, name in enumerate(wndata.REQUIRED_FILES + ("index.sense",)):
        (src / name).write_text(f"  1 {name}\n" + "x" * (100 + k) + "\n")
    return src


def _cache(no_wordnet, fake_source):
    corpus = no_wordnet / "cache" / "taxosmooth" / "nltk_data" / "corpora" / "wordnet"
    return corpus, wndata.WordNetSource("system", str(fake_source), str(corpus))


def _is_faithful_copy(corpus, src) -> bool:
    return all((corpus / n).read_bytes() == (src / n).read_bytes() for n in wndata.REQUIRED_FILES) and (
        corpus / "lexnames").read_text() == wndata.lexnames_text()


@pytest.mark.parametrize(
    "damage",
    [
        lambda c: (c / "index.noun").write_bytes((c / "index.noun").read_bytes()[:20]),  # truncated
        lambda c: (c / "lexnames").write_text("garbage\n"),
        lambda c: (c / "lexnames").write_text(wndata.lexnames_text()[:-3] + "9\n"),  # same size, wrong
        lambda c: (c / "data.noun").write_bytes(b""),  # emptied
        lambda c: (c / "verb.exc").unlink(),
        lambda c: (c / "TAXOSMOOTH_MANIFEST.json").write_text("{not json"),
    ],
    ids=["truncated index", "garbage lexnames", "wrong lexnames", "empty data file", "missing file", "garbled manifest"],
)
def test_a_damaged_cache_is_detected_and_rebuilt(no_wordnet, fake_source, damage):
    corpus, source = _cache(no_wordnet, fake_source)
    assert wndata.prepare_corpus(source) == corpus and _is_faithful_copy(corpus, fake_source)
    damage(corpus)
    assert wndata.prepare_corpus(source) == corpus
    assert _is_faithful_copy(corpus, fake_source)
    assert sorted(p.name for p in corpus.parent.iterdir()) == ["wordnet"]


def test_a_changed_source_rebuilds_the_cache(no_wordnet, fake_source):
    corpus, source = _cache(no_wordnet, fake_source)
    wndata.prepare_corpus(source)
    (fake_source / "data.verb").write_text("a newer file\n")
    wndata.prepare_corpus(source)
    assert (corpus / "data.verb").read_text() == "a newer file\n"


def _build_slowly(cache, source, started):
    """A build that stops (forever) in the middle of copying: the test kills it there."""
    os.environ["XDG_CACHE_HOME"] = cache
    real = wndata._populate

    def populate(tmp, src):
        real(tmp, src)
        started.set()
        import time

        time.sleep(600)

    wndata._populate = populate
    corpus = str(Path(cache) / "taxosmooth" / "nltk_data" / "corpora" / "wordnet")
    wndata.prepare_corpus(wndata.WordNetSource("system", source, corpus))


def test_a_killed_build_leaves_nothing_after_the_next_build(no_wordnet, fake_source):
    import signal

    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    started = ctx.Event()
    cache = str(no_wordnet / "cache")
    child = ctx.Process(target=_build_slowly, args=(cache, str(fake_source), started))
    child.start()
    assert started.wait(timeout=120)
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=60)
    corpus, source = _cache(no_wordnet, fake_source)
    left = [p.name for p in corpus.parent.iterdir()]
    assert len(left) == 1 and left[0].startswith(".wordnet-tmp-")  # what the kill left behind
    # one from an earlier version (no process id in its name), a day old
    legacy = corpus.parent / ".wordnet-tmp-k3j2h1g0"
    legacy.mkdir()
    old = os.stat(legacy).st_mtime - 2 * wndata.STALE_AFTER_S
    os.utime(legacy, (old, old))
    assert wndata.prepare_corpus(source) == corpus and _is_faithful_copy(corpus, fake_source)
    assert sorted(p.name for p in corpus.parent.iterdir()) == ["wordnet"]


def test_an_interrupted_build_removes_its_temporary_folder(no_wordnet, fake_source, monkeypatch):
    corpus, source = _cache(no_wordnet, fake_source)

    def interrupted(tmp, src):
        (tmp / "data.noun").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(wndata, "_populate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        wndata.prepare_corpus(source)
    assert list(corpus.parent.iterdir()) == []


@pytest.mark.usefixtures("system_wordnet")
def test_damaged_data_is_blamed_not_the_synset(tmp_path, monkeypatch):
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    from taxosmooth.errors import WordNetLookupError
    from taxosmooth.wordnet.synsets import resolve_synset

    corpus = tmp_path / "nltk_data" / "corpora" / "wordnet"
    corpus.mkdir(parents=True)
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk_data")])  # nltk reads only from its path
    for name in wndata.REQUIRED_FILES + wndata.OPTIONAL_FILES:
        if (Path(SYSTEM) / name).is_file():
            (corpus / name).write_bytes((Path(SYSTEM) / name).read_bytes())
    (corpus / "lexnames").write_text(wndata.lexnames_text())
    # garble horse's line in data.noun, keeping its offset and the file's size
    data = bytearray((corpus / "data.noun").read_bytes())
    start = data.index(b"\n02374451 ") + 1
    end = data.index(b"\n", start)
    data[start + 9 : end] = b"?" * (end - start - 9)
    (corpus / "data.noun").write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available"
        reader = WordNetCorpusReader(str(corpus), None)
    for item in ("horse.n.01", "n02374451", ("n", 2374451)):
        with pytest.raises(WordNetDataError, match=r"the WordNet data is damaged: nltk could not read .*data\.noun"):
            resolve_synset(item, wordnet=reader)
    # a synset that is really unknown is still the user's mistake
    with pytest.raises(WordNetLookupError, match="no such WordNet synset"):
        resolve_synset("horse.n.99", wordnet=reader)
