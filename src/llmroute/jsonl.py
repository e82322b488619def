"""JSONL training and evaluation files, read one way by every trainer: one JSON object a
line, blank lines skipped; an unreadable file, a UTF-16 or UTF-32 one, a bad line (named
by file and line number) or a file without rows is a `DataError`. A file named ``-`` is
standard input (`STDIN`), so that ``llmroute export | llmroute eval -d -`` works."""

from __future__ import annotations

import codecs
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from llmroute.errors import DataError
from llmroute.untrusted_json import NotUnicode, TooDeep, loads

__all__ = [
    "JSONL_SUFFIXES",
    "STDIN",
    "is_jsonl",
    "is_stdin",
    "json_object",
    "not_utf8_mark",
    "read_jsonl",
    "read_lines",
    "shown",
    "text_lines",
]

T = TypeVar("T")

# The names a file of JSON lines goes by (`llmroute export -o traffic.ndjson`), in any
# case: where a file may be JSONL or plain text, one of these is read as JSONL
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})

STDIN = "-"
"""The name of an input file that is standard input, as for most command-line tools."""
_STDIN_SHOWN = "<stdin>"  # what errors name it by: "<stdin>:3: invalid JSON"


def is_stdin(path: str | os.PathLike[str]) -> bool:
    return str(path) == STDIN


def is_jsonl(path: str | os.PathLike[str]) -> bool:
    """Whether an input that may be JSONL or plain text is read as JSONL: by its name's
    suffix (`JSONL_SUFFIXES`), and standard input always (it has no name to tell by;
    what ``llmroute export`` pipes is JSONL)."""
    return is_stdin(path) or Path(path).suffix.lower() in JSONL_SUFFIXES


def shown(path: str | os.PathLike[str]) -> str:
    """How messages name an input file: standard input as ``<stdin>``."""
    return _STDIN_SHOWN if is_stdin(path) else str(path)


# UTF-32's marks first: UTF-32-LE's starts with UTF-16-LE's
_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def not_utf8_mark(raw: bytes) -> str | None:
    """What is wrong with a file whose bytes are `raw` and start with a UTF-16 or UTF-32
    byte-order mark (what Windows PowerShell's ``>`` writes), else None: read as UTF-8
    it fails on its first byte or, split into lines first, on NUL bytes further on."""
    for mark, name in _MARKS:
        if raw.startswith(mark):
            return f"the file is {name} (it starts with a {name} byte-order mark); save it as UTF-8"
    return None


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    """The file's bytes; a `DataError` when it cannot be read or is UTF-16 or UTF-32."""
    file = shown(path)
    if is_stdin(path):
        if sys.stdin is None or sys.stdin.isatty():  # it would wait for typing, silently
            raise DataError(
                f"'-' reads {what} from standard input, which is a terminal here; pipe it in "
                "(llmroute export | ...) or name a file",
                file=file,
            )
        return _checked(sys.stdin.buffer.read(), file)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {what}: {exc.strerror or exc}", file=file) from exc
    return _checked(raw, file)


def _checked(raw: bytes, file: str) -> bytes:
    problem = not_utf8_mark(raw)
    if problem is not None:
        raise DataError(problem, file=file)
    return raw


def read_jsonl(
    path: str | os.PathLike[str],
    parse: Callable[[dict[str, Any], str, int], T],
    *,
    what: str,
    empty: str,
) -> list[T]:
    """`parse(object, file, line)` of every non-blank line. `what` names the data in the
    unreadable-file error, `empty` is the error for a file without rows."""
    file = shown(path)
    raw = _read(path, what)
    rows = [
        parse(_json_line(line, file, number), file, number)
        for number, line in enumerate(raw.split(b"\n"), start=1)
        if line.strip()
    ]
    if not rows:
        raise DataError(empty, file=file)
    return rows


def read_lines(path: str | os.PathLike[str], *, what: str) -> list[str]:
    """The lines of a UTF-8 text file; an unreadable file, or a line that is not UTF-8
    (named by file and line number), is a `DataError` worded as `read_jsonl`'s."""
    file = shown(path)
    raw = _read(path, what)
    try:
        lines = text_lines(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        number = raw[: exc.start].count(b"\n") + 1
        raise DataError("not valid UTF-8", file=file, line=number) from exc
    for number, line in enumerate(lines, start=1):
        if "\r" in line:  # prompts "\r"-separated would be read, silently, as one
            raise DataError(_LONE_CR, file=file, line=number)
    return lines


_LONE_CR = (
    "holds a carriage return (\\r) that ends no line: lines end with \\n (or \\r\\n), and a "
    "file whose lines end with \\r alone (classic Mac OS) reads as one line; convert it "
    "(tr '\\r' '\\n' < FILE > NEW)"
)


def _json_line(line: bytes, file: str, number: int) -> dict[str, Any]:
    """`json_object`, its error saying so when the line is several joined by ``\\r``
    alone (JSON takes ``\\r`` as white space: "Extra data" on line 1 said nothing of why)."""
    try:
        return json_object(line, file, number)
    except DataError as exc:
        if exc.message.startswith("invalid JSON") and b"\r" in line.strip():
            raise DataError(_LONE_CR, file=file, line=number) from None
        raise


def text_lines(text: str) -> list[str]:
    """`text`'s lines as `wc -l` and a JSONL reader count them: split at ``\n`` alone (a
    CRLF line loses its ``\r``). `str.splitlines` also splits at form feeds, ``\x1c`` to
    ``\x1e``, ``\x85`` and U+2028/U+2029, which pasted prompts hold: one prompt became two."""
    lines = text.split("\n")
    if lines[-1] == "":  # the newline that ends the last line, or no text at all
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def json_object(line: bytes, file: str, number: int) -> dict[str, Any]:
    """One line as a JSON object, or a `DataError` saying why it is not one."""
    try:
        record: Any = loads(line)
    except UnicodeDecodeError as exc:
        raise DataError("not valid UTF-8", file=file, line=number) from exc
    except NotUnicode as exc:
        raise DataError(
            "not valid Unicode: a string holds an unpaired UTF-16 surrogate (\\ud800-\\udfff)",
            file=file,
            line=number,
        ) from exc
    except TooDeep as exc:
        raise DataError(f"invalid JSON: {exc}", file=file, line=number) from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc.msg}", file=file, line=number) from exc
    if not isinstance(record, dict):
        raise DataError("expected a JSON object", file=file, line=number)
    duplicate = _duplicate_key(line)
    if duplicate is not None:
        # json keeps the last of two, so a label written twice would train on either
        raise DataError(f"duplicate key {duplicate!r}", file=file, line=number)
    return record


class _Duplicate(Exception):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return record


def _duplicate_key(line: bytes) -> str | None:
    """The first key an object of `line` (already parsed once) holds twice, if any: a
    second parse, for files read once by a trainer, never on a request's path."""
    try:
        json.loads(line, object_pairs_hook=_pairs)
    except _Duplicate as exc:
        return str(exc.args[0])
    return None
