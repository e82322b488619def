"""Reading a JSON request body with a size limit."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from llmroute.chat_checks import check_chat_body
from llmroute.errors import InvalidRequest
from llmroute.joined_bytes import joined, off_loop
from llmroute.proxy_fields import METADATA_KEYS, metadata_fault, openai_metadata
from llmroute.server.errors import GatewayError
from llmroute.server.expect import expects_continue
from llmroute.server.settings import DEFAULT_MAX_BODY_BYTES
from llmroute.untrusted_json import (
    MAX_DEPTH,
    NotFinite,
    NotUnicode,
    TooDeep,
    loads,
    where_not_finite,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "MAX_DEPTH",
    "checked_metadata",
    "read_json_object",
    "require_identity",
    "require_messages",
]

_DRAIN_FACTOR = 16  # read (and drop) this many limits' worth before giving up on a body
# a larger body is parsed in a worker thread (`off_loop`): 3 MB of token ids (embeddings
# input) took ~110 ms, each integer checked by a Python call, on the event loop
_OFF_LOOP_BYTES = 1 << 20


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object: 413 past `limit` bytes, 400 when it is not one."""
    declared = request.headers.get("content-length", "")
    # a client waiting for 100 Continue has sent none of it: told at once, it sends none
    bound = limit if expects_continue(request.scope) else limit * _DRAIN_FACTOR
    if declared.isascii() and declared.isdigit() and int(declared) > bound:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit * _DRAIN_FACTOR:
            break
        if size <= limit:
            chunks.append(chunk)
    # An oversized body is drained (not kept) up to a bound, so the client can read the
    # 413 instead of seeing its upload cut off.
    if size > limit:
        raise _too_large(limit)
    require_identity(request)
    small = size < _OFF_LOOP_BYTES
    body = b"".join(chunks) if small else await joined(chunks)
    try:
        # a large body's parsed in a worker thread (`off_loop`), where the checks on its
        # numbers let the event loop take its turns meanwhile; a small one's here, with
        # no coroutine of its own to make and await
        data = (
            loads(body, max_depth=MAX_DEPTH, finite=True)
            if small
            else await off_loop(loads, body, max_depth=MAX_DEPTH, finite=True)
        )
    except TooDeep:
        raise GatewayError(
            400, f"the request body nests arrays and objects more than {MAX_DEPTH} levels deep"
        ) from None
    except NotUnicode:
        raise GatewayError(
            400,
            "the request body is not valid Unicode: a string holds an unpaired UTF-16 "
            "surrogate (a \\ud800-\\udfff escape without its pair)",
        ) from None
    except NotFinite as exc:
        raise GatewayError(
            400,
            f"the request body is not valid JSON: {exc} (NaN, Infinity and numbers beyond "
            "a double are not JSON)",
            param=await _where_not_finite(body),
        ) from None
    except UnicodeDecodeError:  # a ValueError: caught before the catch-all below
        raise GatewayError(
            400,
            "the request body is not valid JSON: it is not UTF-8 text (JSON is sent as "
            "UTF-8, whatever charset the content type names)",
        ) from None
    except ValueError:
        raise GatewayError(400, "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise GatewayError(400, "the request body must be a JSON object")
    return data


async def _where_not_finite(body: bytes) -> str | None:
    """`where_not_finite`: for a large body in a worker thread too (it parses the body
    again and walks it)."""
    if len(body) < _OFF_LOOP_BYTES:
        return where_not_finite(body)
    return await off_loop(where_not_finite, body)


def require_messages(body: dict[str, Any]) -> tuple[str, ...]:
    """A chat-completions body checked as OpenAI checks it (`check_chat_body`, which the
    SDK runs too): 400 naming the field; else the tags it names, for `note_body_tags`.
    The one call both chat paths (the endpoint, a batch's line) make before routing."""
    try:
        return check_chat_body(body)
    except InvalidRequest as exc:
        raise GatewayError(400, exc.message, param=exc.param, code=exc.code) from None


def require_identity(request: Request) -> None:
    """415 for a compressed body (``Content-Encoding: gzip``), which is not decoded: it
    was told it is not UTF-8 "whatever charset the content type names", which was not
    what was wrong with it. Checked once the body is read, as a too-large one is (a
    ``/v1/files`` upload's too: it was told its multipart data was invalid)."""
    coding = request.headers.get("content-encoding", "").strip().lower()
    if coding not in ("", "identity"):
        raise GatewayError(
            415,
            f"the request body is sent with Content-Encoding: {coding[:40]!r}, which this "
            "gateway does not decode: send it uncompressed",
            code="unsupported_content_encoding",
            headers={"Accept-Encoding": "identity"},
        )


def checked_metadata(value: object) -> dict[str, str] | None:
    """A request's ``metadata`` as OpenAI's APIs take it (None when absent); else 400."""
    if value is None:
        return None
    if not openai_metadata(value):
        fault = metadata_fault(value) if isinstance(value, dict) else None
        rule = (
            f"'metadata' must map at most {METADATA_KEYS} keys (64 characters) to strings "
            "(512 characters)"
        )
        raise GatewayError(400, f"{fault}: {rule}" if fault else rule, param="metadata")
    return dict(value)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, f"the request body is larger than {limit} bytes", code="request_too_large"
    )
