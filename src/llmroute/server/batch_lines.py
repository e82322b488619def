"""A batch's input file read and checked: OpenAI's batch JSONL, one request a line.

Each line is ``{"custom_id", "method": "POST", "url", "body"}``; its ``url`` must be the
batch's endpoint and its ``custom_id`` unique in the file. What is wrong is reported as
OpenAI reports it in a failed batch's ``errors`` (code, message, param, line), the first
`MAX_ERRORS` of them. The bodies are parsed again when their request is sent, so a large
file is held once, as bytes, not as objects; its requests are held flat (`BatchLines`).
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Container, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from llmroute.untrusted_json import MAX_DEPTH, NotFinite, NotUnicode, TooDeep, loads

__all__ = [
    "ENDPOINTS",
    "MAX_ERRORS",
    "BatchLine",
    "BatchLines",
    "read_lines",
    "read_lines_yielding",
]

ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/embeddings")
MAX_ERRORS = 100


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One request of a batch: its `custom_id` and where its line is in the file."""

    custom_id: str
    start: int
    end: int

    def body(self, content: bytes) -> dict[str, Any]:
        """The request's body (checked to be an object when the file was read)."""
        line = loads(content[self.start : self.end], max_depth=MAX_DEPTH)
        body: dict[str, Any] = line["body"]
        return body


class BatchLines:
    """A file's requests, held flat: their custom_ids in a list of strings, their lines'
    offsets in an array, a `BatchLine` made only as one is read. One object a line made
    the garbage collector walk them all on each of its full passes while a large file was
    read (in a thread): 700,000 lines (a 95 MB file) held every thread, the event loop's
    too, for up to 0.5 s a pass, stalling every request the process served."""

    __slots__ = ("_ids", "_spans")

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._spans = array("q")  # start, end of each line: not objects the collector sees

    def append(self, custom_id: str, start: int, end: int) -> None:
        self._ids.append(custom_id)
        self._spans.extend((start, end))

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> BatchLine:
        at = range(len(self._ids))[index]  # an IndexError as a list's, negatives too
        return BatchLine(self._ids[at], self._spans[2 * at], self._spans[2 * at + 1])

    def __iter__(self) -> Iterator[BatchLine]:
        spans = self._spans
        for at, custom_id in enumerate(self._ids):
            yield BatchLine(custom_id, spans[2 * at], spans[2 * at + 1])

    def without(self, custom_ids: Container[str]) -> BatchLines:
        """These lines less those whose custom_id is in `custom_ids`, held flat too."""
        kept = BatchLines()
        spans = self._spans
        for at, custom_id in enumerate(self._ids):
            if custom_id not in custom_ids:
                kept.append(custom_id, spans[2 * at], spans[2 * at + 1])
        return kept


Read = tuple[BatchLines, list[dict[str, Any]]]
_SLICE_BYTES = 256 * 1024  # read between two turns of the event loop (a few ms)
_SLICE_LINES = 256  # (small lines cost their parse each: ~10-30 µs)


def read_lines(content: bytes, endpoint: str, most: int, longest: int | None = None) -> Read:
    """The requests of `content` (at most `most`, each line at most `longest` bytes: the
    gateway's limit on a request body) and OpenAI-style errors for the lines that are not
    one (no requests when there is any error: a batch runs whole or not at all)."""
    reading = _reading(content, endpoint, most, longest)
    while (read := _step(reading)) is None:
        pass
    return read


async def read_lines_yielding(
    content: bytes, endpoint: str, most: int, longest: int | None = None
) -> Read:
    """`read_lines` on the event loop, which it gives back between slices of the file
    (`_SLICE_BYTES` or `_SLICE_LINES`, a few milliseconds): a 95 MB file takes seconds
    to read, and in a thread it held the GIL as long as the interpreter let it, other
    requests waiting on each switch (``/health`` up to 0.3 s, 0.5 s with the collector's
    passes that `BatchLines` saves). A single line is read whole (up to a request's
    size: as long as a live request's own parse)."""
    reading = _reading(content, endpoint, most, longest)
    while (read := _step(reading)) is None:
        await asyncio.sleep(0)
    return read


