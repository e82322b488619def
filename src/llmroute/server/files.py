"""OpenAI's Files API, for batches: ``/v1/files`` (registry ``batches``; docs/gateway.md).

A client uploads the JSONL of a batch's requests here (``purpose: batch``) and downloads
its answers (``batch_output``) from here. Files are kept in the `BatchStore`, each
readable only with the client key that uploaded it (or, for a batch's answers, made the
batch).
"""

from __future__ import annotations

import asyncio
import codecs
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmroute.server.auth import key_of
from llmroute.server.body import require_identity
from llmroute.server.errors import NO_RETRY, GatewayError, store_unavailable
from llmroute.server.state import gateway_of
from llmroute.state.batches import BatchStore, KeyQuota, UploadsContended, new_file_id
from llmroute.state.stores import StoreUnavailable

__all__ = ["FILES_PATH", "batch_store", "file", "file_content", "files", "listed", "owner_of"]

FILES_PATH = "/v1/files"
_OVERHEAD = 64 * 1024  # the multipart envelope around the file
_LIST_LIMIT = 10_000  # OpenAI's most files a page
_GZIP = b"\x1f\x8b"  # a gzip stream's first bytes (a .jsonl.gz uploaded as the file)
# What an upload's body is parsed and checked by between two turns of the event loop: a
# 95 MB file parsed whole, and decoded whole to check it is UTF-8, held it 0.1-0.35 s
# at a time (every other request waiting)
_SLICE_BYTES = 1 << 20


def batch_store(request: Request) -> BatchStore:
    """The gateway's batch store: 404 without a ``batches`` section."""
    store = gateway_of(request).batches
    if store is None:
        raise GatewayError(
            404,
            "files and batches are off on this gateway: add a 'batches' section to the "
            "registry (docs/registry.md#batches)",
            code="not_found",
        )
    return store


def owner_of(request: Request) -> str:
    return key_of(request.scope) or ""


async def files(request: Request) -> Response:
    """``POST /v1/files`` (upload) and ``GET /v1/files`` (list)."""
    store = batch_store(request)
    owner = owner_of(request)
    try:
        if request.method == "POST":
            return JSONResponse(await _upload(request, store, owner))
        purpose = request.query_params.get("purpose")
        kept = await store.files(owner)
    except StoreUnavailable as exc:
        raise store_unavailable("batch", exc) from None
    if purpose:
        kept = [f for f in kept if f.get("purpose") == purpose]
    if request.query_params.get("order", "desc") == "asc":
        kept.reverse()
    return JSONResponse(listed(request, kept, _LIST_LIMIT, _LIST_LIMIT))


def listed(
    request: Request, items: list[dict[str, Any]], default: int, most: int
) -> dict[str, Any]:
    """OpenAI's list page of `items` (in order) after ``?after=ID``, ``?limit`` long
    (`default` without it, at most `most`)."""
    limit = _limit(request.query_params.get("limit"), default, most)
    after = request.query_params.get("after")
    if after:
        ids = [item.get("id") for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }


def _limit(raw: str | None, default: int, most: int) -> int:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= most:  # int("²") raises
        raise GatewayError(400, f"'limit' must be a whole number from 1 to {most}", param="limit")
    return int(raw)


async def _upload(request: Request, store: BatchStore, owner: str) -> dict[str, Any]:
    most = store.settings.max_file_bytes
    form = await _form(request, most, await store.quota(owner), owner)
    upload, purpose = form.get("file"), form.get("purpose")
    if purpose != "batch":
        raise GatewayError(
            400,
            "this gateway keeps files for batches only: send purpose 'batch'",
            param="purpose",
        )
    if not isinstance(upload, UploadFile):
        raise GatewayError(
            400, "send the file as the multipart/form-data field 'file'", param="file"
        )
    content = await upload.read()
    await upload.close()
    if len(content) > most:
        raise _too_large(most)
    if not content or content.isspace():  # (strip() copied it)
        raise GatewayError(400, "the file is empty", param="file")
    try:
        await _check_utf8(content)
    except UnicodeDecodeError:
        what = "gzip-compressed" if content.startswith(_GZIP) else "not UTF-8 text"
        raise GatewayError(
            400, f"the file is {what}: a batch's file is JSON lines", param="file"
        ) from None
    asked = expires_after(
        {"anchor": form.get("expires_after[anchor]"), "seconds": form.get("expires_after[seconds]")}
        if "expires_after[anchor]" in form or "expires_after[seconds]" in form
        else None,
        "expires_after",
    )
    now = int(time.time())
    record = {
        "id": new_file_id(),
        "object": "file",
        "bytes": len(content),
        "created_at": now,
        "expires_at": now + int(store.ttl(asked)),
        "filename": upload.filename or "upload.jsonl",
        "purpose": "batch",
        "status": "processed",
        "status_details": None,
    }
    try:
        why = await store.put_upload(owner, record, content, ttl_s=asked)
    except UploadsContended as exc:  # not the quota's refusal: sent again, it goes in
        raise GatewayError(
            429,
            f"{_whose(owner)} had {exc.tries} other uploads kept while this one was checked "
            "against its quota (batches.max_key_files, max_key_bytes): try again shortly",
            code="rate_limit_exceeded",
            headers={"retry-after": "1"},
            kind="requests",
        ) from None
    if why is not None:
        raise _over_quota(owner, why)
    return record


_EXPIRY_S = (3600, 30 * 24 * 3600)  # OpenAI's bounds on expires_after.seconds


