"""Reading JSON taxonomy files: strict, located errors, and no depth limit.

``json.loads`` is fast but recursive (a document nested ~1,000 deep raises
``RecursionError``), keeps the last of two equal keys silently, and accepts
``NaN`` / ``Infinity``. So :func:`load_json` runs ``json.loads`` with hooks that
stop at a duplicate key or a non-JSON constant, and on any such stop — or a
document too deep for it — parses the text again with :func:`parse_iterative`,
a loop with an explicit stack that gives the same values and names the line
and column of every problem.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json.decoder import scanstring  # type: ignore[attr-defined]  # exists at runtime; typeshed omits it
from typing import Any, NoReturn, cast

from taxosmooth.errors import TaxonomyFileError

_WHITESPACE = re.compile(r"[ \t\n\r]*")
# the number grammar of RFC 8259, as json.scanner.NUMBER_RE
_NUMBER = re.compile(r"(-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)?", re.ASCII)
_CONSTANTS = re.compile(r"NaN|-?Infinity")


class _Retry(Exception):
    """Raised inside json.loads' hooks: parse again with the locating parser."""


def _pairs(pairs):
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Retry
    return out


def _constant(_name):
    raise _Retry


def load_json(text: str, source: str):
    """The value of the JSON document ``text``; errors are :class:`TaxonomyFileError` naming ``source:line``."""
    try:
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise TaxonomyFileError(f"{source}:{exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno})") from None
    except (_Retry, RecursionError, ValueError):
        # ValueError: an integer too long for int() (sys.get_int_max_str_digits)
        return parse_iterative(text, source)


def _where(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _fail(text: str, source: str, pos: int, what: str) -> NoReturn:
    line, col = _where(text, pos)
    raise TaxonomyFileError(f"{source}:{line}: invalid JSON ({what}, column {col})")


def parse_iterative(text: str, source: str = "<json>"):
    """Parse JSON without recursion; the same values as ``json.loads`` (objects are dicts).

    Refuses what ``json.loads`` would let through silently: two equal keys in
    one object, ``NaN`` / ``Infinity``, integers too long to convert.
    """
    n = len(text)
    ws = cast("Callable[[str, int], re.Match[str]]", _WHITESPACE.match)  # it matches the empty string: never None
    stack: list = []  # frames: [container, key (objects only), start position]
    pos = ws(text, 0).end()
    while True:
        # ---- one value starts at pos
        c = text[pos] if pos < n else ""
        if c == "{" or c == "[":
            start = pos
            pos = ws(text, pos + 1).end()
            close = "}" if c == "{" else "]"
            if pos < n and text[pos] == close:
                value: Any = {} if c == "{" else []
                pos += 1
            else:
                if c == "{":
                    stack.append([{}, None, start])
                    pos = _key(text, source, pos, stack[-1])
                else:
                    stack.append([[], None, start])
                continue
        elif c == '"':
            try:
                value, pos = scanstring(text, pos + 1, True)
            except json.JSONDecodeError as exc:
                _fail(text, source, exc.pos, exc.msg)
        elif c == "n" and text.startswith("null", pos):
            value, pos = None, pos + 4
        elif c == "t" and text.startswith("true", pos):
            value, pos = True, pos + 4
        elif c == "f" and text.startswith("false", pos):
            value, pos = False, pos + 5
        else:
            m = _NUMBER.match(text, pos)
            if m is None:
                if _CONSTANTS.match(text, pos):
                    constant = cast("re.Match[str]", _CONSTANTS.match(text, pos)).group()  # it matched just above
                    _fail(text, source, pos, f"{constant} is not a JSON number")
                _fail(text, source, pos, "Expecting value")
            integer, frac, exp = m.groups()
            try:
                value = float(integer + (frac or "") + (exp or "")) if frac or exp else int(integer)
            except ValueError:
                _fail(text, source, pos, f"an integer of {len(integer)} digits is too long")
            pos = m.end()
        # ---- the value is complete: store it, then close every container that ends here
        while True:
            if not stack:
                pos = ws(text, pos).end()
                if pos != n:
                    _fail(text, source, pos, "Extra data")
                return value
            frame = stack[-1]
            container = frame[0]
            if isinstance(container, dict):
                key = frame[1]
                if key in container:
                    _fail(text, source, frame[3], f"the key {key!r} appears twice in one object")
                container[key] = value
            else:
                container.append(value)
            pos = ws(text, pos).end()
            c = text[pos] if pos < n else ""
            close = "}" if isinstance(container, dict) else "]"
            if c == ",":
                pos = ws(text, pos + 1).end()
                if isinstance(container, dict):
                    pos = _key(text, source, pos, frame)
                break
            if c == close:
                pos += 1
                stack.pop()
                value = container
                continue
            _fail(text, source, pos, f"Expecting ',' delimiter or '{close}'" if c else "unexpected end of the document")


def _key(text: str, source: str, pos: int, frame: list) -> int:
    """Read ``"key" :`` at ``pos`` into ``frame``; return where the value starts."""
    if pos >= len(text) or text[pos] != '"':
        _fail(text, source, pos, "Expecting property name enclosed in double quotes")
    start = pos
    try:
        key, pos = scanstring(text, pos + 1, True)
    except json.JSONDecodeError as exc:
        _fail(text, source, exc.pos, exc.msg)
    pos = cast("re.Match[str]", _WHITESPACE.match(text, pos)).end()  # it matches the empty string
    if pos >= len(text) or text[pos] != ":":
        _fail(text, source, pos, "Expecting ':' delimiter")
    frame[1] = key
    if len(frame) == 3:
        frame.append(start)
    else:
        frame[3] = start
    return cast("re.Match[str]", _WHITESPACE.match(text, pos + 1)).end()