def _step(reading: Generator[None, None, Read]) -> Read | None:
    """One slice of `reading`; what it read once it is done (None before)."""
    try:
        next(reading)
    except StopIteration as done:
        read: Read = done.value
        return read
    return None


def _reading(
    content: bytes, endpoint: str, most: int, longest: int | None
) -> Generator[None, None, Read]:
    """`read_lines`, yielding after each slice of the file it has read."""
    lines = BatchLines()
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    start = 0
    number = 0
    slice_end, slice_lines = _SLICE_BYTES, _SLICE_LINES
    while start < len(content):
        if start >= slice_end or number >= slice_lines:
            yield
            slice_end, slice_lines = start + _SLICE_BYTES, number + _SLICE_LINES
        end = content.find(b"\n", start)
        end = len(content) if end < 0 else end
        number += 1
        raw = content[start:end]
        if longest is not None and len(raw) > longest:
            message = f"the line is larger than this gateway's limit on a request ({longest} bytes)"
            errors.append({**_error("request_too_large", message, None), "line": number})
            if len(errors) >= MAX_ERRORS:
                break
        elif raw.strip():
            problem = _problem(raw, endpoint, seen)
            if isinstance(problem, str):
                lines.append(problem, start, end)
            else:
                errors.append({**problem, "line": number})
                if len(errors) >= MAX_ERRORS:
                    break
        start = end + 1
    if not errors and not lines:
        errors.append(_error("empty_file", "the file holds no requests", None))
    if not errors and len(lines) > most:
        message = (
            f"the file holds {len(lines)} requests, more than this gateway's "
            f"batches.max_requests ({most}): split it into several batches"
        )
        errors.append(_error("too_many_requests", message, None))
    return (BatchLines() if errors else lines), errors


def _error(code: str, message: str, param: str | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": None}


def _parsed(raw: bytes) -> tuple[Any, str | None]:
    """The line's JSON, or None and why it cannot be read."""
    try:
        return loads(raw, max_depth=MAX_DEPTH, finite=True), None
    except TooDeep:
        return None, f"the line nests arrays and objects more than {MAX_DEPTH} levels deep"
    except NotFinite as exc:
        return None, f"the line is not valid JSON: {exc} (NaN, Infinity, beyond a double)"
    except NotUnicode:
        return None, (
            "the line is not valid Unicode: a string holds an unpaired UTF-16 surrogate "
            "(a \\ud800-\\udfff escape without its pair)"
        )
    except ValueError:  # UnicodeDecodeError too: the file as a whole was checked UTF-8
        return None, "the line is not valid JSON"


def _problem(raw: bytes, endpoint: str, seen: set[str]) -> str | dict[str, Any]:
    """The line's custom_id (added to `seen`), or what is wrong with it."""
    line, unreadable = _parsed(raw)
    if unreadable is not None:
        return _error("invalid_json_line", unreadable, None)
    if not isinstance(line, dict):
        return _error("invalid_request", "the line must be a JSON object", None)
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        message = "each line needs a 'custom_id' (a non-empty string) to match its answer"
        return _error("missing_required_parameter", message, "custom_id")
    if custom_id in seen:
        message = f"custom_id {custom_id[:64]!r} is used by an earlier line: each must be unique"
        return _error("duplicate_custom_id", message, "custom_id")
    if line.get("method") != "POST":
        return _error("invalid_request", "'method' must be \"POST\"", "method")
    url = line.get("url")
    if url != endpoint:
        shown = repr(url[:80]) if isinstance(url, str) else "missing"
        message = f"'url' is {shown}, not the batch's endpoint {endpoint!r}"
        return _error("invalid_url", message, "url")
    body = line.get("body")
    if not isinstance(body, dict):
        return _error("invalid_request", "'body' must be a JSON object (the request)", "body")
    if not isinstance(body.get("model"), str):
        message = "the request needs a 'model' (auto, a route, a pool model or an alias)"
        return _error("missing_required_parameter", message, "body.model")
    if body.get("stream") is True:
        message = "a batch's requests are answered whole: remove 'stream'"
        return _error("invalid_request", message, "body.stream")
    if body.get("background") is True:
        message = "a batch's requests are made in the background already: remove 'background'"
        return _error("invalid_request", message, "body.background")
    seen.add(custom_id)
    return custom_id
