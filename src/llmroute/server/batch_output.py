"""A batch's answer written as its line of the output file, without holding the event
loop for a large one.

A request's answer is the JSON the gateway wrote for it. Parsed and written again on
the event loop, the largest embeddings answer (43 MB) held it ~4 s (every other request
of the worker waiting). A large answer (`VERBATIM_BYTES` or more) is kept as it came
instead, only its line breaks made spaces (JSON's whitespace: a string holds none raw),
and read for its ``usage`` without holding the loop: an embeddings answer a step at a
time with its vectors skipped over (`read_verbatim`), any other in a worker thread
(`loads_answer`). That read checks it is a JSON object, as the small one's parse does:
one that is not is written ``{}``, as a small one is.

U+0085, U+2028 and U+2029, valid raw in a JSON string, are line breaks to
``str.splitlines()`` (Python's, and readers of OpenAI's files who split them so): a line
holds them escaped (``\\u2028``), a large answer's a step at a time as its line breaks.

A batch taken over reads the custom_ids its earlier run wrote (`written_custom_ids`):
from each line's first members only (``id`` then ``custom_id``, as `answer_line`
writes them), not its whole answer: parsed whole, a 43 MB line held the GIL ~1-2 s (in
a thread, every other request of the worker waiting).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

from llmroute.joined_bytes import joined
from llmroute.verbatim_json import VERBATIM_BYTES, loads_answer, read_verbatim

__all__ = ["answer_line", "written_custom_ids"]

_VECTORS = ("data",)  # an embeddings answer's, skipped over when its usage is read
_TAIL = b'},"error":null}\n'
_BYTES_STEP = 1 << 20  # made spaces between two turns of the event loop (~1 ms)


async def answer_line(answer: dict[str, Any], body: bytes, endpoint: str) -> tuple[bytes, Any]:
    """The output file's line of `answer` (``id``, ``custom_id``, ``response`` and a
    None ``error``), its response's ``body`` the JSON `body` (``{}`` when it is not a
    JSON object): parsed and written compact when small, as it is (on one line) when
    large; and the answer's ``usage`` (None when it has none)."""
    if list(answer)[:2] != ["id", "custom_id"]:  # what `written_custom_ids` reads
        raise ValueError("a batch answer's first members must be 'id', then 'custom_id'")
    response = answer["response"]
    if len(body) < VERBATIM_BYTES:
        read = _json(body)
        return _line({**answer, "response": {**response, "body": read}}), read.get("usage")
    head = _line(answer)  # its response without the body
    if "body" in response or not head.endswith(_TAIL):
        raise ValueError("a batch answer ends with its response (no body yet), then 'error'")
    large = await _large(body, endpoint)
    pieces = [b"{}"]  # written verbatim, it would not be JSON (none the gateway writes)
    if large is not None:
        pieces = await _one_line(body)
    line = await joined([head[: -len(_TAIL)], b',"body":', *pieces, head[-len(_TAIL) :]])
    return line, None if large is None else large.get("usage")


_SPACES = bytes.maketrans(b"\n\r", b"  ")
# in UTF-8, characters `str.splitlines` breaks a line at that a JSON string may hold raw
_SEPARATORS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_ENCODED = tuple((raw.encode(), escaped.encode()) for raw, escaped in _SEPARATORS.items())
_CHANGED = (b"\n", b"\r", *(raw for raw, _ in _ENCODED))


async def _one_line(body: bytes) -> list[bytes]:
    """`body` on one line (its line breaks made spaces: an upstream's own vectors,
    pretty-printed; U+0085, U+2028, U+2029 escaped), looked at and changed in pieces of
    `_BYTES_STEP` between two turns of the event loop; as it is (not copied) when it
    holds none."""
    steps: list[tuple[int, int, bool]] = []
    at = 0
    while at < len(body):
        end = _char_start(body, at + _BYTES_STEP)
        steps.append((at, end, any(body.find(raw, at, end) >= 0 for raw in _CHANGED)))
        at = end
        await asyncio.sleep(0)
    if not any(changed for _, _, changed in steps):
        return [body]
    pieces = []
    for at, end, changed in steps:
        pieces.append(_escaped(body[at:end].translate(_SPACES)) if changed else body[at:end])
        await asyncio.sleep(0)
    return pieces