def expires_after(given: Any, param: str) -> float | None:
    """The seconds of an ``expires_after`` / ``output_expires_after`` (``{"anchor":
    "created_at", "seconds": N}``, N from an hour to 30 days, as OpenAI takes them), None
    when not given: a client that asks for its prompts to be kept an hour must not get
    them kept a week. The store keeps a file at most its ``batches.ttl_s``."""
    if given is None:
        return None
    anchor = given.get("anchor") if isinstance(given, dict) else None
    seconds = given.get("seconds") if isinstance(given, dict) else None
    if isinstance(seconds, str) and seconds.isascii() and seconds.isdigit():  # a form field
        seconds = int(seconds)
    low, high = _EXPIRY_S
    if (
        anchor != "created_at"
        or not isinstance(seconds, int)
        or isinstance(seconds, bool)
        or not low <= seconds <= high
    ):
        raise GatewayError(
            400,
            f'\'{param}\' must be {{"anchor": "created_at", "seconds": N}} with N from '
            f"{low} to {high}",
            param=param,
        )
    return float(seconds)


async def _form(request: Request, most: int, quota: KeyQuota, owner: str) -> Any:
    """The multipart form of the request, its body read before it is parsed, and only
    while it may hold a file the key may keep: a file of at most `most` bytes (413 past
    it) and, by its `quota`, within the key's room (429 past it, from its Content-Length
    or as it comes; at once for a key that holds as many files as it may)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise GatewayError(
            400, "upload the file as multipart/form-data (fields 'file' and 'purpose')"
        )
    if (refused := quota.full()) is not None:
        raise _over_quota(owner, refused)
    limit, room = most + _OVERHEAD, quota.room()

    def check(size: int) -> None:
        if size > limit:
            raise _too_large(most)
        if room is not None and size > room + _OVERHEAD:  # the envelope aside, as above
            raise _over_quota(owner, quota.past_room())

    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit():
        check(int(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        check(size)
        chunks.append(chunk)
    require_identity(request)  # the whole body compressed: a part's own is the file's
    pieces = _pieces(deque(chunks))
    chunks.clear()
    piece: bytes | None = next(pieces, b"")

    async def receive() -> dict[str, Any]:
        # the parser is given the body a slice at a time, the loop turning in between
        nonlocal piece
        if piece is None:
            return {"type": "http.disconnect"}
        body, piece = piece, next(pieces, None)
        await asyncio.sleep(0)
        return {"type": "http.request", "body": body, "more_body": piece is not None}

    try:
        return await Request(request.scope, receive).form(max_files=1, max_fields=16)
    except MultiPartException as exc:
        raise GatewayError(400, f"the multipart body could not be read: {exc.message}") from None
    except HTTPException as exc:  # what Starlette makes of a MultiPartException in an app
        raise GatewayError(400, f"the multipart body could not be read: {exc.detail}") from None


def _pieces(chunks: deque[bytes]) -> Iterator[bytes]:
    """`chunks` (the body as it came, freed as it goes) joined into slices of about
    `_SLICE_BYTES`."""
    while chunks:
        run = [chunks.popleft()]
        size = len(run[0])
        while chunks and size < _SLICE_BYTES:
            run.append(chunks.popleft())
            size += len(run[-1])
        yield run[0] if len(run) == 1 else b"".join(run)


async def _check_utf8(content: bytes) -> None:
    """`UnicodeDecodeError` unless `content` is UTF-8, read a slice at a time with the
    event loop turning in between (a character cut by a slice's end is read whole)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(content)
    for start in range(0, len(content), _SLICE_BYTES):
        end = start + _SLICE_BYTES
        decoder.decode(view[start:end], end >= len(content))
        await asyncio.sleep(0)


def _whose(owner: str) -> str:
    return f"client key {owner!r}" if owner else "the gateway's client"


def _over_quota(owner: str, why: str) -> GatewayError:
    return GatewayError(
        429,
        f"{_whose(owner)} {why}: delete files it no longer needs (DELETE /v1/files/{{id}}) or "
        "wait for them to expire",
        param="file",
        code="file_quota_exceeded",
        headers=NO_RETRY,
        kind="insufficient_quota",
    )


def _too_large(most: int) -> GatewayError:
    return GatewayError(
        413,
        f"the file is larger than this gateway's batches.max_file_bytes ({most} bytes): "
        "split the batch",
        code="request_too_large",
    )


async def file(request: Request) -> Response:
    """``GET`` / ``DELETE /v1/files/{file_id}``."""
    store = batch_store(request)
    owner, file_id = owner_of(request), request.path_params["file_id"]
    try:
        if request.method == "DELETE":
            if not await store.delete_file(owner, file_id):
                raise _no_file(file_id)
            return JSONResponse({"id": file_id, "object": "file", "deleted": True})
        found = await store.get_file(owner, file_id)
    except StoreUnavailable as exc:
        raise store_unavailable("batch", exc) from None
    if found is None:
        raise _no_file(file_id)
    return JSONResponse(found)


async def file_content(request: Request) -> Response:
    """``GET /v1/files/{file_id}/content``: the file's bytes."""
    store = batch_store(request)
    owner, file_id = owner_of(request), request.path_params["file_id"]
    try:
        found = await store.get_file(owner, file_id)
        content = None if found is None else await store.content(owner, file_id)
    except StoreUnavailable as exc:
        raise store_unavailable("batch", exc) from None
    if found is None:
        raise _no_file(file_id)
    if content is None:  # evicted from a full memory store, or expired before its record
        raise GatewayError(
            404,
            f"the content of file '{file_id}' is no longer kept",
            param="file_id",
            code="not_found",
        )
    return Response(content, media_type="application/jsonl")


def _no_file(file_id: str) -> GatewayError:
    shown = file_id if len(file_id) <= 80 else file_id[:80] + "…"
    return GatewayError(404, f"no file with id '{shown}'", param="file_id", code="not_found")
