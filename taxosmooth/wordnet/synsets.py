"""Turning what users write into nltk ``Synset`` objects.

Accepted, item by item:

* a synset name: ``"horse.n.01"`` (lemma, part of speech ``n v a s r``, sense number);
* an ImageNet-style id: ``"n02374451"`` (part of speech + 8-digit offset), or
  the ``"02374451-n"`` form of WordNet's IC and mapping files;
* a ``(pos, offset)`` pair: ``("n", 2374451)``;
* an nltk ``Synset`` object (used as it is);
* a plain lemma: ``"zebra"`` or ``"sea lion"`` (spaces become ``_``): its
  first noun sense, and the choice is reported.

An unknown or malformed item raises :class:`~taxosmooth.errors.WordNetLookupError`
naming it (and its position); two items that resolve to the same synset are
refused.
"""

from __future__ import annotations

import numbers
import re
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from taxosmooth.errors import WordNetLookupError

if TYPE_CHECKING:
    from nltk.corpus.reader.wordnet import Synset, WordNetCorpusReader

_POS = "nvasr"
_DIGITS = re.compile(r"\d+", re.ASCII)
_FILE_POS = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
_WNID = re.compile(r"^([nvasr])(\d{8})$")
_OFFSET_POS = re.compile(r"^(\d{8})-([nvasr])$")
_NAME = re.compile(r"^(.+)\.([^.]+)\.(\d+)$")


def _is_synset(obj) -> bool:
    from nltk.corpus.reader.wordnet import Synset

    return isinstance(obj, Synset)


def _offset(offset, item, where: str) -> int:
    """An offset as written: an int (not a bool, not 2374451.7) or a string of ASCII digits."""
    if isinstance(offset, str) and _DIGITS.fullmatch(offset):
        return int(offset)
    if isinstance(offset, numbers.Integral) and not isinstance(offset, (bool, np.bool_)):
        return int(offset)
    raise WordNetLookupError(f"{where}{item!r}: the offset must be an integer, got {type(offset).__name__} {offset!r}")


def _from_offset(reader, pos: str, offset, item, where: str):
    if not isinstance(pos, str) or pos not in _POS or len(pos) != 1:
        raise WordNetLookupError(f"{where}{item!r}: part of speech must be one of {', '.join(_POS)}, got {pos!r}")
    offset = _offset(offset, item, where)
    if offset < 0:
        raise WordNetLookupError(f"{where}{item!r}: negative offset {offset}")
    if offset >= 10**8:
        # wndb(5WN): an offset is written as 8 digits; a larger one cannot start a synset (and must not be
        # mistaken for damaged data when the file cannot seek that far)
        raise WordNetLookupError(f"{where}{item!r}: no WordNet synset with part of speech {pos!r} at offset "
                                 f"{offset} (offsets have at most 8 digits)")
    from nltk.corpus.reader.wordnet import WordNetError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns, then returns None, for an offset that starts no synset
        try:
            synset = reader.synset_from_pos_and_offset(pos, offset)
        except (WordNetError, ValueError, IndexError, AssertionError) as exc:
            # the line at a valid offset did not parse: the data is damaged, not the user's item
            from taxosmooth.wordnet.data import damaged_data_error

            raise damaged_data_error(reader, f"data.{_FILE_POS[pos]}", exc) from None
    if synset is None:
        raise WordNetLookupError(f"{where}{item!r}: no WordNet synset with part of speech {pos!r} at offset {offset:08d}")
    return synset


