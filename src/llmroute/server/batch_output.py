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
"""

from __future__ import annotations

import json
from typing import Any

from llmroute.verbatim_json import VERBATIM_BYTES, loads_answer, read_verbatim

__all__ = ["answer_line"]

_VECTORS = ("data",)  # an embeddings answer's, skipped over when its usage is read
_TAIL = b'},"error":null}\n'


async def answer_line(answer: dict[str, Any], body: bytes, endpoint: str) -> tuple[bytes, Any]:
    """The output file's line of `answer` (``id``, ``custom_id``, ``response`` and a
    None ``error``), its response's ``body`` the JSON `body` (``{}`` when it is not a
    JSON object): parsed and written compact when small, as it is (on one line) when
    large; and the answer's ``usage`` (None when it has none)."""
    response = answer["response"]
    if len(body) < VERBATIM_BYTES:
        read = _json(body)
        return _line({**answer, "response": {**response, "body": read}}), read.get("usage")
    large = await _large(body, endpoint)
    head = _line(answer)  # its response without the body
    assert head.endswith(_TAIL) and "body" not in response
    if large is None:  # written verbatim, it would not be JSON (none the gateway writes)
        body = b"{}"
    elif b"\n" in body or b"\r" in body:  # an upstream's own vectors, pretty-printed
        body = body.replace(b"\n", b" ").replace(b"\r", b" ")
    line = b"".join((head[: -len(_TAIL)], b',"body":', body, head[-len(_TAIL) :]))
    return line, None if large is None else large.get("usage")


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
    return json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
