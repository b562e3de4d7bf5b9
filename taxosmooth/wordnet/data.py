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

The cache is checked each time it is opened: a manifest (``TAXOSMOOTH_MANIFEST.json``)
records the source folder and the size and modification time of every file
copied; a cache whose files are missing, truncated, emptied or of another
size, whose ``lexnames`` differs from the expected one, or whose source has
changed since, is rebuilt. Temporary folders of builds that were killed
(their process is gone, or they are a day old) are removed by the next build.

If no source is found, :class:`~taxosmooth.errors.WordNetDataError` says how to
get WordNet: ``nltk.download("wordnet")`` on a machine with internet, or
``apt-get install wordnet-base wordnet-sense-index``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from taxosmooth.errors import WordNetDataError

if TYPE_CHECKING:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

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

_SOURCE_MARKER = "TAXOSMOOTH_SOURCE"  # the source folder, one line (what earlier versions check)
_MANIFEST = "TAXOSMOOTH_MANIFEST.json"  # the source and the size and mtime of every file copied
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


def _expected_lexnames(source: str) -> bytes:
    src = Path(source) / "lexnames"
    return src.read_bytes() if src.is_file() else lexnames_text().encode("utf-8")


def _cache_is_valid(corpus: Path, source: str) -> bool:
    """Whether ``corpus`` is a complete, undamaged copy of the dictionary folder ``source`` as it is now."""
    try:
        if (corpus / _SOURCE_MARKER).read_text(encoding="utf-8").strip() != os.path.realpath(source):
            return False
        manifest = json.loads((corpus / _MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("source") != os.path.realpath(source):
            return False
        files = manifest.get("files")
        if not isinstance(files, dict) or not set(REQUIRED_FILES) <= set(files):
            return False
        src = Path(source)
        for name, (size, mtime_ns) in files.items():
            copied = (corpus / name).stat()
            original = (src / name).stat()
            if copied.st_size != size or original.st_size != size or original.st_mtime_ns != mtime_ns:
                return False  # truncated, emptied, replaced, or the source changed since
        return (corpus / "lexnames").read_bytes() == _expected_lexnames(source)
    except (OSError, ValueError, TypeError):
        return False  # unreadable or missing files, an old or garbled manifest


def _populate(tmp: Path, source: str) -> None:
    src = Path(source)
    files = {}
    for name in REQUIRED_FILES + OPTIONAL_FILES:
        target = src / name
        if not target.is_file():
            continue
        # a copy: recent nltk refuses to read through symbolic or hard links
        before = target.stat()
        shutil.copyfile(target, tmp / name)
        files[name] = [before.st_size, before.st_mtime_ns]
    (tmp / "lexnames").write_bytes(_expected_lexnames(source))
    manifest = {"source": os.path.realpath(source), "files": files}
    (tmp / _SOURCE_MARKER).write_text(os.path.realpath(source) + "\n", encoding="utf-8")
    (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    # nltk also refuses files that other accounts could write
    for entry in tmp.iterdir():
        entry.chmod(0o644)


#: a build's temporary folders carry the process that made them: ``.wordnet-tmp-<pid>@<host>-<random>``
_TEMPORARY = re.compile(r"^\.wordnet-(?:tmp|stale)-(?:(\d+)@(.*)-)?[^-]*$")  # earlier versions: no pid@host
#: a temporary folder older than this is stale whoever made it (another machine sharing the cache)
STALE_AFTER_S = 24 * 3600


def _temporary_prefix(kind: str) -> str:
    return f".wordnet-{kind}-{os.getpid()}@{socket.gethostname()}-"


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or a platform without signals: assume alive
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove what killed builds left in ``folder``: temporary folders whose process is gone, or a day old."""
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    host = socket.gethostname()
    for entry in entries:
        m = _TEMPORARY.match(entry.name)
        if m is None or not entry.is_dir():
            continue
        try:
            age = time.time() - entry.stat().st_mtime
        except OSError:
            continue
        pid = int(m.group(1)) if m.group(1) else None
        dead = pid is not None and m.group(2) == host and pid != os.getpid() and not _process_is_alive(pid)
        if dead or age > STALE_AFTER_S:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def prepare_corpus(source: WordNetSource) -> Path:
    """Build (once) the nltk-readable corpus folder for a dictionary-folder source.

    A cache that fails the checks of the module docstring is rebuilt. Safe
    when several processes do it at once: each builds a private temporary
    folder and renames it into place; the losers of the race drop theirs and
    use the winner's.
    """
    corpus = Path(source.corpus)
    if source.kind == "nltk" or _cache_is_valid(corpus, source.path):
        return corpus
    try:
        corpus.parent.mkdir(parents=True, exist_ok=True)
        for folder in (cache_dir(), corpus.parent.parent, corpus.parent):
            if folder.stat().st_mode & 0o022:  # nltk distrusts folders others can write
                folder.chmod(0o755)
        remove_stale_temporaries(corpus.parent)
        for _attempt in range(5):
            tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix("tmp"), dir=corpus.parent))
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
                # stale (another source, damaged files): move it aside atomically, then retry
                stale = Path(tempfile.mkdtemp(prefix=_temporary_prefix("stale"), dir=corpus.parent))
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


def damaged_data_error(reader: WordNetCorpusReader, filename: str, exc: BaseException) -> WordNetDataError:
    """The error for a WordNet file that nltk could not parse: the data is blamed, not the user's synset."""
    root = getattr(reader, "root", None)
    where = f"{root}/{filename}" if root is not None else filename
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return WordNetDataError(
        f"the WordNet data is damaged: nltk could not read {where} ({first[:200]}). "
        f"A cache built by taxosmooth is checked and rebuilt when opened (load_wordnet(refresh=True)); "
        f"other WordNet data must be reinstalled. {_HOW_TO_INSTALL}"
    )


_lock = threading.Lock()
_loaded: dict = {}


def load_wordnet(*, refresh: bool = False) -> WordNetCorpusReader:
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
            try:
                reader.ensure_loaded()
            except (ValueError, AssertionError, IndexError, KeyError, UnicodeDecodeError) as exc:
                raise damaged_data_error(None, f"{source.path} (lexnames or index files)", exc) from None
        else:
            corpus = prepare_corpus(source)
            root = str(corpus.parent.parent)
            if root not in nltk.data.path:
                nltk.data.path.append(root)  # so that nltk.corpus.wordnet works for the user too
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "multilingual functions are not available"
                try:
                    reader = WordNetCorpusReader(str(corpus), None)
                except (ValueError, AssertionError, IndexError, KeyError, UnicodeDecodeError) as exc:
                    raise damaged_data_error(None, f"{corpus} (lexnames or index files)", exc) from None
        _loaded["reader"] = reader
        _loaded["source"] = source
        return reader


def wordnet_source() -> WordNetSource:
    """Where the data of :func:`load_wordnet` came from (loads it if needed)."""
    load_wordnet()
    return _loaded["source"]
