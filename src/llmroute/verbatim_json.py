"""Large upstream answers passed on as the upstream wrote them.

The largest embeddings answer OpenAI gives (2,048 inputs x 1,536 floats, 43 MB) took the
gateway's worker ~1.2-2.3 s to parse (a Python call per float checks it is finite) and
~2-3 s to write again for the client, both on the event loop: every other request of the
worker, ``/health`` included, waited that long. Nothing in its ``data`` is changed on the
way (only ``model`` and ``usage`` are), so an answer past `VERBATIM_BYTES` is read here
instead: its ``data`` array is checked element by element (each must be JSON; ``NaN`` and
``Infinity`` are not) with the event loop let run between steps, kept as the bytes that
came (`Verbatim`), and written out as they are (`answer_bytes`). The other members are
parsed as `untrusted_json.loads` parses any upstream answer. Bodies that are not plain
ASCII, or hold a ``\\u`` escape (a surrogate may hide there), are read the usual way.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from llmroute.untrusted_json import TooDeep, loads

__all__ = ["VERBATIM_BYTES", "Verbatim", "answer_bytes", "read_verbatim"]

VERBATIM_BYTES = 1 << 20  # smaller answers are parsed whole and written again, as before
_STEP_CHARS = 128 * 1024  # checked between two yields to the event loop (~1-3 ms)


@dataclass(frozen=True, slots=True)
class Verbatim:
    """A JSON array as the upstream wrote it (checked to be JSON), `items` long."""

    raw: memoryview  # of the answer's body, as it came
    items: int


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# the C scanner `json.loads` runs: one value at an index, its end with it
_SCAN: Callable[[str, int], tuple[Any, int]] = getattr(  # noqa: B009  (untyped in typeshed)
    json.JSONDecoder(parse_constant=_not_json), "scan_once"
)
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _ws(text: str, at: int) -> int:
    match = _WHITESPACE.match(text, at)
    return at if match is None else match.end()


def _scan(text: str, at: int) -> tuple[Any, int]:
    try:
        value, end = _SCAN(text, at)
    except StopIteration:
        raise ValueError(f"no JSON value at {at}") from None
    except RecursionError:
        raise TooDeep("nested too deeply to parse") from None
    return value, end


async def read_verbatim(body: bytes, verbatim: Collection[str]) -> dict[str, Any] | None:
    """The JSON object `body`, its members named in `verbatim` that are arrays as
    `Verbatim`s, the others parsed (finite numbers only); None for a body to read the
    usual way (smaller than `VERBATIM_BYTES`, not ASCII, or with a backslash that may
    start a ``\\u`` escape). Anything else that is not a JSON object raises
    `ValueError`."""
    if not verbatim or len(body) < VERBATIM_BYTES or (b"\\" in body and b"\\u" in body):
        return None
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    whole = memoryview(body)  # the members kept are views of it, not copies
    at = _ws(text, 0)
    if text[at : at + 1] != "{":
        return None  # not an object: said so the usual way
    members: dict[str, Any] = {}
    at = _ws(text, at + 1)
    closed = text[at : at + 1] == "}"
    at += closed
    while not closed:
        if text[at : at + 1] != '"':
            raise ValueError(f"a member's name expected at {at}")
        key, at = _scan(text, at)
        at = _ws(text, at)
        if text[at : at + 1] != ":":
            raise ValueError(f"':' expected at {at}")
        at = _ws(text, at + 1)
        if key in verbatim and text[at : at + 1] == "[":
            start = at
            at, items = await _array(text, at)
            members[key] = Verbatim(whole[start:at], items)
        else:
            _, end = _scan(text, at)
            members[key] = loads(text[at:end], finite=True)
            at = end
        at = _ws(text, at)
        separator = text[at : at + 1]
        if separator not in (",", "}"):
            raise ValueError(f"',' or '}}' expected at {at}")
        closed = separator == "}"
        at = at + 1 if closed else _ws(text, at + 1)
    if _ws(text, at) != len(text):
        raise ValueError("extra data after the JSON object")
    return members


async def _array(text: str, at: int) -> tuple[int, int]:
    """The end of the array at `at` and its length, each element checked, the event
    loop let run every `_STEP_CHARS`."""
    at = _ws(text, at + 1)
    if text[at : at + 1] == "]":
        return at + 1, 0
    items, since = 0, at
    while True:
        _, at = _scan(text, at)
        items += 1
        at = _ws(text, at)
        sep = text[at : at + 1]
        if sep == "]":
            return at + 1, items
        if sep != ",":
            raise ValueError(f"',' or ']' expected at {at}")
        at = _ws(text, at + 1)
        if at - since >= _STEP_CHARS:
            await asyncio.sleep(0)
            since = at


def answer_bytes(data: Mapping[str, Any]) -> bytes:
    """`data` as the JSON a ``JSONResponse`` writes (compact, UTF-8, no NaN), its
    `Verbatim` members as they came (one copy of them: the answer's body is made in one
    join)."""
    if not any(isinstance(value, Verbatim) for value in data.values()):
        return _dumps(data)
    parts: list[bytes | memoryview] = []
    for key, value in data.items():
        parts += (
            b",",
            _dumps(key),
            b":",
            value.raw if isinstance(value, Verbatim) else _dumps(value),
        )
    parts[0] = b"{"
    parts.append(b"}")
    return b"".join(parts)


def _dumps(value: Any) -> bytes:
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")
