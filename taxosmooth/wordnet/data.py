"""Finding WordNet data, offline, and opening it with nltk's reader.

Nothing is ever downloaded. The data is looked for in this order, and the first
source found is used (:func:`wordnet_source` says which):

1. **nltk's own data**: a ``corpora/wordnet`` folder (or ``wordnet.zip``) that
   ``nltk.data.find`` locates on ``nltk.data.path`` (what
   ``nltk.download("wordnet")`` installs).
2. **A WordNet 3.0 dictionary folder** named by the environment variable
   ``TAXOSMOOTH_WORDNET_DIR`` (the folder holding ``data.noun``,
   ``index.noun``, ...). If the variable is set, the folder must be valid: a
   wrong path is an error, not a silent fall-through.
3. **The system WordNet**: ``/usr/share/wordnet``, installed by the
   Debian/Ubuntu packages ``wordnet-base`` and ``wordnet-sense-index``.

A dictionary folder (2 or 3) is not directly readable by nltk: nltk wants a
``lexnames`` file, which the Debian packages do not ship (it is WordNet's fixed
list of 45 lexicographer files, documented in ``lexnames(5WN)``; it is
generated here), and nltk only reads corpora from folders on
``nltk.data.path``. So a corpus folder is assembled once in the user cache,
``$XDG_CACHE_HOME/taxosmooth/nltk_data/corpora/wordnet`` (``~/.cache`` when
``XDG_CACHE_HOME`` is unset), holding copies of the dictionary files (about
35 MB; nltk refuses to read through links) plus the generated ``lexnames``; its ``nltk_data`` parent is appended to
``nltk.data.path`` so that ``nltk.corpus.wordnet`` works too. The folder is
built in a temporary folder and renamed into place, so that processes racing to
build it never see (or leave) a half-built one.

If no source is found, :class:`~taxosmooth.errors.WordNetDataError` says how to
get WordNet: ``nltk.download("wordnet")`` on a machine with internet, or
``apt-get install wordnet-base wordnet-sense-index``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from taxosmooth.errors import WordNetDataError

#: environment variable naming a WordNet 3.0 dictionary folder
ENV_VAR = "TAXOSMOOTH_WORDNET_DIR"
#: dictionary folders installed by system packages, tried in order
SYSTEM_WORDNET_DIRS: tuple[str, ...] = ("/usr/share/wordnet",)

_POS_FILES = ("noun", "verb", "adj", "adv")
#: files without which nltk's reader cannot open a dictionary folder
REQUIRED_FILES: tuple[str, ...] = tuple(
    [f"data.{p}" for p in _POS_FILES] + [f"index.{p}" for p in _POS_FILES] + [f"{p}.exc" for p in _POS_FILES]
)
#: files linked when present (sense keys, tag counts)
OPTIONAL_FILES: tuple[str, ...] = ("index.sense", "cntlist.rev", "cntlist", "LICENSE", "README", "citation.bib")

#: WordNet's lexicographer files: (number, name, syntactic category), from lexnames(5WN)
LEXNAMES: tuple[tuple[int, str, int], ...] = tuple(
    (i, name, cat)
    for i, (name, cat) in enumerate(
        [("adj.all", 3), ("adj.pert", 3), ("adv.all", 4)]
        + [
            (f"noun.{n}", 1)
            for n in (
                "Tops act animal artifact attribute body cognition communication event feeling food group "
                "location motive object person phenomenon plant possession process quantity relation shape "
                "state substance time"
            ).split()
        ]
        + [
            (f"verb.{n}", 2)
            for n in (
                "body change cognition communication competition consumption contact creation emotion motion "
                "perception possession social stative weather"
            ).split()
        ]
        + [("adj.ppl", 3)]
    )
)

_SOURCE_MARKER = "TAXOSMOOTH_SOURCE"
_HOW_TO_INSTALL = (
    "Get WordNet 3.0 in one of two ways: (a) with nltk, on a machine with internet: "
    "python -c \"import nltk; nltk.download('wordnet')\" (copy the nltk_data folder to offline machines); "
    "(b) from the system packages: sudo apt-get install wordnet-base wordnet-sense-index "
    f"(Debian/Ubuntu; files in /usr/share/wordnet), or point {ENV_VAR} at any WordNet 3.0 'dict' folder."
)


@dataclass(frozen=True)
class WordNetSource:
    """Where the WordNet data came from.

    Attributes
    ----------
    kind : {"nltk", "env", "system"}
        nltk's own data, the folder named by ``TAXOSMOOTH_WORDNET_DIR``, or a
        system folder.
    path : str
        The folder (or zip file) found.
    corpus : str
        The folder nltk's reader opens (``path`` for nltk data, the cache
        folder otherwise).
    """

    kind: str
    path: str
    corpus: str

    def describe(self) -> str:
        if self.kind == "nltk":
            return f"WordNet data: nltk data at {self.path}"
        how = f"{ENV_VAR}={self.path}" if self.kind == "env" else f"system WordNet at {self.path}"
        return f"WordNet data: {how} (read through the nltk corpus folder {self.corpus})"


def lexnames_text() -> str:
    """The ``lexnames`` file: ``NN<TAB>name<TAB>category`` for WordNet's 45 lexicographer files."""
    return "".join(f"{i:02d}\t{name}\t{cat}\n" for i, name, cat in LEXNAMES)


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/taxosmooth`` (``~/.cache/taxosmooth`` when the variable is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "taxosmooth"


def _cache_nltk_root() -> Path:
    return cache_dir() / "nltk_data"


def missing_files(folder: str | os.PathLike) -> list[str]:
    """The :data:`REQUIRED_FILES` that ``folder`` lacks (all of them if it is not a folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return list(REQUIRED_FILES)
    return [f for f in REQUIRED_FILES if not (folder / f).is_file()]


def _find_nltk_data() -> str | None:
    import nltk.data

    own = os.path.realpath(_cache_nltk_root())
    for resource in ("corpora/wordnet.zip/wordnet/", "corpora/wordnet"):
        try:
            found = nltk.data.find(resource)
        except LookupError:
            continue
        path = getattr(found, "path", None) or str(found)
        where = os.path.realpath(str(path))
        if where == own or where.startswith(own + os.sep):
            return None  # our own cache, appended to nltk.data.path by an earlier call
        return str(path)
    return None


def find_wordnet_data() -> WordNetSource:
    """Locate WordNet data (see the module docstring for the order); build nothing yet.

    Returns a :class:`WordNetSource` whose ``corpus`` is the folder nltk will
    read (for a dictionary folder: the cache folder, maybe not built yet).

    Raises
    ------
    WordNetDataError
        If no source exists, or ``TAXOSMOOTH_WORDNET_DIR`` names a folder that
        is not a WordNet dictionary.
    """
    found = _find_nltk_data()
    if found is not None:
        return WordNetSource("nltk", found, found)
    corpus = str(_cache_nltk_root() / "corpora" / "wordnet")
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        lacking = missing_files(env)
        if lacking:
            what = "is not a folder" if not Path(env).is_dir() else f"lacks {', '.join(lacking[:4])}" + (
                ", ..." if len(lacking) > 4 else ""
            )
            raise WordNetDataError(
                f"{ENV_VAR}={env} is not a WordNet dictionary folder: it {what}. "
                f"Point it at the folder holding data.noun, index.noun, ... or unset it. {_HOW_TO_INSTALL}"
            )
        return WordNetSource("env", os.path.abspath(env), corpus)
    for folder in SYSTEM_WORDNET_DIRS:
        if not missing_files(folder):
            return WordNetSource("system", folder, corpus)
    import nltk.data

    searched = [str(p) for p in nltk.data.path] + list(SYSTEM_WORDNET_DIRS)
    raise WordNetDataError(
        "WordNet data not found: no 'corpora/wordnet' on nltk.data.path, "
        f"{ENV_VAR} is not set, and no system WordNet folder exists (searched: {', '.join(searched)}). "
        + _HOW_TO_INSTALL
    )


def _cache_is_valid(corpus: Path, source: str) -> bool:
    marker = corpus / _SOURCE_MARKER
    try:
        if marker.read_text(encoding="utf-8").strip() != os.path.realpath(source):
            return False
    except OSError:
        return False
    return not missing_files(corpus) and (corpus / "lexnames").is_file()


def _populate(tmp: Path, source: str) -> None:
    src = Path(source)
    for name in REQUIRED_FILES + OPTIONAL_FILES:
        target = src / name
        if not target.is_file():
            continue
        # a copy: recent nltk refuses to read through symbolic or hard links
        shutil.copyfile(target, tmp / name)
    if (src / "lexnames").is_file():
        shutil.copyfile(src / "lexnames", tmp / "lexnames")
    else:
        (tmp / "lexnames").write_text(lexnames_text(), encoding="utf-8")
    (tmp / _SOURCE_MARKER).write_text(os.path.realpath(source) + "\n", encoding="utf-8")
    # nltk also refuses files that other accounts could write
    for entry in tmp.iterdir():
        entry.chmod(0o644)


def prepare_corpus(source: WordNetSource) -> Path:
    """Build (once) the nltk-readable corpus folder for a dictionary-folder source.

    Safe when several processes do it at once: each builds a private
    temporary folder and renames it into place; the losers of the race drop
    theirs and use the winner's.
    """
    corpus = Path(source.corpus)
    if source.kind == "nltk" or _cache_is_valid(corpus, source.path):
        return corpus
    try:
        corpus.parent.mkdir(parents=True, exist_ok=True)
        for folder in (cache_dir(), corpus.parent.parent, corpus.parent):
            if folder.stat().st_mode & 0o022:  # nltk distrusts folders others can write
                folder.chmod(0o755)
        for _attempt in range(5):
            tmp = Path(tempfile.mkdtemp(prefix=".wordnet-tmp-", dir=corpus.parent))
            try:
                _populate(tmp, source.path)
                try:
                    os.rename(tmp, corpus)
                    return corpus
                except OSError:
                    # the folder exists: built by another process, or stale
                    pass
                if _cache_is_valid(corpus, source.path):
                    return corpus
                # stale (another source, broken links): move it aside atomically, then retry
                stale = Path(tempfile.mkdtemp(prefix=".wordnet-stale-", dir=corpus.parent))
                try:
                    os.rename(corpus, stale / "wordnet")
                except OSError:
                    pass
                shutil.rmtree(stale, ignore_errors=True)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        raise WordNetDataError(
            f"cannot build the nltk WordNet folder {corpus} from {source.path}: {exc}. "
            "Set XDG_CACHE_HOME to a writable folder."
        ) from None
    if _cache_is_valid(corpus, source.path):
        return corpus
    raise WordNetDataError(f"cannot build the nltk WordNet folder {corpus} from {source.path} (concurrent rebuilds?)")


_lock = threading.Lock()
_loaded: dict = {}


def load_wordnet(*, refresh: bool = False):
    """nltk's WordNet reader, on the first data source found (module docstring).

    The reader is opened once per process and cached; ``refresh=True`` looks
    for the data again (after an environment change).

    Returns
    -------
    nltk.corpus.reader.wordnet.WordNetCorpusReader

    Raises
    ------
    WordNetDataError
        When no WordNet data exists; the message says how to install it.
    """
    with _lock:
        if not refresh and "reader" in _loaded:
            return _loaded["reader"]
        source = find_wordnet_data()
        import nltk.data
        from nltk.corpus.reader.wordnet import WordNetCorpusReader

        if source.kind == "nltk":
            import nltk.corpus

            reader = nltk.corpus.wordnet
            reader.ensure_loaded()
        else:
            corpus = prepare_corpus(source)
            root = str(corpus.parent.parent)
            if root not in nltk.data.path:
                nltk.data.path.append(root)  # so that nltk.corpus.wordnet works for the user too
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "multilingual functions are not available"
                reader = WordNetCorpusReader(str(corpus), None)
        _loaded["reader"] = reader
        _loaded["source"] = source
        return reader


def wordnet_source() -> WordNetSource:
    """Where the data of :func:`load_wordnet` came from (loads it if needed)."""
    load_wordnet()
    return _loaded["source"]
