"""Parsing JSON that came from outside: a client's body or tool-call arguments, an
upstream's answer or stream events, a model's reply.

Two things `json.loads` lets through that crash the code after it, so `loads` raises
them as `ValueError`s like any other text that is not usable JSON:

- arrays or objects nested past Python's recursion limit (``[[[[...]]]]`` 100,000 deep
  is a few hundred kilobytes) raise `RecursionError`, which no ``except ValueError``
  caught; with `max_depth`, what parses but nests deeper than the code after it (each
  recursive walk, the encoder that sends it on) can safely take is refused too;
- an unpaired UTF-16 surrogate (``"\\ud800"``, or its bytes) parses into a string that
  is not Unicode: every later encode to UTF-8 (the tokenizer, a hash, the upstream
  request) fails. Pairs (``"\\ud83d\\ude00"``, an emoji) are fine.

What an upstream sends is read with `loads_replacing`, which reads bytes that are not
UTF-8 and unpaired surrogates as a UTF-8 decoder does, as U+FFFD: a stream can cut a
character in two (a proxy slicing UTF-16 strings sends an emoji's ``\\ud83d`` in one event and its
``\\ude00`` in the next), and one such event must not end the whole answer.

With ``finite=True`` (a client's request body) a third: ``NaN``, ``Infinity`` and
``-Infinity``, which are not JSON, and numbers that overflow a double (``1e400``, parsed
as infinity, or an integer of 309 digits, which Python keeps exact), raised as
`NotFinite`. Sent on, they make an upstream request that is not JSON (or a 500 when the
gateway writes them back); such an integer is a 500 wherever it meets a float (a
temperature passed on to Anthropic, a hard budget's worst case). The check rides the
parser's hooks: free for the literals, about 50 ns a number (a chat body has a few).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from math import hypot, isfinite, isinf
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "NotFinite",
    "NotUnicode",
    "TooDeep",
    "deeper_than",
    "first_surrogate",
    "has_surrogate",
    "loads",
    "loads_replacing",
    "where_not_finite",
]

MAX_DEPTH = 100  # levels of arrays and objects; a tool schema nested ten deep uses ~25


class TooDeep(ValueError):
    """JSON nested deeper than allowed."""


class NotUnicode(ValueError):
    """JSON whose strings hold an unpaired UTF-16 surrogate."""


class NotFinite(ValueError):
    """JSON with ``NaN``, ``Infinity``, ``-Infinity`` or a number beyond a double."""


def _no_constant(name: str) -> Any:
    raise NotFinite(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if isinf(value):
        raise NotFinite(f"{text[:40]} is too large for a number")
    return value


_DOUBLE_MAX = int(sys.float_info.max)
_DOUBLE_DIGITS = len(str(_DOUBLE_MAX))  # 309: a shorter integer always fits


def _finite_int(text: str) -> int:
    value = int(text)
    if len(text) >= _DOUBLE_DIGITS and abs(value) > _DOUBLE_MAX:
        raise NotFinite(f"{text[:40]}… ({len(text)} digits) is too large for a number")
    return value


# built once: `json.loads` with hooks builds a decoder (and its scanner) on every call
_FINITE = json.JSONDecoder(
    parse_constant=_no_constant, parse_float=_finite_float, parse_int=_finite_int
)
# for a text shorter than the shortest integer too large for a double: no integer in it
# can be, so each is read by the parser itself, not the hook (a stream event has a few)
_FINITE_SHORT = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


# Where a surrogate can come from: a \uD800-\uDFFF escape, or its three bytes (json
# decodes bytes with "surrogatepass"). Only texts with one are walked.
_HINT_BYTES = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_HINT_TEXT = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def loads(text: str | bytes, *, max_depth: int | None = None, finite: bool = False) -> Any:
    """`json.loads`, with nesting too deep for the parser, or past `max_depth`, raised
    as `TooDeep`, an unpaired surrogate in a string as `NotUnicode`, and, when `finite`,
    a number JSON has no way to write as `NotFinite` (all `ValueError`s)."""
    value = _parsed(text, max_depth, finite)
    hinted = _hinted(text)
    if hinted and has_surrogate(value):
        raise NotUnicode("a string holds an unpaired UTF-16 surrogate (\\ud800-\\udfff)")
    return value


def _hinted(text: str | bytes) -> bool:
    """Whether `text` may hold a surrogate: the substring tests (memchr-fast) rule out
    almost every text before the regex, which costs about as much as a small event's
    parse."""
    if isinstance(text, bytes):
        return (b"\\u" in text or b"\xed" in text) and _HINT_BYTES.search(text) is not None
    return ("\\u" in text or not text.isascii()) and _HINT_TEXT.search(text) is not None


def _parsed(text: str | bytes, max_depth: int | None, finite: bool) -> Any:
    try:
        if not finite:
            value = json.loads(text)
        else:
            decoder = _FINITE_SHORT if len(text) < _DOUBLE_DIGITS else _FINITE
            value = decoder.decode(text if isinstance(text, str) else _text_of(text))
    except RecursionError:
        raise TooDeep("nested too deeply to parse") from None
    if max_depth is not None and deeper_than(value, max_depth):
        raise TooDeep(f"nested more than {max_depth} levels deep")
    return value


def _text_of(data: bytes) -> str:
    """`data` decoded as `json.loads` decodes bytes. An object (``{`` then a byte that
    is not 0) is UTF-8 by `json.detect_encoding`'s rules, told without calling it."""
    if data[:1] == b"{" and data[1:2] != b"\0":
        return data.decode("utf-8", "surrogatepass")
    return data.decode(json.detect_encoding(data), "surrogatepass")


def loads_replacing(text: str | bytes, *, finite: bool = False) -> tuple[Any, bool]:
    """`loads` for what an upstream sent: bytes that are not UTF-8 and unpaired
    surrogates are read as U+FFFD (REPLACEMENT CHARACTER), as a UTF-8 decoder replaces
    what it cannot read. Returns the value and whether anything was replaced (the text
    is then no longer what was sent: write the value again). Anything else that is not
    JSON raises as `loads` raises it. Text without such a character costs what `loads`
    does; one with them is parsed twice."""
    try:
        return loads(text, finite=finite), False
    except UnicodeDecodeError:  # bytes that are not UTF-8
        if not isinstance(text, bytes):
            raise
        value, _ = loads_replacing(text.decode("utf-8", "replace"), finite=finite)
        return value, True
    except NotUnicode:
        # nesting is bounded: `_replaced` recurses as deep as the value goes
        return _replaced(_parsed(text, MAX_DEPTH, finite)), True


def _replaced(value: Any) -> Any:
    """`value` with each unpaired surrogate in its strings (keys too) as U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replaced(item) for item in value]
    if isinstance(value, dict):
        return {_replaced(key): _replaced(item) for key, item in value.items()}
    return value


def where_not_finite(text: str | bytes) -> str | None:
    """Where in `text`, which `loads` refused as `NotFinite`, the first such number is:
    its path as OpenAI's ``param`` writes one (``messages[0].temperature``), or None when
    it is the whole text or cannot be told. For an error message; it parses again (a
    Python call per integer, as `loads` checks them: in a worker thread the event loop
    takes its turns meanwhile) and writes the path of the number found alone (one
    written for each number took ~0.6 s for 3 MB of token ids)."""
    try:
        # NaN, Infinity, 1e400 and long integers as Python reads them
        value = _READ_AGAIN.decode(text if isinstance(text, str) else _text_of(text))
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[Iterator[tuple[Any, Any]], str]] = [(_members(value), "")]
    while stack:
        members, path = stack[-1]
        for key, item in members:
            kind = type(item)
            if kind is list and _all_finite(item):
                continue
            if kind is dict or kind is list:
                stack.append((_members(item), _path(path, key)))
                break
            if (kind is float and not isfinite(item)) or (
                kind is int and not -_DOUBLE_MAX <= item <= _DOUBLE_MAX
            ):
                return _path(path, key)
        else:
            stack.pop()
    return None


# below half a double's largest: a list whose norm is under it holds no number past a
# double (an integer just past the largest converts to it, without overflowing)
_NORM_BOUND = sys.float_info.max / 2


def _all_finite(items: list[Any]) -> bool:
    """Whether `items` are all numbers none of which is past a double, told in C (a list
    of 500 token ids in ~3 µs, not walked in Python): `math.hypot` is at least the
    largest one's size, NaN or infinite with one that is, and raises for an integer
    past what ``float()`` rounds (or for what is not a number). False: walk it."""
    try:
        return hypot(*items) < _NORM_BOUND
    except (TypeError, OverflowError):
        return False


def _read_int(text: str) -> int:
    return int(text)


_READ_AGAIN = json.JSONDecoder(parse_int=_read_int)


def _members(value: Any) -> Iterator[tuple[Any, Any]]:
    """An object's (name, value) pairs, an array's (index, item) pairs; a scalar's none."""
    if type(value) is dict:
        return iter(value.items())
    return enumerate(value) if type(value) is list else iter(())


def _path(path: str, key: str | int) -> str:
    if type(key) is int:
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def first_surrogate(text: str) -> str | None:
    """The first unpaired surrogate in `text`, or None."""
    found = _SURROGATE.search(text)
    return None if found is None else found.group()


def has_surrogate(value: Any) -> bool:
    """Whether a string in `value` (keys of objects included) holds an unpaired
    surrogate, which no UTF-8 encoder takes."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item) is not None:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels in `value` (a parsed JSON
    value, its containers plain dicts and lists as `json` makes them; a scalar is level
    0). Only containers are visited, so long strings cost nothing; level by level, by
    exact type: a flat list of a million empty objects (a 4 MB request body) is walked
    in about 0.2 s, where a stack of (item, depth) pairs took 3 s on the worker's event
    loop, stalling every other request it serves."""
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 1
    while level:
        if depth > limit:
            return True
        below: list[Any] = []
        add = below.append
        for item in level:
            for child in item.values() if type(item) is dict else item:
                kind = type(child)
                if kind is dict or kind is list:
                    add(child)
        level = below
        depth += 1
    return False