def resolve_synset(item: str | tuple[str, int] | Synset, *, wordnet: WordNetCorpusReader | None = None,
                   report: list | None = None, position: int | None = None) -> Synset:
    """One item (any accepted form) to an nltk ``Synset``. See the module docstring."""
    where = "" if position is None else f"synsets[{position}] = "
    if _is_synset(item):
        return item
    reader = wordnet
    if reader is None:
        from taxosmooth.wordnet.data import load_wordnet

        reader = load_wordnet()
    if isinstance(item, tuple):
        if len(item) != 2:
            raise WordNetLookupError(f"{where}{item!r}: a tuple must be (pos, offset)")
        return _from_offset(reader, item[0], item[1], item, where)
    if not isinstance(item, str):
        raise WordNetLookupError(
            f"{where}{item!r}: expected a synset name, an ImageNet id, a (pos, offset) pair, "
            f"a Synset or a lemma, got {type(item).__name__}"
        )
    text = item.strip()
    if not text:
        raise WordNetLookupError(f"{where}{item!r}: empty synset")
    m = _WNID.match(text) or _OFFSET_POS.match(text)
    if m:
        pos, offset = (m.group(1), m.group(2)) if m.re is _WNID else (m.group(2), m.group(1))
        return _from_offset(reader, pos, offset, item, where)
    m = _NAME.match(text)
    if m:
        if m.group(2) not in _POS:
            raise WordNetLookupError(
                f"{where}{item!r}: malformed synset name, the part of speech {m.group(2)!r} is not one of "
                f"{', '.join(_POS)} (expected e.g. 'horse.n.01')"
            )
        if int(m.group(3)) == 0:
            # nltk would read sense 0 as index -1: the last sense
            raise WordNetLookupError(f"{where}{item!r}: sense numbers start at 01 (e.g. 'horse.n.01')")
        from nltk.corpus.reader.wordnet import WordNetError

        try:
            return reader.synset(text)
        except WordNetError as exc:
            message = str(exc)
            if message.startswith(("No lemma ", "Lemma ", "Adjective satellite requested")):
                raise WordNetLookupError(f"{where}{item!r}: no such WordNet synset ({exc})") from None
            from taxosmooth.wordnet.data import damaged_data_error

            raise damaged_data_error(reader, f"data.{_FILE_POS[m.group(2)]}", exc) from None
        except (ValueError, KeyError, IndexError, AssertionError) as exc:
            from taxosmooth.wordnet.data import damaged_data_error

            raise damaged_data_error(reader, f"index.{_FILE_POS[m.group(2)]}", exc) from None
    lemma = text.replace(" ", "_")
    senses = reader.synsets(lemma, pos="n")
    if not senses:
        raise WordNetLookupError(
            f"{where}{item!r}: not a synset name ('horse.n.01'), an ImageNet id ('n02374451') "
            "or a noun of WordNet"
        )
    synset = senses[0]
    if report is not None:
        more = f"first of {len(senses)} noun senses" if len(senses) > 1 else "its only noun sense"
        report.append(f"lemma {item!r} -> {synset.name()} ({more})")
    return synset


def resolve_synsets(items: Iterable, *, wordnet: WordNetCorpusReader | None = None,
                    report: list | None = None) -> list:
    """Resolve a list of synsets given in any accepted form (module docstring).

    Parameters
    ----------
    items : iterable
        Names, ImageNet ids, ``(pos, offset)`` pairs, ``Synset`` objects or
        lemmas, mixed freely.
    wordnet : WordNetCorpusReader, optional
        Defaults to :func:`taxosmooth.wordnet.load_wordnet`.
    report : list, optional
        Receives one line per interpretation that involved a choice (a lemma
        mapped to its first noun sense).

    Returns
    -------
    list of nltk Synset

    Raises
    ------
    WordNetLookupError
        For an unknown or malformed item, an empty list, or two items naming
        the same synset.
    """
    if isinstance(items, (str, bytes)) or _is_synset(items):
        raise WordNetLookupError("expected a list of synsets, got a single one; wrap it in a list")
    items = list(items)
    if not items:
        raise WordNetLookupError("the list of synsets is empty")
    if wordnet is None and not all(_is_synset(s) for s in items):
        from taxosmooth.wordnet.data import load_wordnet

        wordnet = load_wordnet()
    out: list = []
    seen: dict = {}
    for k, item in enumerate(items):
        synset = resolve_synset(item, wordnet=wordnet, report=report, position=k)
        if synset in seen:
            j = seen[synset]
            same = f"{items[j]!r} and {item!r}" if items[j] != item else f"{item!r}"
            raise WordNetLookupError(
                f"synset {synset.name()} is given twice (synsets[{j}] and synsets[{k}]: {same}); "
                "each class must appear once"
            )
        seen[synset] = k
        out.append(synset)
    return out


def wnid(synset: Synset) -> str:
    """The ImageNet-style id of a synset: part of speech + 8-digit offset (``n02374451``)."""
    return f"{synset.pos()}{synset.offset():08d}"
