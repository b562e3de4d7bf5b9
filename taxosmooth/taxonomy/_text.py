"""Text files, line by line: reading a taxonomy file, and the fields of one delimited line.

One physical line is one record: lines end at ``\\n``, ``\\r\\n`` or ``\\r``, and
nothing (not even a quoted field) continues onto the next line, so a stray
``"`` can never swallow the rest of a file. A field may be quoted as in CSV
(``"a, b"``, ``""`` for a quote inside); the quotes must close on the same line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from taxosmooth.errors import TaxonomyFileError

#: a plain ASCII decimal number as written (float() would also take '1_0' or non-ASCII digits)
DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
#: inf, infinity or nan, any case, with an optional sign
NON_FINITE = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)


def is_number_text(text: str) -> bool:
    """Whether ``text`` is a number written plainly: an ASCII decimal, or nan / inf."""
    return bool(DECIMAL.fullmatch(text) or NON_FINITE.fullmatch(text))


#: what str.splitlines() breaks at; a name holding one of these cannot be written to a line-based file
LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of a taxonomy file (a BOM is dropped); the file must exist and not be blank."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such taxonomy file")
    if path.is_dir():
        raise TaxonomyFileError(f"{path}: is a folder, not a taxonomy file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TaxonomyFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TaxonomyFileError(f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise TaxonomyFileError(f"{path}: the file is empty")
    return text


def delimiter_of(path: str | os.PathLike) -> str:
    """The field delimiter of a delimited taxonomy file: a tab for ``.tsv`` (any case), else a comma."""
    return "\t" if Path(path).suffix.lower() == ".tsv" else ","


def physical_lines(text: str) -> list[str]:
    """The lines of ``text``, split at ``\\n``, ``\\r\\n`` and ``\\r`` only (line ``k`` is ``lines[k - 1]``)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def split_fields(line: str, delimiter: str, where: str) -> tuple[list[str], list[bool]]:
    """The stripped fields of one line, and whether each was quoted.

    An unquoted field is taken as written (a ``"`` inside it is a character);
    a field whose first non-blank character is ``"`` is quoted: it ends at the
    next lone ``"``, ``""`` inside stands for ``"``, and only blanks may follow
    it before the delimiter. An unclosed quote is an error naming ``where``.
    """
    if '"' not in line:
        fields = [f.strip() for f in line.split(delimiter)]
        return fields, [False] * len(fields)
    fields = []
    quoted: list[bool] = []
    n = len(line)
    i = 0
    while True:
        j = i
        while j < n and line[j] != delimiter and line[j].isspace():
            j += 1
        if j < n and line[j] == '"':
            parts = []
            k = j + 1
            while True:
                q = line.find('"', k)
                if q < 0:
                    raise TaxonomyFileError(
                        f"{where}: the quoted field that starts at column {j + 1} has no closing '\"' on this "
                        "line (a quoted field cannot continue onto the next line)"
                    )
                parts.append(line[k:q])
                if q + 1 < n and line[q + 1] == '"':
                    parts.append('"')
                    k = q + 2
                    continue
                k = q + 1
                break
            m = k
            while m < n and line[m] != delimiter and line[m].isspace():
                m += 1
            if m < n and line[m] != delimiter:
                raise TaxonomyFileError(
                    f"{where}: unexpected {line[m]!r} at column {m + 1}, after the quoted field that starts at "
                    f"column {j + 1} (write a '\"' inside a quoted field as '\"\"')"
                )
            fields.append("".join(parts).strip())
            quoted.append(True)
            if m >= n:
                return fields, quoted
            i = m + 1
        else:
            d = line.find(delimiter, i)
            fields.append((line[i:] if d < 0 else line[i:d]).strip())
            quoted.append(False)
            if d < 0:
                return fields, quoted
            i = d + 1


def quote_field(text: str, delimiter: str, force: bool = False) -> str:
    """``text`` as a field that :func:`split_fields` reads back: quoted when it must be (or ``force``)."""
    if force or delimiter in text or '"' in text or text.startswith("#"):
        return '"' + text.replace('"', '""') + '"'
    return text
