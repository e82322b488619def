"""Large upstream answers read and written without holding the event loop.

The largest embeddings answer OpenAI gives (2,048 inputs x 1,536 floats, 43 MB) took the
gateway's worker ~1-2 s to parse (a Python call per float checks it is finite) and ~2-3 s
to write again for the client, both on the event loop: every other request of the
worker, ``/health`` included, waited that long. Nothing in its ``data`` is changed on the
way (only ``model`` and ``usage`` are), so an answer past `VERBATIM_BYTES` is read here
(`read_verbatim`): its ``data`` array is checked element by element (each must be JSON;
``NaN`` and ``Infinity`` are not, nor numbers past a double, as any upstream answer's:
`_finite`) with the event loop let run between steps, and kept as the bytes that came
(`Verbatim`); its text is decoded a window at a time (`_Text`), not whole (one decode of
43 MB held the loop 20-60 ms). The other members are parsed as `untrusted_json.loads`
parses any upstream answer. A body that is not plain ASCII is checked to be UTF-8 a step
at a time too; one that is not, or holds a ``\\uD800``-``\\uDFFF`` escape (an unpaired
surrogate may hide there), is read the usual way, where such characters are replaced.

`answer_json` writes any answer (a `Verbatim` as it came) as ``JSONResponse`` would, a
step at a time, and `request_json` an upstream request's body so; `loads_answer` reads
one the gateway wrote (to convert it for a front) in a worker thread when it is large.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import re
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from math import hypot, isfinite
from typing import Any

from llmroute.joined_bytes import joined, off_loop
from llmroute.untrusted_json import NotFinite, TooDeep, loads

__all__ = [
    "VERBATIM_BYTES",
    "Verbatim",
    "answer_json",
    "answer_json_within",
    "loads_answer",
    "read_verbatim",
    "request_json",
]

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
_WINDOW = 256 * 1024  # bytes of the body decoded at a time (~0.1-0.2 ms)


class _Text:
    """A body's JSON text, decoded a window at a time (43 MB decoded whole held the
    event loop 20-60 ms), at the body's own offsets: a character a byte (ASCII, or
    latin-1 for UTF-8 whose characters past ASCII are read from the body's own bytes).

    A value is scanned in the window it starts in with the character past it (what a
    scan may look at before it ends); cut by the window's end, it is scanned again in a
    window twice as large, and a scan that fails in the window that reaches the body's
    end fails in the body: the C scanner reads left to right, so a value it reads whole
    in a window, the character past it seen, is the value the whole text holds."""

    def __init__(self, body: bytes, encoding: str) -> None:
        self._view = memoryview(body)
        self._encoding = encoding
        self._size = len(body)
        self._start, self._end, self._text = 0, 0, ""

    def _window(self, at: int, size: int) -> None:
        self._start, self._end = at, min(self._size, at + size)
        self._text = str(self._view[at : self._end], self._encoding)

    def token(self, at: int) -> tuple[int, str]:
        """The offset of the first character at or past `at` that is not whitespace,
        and that character ('' at the body's end)."""
        while True:
            if not self._start <= at < self._end:
                if at >= self._size:
                    return at, ""
                self._window(at, _WINDOW)
            at = self._start + _ws(self._text, at - self._start)
            if at < self._end:
                return at, self._text[at - self._start]

    def scan(self, at: int, then: str) -> tuple[Any, int, int, str]:
        """The JSON value at `at` (past whitespace) and its end, then the offset of the
        next character that is not whitespace and that character, one of `then`."""
        at, _ = self.token(at)
        if not self._start <= at < self._end:  # (at the body's end)
            self._window(at, _WINDOW)
        while True:
            text, start = self._text, self._start
            try:
                value, end = _SCAN(text, at - start)
            except StopIteration:
                value, end = None, -1
            except RecursionError:  # (what nests too deeply is within the window)
                raise TooDeep("nested too deeply to parse") from None
            except ValueError:
                if self._end < self._size:
                    value, end = None, -1
                else:
                    raise
            if end >= 0:
                following = _ws(text, end)
                if following < len(text) and text[following] in then:
                    return value, start + end, start + following, text[following]
            if self._end == self._size:
                if end < 0:
                    raise ValueError(f"no JSON value at {at}")
                expected = " or ".join(repr(char) for char in then)
                raise ValueError(f"{expected} expected at {start + _ws(text, end)}")
            self._window(at, max(_WINDOW, 2 * (self._end - at)))


def _ws(text: str, at: int) -> int:
    match = _WHITESPACE.match(text, at)
    return at if match is None else match.end()


async def read_verbatim(body: bytes, verbatim: Collection[str]) -> dict[str, Any] | None:
    """The JSON object `body`, its members named in `verbatim` that are arrays as
    `Verbatim`s, the others parsed (finite numbers only); None for a body to read the
    usual way (smaller than `VERBATIM_BYTES`, or one `_encoding` leaves to it). Anything
    else that is not a JSON object raises `ValueError`."""
    if not verbatim or len(body) < VERBATIM_BYTES:
        return None
    encoding = await _encoding(body)
    if encoding is None:
        return None
    text = _Text(body, encoding)
    at, char = text.token(0)
    if char != "{":
        return None  # not an object: said so the usual way
    whole = memoryview(body)  # the members kept are views of it, not copies
    members: dict[str, Any] = {}
    at, char = text.token(at + 1)
    closed = char == "}"
    if closed:  # an empty object: only whitespace may follow it, as after a last member
        at, char = text.token(at + 1)
    while not closed:
        if char != '"':
            raise ValueError(f"a member's name expected at {at}")
        named = at
        key, end, at, _ = text.scan(named, ":")
        if not key.isascii():
            key = loads(body[named:end])
        at, char = text.token(at + 1)
        if key in verbatim and char == "[":
            end, items = await _array(text, at)
            members[key] = Verbatim(whole[at:end], items)
            at, char = text.token(end)
            if char not in (",", "}"):
                raise ValueError(f"',' or '}}' expected at {at}")
        else:
            _, end, following, char = text.scan(at, ",}")
            members[key] = loads(body[at:end], finite=True)
            at = following
        closed = char == "}"
        at, char = text.token(at + 1)
    if char:
        raise ValueError("extra data after the JSON object")
    return members


async def _encoding(body: bytes) -> str | None:
    """How `body` is decoded here, a character a byte: ``ascii``, or ``latin-1`` for
    UTF-8 whose characters past ASCII are read from the body's own bytes (its offsets
    are the body's, and its JSON's structure the same: bytes of a character that is not
    ASCII are all past 0x7F, never a quote or a bracket). None for a body to read the
    usual way: UTF-16 or -32 or with a byte order mark (which json reads, by its first
    bytes), not UTF-8, or with an escape that may be an unpaired surrogate's."""
    if json.detect_encoding(body) != "utf-8" or await _surrogate_escaped(body):
        return None
    if await _ascii(body):
        return "ascii"
    return "latin-1" if await _utf8(body) else None


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_BYTES_STEP = 1 << 20  # searched or checked between two yields to the event loop (~1-2 ms)


async def _surrogate_escaped(body: bytes) -> bool:
    """Whether `body` holds a ``\\uD800``-``\\uDFFF`` escape, searched a step at a time
    with the event loop let run between steps (43 MB took ~50 ms in one search)."""
    if b"\\" not in body:  # as fast as memchr (a pair of bytes is several times slower)
        return False
    for start in range(0, len(body), _BYTES_STEP):
        # an escape starting in this step is found whole
        if _SURROGATE_ESCAPE.search(body, start, start + _BYTES_STEP + 8) is not None:
            return True
        await asyncio.sleep(0)
    return False


async def _ascii(body: bytes) -> bool:
    """Whether `body` is all ASCII, looked at a step at a time with the event loop let
    run between steps."""
    for start in range(0, len(body), _BYTES_STEP):
        if not body[start : start + _BYTES_STEP].isascii():
            return False
        await asyncio.sleep(0)
    return True


async def _utf8(body: bytes) -> bool:
    """Whether `body` is UTF-8 (no surrogate's bytes), read a step at a time with the
    event loop let run between steps (a character cut by a step's end is read whole)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(body)
    try:
        for start in range(0, len(body), _BYTES_STEP):
            end = start + _BYTES_STEP
            decoder.decode(view[start:end], end >= len(body))
            await asyncio.sleep(0)
    except UnicodeDecodeError:
        return False
    return True


async def _array(text: _Text, at: int) -> tuple[int, int]:
    """The end of the array at `at` and its length, each element checked, the event
    loop let run every `_STEP_CHARS`."""
    at += 1  # past its '['
    following, char = text.token(at)
    if char == "]":
        return following + 1, 0
    items, since = 0, at
    while True:
        value, end, at, char = text.scan(at, ",]")
        if not _finite(value):
            raise NotFinite(f"a number before {end} is too large for a double")
        items += 1
        if char == "]":
            return at + 1, items
        at += 1
        if at - since >= _STEP_CHARS:
            await asyncio.sleep(0)
            since = at


_DOUBLE_MAX = int(sys.float_info.max)
# below half a double's largest: a list whose norm is under it holds no number past a
# double (an integer just past the largest converts to it, without overflowing)
_NORM_BOUND = sys.float_info.max / 2


def _finite(value: Any) -> bool:
    """Whether no number in `value` (one parsed element) is past a double: ``1e400``
    (parsed as infinity) or an integer of 309 digits, which every other upstream answer
    is refused for (`untrusted_json.loads`, ``finite``) and which, passed on, a batch's
    output file wrote as ``Infinity`` (not JSON). A list of numbers is measured in C,
    not walked in Python: its `math.hypot` is at least its largest number's size (an
    infinity or NaN in it gives one, an integer past what ``float()`` rounds raises), so
    one under `_NORM_BOUND` holds none past a double; ~8 µs a vector of 1,536 floats,
    where a parser hook cost ~40 times that. (A sum, 5 µs, let an integer just past a
    double through: ``float()`` rounds it to the largest, and the sum was finite.)"""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is list:
            try:
                if hypot(*item) < _NORM_BOUND:
                    continue
            except (TypeError, OverflowError):  # not all numbers, or an integer past a double
                pass
            stack.extend(item)
        elif kind is dict:
            stack.extend(item.values())
        elif kind is float:
            if not isfinite(item):
                return False
        elif kind is int and abs(item) > _DOUBLE_MAX:
            return False
    return True


async def answer_json(value: Any) -> bytes:
    """`value` as the JSON a ``JSONResponse`` writes (compact, UTF-8, no NaN: the same
    bytes), its `Verbatim` members as they came, a step at a time: objects
    and short lists member by member, long lists in slices of about `_STEP_CHARS`, the
    event loop let run every `_STEP_CHARS` written. A chat answer with logprobs (8,192
    tokens, 20 alternatives each: 12 MB) took ~0.4 s to write in one call."""
    if _small(value):  # most answers: one call, as JSONResponse writes them (~20 µs)
        return _dumps(value)
    writer = _Writer()
    await writer.value(value, 0)
    return await joined(writer.parts)


async def answer_json_within(value: Any, most: int) -> bytes | None:
    """`answer_json`, or None once it is past `most` bytes: what lies past them is not
    written (a 43 MB answer costs what its first `most` bytes do, not a copy whole: the
    response cache, whose entries are bounded, wrote it all on the event loop to find
    it too large)."""
    if _small(value):
        written = _dumps(value)
        return written if len(written) <= most else None
    writer = _Writer(most)
    try:
        await writer.value(value, 0)
    except _TooLarge:
        return None
    return await joined(writer.parts)


async def request_json(value: Any) -> bytes:
    """An upstream request's body: the bytes ``json.dumps`` writes (compact, UTF-8, NaN as
    it writes it), a large one a step at a time as `answer_json` writes. Not in a worker
    thread: the C encoder keeps the GIL for the whole call, so the loop waited as long
    either way (38 ms for 2.5 MB of token ids, 85-100 ms for a 20 MB prompt)."""
    if _small(value):
        return _dumps(value, nan=True)
    writer = _Writer(nan=True)
    await writer.value(value, 0)
    return await joined(writer.parts)


# a value of fewer items (and characters) is written in one call: counting further costs
# about what the steps add (~0.1 us an item, docs/benchmarks.md)
_SMALL_ITEMS = 256


def _small(value: Any) -> bool:
    """Whether `value` holds fewer than `_SMALL_ITEMS` items and `_STEP_CHARS` characters
    of strings, none a `Verbatim`: written in one call, it holds the event loop a
    millisecond at most. Counting stops at the limit (a few microseconds for a chat
    answer or request)."""
    left, chars, stack = _SMALL_ITEMS, _STEP_CHARS, [value]
    while stack:
        item = stack.pop()
        kind = type(item)  # exact types: the answers' own (a subclass is written whole)
        if kind is dict:
            left -= len(item)
            if left < 0:  # (before its items are copied: 300,000 took ~2-4 ms)
                return False
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            left -= len(item)
            if left < 0:
                return False
            stack.extend(item)
        elif kind is str:
            chars -= len(item)
        elif kind is Verbatim:
            return False
        if left < 0 or chars < 0:
            return False
    return True


_FEW = 16  # a list this short has each item written apart (one may be large)
_STEP_ITEMS = 4096  # items written between two yields at most (4,096 integers: ~0.5 ms)
_NESTING = 8  # deeper values are written in one call (answers nest a few levels)


class _TooLarge(Exception):
    """Past what the writer may write."""


class _Writer:
    """`parts` are all `bytes`, none a `memoryview`: ``bytes.join`` lets go of the GIL
    only for those, so that `joined` makes a 43 MB answer in a worker thread while the
    event loop runs (a view among them kept the GIL: the loop waited the whole copy)."""

    def __init__(self, most: int | None = None, *, nan: bool = False) -> None:
        self.parts: list[bytes] = []
        self._nan = nan  # NaN and Infinity written as ``json.dumps`` writes them
        self._since = 0
        self._items_since = 0
        self._size = 0
        self._commas = 0  # about the items written (a comma between two)
        self._most = most  # raising `_TooLarge` once past it

    async def add(self, part: bytes) -> None:
        self.parts.append(part)
        commas = part.count(b",")  # (~0.5 us a kB, a tenth of writing integers)
        self._commas += commas
        self._items_since += commas
        self._since += len(part)
        self._size += len(part)
        if self._most is not None and self._size > self._most:
            raise _TooLarge
        if self._since >= _STEP_CHARS or self._items_since >= _STEP_ITEMS:
            self._since = self._items_since = 0
            await asyncio.sleep(0)

    async def value(self, value: Any, depth: int) -> None:
        if self._most is not None and type(value) is str and len(value) > self._most:
            raise _TooLarge  # (each character at least a byte: not written to find it)
        if isinstance(value, Verbatim):
            for at in range(0, len(value.raw), _BYTES_STEP):  # copied a step at a time
                await self.add(value.raw[at : at + _BYTES_STEP].tobytes())
        elif type(value) is str and len(value) > _STEP_CHARS:
            await self._text(value)
        elif depth >= _NESTING:
            await self.add(_dumps(value, nan=self._nan))
        elif isinstance(value, dict) and value and all(type(key) is str for key in value):
            opening = b"{"
            for key, item in value.items():
                await self.add(opening + _dumps(key) + b":")
                await self.value(item, depth + 1)
                opening = b","
            await self.add(b"}")
        elif isinstance(value, list) and 0 < len(value) <= _FEW:
            opening = b"["
            for item in value:
                await self.add(opening)
                await self.value(item, depth + 1)
                opening = b","
            await self.add(b"]")
        elif isinstance(value, list) and value:
            await self._slices(value, depth)
        else:
            await self.add(_dumps(value, nan=self._nan))

    async def _text(self, text: str) -> None:
        """A long string, a slice of it at a time: JSON escapes each character alone
        (4 MB of text in one call held the loop ~20 ms)."""
        await self.add(b'"')
        for at in range(0, len(text), _STEP_CHARS):
            await self.add(_dumps(text[at : at + _STEP_CHARS])[1:-1])
        await self.add(b'"')

    async def _slices(self, items: list[Any], depth: int) -> None:
        """A long list, written a slice of its items at a time, each slice about
        `_STEP_CHARS` and at most about `_STEP_ITEMS` items (sized by the last one: a
        slice of integers costs ~5 times what as many characters of text do), and none
        holding more than `_STEP_CHARS` of text (`_within_text`): a long string is
        written alone, a step at a time."""
        at, size, opening = 0, 1, b"["
        texts = True  # whether the last slice held a string (the next one is looked at)
        while at < len(items):
            await self.add(opening)
            opening = b","
            if size > 1 and texts:
                size = _within_text(items, at, size)
            before, commas = self._size, self._commas
            if size == 1:  # (one item, maybe a long text: written as any value)
                await self.value(items[at], depth + 1)
                texts = True
            else:
                written = _dumps(items[at : at + size], nan=self._nan)
                await self.add(written[1:-1])
                texts = b'"' in written
            written_size = self._size - before + 2
            written_items = self._commas - commas + 1  # (a comma between two items)
            at += size
            size = max(
                1,
                min(
                    size * 4,
                    _STEP_CHARS * size // written_size,
                    _STEP_ITEMS * size // written_items,
                ),
            )
        await self.add(b"]")


def _within_text(items: list[Any], at: int, size: int) -> int:
    """How many of the `size` items from `at` hold at most `_STEP_CHARS` of text in all
    (their strings, and those of a dict's members), at least one: a slice sized by
    short items once took in a long text and wrote it in one call."""
    chars = 0
    for index in range(at, min(at + size, len(items))):
        item = items[index]
        kind = type(item)
        if kind is str:
            chars += len(item)
        elif kind is dict:
            for member in item.values():
                if type(member) is str:
                    chars += len(member)
        if chars > _STEP_CHARS:
            return max(1, index - at)
    return size


async def loads_answer(body: bytes) -> Any:
    """An answer the gateway wrote, read again (to convert it for a front, to mask it):
    a large one in a worker thread (the joins', `off_loop`), whose check on each number
    (`finite`; the gateway writes no other) lets the event loop take its turns
    meanwhile."""
    if len(body) < VERBATIM_BYTES:
        return loads(body)
    return await off_loop(loads, body, finite=True)


def _dumps(value: Any, *, nan: bool = False) -> bytes:
    return json.dumps(
        value, ensure_ascii=False, allow_nan=nan, indent=None, separators=(",", ":")
    ).encode("utf-8")
