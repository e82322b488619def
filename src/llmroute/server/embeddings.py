"""``POST /v1/embeddings``: passed through to a pool model of kind ``embedding``.

Nothing is routed: embeddings are asked of a named model, and a chat model or a route
cannot answer them. Their cost (the model's input price) counts against the model's and
the client key's budgets and in the cost metrics, and the decision log holds each answer
(api ``embeddings``, route ``(embeddings)``, no routing fields), so that its reports
count the same spend. `serve_unrouted` serves reranking (`server.rerank`) the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from llmroute.chat_checks import INVALID_TYPE, MISSING
from llmroute.decision import new_decision_id
from llmroute.dispatch import Served
from llmroute.dispatch.spend import Spend, tracked
from llmroute.dispatch.usage import Usage, estimated_input_tokens
from llmroute.errors import InvalidRequest, LlmrouteError, shown
from llmroute.gates.base import total_usage
from llmroute.proxy_fields import check_proxy_fields, unrouted_body
from llmroute.registry import Registry
from llmroute.registry.schema import with_article
from llmroute.server.auth import api_key_of, check_model, hold_key_tokens
from llmroute.server.body import read_json_object
from llmroute.server.chat import (
    _charged_abandoned,
    _ClientGone,
    _metrics_of,
    _span_ended,
    _unless_client_leaves,
    cut_by,
    note_body_tags,
    recorder_of,
    request_tags,
    served_headers,
    tracing_of,
)
from llmroute.server.errors import INTERNAL_ERROR, GatewayError, gateway_error
from llmroute.server.meta import listed_for
from llmroute.server.pool import check_pool
from llmroute.server.request_ids import recorded_as, routed_as
from llmroute.server.state import Gateway, gateway_of
from llmroute.telemetry.metrics import EMBEDDINGS_ROUTE
from llmroute.telemetry.record import CLIENT_CLOSED, CLIENT_DISCONNECTED
from llmroute.telemetry.recorder import Recorder
from llmroute.telemetry.service import Telemetry
from llmroute.telemetry.tracing import NO_TRACE, RequestTrace
from llmroute.verbatim_json import answer_json

__all__ = [
    "MAX_INPUTS",
    "check_input_count",
    "embed",
    "embedded_text",
    "embeddings",
    "model_asked",
    "pool_model",
    "require_input",
    "serve_unrouted",
]

Arrival = tuple[float, int]  # (time.time(), time.perf_counter_ns()) when a request came


async def embeddings(request: Request) -> Response:
    arrived = time.time(), time.perf_counter_ns()
    gateway = gateway_of(request)
    body = await read_json_object(request, gateway.max_body_bytes)
    return await embed(request, gateway, body, arrived)


async def embed(
    request: Request, gateway: Gateway, body: dict[str, Any], arrived: Arrival | None = None
) -> Response:
    """`body` (an embeddings request) answered by its pool model, charged to the key;
    `arrived` is when it came (now when None: a batch's line). Its faults are answered
    in chat's order (`serve_unrouted`): the size limit, ``model``, ``input``."""
    check_input_count(body)
    asked = model_asked(body)
    require_input(body)
    return await serve_unrouted(
        request,
        gateway,
        body,
        asked,
        gateway.dispatcher.embed,
        EMBEDDINGS_ROUTE,
        estimated_input_tokens(body.get("input")),
        kind="embedding",
        api="embeddings",
        text_of=embedded_text,
        arrived=arrived,
    )


async def serve_unrouted(
    request: Request,
    gateway: Gateway,
    body: dict[str, Any],
    asked: str,
    call: Callable[[str, dict[str, Any]], Awaitable[Served]],
    route: str,
    estimated_tokens: int,
    *,
    kind: str,
    api: str,
    text_of: Callable[[Mapping[str, Any]], str | None],
    arrived: Arrival | None = None,
) -> Response:
    """`body` answered through `call` (the dispatcher's `embed` or `rerank`) by the pool
    model of `kind` that `asked` (its ``model``) names (`pool_model`); its
    `estimated_tokens` held against the key's ``tpm`` while it runs (concurrent requests
    count each other, as chat's do), its cost charged to the client key and counted in
    the metrics under `route`; the answer names the model and the deployment that
    answered (``x-llmroute-deployment``, ``x-llmroute-attempts``: 0, as nothing is
    fallen back to). The answer, or the error of the call, is logged in the decision log
    as coming by `api` (`Recorder.unrouted`; `text_of` gives the text
    ``telemetry.prompts`` may keep), with its key, tags and end user, like a chat's,
    and traced under a request span of its own (`Tracing.start_unrouted`).
    LiteLLM's fields are taken as chat takes them (`llmroute.proxy_fields`): its tags
    are the request's, its own fields a 400. A body's faults are answered in chat's
    order: the caller's checks of its own fields, then LiteLLM's fields, then the
    request's tags (a bad ``x-llmroute-tags``; 403 for a key without ``header_tags``),
    then the model (the key's allow-list, 404, the model's kind, the key's pool). A
    call its client hangs up on is cancelled, as a chat's is, and so is one cancelled
    otherwise (its batch, the shutdown): logged with chat's status (499
    ``client_disconnected``, 503 ``server_shutdown``) and charged what it may have cost
    (its input, counted: the upstream had it)."""
    ts, started_ns = arrived if arrived is not None else (time.time(), time.perf_counter_ns())
    # LiteLLM's fields as chat takes them: its tags the request's, its own refused (a
    # body's api_key went on to the provider), neither sent upstream
    try:
        tags = check_proxy_fields(body)
    except InvalidRequest as exc:
        raise GatewayError(400, exc.message, param=exc.param, code=exc.code) from None
    note_body_tags(request, body, tags)
    # a malformed x-llmroute-tags is refused before any work, as chat's (`recorder_of`
    # reads it when there is a log)
    recorder = recorder_of(request, api)
    if recorder is None:
        request_tags(request)
    name = pool_model(request, gateway, asked, kind)
    sent = unrouted_body(body)
    # the answer's id is its decision log row's, errors' too (which are that one line);
    # made here, not kept in the scope, which a batch's lines copy
    request_id = new_decision_id()
    headers = {"x-llmroute-model": name, "x-request-id": request_id}
    # every answer from here on is its row's, a bug's 500 too (a batch's line has a
    # scope of its own: `request_ids.apart`)
    routed_as(request.scope, request_id)
    try:
        release = await hold_key_tokens(request.scope, gateway, estimated_tokens)
    except GatewayError as exc:
        # the key's tpm refused it, its model known: its row (429 rate_limit_exceeded,
        # no span), as a routed chat's refusal there is its decision's
        exc.headers = {**headers, **exc.headers}
        refused = _Unrouted(
            request, gateway, body, name, route, text_of, recorder, ts, started_ns, request_id
        )
        refused.finished(exc.status, error=exc.code or "error")
        raise
    # its span, as a chat's, from its arrival; a request refused before the call has none
    trace = tracing_of(request).start_unrouted(
        api, name, route, request_id, start_ns=int(ts * 1e9), headers=request.headers
    )
    done = _Unrouted(
        request, gateway, body, name, route, text_of, recorder, ts, started_ns, request_id, trace
    )
    spend = Spend()
    try:
        with trace.activate(), tracked(spend):
            served = await _unless_client_leaves(request, call(name, sent))
    except _ClientGone:
        await done.cut(spend, CLIENT_CLOSED, CLIENT_DISCONNECTED)
        return Response(status_code=CLIENT_CLOSED, headers={"x-request-id": request_id})
    except LlmrouteError as exc:
        error = gateway_error(exc, headers)
        if recorder is None:  # no record to end the span with: the error itself
            _span_ended(trace, None, _metrics_of(request), exc)
        done.finished(error.status, error=error.code or "error", attempts=error.attempts)
        raise error from None
    except asyncio.CancelledError as exc:
        await done.cut(spend, *cut_by(exc))
        raise
    except BaseException as exc:
        # a bug: `handle_any`'s 500, logged as chat logs one (its span failed by it,
        # with its row's status); an exit of the process has no answer to log
        try:
            if isinstance(exc, Exception):
                # charged what the call cost when the bug came after its answer (the
                # dispatcher's estimate, in `spend`)
                usage = total_usage(spend.answered)
                done.finished(500, error=INTERNAL_ERROR, usage=usage, failed=exc)
        finally:  # nothing once its row ended it
            _span_ended(trace, None, _metrics_of(request), exc)
        raise
    finally:
        if release is not None:
            release()
    # a bug after this (its row's and metrics' too: they may have counted the 200) is an
    # error of its own
    recorded_as(request.scope, 200)
    try:
        done.finished(200, served=served)
    except Exception as exc:  # its span ended all the same (nothing once its row ended it)
        _span_ended(trace, None, _metrics_of(request), exc)
        raise
    headers.update(served_headers(served.deployment, served.attempts))  # as chat's
    # a large embeddings answer's vectors go out as the upstream wrote them
    return Response(await answer_json(served.data), media_type="application/json", headers=headers)


@dataclass(frozen=True, slots=True)
class _Unrouted:
    """One embeddings or rerank request, for its ending: the key charged, the metrics
    and the decision log told. `ts` and `started_ns` are its arrival."""

    request: Request
    gateway: Gateway
    body: dict[str, Any]
    name: str
    route: str
    text_of: Callable[[Mapping[str, Any]], str | None]
    recorder: Recorder | None
    ts: float
    started_ns: int
    request_id: str  # the answer's x-request-id, the row's id
    trace: RequestTrace = NO_TRACE  # its span, ended with its record

    async def cut(self, spend: Spend, status: int, error: str) -> None:
        """A call cancelled before its answer: charged what it had cost (the model's and
        a hard key budget by the dispatcher, the rest here), then logged."""
        usage: Usage | None = None
        try:
            usage = await _charged_abandoned(self.gateway, spend)
        finally:  # a second cancel while charging: the request is still logged
            self.finished(status, error=error, usage=usage)

    def finished(
        self,
        status: int,
        *,
        served: Served | None = None,
        error: str | None = None,
        usage: Usage | None = None,
        attempts: tuple[str, ...] = (),
        failed: BaseException | None = None,
    ) -> None:
        """The request answered with `status`: `served`'s answer (its usage), or an error
        (`usage`: what a cut call had cost); its span ended with its record (and, for a
        bug, the exception that `failed` it: its type; a bug ending it is logged and
        counted, as a chat's is, not the request's)."""
        if served is not None:
            usage = served.usage
        key = api_key_of(self.request.scope)
        if usage is not None and key is not None and self.gateway.charges is not None:
            self.gateway.charges.charge(key, usage.cost_usd, usage.prompt_tokens)
        latency_ms = (time.perf_counter_ns() - self.started_ns) / 1e6
        telemetry = getattr(self.request.app.state, "telemetry", None)
        if isinstance(telemetry, Telemetry):
            telemetry.metrics.observe_unrouted(
                self.route,
                self.name,
                usage,
                None if key is None else key.name,
                status=status,
                error=error,
                latency_ms=latency_ms,
            )
        record = None
        if self.recorder is not None:
            record = self.recorder.unrouted(
                self.route,
                self.name,
                self.gateway.version,
                self.body,
                self.text_of,
                ts=self.ts,
                started_ns=self.started_ns,
                status=status,
                error=error,
                usage=usage,
                attempts=attempts,
                deployment=None if served is None else served.deployment,
                decision_id=self.request_id,
            )
        # a bug there is no bug of the answer, which its row holds
        _span_ended(self.trace, record, _metrics_of(self.request), failed)


def embedded_text(body: Mapping[str, Any]) -> str | None:
    """The text an embeddings request sent (its strings, a line each), for the decision
    log's ``prompt``; None for token ids."""
    value = body.get("input")
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "\n".join(value)
    return None


def model_asked(body: Mapping[str, Any]) -> str:
    """The body's ``model``: 400 when it is left out or not a non-empty string."""
    name = body.get("model")
    if not isinstance(name, str) or not name:
        code = INVALID_TYPE if name is not None and not isinstance(name, str) else MISSING
        raise GatewayError(
            400, "'model' is required and must be a string", param="model", code=code
        )
    return name


def pool_model(request: Request, gateway: Gateway, asked: str, kind: str) -> str:
    """The pool model of `kind` that `asked` names (itself, or an alias's target), in
    chat's order: 403 when the client key may not ask for it, 404 when the registry has
    no such model or it is of another kind (as OpenAI answers a model of another
    endpoint, and chat one of another kind), 403 outside the key's pool."""
    registry = gateway.router.loaded.registry
    name = registry.resolve_alias(asked)
    check_model(request.scope, asked, name)
    model = registry.models.get(name)
    if model is None:
        raise GatewayError(
            404,
            f"no {kind} model named {shown(name)}; {_known(request, registry, kind)}",
            param="model",
            code="model_not_found",
        )
    if model.kind != kind:
        raise GatewayError(
            404,
            f"model {shown(name)} is {with_article(model.kind)} model; "
            f"{_known(request, registry, kind)}",
            param="model",
            code=f"model_not_{kind}",
        )
    check_pool(request.scope, name)
    return name


def _known(request: Request, registry: Registry, kind: str) -> str:
    """The models of `kind` the client may use, for an error (built only when one is
    raised): those and the aliases of them that ``GET /v1/models`` lists for its key
    (`listed_for`), not the registry's others, which its key may not even name."""
    of_kind = [n for n, m in registry.models.items() if m.kind == kind]
    aliases = [a for a, target in registry.exact_aliases().items() if target in of_kind]
    usable = listed_for(request.scope, registry, of_kind + aliases)
    return f"{kind} models you may use: {', '.join(sorted(usable)) or 'none'}"


# OpenAI's limit on the inputs of one request (Azure OpenAI's too; hosted APIs allow
# fewer: Voyage 1,000, Cohere 96). Checked first, before each input is: a 4 MB body of
# 590,000 one-token arrays held the worker's event loop 3 s (every other request waited)
# to be checked, estimated and sent, only for the upstream to refuse it.
MAX_INPUTS = 2048


def check_input_count(body: Mapping[str, Any]) -> None:
    """400 for more than `MAX_INPUTS` inputs: checked first, as chat checks its sizes
    (`llmroute.chat_checks.check_sizes`), before anything is walked item by item."""
    value = body.get("input")
    # (a list of token ids is one input, however long)
    if isinstance(value, list) and len(value) > MAX_INPUTS and type(value[0]) is not int:
        raise GatewayError(
            400,
            f"'input' holds {len(value)} items, more than the {MAX_INPUTS} one request "
            "may embed: split it into several requests",
            param="input",
        )


def require_input(body: Mapping[str, Any]) -> None:
    """OpenAI's shapes: a string, a list of strings, a token array or a list of them
    (at most `MAX_INPUTS` of them, `check_input_count` having passed it first); OpenAI's
    code for one left out, empty or of another type."""
    value = body.get("input")
    if not _valid_input(value):
        raise GatewayError(
            400,
            "'input' is required: a non-empty string, a list of strings, "
            "a list of token ids or a list of such lists",
            param="input",
            code=_input_code(value),
        )


def _input_code(value: object) -> str | None:
    if value is None:
        return MISSING
    if value == []:
        return "empty_array"
    return None if isinstance(value, str | list) else INVALID_TYPE


def _valid_input(value: object) -> bool:
    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(item, str) and item for item in value):
        return True
    return _tokens(value) or all(isinstance(item, list) and _tokens(item) for item in value)


def _tokens(value: list[Any]) -> bool:
    return bool(value) and all(type(token) is int for token in value)