def _char_start(data: bytes, at: int) -> int:
    """The first character start of UTF-8 `data` at or past `at` (a step never splits
    one: what is looked for is whole characters)."""
    while at < len(data) and 0x80 <= data[at] < 0xC0:  # a continuation byte
        at += 1
    return min(at, len(data))


def _escaped(data: bytes) -> bytes:
    for raw, escaped in _ENCODED:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


async def _large(body: bytes, endpoint: str) -> dict[str, Any] | None:
    """Large answer `body` read without holding the event loop (its vectors skipped
    over); None when it is not a JSON object."""
    try:
        read = None
        if endpoint == "/v1/embeddings":
            read = await read_verbatim(body, _VECTORS)
        if read is None:
            read = await loads_answer(body)
    except ValueError:
        return None
    return read if isinstance(read, dict) else None


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _line(answer: dict[str, Any]) -> bytes:
    text = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in _SEPARATORS.items():
        if raw in text:
            text = text.replace(raw, escaped)
    # an unpaired surrogate (an upstream's "\ud83d", valid JSON) is only ever in a string:
    # written as JSON's escape, which backslashreplace spells, not raised on
    return text.encode(errors="backslashreplace") + b"\n"


def written_custom_ids(parts: Iterable[bytes]) -> set[str]:
    """The custom_ids of the lines in `parts` (an output or error file's, each part
    whole lines), read from each line's first members (`_custom_id`); a line whose start
    is not so (none `answer_line` writes) parsed whole."""
    found: set[str] = set()
    for data in parts:
        start = 0
        while start < len(data):
            end = _line_end(data, start)
            custom_id = _custom_id(data, start, end)
            if custom_id is None:
                custom_id = _json(data[start:end]).get("custom_id")
            if isinstance(custom_id, str):
                found.add(custom_id)
            start = end + 1
    return found


def _line_end(data: bytes, start: int) -> int:
    """Where the line at `start` ends, looked for `_BYTES_STEP` at a time: a thread that
    holds the GIL is made to let go of it between two Python steps only (one search
    through a 43 MB line held it ~20 ms)."""
    while True:
        step = min(start + _BYTES_STEP, len(data))
        end = data.find(b"\n", start, step)
        if end >= 0 or step == len(data):
            return len(data) if end < 0 else end
        start = step


_FIRST_MEMBERS = 2  # ``id``, then ``custom_id``


def _custom_id(data: bytes, start: int, end: int) -> str | None:
    """The ``custom_id`` of the line at `start`-`end` of `data`, read from its first
    members, each a string (what reading it costs is theirs, not the answer's); None
    when they are not so."""
    at = start
    for member in range(_FIRST_MEMBERS):
        if data[at : at + 1] != (b"{" if member == 0 else b","):
            return None
        key_end = _string_end(data, at + 1, end)
        if key_end < 0 or data[key_end : key_end + 1] != b":":
            return None
        value_end = _string_end(data, key_end + 1, end)
        if value_end < 0:
            return None
        if data[at + 1 : key_end] == b'"custom_id"':
            try:
                value = json.loads(data[key_end + 1 : value_end])
            except ValueError:
                return None
            return value if isinstance(value, str) else None
        at = value_end
    return None


def _string_end(data: bytes, at: int, end: int) -> int:
    """Where the JSON string opening at `at` in `data` ends (just past its closing
    quote), before `end`; -1 when none opens there or it does not close. (In UTF-8 no
    byte of a longer character is a quote or a backslash.)"""
    if data[at : at + 1] != b'"':
        return -1
    find = at + 1
    while True:
        quote = data.find(b'"', find, end)
        if quote < 0:
            return -1
        escapes = quote
        while data[escapes - 1] == 0x5C:  # backslashes before it: an odd count escapes it
            escapes -= 1
        if (quote - escapes) % 2 == 0:
            return quote + 1
        find = quote + 1
