"""``POST /v1/chat/completions`` and ``POST /v1/route``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Scope

from llmroute.decide import Router
from llmroute.decision import Decision, SafetyOutcome
from llmroute.dispatch import Opened, Plan, TierStep, aplan_request, cascade_header
from llmroute.dispatch.model_params import param_as_asked
from llmroute.dispatch.plan import OFF_LOOP_CHARS, may_answer_raw
from llmroute.dispatch.spend import BUG, Spend, cancelled_on, paid_by_model, tracked
from llmroute.dispatch.text_completions import TextRequest
from llmroute.dispatch.usage import Usage, estimated_prompt_tokens
from llmroute.errors import InvalidRequest, LlmrouteError, ProviderError
from llmroute.gates.base import total_usage
from llmroute.joined_bytes import off_loop
from llmroute.layers.llm_router import refine_plan
from llmroute.proxy_fields import body_tags
from llmroute.safety.answer_pii import Counted
from llmroute.safety.restore import StreamRestorer, restore_completion
from llmroute.server.auth import api_key_of, check_model, hold_key_tokens, key_of
from llmroute.server.body import read_json_object, require_messages
from llmroute.server.cached import cache_headers, hit_headers
from llmroute.server.chunk_translation import BROKE_OFF_CHUNK, BUG_CHUNK, translated
from llmroute.server.ended_stream import END_S, STREAM_HEADERS, EndedStream, closers_of
from llmroute.server.errors import INTERNAL_ERROR, GatewayError, gateway_error
from llmroute.server.keepalive import keepalive_of, with_keepalive
from llmroute.server.pool import keep_in_pool, may_reach
from llmroute.server.request_ids import recorded_as, routed_as
from llmroute.server.shutdown import stopping
from llmroute.server.state import Gateway, gateway_of
from llmroute.state import CacheLookup, look_up, replay
from llmroute.telemetry.answers import StreamedAnswer, cached_text
from llmroute.telemetry.attribution import TAGS_HEADER, parse_tags
from llmroute.telemetry.metrics import GatewayMetrics
from llmroute.telemetry.record import (
    CLIENT_CLOSED,
    CLIENT_DISCONNECTED,
    SERVER_SHUTDOWN,
    DecisionRecord,
)
from llmroute.telemetry.recorder import Recorder
from llmroute.telemetry.service import Telemetry
from llmroute.telemetry.shadow import ShadowRunner, answer_text
from llmroute.telemetry.tracing import RequestTrace, Tracing
from llmroute.verbatim_json import answer_json, loads_answer

__all__ = [
    "CLIENT_CLOSED",
    "GATEWAY_TAGS",
    "Planned",
    "RelayedStream",
    "chat_completions",
    "cut_by",
    "decision_headers",
    "note_body_tags",
    "note_converted_tags",
    "plan_chat",
    "route_only",
    "serve_chat",
    "served_headers",
]

GATEWAY_TAGS = "llmroute.tags"  # scope key: tags the gateway adds to a request
BODY_TAGS = "llmroute.body_tags"  # scope key: the tags the request's body names
# the decision log's `api`, by endpoint (a batch line's request takes its endpoint's path)
_API_BY_PATH = {
    "/v1/chat/completions": "chat",
    "/v1/messages": "messages",
    "/v1/responses": "responses",
    "/v1/completions": "completions",
}

log = logging.getLogger("llmroute.server")

T = TypeVar("T")


class _ClientGone(Exception):
    """The client disconnected while its answer was being made."""


class _GoneWhilePlanning(Exception):
    """The client disconnected while the LLM router was being asked; `plan` is the plan
    before it, what the request is logged with."""

    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan


async def _disconnected(request: Request) -> None:
    """Returns once the client has hung up (the body has been read: what the server
    delivers next is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# How soon a swallowed cancel is said again: long enough that the cleanup a cancel that
# did land sets off (holds taken back, the upstream call closed: a few ms) is not itself
# cut short, short enough that a swallowed one stops the work well before its answer.
_RECANCEL_S = 0.1
_SLOW_PLAN_S = 0.005  # a plan this long asks whether its client is still there
# Python 3.11's asyncio.wait_for, around every command redis-py sends, swallows a cancel
# that lands as it completes (CPython gh-86296, fixed in 3.12): only there is it said again
_SWALLOWS_CANCEL = sys.version_info < (3, 12)


async def _unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """`work`, cancelled when the client disconnects first: an answer the caller gave up
    on (its timeout, a closed tab) closes its upstream call and tries nothing more (a
    server that aborts on a closed connection stops generating). `work` runs in
    this task (one watcher task a request, ~6 µs). A stream is watched until it is
    handed over (its first words, or ``dispatch.stream_hold_s``: a reasoning model may
    think for minutes), then by its response."""
    current = asyncio.current_task()
    assert current is not None
    cancels = 0

    async def watch() -> None:
        nonlocal cancels
        await _disconnected(request)
        cancels += 1
        current.cancel()
        while _SWALLOWS_CANCEL:  # said again until the work stops
            await asyncio.sleep(_RECANCEL_S)
            cancels += 1
            current.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not cancels:
            raise
    finally:
        watcher.cancel()
        for _ in range(cancels):
            current.uncancel()
    raise _ClientGone


def decision_headers(decision: Decision, model: str | None = None) -> dict[str, str]:
    """The ``x-llmroute-*`` headers; `model` is the pool model that served, when known.
    ``x-request-id`` is the decision id too: OpenAI's clients expose it as a response's
    ``_request_id``, which is what ``/v1/feedback`` takes."""
    return {
        "x-request-id": decision.id,
        "x-llmroute-decision-id": decision.id,
        "x-llmroute-route": decision.route,
        "x-llmroute-model": model or decision.model,
        "x-llmroute-confidence": f"{decision.confidence:.4f}",
        "x-llmroute-layer": decision.layer,
    }


def served_headers(deployment: str, attempts: tuple[str, ...]) -> dict[str, str]:
    """Which deployment answered and how many tries failed or escalated before it: what
    an on-call engineer asks first of a slow or odd answer. The count only; the reasons
    (upstream error text) stay in the decision log."""
    return {"x-llmroute-deployment": deployment, "x-llmroute-attempts": str(len(attempts))}


async def chat_completions(request: Request) -> Response:
    ts, started_ns = time.time(), time.perf_counter_ns()
    gateway = gateway_of(request)
    body = await read_json_object(request, gateway.max_body_bytes)
    note_body_tags(request, body, require_messages(body))
    answer = await serve_chat(request, gateway, body, ts, started_ns)
    return with_keepalive(answer, keepalive_of(request))


async def serve_chat(
    request: Request,
    gateway: Gateway,
    body: dict[str, Any],
    ts: float,
    started_ns: int,
    text: TextRequest | None = None,
    planned: Planned | None = None,
) -> Response:
    """Route, dispatch, cache, record and trace one chat-completions `body`; the answer
    in OpenAI's format (a JSON response, or a stream of its chunks). Errors are raised
    (`GatewayError`, `LlmrouteError`) for the caller's front to render. `ts` and
    `started_ns` are the request's arrival; `text`, for a completions request, goes on
    the plan (models continuing raw text get the request raw). `planned`: the request
    planned already (`plan_chat`: a background response, before it was queued)."""
    if planned is None:
        planned = await plan_chat(request, gateway, body, ts, started_ns)
        if planned is None:
            return Response(status_code=CLIENT_CLOSED)
    plan, release = planned.plan, planned.release
    if text is not None:
        plan = dataclasses.replace(plan, text=text)
    # every answer from here on is the decision's, whatever it is (a 500, a shutdown's
    # 503), and is logged as the decision, however the request ends
    routed_as(request.scope, plan.decision.id)
    handed = False  # a stream gives the tokens back when it ends
    try:
        response, handed = await _serve_planned(
            request, gateway, plan, body, ts, started_ns, release, planned.tags
        )
    finally:
        if release is not None and not handed:
            release()
    recorded_as(request.scope, response.status_code)  # an error after this is not it
    if handed:  # a relayed stream: made for its client as it was handed on (`_relayed`)
        return response
    return await _edited(request, plan.decision.safety, response)


async def _edited(request: Request, safety: SafetyOutcome | None, response: Response) -> Response:
    """`response` as its client gets it (`_for_client`), where the request's safety
    profile edits answers."""
    if safety is None or not (safety.restore or safety.answer_mask is not None):
        return response
    metrics = _metrics_of(request)
    counted = metrics.answer_pii if metrics is not None else None
    return await _for_client(response, safety, counted)


def _metrics_of(request: Request) -> GatewayMetrics | None:
    """The gateway's metrics (None in an app without them)."""
    metrics = getattr(request.app.state, "metrics", None)
    return metrics if isinstance(metrics, GatewayMetrics) else None


def _span_ended(
    trace: RequestTrace,
    record: DecisionRecord | None,
    metrics: GatewayMetrics | None,
    failed: BaseException | None = None,
    broke_after_done: BaseException | None = None,
) -> None:
    """`trace` ended with `record`, its request's row (and `failed`, the exception that
    failed it: a bug's, or an error with no row; `broke_after_done`, the break of a
    stream's upstream once its ``[DONE]`` had gone out). Every request span ends here: a bug
    there is logged and counted (``llmroute_telemetry_errors_total{part="span"}``), not
    the request's, whose answer (an error, a cut) is made and recorded as it would be
    without it (the client got a 500 that its row did not hold)."""
    try:
        if failed is None:
            trace.finish(record, broke_after_done)
        else:
            trace.fail(failed, record)
    except Exception:
        log.exception("tracing a request failed")
        if metrics is not None:
            metrics.telemetry_error("span")


@dataclass(frozen=True, slots=True)
class Planned:
    """A chat request ready to be sent: its plan, and what gives back the tokens it holds
    against its key's ``tpm`` (None: nothing held)."""

    plan: Plan
    release: Callable[[], None] | None
    tags: tuple[str, ...]  # `request_tags`, read as it was planned


async def plan_chat(
    request: Request, gateway: Gateway, body: dict[str, Any], ts: float, started_ns: int
) -> Planned | None:
    """A chat `body` planned, refused as chat refuses it before anything is sent and in
    its order (its tags, the key's allow-list, the model looked up, the key's pool, its
    prompt past the key's ``tpm``); None for a client gone while it was planned (logged
    as its decision, 499)."""
    if BODY_TAGS not in request.scope:  # every front notes them first: a caller that did not
        note_body_tags(request, body)
    tags = request_tags(request)  # a malformed header is refused before any work
    _check_model(request, gateway, body)
    try:
        plan = await _plan(request, gateway, body)
    except _GoneWhilePlanning as gone:
        unserved = _Unserved(
            gateway.router,
            recorder_of(request, tags=tags),
            gone.plan.decision,
            body,
            ts,
            started_ns,
            _metrics_of(request),
        )
        trace = tracing_of(request).start_request(
            gone.plan.decision,
            start_ns=int(ts * 1e9),
            headers=request.headers,
            api=api_of(request.scope.get("path", "")),
        )
        cut = unserved.record(CLIENT_CLOSED, CLIENT_DISCONNECTED, (), body.get("stream") is True)
        _span_ended(trace, cut, unserved.metrics)
        return None
    try:
        release = await _hold_tokens(request, gateway, plan, body, ts, started_ns, tags)
        return Planned(plan, release, tags)
    except BaseException:
        routed_as(request.scope, plan.decision.id)  # logged as its decision, as served
        raise


async def _for_client(
    response: Response, safety: SafetyOutcome, counted: Counted | None = None
) -> Response:
    """`response` with PII the model wrote redacted (the profile's ``answer_pii``), then
    the placeholders of this request's redaction swapped back for their values
    (``restore``). Only here, on the way to the client: the cache, the decision log and
    the shadow judge keep the answer the provider wrote."""
    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    mask, values = safety.answer_mask, safety.restore
    if isinstance(response, StreamingResponse):
        events: AsyncIterable[str | bytes | memoryview] = response.body_iterator
        if mask is not None:
            events = translated(events, mask.stream(counted))
        if values:
            events = translated(events, StreamRestorer(values))
        closers = closers_of(response)
        if isinstance(response, RelayedStream):
            return RelayedStream(
                events,
                response.served,
                response.unsent,
                status_code=response.status_code,
                headers=headers,
                closers=closers,
            )
        return EndedStream(
            events, status_code=response.status_code, headers=headers, closers=closers
        )
    if response.status_code != 200:
        return response
    data = await loads_answer(bytes(response.body))
    if mask is not None and len(response.body) > OFF_LOOP_CHARS:
        # about 0.2 ms per 1,000 characters; in the joins' threads (`off_loop`), not the
        # default executor, where a remote encoder's decisions wait out their round trips
        data = await off_loop(mask.completion, data, counted)
    elif mask is not None:
        data = mask.completion(data, counted)
    if values:
        data = restore_completion(data, values)
    return Response(
        await answer_json(data),
        status_code=response.status_code,
        media_type="application/json",
        headers=headers,
    )


async def _hold_tokens(
    request: Request,
    gateway: Gateway,
    plan: Plan,
    body: dict[str, Any],
    ts: float,
    started_ns: int,
    tags: tuple[str, ...],
) -> Callable[[], None] | None:
    """The request's estimated prompt held against its key's ``tpm`` while it runs. A
    request refused here (or cut) is routed all the same: logged as its decision (with
    `tags`), its error with the decision's headers."""
    key = api_key_of(request.scope)
    if key is None or key.tpm is None:
        return None
    try:
        return await hold_key_tokens(request.scope, gateway, estimated_prompt_tokens(body))
    except BaseException as exc:
        ended = _ended_by(exc)
        if ended is not None:
            unserved = _Unserved(
                gateway.router, recorder_of(request, tags=tags), plan.decision, body, ts, started_ns
            )
            unserved.record(*ended, (), body.get("stream") is True)
        if isinstance(exc, GatewayError):
            exc.headers = {**decision_headers(plan.decision), **exc.headers}
        raise


async def _serve_planned(
    request: Request,
    gateway: Gateway,
    plan: Plan,
    body: dict[str, Any],
    ts: float,
    started_ns: int,
    release: Callable[[], None] | None,
    tags: tuple[str, ...],
) -> tuple[Response, bool]:
    """The answer to a planned request (its `tags` logged), and whether it is a stream
    that gives the held tokens back itself when it ends."""
    if plan.decision.blocked:
        log_blocked(gateway.router, plan.decision, body)
    recorder = recorder_of(request, tags=tags)
    metrics = _metrics_of(request)
    stream = body.get("stream") is True
    trace = tracing_of(request).start_request(
        plan.decision,
        start_ns=int(ts * 1e9),
        headers=request.headers,
        api=api_of(request.scope.get("path", "")),
    )
    spend = Spend()
    unserved = _Unserved(gateway.router, recorder, plan.decision, body, ts, started_ns, metrics)
    try:
        lookup = await _look_up(request, gateway, plan, body, stream)
        if lookup is not None and lookup.answer is not None:
            hit = _from_cache(gateway, recorder, trace, metrics, plan, body, lookup, ts, started_ns)
            return hit, False
        shadow = (
            gateway.shadow is not None
            and all(may_reach(request.scope, m) for m in gateway.shadow.models)
            # a raw continuation and a shadow's chat answer would compare nothing alike
            and not may_answer_raw(plan, gateway.router.loaded.registry.models)
            and gateway.shadow.sampled(plan.decision)
        )
        if stream:
            with trace.activate(), tracked(spend):
                opened = await _unless_client_leaves(
                    request, gateway.dispatcher.open_stream(plan, body)
                )
            done = _stream_done(
                gateway,
                recorder,
                trace,
                metrics,
                plan,
                body,
                ts,
                started_ns,
                shadow,
                release,
                spend,
            )
            unsent = functools.partial(
                _unsent, request.scope, gateway, opened, spend, trace, unserved, release
            )
            streamed = await _relayed(
                request, opened, done, unsent, plan, lookup, spend, shadow, recorder
            )
            return streamed, True
        with trace.activate(), tracked(spend):
            served = await _unless_client_leaves(request, gateway.dispatcher.complete(plan, body))
    except _ClientGone:
        usage = await _charged_abandoned(gateway, spend)
        by_model = paid_by_model(spend, None, usage)
        cut = unserved.record(
            CLIENT_CLOSED, CLIENT_DISCONNECTED, spend.tried, stream, usage, by_model
        )
        _span_ended(trace, cut, metrics)
        return Response(status_code=CLIENT_CLOSED), False
    except LlmrouteError as exc:
        error = _routed_error(gateway, exc, plan, body)
        # what it paid for all the same: an answer the content filter withheld, a
        # cascade tier answered before a later one failed (charged to their budgets)
        paid = total_usage(spend.answered)
        failed = unserved.record(
            error.status,
            error.code or "error",
            error.attempts,
            stream,
            paid,
            paid_by_model(spend, None, paid),
        )
        _span_ended(trace, failed, metrics, exc if failed is None else None)
        raise error from None
    except BaseException as exc:
        await _ended_otherwise(gateway, spend, trace, unserved, stream, exc)
        raise
    try:
        record = (
            None
            if recorder is None
            else recorder.finished(
                gateway.router,
                plan.decision,
                body,
                ts=ts,
                started_ns=started_ns,
                status=200,
                served_model=served.model,
                deployment=served.deployment,
                usage=served.usage,
                attempts=served.attempts,
                shadow=shadow,
                answer=answer_text(served.data) if recorder.wants_answers else None,
                by_model=paid_by_model(spend, served.model, served.usage),
            )
        )
    except Exception as exc:
        # a bug between the answer and its row (its text, its cost by model, the row
        # itself): the request's 500, logged as any bug's with what it paid and the way
        # it went (the answering model last), its span failed by it
        on = cancelled_on(served.model, served.deployment, BUG)
        tried = (*served.attempts, on) if served.attempts else ()
        await _ended_otherwise(gateway, spend, trace, unserved, stream, exc, tried)
        raise
    _span_ended(trace, record, metrics)
    # a bug from here on (the answer's headers or JSON, the cache, the shadow) is a 500
    # the record does not hold: a request line and an API error of its own
    recorded_as(request.scope, 200)
    if lookup is not None:
        # after the record: a large answer is written a step at a time, and a request
        # cancelled meanwhile (a shutdown's cut) has its answer recorded and charged
        await lookup.store(served)
    if shadow and gateway.shadow is not None:
        gateway.shadow.submit(
            plan.decision, plan.outgoing(body), served.model, answer_text(served.data), ts
        )
    # a large answer (logprobs) is written a step at a time: other requests go on
    answer = Response(
        await answer_json(served.data),
        media_type="application/json",
        headers={
            **decision_headers(plan.decision, served.model),
            **served_headers(served.deployment, served.attempts),
            **_cascade_headers(served.cascade),
            **cache_headers(lookup),
        },
    )
    return answer, False


async def _relayed(
    request: Request,
    opened: Opened,
    done: StreamDone,
    unsent: Unsent,
    plan: Plan,
    lookup: CacheLookup | None,
    spend: Spend,
    shadow: bool,
    recorder: Recorder | None,
) -> Response:
    """The answer relaying the `opened` stream (`done` told when it ends; `unsent` when
    a bug keeps it from going out after this), as its client gets it (`_edited`). A bug
    before it is handed on (its safety step's included) closes the stream at once, its
    cost counted in `spend` for the request's 500 row: its upstream call, slot and budget
    hold were left to the garbage collector, and what it had cost was in no row."""
    try:
        if lookup is not None:
            opened.events = lookup.tee(opened)
        reader = _answer_reader(gateway_of(request).shadow if shadow else None, recorder)
        streamed = RelayedStream(
            relay(opened, done, reader),
            lambda: opened.model,
            unsent,
            closers=(functools.partial(_end_unread, opened, done),),
            media_type="text/event-stream",
            headers={
                **decision_headers(plan.decision, opened.model),
                **served_headers(opened.deployment, opened.attempts),
                **_cascade_headers(opened.cascade),
                **cache_headers(lookup),
                **STREAM_HEADERS,
            },
        )
        return await _edited(request, plan.decision.safety, streamed)
    except BaseException:
        with tracked(spend):
            await opened.aclose()
        raise


async def _unsent(
    scope: Scope,
    gateway: Gateway,
    opened: Opened,
    spend: Spend,
    trace: RequestTrace,
    unserved: _Unserved,
    release: Callable[[], None] | None,
    exc: BaseException,
) -> None:
    """A relayed stream that `exc`, a bug, kept from going out once it was handed on
    (its front's conversion): closed, its tokens given back, and its 500 logged with
    what it cost, as for a bug before it was handed on (`_relayed`). Its response, never
    sent, would have done none of it. That row holds the answer's status (`recorded_as`):
    not an error of its own besides, as one after a 200 row is."""
    try:
        with tracked(spend):
            await opened.aclose()
    finally:
        if release is not None:
            release()
        await _ended_otherwise(gateway, spend, trace, unserved, True, exc)
        ended = _ended_by(exc)
        if ended is not None:
            recorded_as(scope, ended[0])


def _charge_key(request: Request, gateway: Gateway, usage: Usage | None) -> None:
    """Charge the LLM router's call, made for this request, to the client key's budget
    and tpm (the routed answer is charged apart, through its decision record)."""
    key = api_key_of(request.scope)
    if usage is None or key is None or gateway.charges is None:
        return
    gateway.charges.charge(key, usage.cost_usd, usage.total_tokens)


_UVICORN_CUT = "graceful shutdown exceeded"  # in uvicorn's cancel message


async def _ended_otherwise(
    gateway: Gateway,
    spend: Spend,
    trace: RequestTrace,
    unserved: _Unserved,
    stream: bool,
    exc: BaseException,
    tried: tuple[str, ...] | None = None,
) -> None:
    """A request ended by anything but an answer, a hang-up or an error of ours: a
    failed span. A cancelled one is also logged and charged what it cost: 503
    ``server_shutdown`` when the gateway is stopping (after the graceful timeout), else
    as a client that hung up (499 ``client_disconnected``): a batch or background
    response its client cancelled (or a batch that expired, or that another process
    took over), which had reached the models all the same. Any other error is logged
    with its status (a bug's 500 ``internal_error``) and what was paid before it: the id
    its answer carries names the decision's record. Either lists the way it went
    (`tried`, by default as the dispatcher noted it in `spend`: `cut_after`); its span
    ends even when its row cannot be written (a bug in the log itself)."""
    attempts = spend.tried if tried is None else tried
    if not isinstance(exc, asyncio.CancelledError):
        ended = _ended_by(exc)
        record = None
        try:
            if ended is not None:
                paid = total_usage(spend.answered)
                by_model = paid_by_model(spend, None, paid)
                record = unserved.record(*ended, attempts, stream, paid, by_model)
        finally:
            # a bug's 500 (or no row) fails it: its status and cost, the exception's type
            failed = None if record is not None and record.status < 500 else exc
            _span_ended(trace, record, unserved.metrics, failed)
        return
    status, error = cut_by(exc)
    usage: Usage | None = None
    try:
        usage = await _charged_abandoned(gateway, spend)
    finally:  # a second cancel while charging: the request is still logged
        by_model = paid_by_model(spend, None, usage)
        cut = unserved.record(status, error, attempts, stream, usage, by_model)
        _span_ended(trace, cut, unserved.metrics)


def _ended_by(exc: BaseException) -> tuple[int, str] | None:
    """The status and error a routed request that `exc` ended is logged with: as its
    answer says it (`cut_by` for a cancel, a `GatewayError`'s own, a library error's as
    `gateway_error` maps it, else ``handle_any``'s 500); None for an exit of the process
    (no answer, nothing to log)."""
    if isinstance(exc, asyncio.CancelledError):
        return cut_by(exc)
    if isinstance(exc, LlmrouteError):
        exc = gateway_error(exc)
    if isinstance(exc, GatewayError):
        return exc.status, exc.code or "error"
    if isinstance(exc, Exception):
        return 500, INTERNAL_ERROR
    return None


def cut_by(exc: asyncio.CancelledError) -> tuple[int, str]:
    """The status and error a request cancelled by `exc` is logged with: 503
    ``server_shutdown`` when the gateway is stopping (after the graceful timeout), else
    499 ``client_disconnected`` (a batch or background response its client cancelled,
    a batch that expired or that another process took over)."""
    if stopping() or _UVICORN_CUT in str(exc):  # the latter: a server we did not start
        return 503, SERVER_SHUTDOWN
    return CLIENT_CLOSED, CLIENT_DISCONNECTED


async def _charged_abandoned(gateway: Gateway, spend: Spend) -> Usage | None:
    """What a cancelled request (its client hung up, or the gateway is stopping) had
    cost, its cut calls charged to the budgets (None when nothing, or when charging
    fails: the request is logged all the same)."""
    try:
        return await gateway.dispatcher.charge_abandoned(spend)
    except Exception as exc:
        log.warning("could not charge a cancelled request's prompt: %s", type(exc).__name__)
        return None


@dataclass(frozen=True)
class _Unserved:
    """A request that got no answer, for the decision log (None without one) and the
    span it ends (`metrics`, counting a bug there)."""

    router: Router
    recorder: Recorder | None
    decision: Decision
    body: dict[str, Any]
    ts: float
    started_ns: int
    metrics: GatewayMetrics | None = None

    def record(
        self,
        status: int,
        error: str,
        attempts: tuple[str, ...],
        stream: bool,
        usage: Usage | None = None,
        by_model: tuple[tuple[str, Usage], ...] = (),
    ) -> DecisionRecord | None:
        if self.recorder is None:
            return None
        return self.recorder.finished(
            self.router,
            self.decision,
            self.body,
            ts=self.ts,
            started_ns=self.started_ns,
            status=status,
            error=error,
            attempts=attempts,
            stream=stream,
            usage=usage,
            by_model=by_model,
        )


def _check_model(request: Request, gateway: Gateway, body: dict[str, Any]) -> None:
    """The key's allow-list, for the ``model`` asked for or the alias's target."""
    asked = body.get("model")
    registry = gateway.router.loaded.registry
    resolved = registry.resolve_alias(asked) if isinstance(asked, str) else None
    check_model(request.scope, asked, resolved)


async def _plan(
    request: Request, gateway: Gateway, body: dict[str, Any], *, dry_run: bool = False
) -> Plan:
    """The request's plan: routed, refined by the LLM router when it applies (and its
    model is one the client key may reach), kept on its conversation's model (affinity,
    which a `dry_run`, a decision nothing is sent for, reads and does not write), kept
    inside the key's pool. The LLM router's call is cancelled when the client hangs up
    during it, and a client gone by the time the plan is made is not served (both
    `_GoneWhilePlanning`)."""
    started = time.monotonic()
    plan = await aplan_request(gateway.router, body, request.headers)
    llm_router = gateway.llm_router
    if (
        llm_router is not None
        and llm_router.applies(plan.decision)
        and may_reach(request.scope, llm_router.settings.model)
    ):
        refining = refine_plan(llm_router, gateway.router, plan, body, request.headers)
        spend = Spend()
        try:
            with tracked(spend):
                plan = await _unless_client_leaves(request, refining)
        except _ClientGone:
            _charge_key(request, gateway, await _charged_abandoned(gateway, spend))
            raise _GoneWhilePlanning(plan) from None
        # its answer, or the prompt of a call its own ``timeout_s`` cut (charged to the
        # router model's budget as it ran out: `Dispatcher.within`)
        _charge_key(request, gateway, total_usage(spend.answered))
    if gateway.affinity is not None:
        key = api_key_of(request.scope)
        client = key.name if key is not None else None
        plan = await gateway.affinity.apply(
            plan, body, request.headers, client, remember=not dry_run
        )
    planned = await keep_in_pool(request.scope, plan, gateway.router, body, request.headers)
    # gone while the request was decided (a long prompt's scan, a remote encoder): nothing
    # was sent, so nothing is charged. Asked only after a plan that took a while: the
    # check costs a fifth of a fast decision (anyio's cancel scope), and a client gone
    # during one is caught as dispatch begins (`_unless_client_leaves`)
    if time.monotonic() - started >= _SLOW_PLAN_S and await request.is_disconnected():
        raise _GoneWhilePlanning(planned)
    return planned


def _from_cache(
    gateway: Gateway,
    recorder: Recorder | None,
    trace: RequestTrace,
    metrics: GatewayMetrics | None,
    plan: Plan,
    body: dict[str, Any],
    lookup: CacheLookup,
    ts: float,
    started_ns: int,
) -> Response:
    """The stored answer, recorded as a cache hit: no upstream call, no tokens spent."""
    answer = lookup.answer
    assert answer is not None
    elapsed_ms = (time.perf_counter_ns() - started_ns) / 1e6
    headers = {
        **decision_headers(plan.decision, answer.model),
        **hit_headers(answer, lookup.similarity),
    }
    response: Response
    if answer.stream:
        response = EndedStream(
            replay(answer),
            media_type="text/event-stream",
            headers={**headers, **STREAM_HEADERS},
        )
    else:
        response = Response(answer.payload, media_type="application/json", headers=headers)
    record = None
    if recorder is not None:
        record = recorder.finished(
            gateway.router,
            plan.decision,
            body,
            ts=ts,
            started_ns=started_ns,
            status=200,
            served_model=answer.model,
            deployment=answer.deployment,
            stream=answer.stream,
            ttft_ms=elapsed_ms if answer.stream else None,
            cache_hit=True,
            answer=cached_text(answer) if recorder.wants_answers else None,
        )
    _span_ended(trace, record, metrics)
    return response


# told, by what makes a relayed stream into its answer, of the bug that kept it unsent
Unsent = Callable[[BaseException], Awaitable[None]]


class RelayedStream(EndedStream):
    """A chat stream relayed from its model, with `served()` naming the pool model that
    answers it now: its headers went out with the first, and a fallback after the
    stream's start (before its first words) changes it. `unsent(exc)` ends it (its
    upstream stream, its tokens, its row) where a bug keeps it from being sent."""

    def __init__(
        self, content: Any, served: Callable[[], str], unsent: Unsent, **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self.served = served
        self.unsent = unsent


def _cascade_headers(steps: tuple[TierStep, ...]) -> dict[str, str]:
    """``x-llmroute-cascade``: each tier tried and its gates' verdict, when a cascade ran."""
    return {"x-llmroute-cascade": cascade_header(steps)} if steps else {}


def recorder_of(
    request: Request, api: str | None = None, tags: tuple[str, ...] | None = None
) -> Recorder | None:
    """The process's recorder, for the request's client key when it came with one, and
    its tags (`tags`: read already, by `request_tags`); its records say they came by
    `api` (else the API of the request's path)."""
    telemetry = getattr(request.app.state, "telemetry", None)
    if not isinstance(telemetry, Telemetry):
        return None
    recorder = gateway_of(request).recorder_for(telemetry.recorder, api_key_of(request.scope))
    if api is None:
        api = api_of(request.scope.get("path", ""))
    if tags is None:
        tags = request_tags(request)
    return recorder.by_api(api).with_tags(tags)  # one copy at most a request


def api_of(path: str) -> str | None:
    """The decision log's `api` of a request to `path` (behind a path prefix too)."""
    for endpoint, api in _API_BY_PATH.items():
        if path.endswith(endpoint):
            return api
    return None


def note_body_tags(
    request: Request, body: Mapping[str, Any], tags: tuple[str, ...] | None = None
) -> None:
    """The tags `body` names (LiteLLM's ``tags`` / ``metadata.tags``: `body_tags`), kept
    for `request_tags` (`plan_chat` reads them no more); 400 naming the field for
    malformed ones. `tags`: read already, by the body's checks (`require_messages`)."""
    if tags is None:
        try:
            tags = body_tags(body)
        except InvalidRequest as exc:
            raise GatewayError(400, exc.message, param=exc.param, code=exc.code) from None
    request.scope[BODY_TAGS] = tags


def note_converted_tags(request: Request, chat: Mapping[str, Any]) -> None:
    """The tags of `chat`, a converted request's chat body (Messages, Responses, a text
    completion), kept for `request_tags` as `note_body_tags` keeps a chat's: its front's
    checks read them from the client's body (`body_tags`) and put them all in `chat` as
    its top-level ``tags`` list, checked, stripped and once each, which planning would
    otherwise read and check again. Noted once: a request noted already keeps its own."""
    if BODY_TAGS not in request.scope:
        tags = chat.get("tags")
        request.scope[BODY_TAGS] = tuple(tags) if tags else ()


def request_tags(request: Request) -> tuple[str, ...]:
    """The request's ``x-llmroute-tags``, then its body's (`note_body_tags`), then those
    the gateway added (`GATEWAY_TAGS`: a batch's); a header that breaks their rules is a
    400, tags from a key whose ``header_tags`` is false a 403."""
    raw = request.headers.get(TAGS_HEADER)
    if raw is not None and not raw.isascii():
        # HTTP headers arrive as latin-1; a client sending UTF-8 meant its characters
        # (refused all the same: tags are ASCII), and the error should show them
        with contextlib.suppress(UnicodeError):
            raw = raw.encode("latin-1").decode("utf-8")
    try:
        tags = parse_tags(raw)
    except ValueError as exc:
        raise GatewayError(
            400, f"{TAGS_HEADER}: {exc}", param=TAGS_HEADER, code="invalid_value"
        ) from None
    named: tuple[str, ...] = request.scope.get(BODY_TAGS, ())
    key = api_key_of(request.scope)
    if (tags or named) and key is not None and not key.header_tags:
        what = TAGS_HEADER if tags else "tags"
        raise GatewayError(
            403,
            f"key {key.name!r} may not set {what}: its requests are attributed to "
            "the key's own tags (header_tags: false)",
            param=what,
            code="tags_not_allowed",
        )
    if named:
        tags = tuple(dict.fromkeys((*tags, *named)))
    added: tuple[str, ...] = request.scope.get(GATEWAY_TAGS, ())
    return (*tags, *added) if added else tags


async def _look_up(
    request: Request, gateway: Gateway, plan: Plan, body: dict[str, Any], stream: bool
) -> CacheLookup | None:
    """The request in the response cache (its client key's part of it). Where feedback
    can be given, the answer it gets or stores is noted against the decision, so that
    negative feedback can evict it."""
    cache = gateway.cache
    telemetry = getattr(request.app.state, "telemetry", None)
    evictable = (
        cache is not None
        and cache.settings.evict_on_feedback
        and isinstance(telemetry, Telemetry)
        and telemetry.enabled  # feedback needs the decision log
    )
    partition = key_of(request.scope)
    return await look_up(cache, plan, body, stream, request.headers, partition, evictable=evictable)


_NO_TRACING = Tracing()


def tracing_of(request: Request) -> Tracing:
    tracing = getattr(request.app.state, "tracing", None)
    return tracing if isinstance(tracing, Tracing) else _NO_TRACING


# told how a stream ended: the stream, its error, its text, when its first event went
# out, and the break of its upstream once its [DONE] had gone out (None: none)
StreamDone = Callable[[Opened, str | None, str, int | None, BaseException | None], None]


def _stream_done(
    gateway: Gateway,
    recorder: Recorder | None,
    trace: RequestTrace,
    metrics: GatewayMetrics | None,
    plan: Plan,
    body: dict[str, Any],
    ts: float,
    started_ns: int,
    shadow: bool,
    release: Callable[[], None] | None,
    spend: Spend,
) -> StreamDone:
    """What to do when a stream has ended: give back the tokens it held, record it, and
    hand a sampled one's answer to shadow routing. `error` is None for a complete
    stream. Told once: a second telling (`_end_unread` after `relay`) is ignored. Its
    ``ttft_ms`` is when its first event went out (`first_ns`, `perf_counter_ns`), None
    when none did: not its hand-over, which for a stream silent past
    ``dispatch.stream_hold_s`` is the hold, whether an event came after it or not. Its
    usage is split by model with what `spend` counted as it opened (a cascade's tiers).
    A bug recording it (its row, its span) is logged and counted in `metrics`: the client
    has its answer; the span ends all the same, failed by a bug in the record."""
    told = False

    def done(
        opened: Opened,
        error: str | None,
        text: str,
        first_ns: int | None,
        broke_after_done: BaseException | None,
    ) -> None:
        nonlocal told
        if told:
            return
        told = True
        first_ms = None if first_ns is None else (first_ns - started_ns) / 1e6
        if release is not None:
            release()
        record = None
        try:
            if recorder is not None:
                record = recorder.finished(
                    gateway.router,
                    plan.decision,
                    body,
                    ts=ts,
                    started_ns=started_ns,
                    status=200,
                    served_model=opened.model,
                    deployment=opened.deployment,
                    error=error,
                    usage=opened.usage,
                    attempts=opened.attempts,
                    stream=True,
                    ttft_ms=first_ms,
                    shadow=shadow,
                    answer=text or None,
                    by_model=paid_by_model(spend, opened.model, opened.usage),
                )
        except Exception as exc:  # the span, the only trace left, names the bug
            log.exception("recording the stream of %s failed", opened.model)
            if metrics is not None:
                metrics.telemetry_error("record")
            _span_ended(trace, None, metrics, exc)
            return
        _span_ended(trace, record, metrics, broke_after_done=broke_after_done)
        if shadow and error is None and gateway.shadow is not None:
            gateway.shadow.submit(plan.decision, plan.outgoing(body), opened.model, text, ts)

    return done


def _routed_error(
    gateway: Gateway, exc: LlmrouteError, plan: Plan, body: Mapping[str, Any]
) -> GatewayError:
    """The answer to `exc`, raised once `plan` was routed: with the decision's headers,
    and an upstream's ``param`` as the client's `body` names it (`param_as_asked`: a
    field the model's ``rename_params`` renamed). A completion a model continuing raw
    text was sent as it came (`Plan.text`) is marked so: that upstream's ``param`` names
    a field of the client's own body (``prompt``, ``suffix``), which its front keeps."""
    error = gateway_error(exc, decision_headers(plan.decision))
    if error.param is not None and error.upstream_param:
        model = gateway.router.loaded.registry.models.get(getattr(exc, "model", None) or "")
        if model is not None:
            error.param = param_as_asked(error.param, body, model)
            error.upstream_raw = plan.text is not None and model.text_completions
    return error


def log_blocked(router: Router, decision: Decision, body: Mapping[str, Any]) -> None:
    """One line per blocked request, without its text unless the operator opted in
    (``safety.log_blocked_text``)."""
    safety = decision.safety
    assert safety is not None
    settings = router.loaded.registry.safety
    line = (
        f"blocked request {decision.id}: route {decision.route!r}, profile {safety.profile!r}, "
        f"fired {', '.join(safety.fired) or 'policy'}"
    )
    if settings is not None and settings.log_blocked_text:
        line += f", messages {json.dumps(body.get('messages'))[:4000]}"
    log.warning("%s", line)


async def route_only(request: Request) -> Response:
    """The decision alone: no answer is asked for. (The LLM router, when the registry
    has one and the intent layer is unsure, is part of the decision and is called.)
    Conversation affinity is read, not written: a dry run leaves later turns' routing
    as it was.
    The decision is logged (``route_only``) so that feedback can name its id. The body
    is checked as ``/v1/chat/completions`` checks it (`require_messages`): a body the
    chat endpoint refuses gets no decision it could not be served by."""
    ts, started_ns = time.time(), time.perf_counter_ns()
    gateway = gateway_of(request)
    body = await read_json_object(request, gateway.max_body_bytes)
    note_body_tags(request, body, require_messages(body))
    tags = request_tags(request)
    _check_model(request, gateway, body)
    try:
        plan = await _plan(request, gateway, body, dry_run=True)
    except _GoneWhilePlanning as gone:
        plan, answer = gone.plan, Response(status_code=CLIENT_CLOSED)
    else:
        answer = JSONResponse(plan.to_dict(), headers=decision_headers(plan.decision))
    recorder = recorder_of(request, tags=tags)
    if recorder is not None:
        recorder.decided(gateway.router, plan.decision, body, ts=ts, started_ns=started_ns)
    return answer


_BROKE_OFF = BROKE_OFF_CHUNK


def _answer_reader(shadow: ShadowRunner | None, recorder: Recorder | None) -> StreamedAnswer | None:
    """What reads a relayed stream's answer: as far as the decision log keeps it, when it
    keeps answers, and the shadow's judge reads it, for a shadowed one; else nothing."""
    logged = (
        recorder.max_response_chars if recorder is not None and recorder.wants_answers else None
    )
    if shadow is not None:
        return StreamedAnswer(max(shadow.answer_chars, logged or 0))
    return None if logged is None else StreamedAnswer(logged)


async def relay(
    opened: Opened, done: StreamDone | None = None, answer: StreamedAnswer | None = None
) -> AsyncIterator[bytes]:
    """The stream's events; an upstream failure mid-stream ends it with an error event
    and ``[DONE]`` (the status line has gone out, so nothing is retried silently; one
    after its ``[DONE]`` went out sends nothing more and is a whole stream's end, and
    nothing the upstream sends after its ``[DONE]`` is relayed; one that ends with no
    ``[DONE]``, which every provider's stream ends with, the OpenAI-compatible one's
    after every choice's finish reason, is not known whole and ends as a broken one), and
    so does a bug reading it (`BUG_CHUNK`: nothing of the bug, which is logged; after
    ``[DONE]`` went out, nothing more). `done` is told how it ended
    (``stream_interrupted`` upstream, ``client_disconnected`` when the client went away,
    ``server_shutdown`` when the gateway stopped, ``internal_error`` for a bug, here or
    thrown in by what relays it on; a client that left, or a gateway that stopped, once
    its ``[DONE]`` went out: whole) with the streamed answer's text as `answer` read it
    (empty without one), and with the break of an upstream that broke once its ``[DONE]``
    went out (for the span)."""
    error: str | None = CLIENT_DISCONNECTED
    broke: ProviderError | None = None  # its upstream's break once its [DONE] went out
    first_ns: int | None = None
    sending = False  # at an event that went out: what is thrown in is the next step's bug
    ended = False  # its ``[DONE]`` went out: the client has its whole answer
    try:
        async for event in opened.events:
            if ended:  # what an upstream sends after its end is read, not relayed
                continue
            if first_ns is None:
                first_ns = time.perf_counter_ns()
            if answer is not None:
                answer.observe(event)
            sending = True
            yield event
            sending = False
            ended = ended or event.startswith(b"data: [DONE]")
        _ended_properly(opened, ended)
        error = None
    except ProviderError as exc:
        if ended:  # the client read its whole answer, recorded as such: nothing follows
            error, broke = None, exc
            log.warning("stream from %s broke off after its end: %s", opened.model, exc)
        else:
            error = "stream_interrupted"
            log.warning("stream from %s broke off: %s", opened.model, exc)
            try:
                yield _BROKE_OFF  # one piece: the fronts translate event by event
                yield b"data: [DONE]\n\n"
            except Exception:  # a bug thrown in there, raised on for its step to end it
                error = BUG
                raise
    except Exception as exc:
        # a bug, recorded as the request's end, not as its client leaving: one thrown
        # in by `translated` (the safety step, a front's conversion) is raised on, for
        # that step to end the stream; one of its own reading the stream ends it here
        error = BUG
        if sending:
            raise
        log.error("a bug ended a stream after its answer started", exc_info=exc)
        if not ended:
            yield BUG_CHUNK  # one piece, as `_BROKE_OFF`
            yield b"data: [DONE]\n\n"
    finally:
        if ended and error == CLIENT_DISCONNECTED:  # left (or cut) once it read the end
            error = None
        try:
            # ended now, not when collected: its slot and hold given back, its usage
            # known for the record below
            with anyio.move_on_after(END_S, shield=True):
                await opened.aclose()
        finally:
            text = None if answer is None else answer.text()
            _told(opened, done, error, text or "", first_ns, broke)


def _ended_properly(opened: Opened, ended: bool) -> None:
    """Raise `ProviderError` for a stream that ended with no ``[DONE]`` (`ended` False): a
    provider that broke its protocol (every one ends its stream so, the OpenAI-compatible
    one after every choice's finish reason), whose answer is not known whole; `relay`
    ends it as one that broke off."""
    if not ended:
        raise ProviderError(opened.deployment, "the stream ended before its [DONE]")


async def _end_unread(opened: Opened, done: StreamDone | None) -> None:
    """The end of a relayed stream whose response never read it (`relay` ends one it
    read; `done` hears only the first): the client left as the headers went out."""
    try:
        await opened.aclose()
    finally:
        _told(opened, done, CLIENT_DISCONNECTED, "", None)


def _told(
    opened: Opened,
    done: StreamDone | None,
    error: str | None,
    text: str,
    first_ns: int | None,
    broke_after_done: BaseException | None = None,
) -> None:
    if done is None:
        return
    if error == CLIENT_DISCONNECTED and stopping():
        error = SERVER_SHUTDOWN
    try:
        done(opened, error, text, first_ns, broke_after_done)
    except Exception:
        log.exception("recording the stream of %s failed", opened.model)
