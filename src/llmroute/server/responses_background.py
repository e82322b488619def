"""A background response's life (``background: true``, where responses are kept:
`llmroute.server.responses`): room checked for it first (``stored_responses.max_background``,
`check_room`), then planned, kept ``in_progress`` with its lease and answered at once
(`plan_in_background`, `_start_in_background`); made in a task of this process
(`llmroute.server.background`) that renews its lease, stops at a cancel made elsewhere and
keeps its end, completed or failed (`_answer_in_background`; a stream's events kept as
made: `llmroute.server.background_stream`). One refused after its record may have been
written is forgotten (`_discarded`); one whose process stopped renewing its lease is kept
failed when it is next read (`reaped`). Each outcome is counted in
``llmroute_background_responses_total`` (`background_counted`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from llmroute.errors import LlmrouteError
from llmroute.server.background import BackgroundRuns, background_runs, detached
from llmroute.server.background_stream import EventChunks, RunLog, follow, kept_as_made
from llmroute.server.chat import CLIENT_CLOSED
from llmroute.server.ended_stream import STREAM_HEADERS, EndedStream
from llmroute.server.errors import GatewayError, gateway_error, store_unavailable
from llmroute.server.fronts import answer_converted, plan_converted
from llmroute.server.keepalive import keepalive_of, with_keepalive
from llmroute.server.state import Gateway
from llmroute.state.stored_responses import RUNNING, ResponseStore, StoredResponse
from llmroute.state.stores import StoreUnavailable, asked
from llmroute.telemetry.metrics import GatewayMetrics

if TYPE_CHECKING:
    from llmroute.server.responses_kept import _Kept

log = logging.getLogger("llmroute.server")

_CANCEL_POLL_S = 1.0  # how often a background run looks for a cancel made elsewhere


async def plan_in_background(
    request: Request,
    gateway: Gateway,
    front: _Kept,
    body: dict[str, Any],
    chat: dict[str, Any],
    ts: float,
    started_ns: int,
) -> Response:
    """`chat` planned now, then started in the background: what refuses the request (its
    tags, its model, the key's lists and tpm) is answered as chat answers it, not kept as
    the background run's failure. One too large to keep is refused first (not routed)."""
    response = front.queued(body)
    record = front.record(response)
    value = front.store.encoded(record)
    if value is None:
        raise _too_large_to_keep()
    planned = await plan_converted(request, body, chat, ts, started_ns)
    if planned is None:
        return Response(status_code=CLIENT_CLOSED)
    answer = partial(
        answer_converted, detached(request), front, body, chat, ts, started_ns, None, planned
    )
    kept = _Queued(response, record, value, planned.release)
    try:
        return await _start_in_background(request, gateway, front, body, kept, answer)
    except BaseException:  # not started: else its run's end gives back the tokens it holds
        if planned.release is not None:
            planned.release()
        raise


async def _start_in_background(
    request: Request,
    gateway: Gateway,
    front: _Kept,
    body: dict[str, Any],
    queued: _Queued,
    answer: Callable[[], Awaitable[Response]],
) -> Response:
    """The `queued` response, ``in_progress`` and kept (so any gateway sharing the store
    can be polled for it), answered now; the `answer` made in a task of this process."""
    runs = background_runs(request)
    if runs.closed:  # shut down: nothing would run it
        raise _stopping()
    response, release = queued.response, queued.release
    stream = _Stream(RunLog(), front.events()) if body.get("stream") is True else None
    # at once, as OpenAI does: the model may think for long
    opening = [] if stream is None else front.announce(body)
    try:
        kept = await _keep_queued(runs, front, queued, stream, opening)
    except StoreUnavailable as exc:
        raise unavailable(exc) from None
    if not kept:  # refused by the store: not expected (`encoded` checked its bounds)
        raise _too_large_to_keep()
    count = partial(background_counted, request)
    run = _answer_in_background(answer, gateway, front, count, stream)
    if not runs.start(front.id, run, None if stream is None else stream.run, release):
        await _discarded(front)  # shut down while it was kept: not run, nor left
        raise _stopping()
    background_counted(request, "started")
    if stream is None:
        return JSONResponse(response)
    for event in opening:
        stream.run.add(event)
    settled = partial(reaped, front.store, front.owner, front.id, partial(count, "abandoned"))
    return streaming(request, follow(stream.chunks, stream.run, -1, settled), {})


async def _keep_queued(
    runs: BackgroundRuns,
    front: _Kept,
    queued: _Queued,
    stream: _Stream | None,
    opening: list[bytes],
) -> bool:
    """What a run needs in the store before it starts: `queued` kept, its lease taken
    (after the record: a process that dies in between leaves it abandoned) and a
    `stream`'s `opening` events written; False when it is too large to keep. Should that
    fail (or the request be cancelled) once the record may be written, the response is
    forgotten in a task of `runs` (`_discarded`; here, once they are shut down):
    refused, its id was never told, and running it would be neither evicted nor counted
    for its key's bound until ``ttl_s``."""
    store, owner = front.store, front.owner
    front.queued_as = queued.value
    written = True  # from the moment it is asked for, the record may be in the store
    try:
        try:
            kept = await store.put(owner, queued.record, counted=False, value=queued.value)
        except StoreUnavailable as exc:
            written = not exc.paused_s  # refused unasked: nothing was written
            raise
        if not kept:  # not written, or evicted by the bound's script itself
            return False
        await store.hold(owner, front.id)
        if stream is not None:
            await stream.chunks.write(0, opening)
    except BaseException:
        if written and not runs.start(front.id, _discarded(front)):
            await _discarded(front)  # the runs shut down meanwhile: none would forget it
        raise
    return True


async def _discarded(front: _Kept) -> None:
    """A background response refused after its record may have been written, forgotten
    with its events and lease; asked of the store itself (`asked`: past the pause its
    failure began). One the store still does not answer for is left, said."""
    store, owner, response_id = front.store, front.owner, front.id

    async def forget() -> None:
        await forgotten(store, owner, response_id)
        await store.release(owner, response_id)

    try:
        await asked(forget)
    except StoreUnavailable as exc:
        log.warning(
            "responses: background response %s, refused, is left in the store until "
            "stored_responses.ttl_s: %s",
            response_id,
            exc,
        )


@dataclass(frozen=True, slots=True)
class _Queued:
    """A background request's response as first answered (``in_progress``), its record
    and the record's bytes, made once: checked to fit before routing, then kept; and
    what gives back the tokens its plan holds against its key's ``tpm`` (given back
    once, by the answer or, at the latest, when its run's task ends)."""

    response: dict[str, Any]
    record: StoredResponse
    value: bytes
    release: Callable[[], None] | None = None


def _stopping() -> GatewayError:
    return GatewayError(
        503,
        "the gateway is shutting down: send the request again",
        code="server_shutdown",
        headers={"retry-after": "1"},
    )


def _too_large_to_keep() -> GatewayError:
    return GatewayError(
        400,
        "a background response must be kept to be polled, and this request is too large "
        "to keep (stored_responses.max_bytes, max_key_bytes): send it without 'background'",
        param="background",
    )


def check_room(request: Request, store: ResponseStore) -> None:
    """400 where background responses are off, 429 where this process makes its most
    (runs, and requests let in before them: `BackgroundRuns.claim`): asked first, so that
    a request refused for it is not routed (an LLM router's call)."""
    limit = store.settings.max_background
    if limit == 0:
        raise GatewayError(
            400,
            "background responses are off on this gateway (stored_responses.max_background "
            "is 0): send the request without 'background'",
            param="background",
        )
    if len(background_runs(request)) >= limit:
        background_counted(request, "refused")
        raise GatewayError(
            429,
            f"this gateway is already making {limit} background responses, its limit "
            "(stored_responses.max_background): try again shortly",
            code="rate_limit_exceeded",
            headers={"retry-after": "1"},
            kind="requests",
        )


@dataclass(frozen=True, slots=True)
class _Stream:
    """A background run that streams: its events go to `run` (this process's
    followers) and `chunks` (the store's; chunk 0 holds the opening events)."""

    run: RunLog
    chunks: EventChunks


def streaming(request: Request, events: AsyncIterator[bytes], headers: dict[str, str]) -> Response:
    headers = {**headers, **STREAM_HEADERS}
    streamed = EndedStream(events, media_type="text/event-stream", headers=headers)
    return with_keepalive(streamed, keepalive_of(request))


def background_counted(request: Request, outcome: str) -> None:
    """`outcome` counted in ``llmroute_background_responses_total``."""
    metrics = getattr(request.app.state, "metrics", None)
    if isinstance(metrics, GatewayMetrics):
        metrics.background_responses(outcome)


async def _answer_in_background(
    answer: Callable[[], Awaitable[Response]],
    gateway: Gateway,
    front: _Kept,
    count: Callable[[str], None],
    stream: _Stream | None = None,
) -> None:
    """`answer()` made, which keeps the background response (`_Kept.answer`, or for a
    `stream` its last event), or the response kept failed; a cancel (here, or seen in the
    store) stops it. Counted in `gateway`'s flight, so a registry reload keeps the
    clients it uses open until it ends; its outcome told to `count`, once: not for one
    found abandoned meanwhile (its lease lapsed), which the read that found it counted."""
    task = asyncio.current_task()
    assert task is not None
    watcher = asyncio.create_task(_watch(front, task))
    outcome = "failed"
    with gateway.inflight:
        try:
            answered = await answer()
            if stream is not None:
                await _streamed(stream, answered, front)
            made = "failed" if front.not_kept else "completed"
            outcome = "cancelled" if front.unwanted else made
        except asyncio.CancelledError:
            # by a client (kept as cancelled already: left so) or by the gateway stopping
            stopped = "the gateway stopped before it made this response: send it again"
            outcome = "failed" if await front.fail(503, stopped, wait=False) else "cancelled"
            raise
        except Exception as exc:
            status, message = _failure(exc, front.id)
            outcome = "failed" if await front.fail(status, message) else "cancelled"
        finally:
            watcher.cancel()
            with contextlib.suppress(StoreUnavailable):  # else it lapses by itself
                await front.store.release(front.owner, front.id)
            if stream is not None:
                stream.run.close()
                await _events_forgotten_with(front, stream)
            if not _found_abandoned(front.ended):  # else counted so by the read that found it
                count(outcome)


def _failure(exc: Exception, response_id: str) -> tuple[int, str]:
    """The HTTP status and message a run that raised `exc` is kept failed with."""
    if isinstance(exc, GatewayError):
        return exc.status, exc.message
    if isinstance(exc, LlmrouteError):
        error = gateway_error(exc)
        return error.status, error.message
    log.exception("background response %s", response_id)
    return 500, "internal server error"


def _found_abandoned(record: StoredResponse | None) -> bool:
    """Whether `record` was kept failed by a read that found its run abandoned
    (`reaped`; its message, kept whole, `trimmed` or `bare`, begins so)."""
    error = None if record is None else record.response.get("error")
    return isinstance(error, dict) and str(error.get("message")).startswith(_ABANDONED_START)


async def _events_forgotten_with(front: _Kept, stream: _Stream) -> None:
    """A run's events forgotten again where its response was deleted while it ran: the
    batches it wrote since, until it was stopped, would be kept until ``ttl_s``."""
    with contextlib.suppress(StoreUnavailable):  # else they expire with it
        if await front.status() is None:
            await stream.chunks.forget()


async def _streamed(stream: _Stream, answered: Response, front: _Kept) -> None:
    """The answer's stream read to its end into `stream` (its last event keeps the
    response); one that ended without its last event is kept failed."""
    if isinstance(answered, StreamingResponse):
        try:
            await kept_as_made(answered.body_iterator, stream.run, stream.chunks, first=1)
        finally:
            if isinstance(answered, EndedStream):
                await answered.end()  # read here, not sent: what it holds, given back
    try:
        status = await front.status()
    except StoreUnavailable:
        return
    if status in RUNNING and front.not_kept:  # its end said so, and could not keep it
        await front.fail(500, NOT_KEPT)
    elif status in RUNNING:
        await front.fail(502, "the upstream stream ended before the response was made")


async def _watch(front: _Kept, task: asyncio.Task[None]) -> None:
    """While `task` makes `front`'s response: renew its lease (a third of
    ``stored_responses.lease_s`` at a time) and cancel the task once the response is
    cancelled or deleted in the store (by a request another gateway process took)."""
    lease_s = front.store.settings.lease_s
    tick_s = min(_CANCEL_POLL_S, lease_s / 3)
    renewed = time.monotonic()
    while True:
        await asyncio.sleep(tick_s)
        try:
            if time.monotonic() - renewed >= lease_s / 3:
                await front.store.hold(front.owner, front.id)
                renewed = time.monotonic()
            status = await front.status()
        except StoreUnavailable:
            continue
        if status is None or status == "cancelled":
            task.cancel()
            return


def as_failed(record: StoredResponse, status: int, message: str) -> StoredResponse:
    """`record` kept failed with OpenAI's error for an answer of HTTP `status`."""
    code = (
        "rate_limit_exceeded"
        if status == 429
        else "invalid_prompt"
        if 400 <= status < 500
        else "server_error"
    )
    error = {"code": code, "message": message}
    return replace(record, response={**record.response, "status": "failed", "error": error})


NOT_KEPT = (
    "the answer was made but could not be kept (larger than stored_responses.max_bytes, "
    "or the store did not answer): send it again without 'background'"
)

_ABANDONED = (
    "the gateway process making this response stopped without finishing it (its lease, "
    "stored_responses.lease_s, lapsed): send it again"
)
# what of it even a record kept `bare` keeps (its message's first 100 characters)
_ABANDONED_START = _ABANDONED[:80]


async def reaped(
    store: ResponseStore,
    owner: str,
    response_id: str,
    abandoned: Callable[[], None] = lambda: None,
) -> StoredResponse | None:
    """The kept response; a background one whose process stopped renewing its lease
    (crashed, killed) kept failed first, and `abandoned()` told."""
    record = await store.get(owner, response_id)
    if record is None or not record.running:
        return record
    if await store.held(owner, response_id):
        return record
    now, ended = await kept_ended(
        store, owner, response_id, partial(as_failed, status=500, message=_ABANDONED)
    )
    if ended:
        log.warning("responses: background response %s abandoned (lease lapsed)", response_id)
        abandoned()
    return now


async def kept_ended(
    store: ResponseStore,
    owner: str,
    response_id: str,
    end: Callable[[StoredResponse], StoredResponse],
) -> tuple[StoredResponse | None, bool]:
    """A background response still running read again and kept `end`ed (failed,
    cancelled), written only over the record as read, so that one that ended or was
    deleted meanwhile is left so; the response as kept then (None: not kept), and
    whether it was ended here."""
    found = await store.read(owner, response_id)
    if found is None or not found[0].running:
        return (None if found is None else found[0]), False
    kept = await store.put_ended(owner, end(found[0]), found[1])
    if kept is not None:
        return kept, True
    return await store.get(owner, response_id), False


def unavailable(exc: StoreUnavailable) -> GatewayError:
    return store_unavailable("response", exc)


async def forgotten(store: ResponseStore, owner: str, response_id: str) -> bool:
    """The response forgotten, with the events of a background stream (they hold its
    text too); whether it was kept."""
    gone = await store.delete(owner, response_id)
    await EventChunks(store, owner, response_id).forget()
    return gone
