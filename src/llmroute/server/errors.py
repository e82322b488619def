"""Errors in the OpenAI wire format: ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from llmroute.errors import (
    AllFallbacksFailed,
    CircuitOpen,
    KeyBudgetReached,
    LlmrouteError,
    ModelNotFound,
    PolicyViolation,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    RoutingError,
    UnsupportedRequest,
)
from llmroute.log_every import LogEvery
from llmroute.server.request_ids import recorded_otherwise, request_id_of, speaks_anthropic
from llmroute.server.root_path import asked_path, paths_as_asked
from llmroute.server.stored_chat import NOT_STORED, not_stored
from llmroute.server.watched_send import WatchedSend

__all__ = [
    "INTERNAL_ERROR",
    "NO_RETRY",
    "AnswerUnhandled",
    "GatewayError",
    "counted",
    "gateway_error",
    "handle_any",
    "handle_client_gone",
    "handle_gateway_error",
    "handle_http",
    "handle_llmroute_error",
    "in_api_shape",
    "not_an_endpoint",
    "shown_path",
    "speaks_anthropic",
]

log = logging.getLogger("llmroute.server")
_UNAVAILABLE_SAID = LogEvery(60.0)  # `store_unavailable`'s lines

# On an answer no retry can change (a key's soft budget, spent this period), OpenAI's
# and Anthropic's clients read this and raise at once rather than retry their 429.
NO_RETRY = {"x-should-retry": "false"}
INTERNAL_ERROR = "internal_error"  # the code of a 500 no handler expected (`handle_any`)


class GatewayError(Exception):
    """A request the gateway answers with an error status (raised inside handlers)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        attempts: Sequence[str] = (),
        kind: str | None = None,
        upstream_param: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        self.attempts = tuple(attempts)
        self.kind = kind
        # `param` is the upstream's: it names a field of the chat body the model was
        # sent, which a converted front's client did not send as such
        self.upstream_param = upstream_param
        # ... unless the model was sent the front's own body (a completion sent raw to a
        # model continuing text): then it names a field the client sent
        self.upstream_raw = False

    def response(self) -> JSONResponse:
        """The OpenAI error JSON: ``{"error": {"message", "type", "param", "code"}}``;
        `type` is `kind` when given (OpenAI's 429s say ``requests``, ``tokens`` or
        ``insufficient_quota``), else by the status."""
        kind = self.kind or ("invalid_request_error" if self.status < 500 else "server_error")
        error: dict[str, object] = {
            "message": self.message,
            "type": kind,
            "param": self.param,
            "code": self.code,
        }
        if self.attempts:
            error["attempts"] = list(self.attempts)
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


def in_api_shape(request: Request, error: GatewayError) -> Response:
    """`error` in the shape the request's client reads: Anthropic's (``{"type": "error",
    "error": {"type", "message"}}``) for an Anthropic client (`speaks_anthropic`), which
    reads no other (a wrong method, an unknown path, a last-resort 500), else OpenAI's.
    A call its message names (``GET /v1/models lists them``) is named as the client
    makes it, behind ``--root-path`` too (`paths_as_asked`)."""
    error.message = paths_as_asked(error.message, request.scope)
    if speaks_anthropic(request.scope):
        from llmroute.server.messages_convert import error_response  # it imports this module

        return error_response(error)
    return error.response()


async def handle_gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return counted(request, in_api_shape(request, exc))


NO_SLASH = "no trailing /"
# LiteLLM's proxy serves its API at the root as well, so its clients are often set up
# with a base_url that has no /v1 (http://litellm:4000): every call of theirs would be
# a bare 404 here. And Anthropic's clients add /v1 themselves, so a base_url ending in
# /v1, as OpenAI's want, asks /v1/v1/messages.
_UNDER_V1 = "under /v1: an OpenAI client's base_url ends in /v1"
_V1_ONCE = "/v1 once: a client that adds /v1 itself, as Anthropic's do, takes a base_url without it"


async def handle_http(request: Request, exc: Exception) -> Response:
    """Starlette's own errors; a path or method no route serves is named, so a client
    calling what the gateway does not have (``client.vector_stores``, Anthropic's
    message batches) hears which call that was, not a bare "Not Found"."""
    assert isinstance(exc, HTTPException)
    message, code = exc.detail, None
    kept_not = None
    if message in ("Not Found", "Method Not Allowed"):
        kept_not = not_stored(request.method, request.url.path, exc.status_code)
    if kept_not is not None:  # one of OpenAI's stored chat completions calls
        message = f"{request.method} {shown_path(request, request.url.path)}: {kept_not}"
        code = NOT_STORED
    elif exc.status_code == 405 and message == "Method Not Allowed":
        message = f"{request.method} {shown_path(request, request.url.path)}: "
        message += "the method is not allowed on this path"
    elif exc.status_code == 404 and message == "Not Found":
        message = not_an_endpoint(request, *_served_instead(request))
    error = GatewayError(exc.status_code, message, code=code, headers=exc.headers)
    return counted(request, in_api_shape(request, error))


def not_an_endpoint(request: Request, served: str | None = None, why: str = NO_SLASH) -> str:
    """The 404 of a path the gateway does not serve, naming the call; with `served`,
    the path the request meant (a stray trailing ``/``, a ``/v1`` missing or doubled) as
    the one to call, and `why`. Both as the client calls them: behind ``--root-path``,
    with the prefix it came through."""
    called = shown_path(request, request.url.path)
    message = f"{request.method} {called} is not an endpoint of this gateway"
    if served is not None:
        message += f"; {request.method} {shown_path(request, served)} is ({why})"
    return message


def _served_instead(request: Request) -> tuple[str | None, str]:
    """The path the request most likely meant, when a route serves it for the request's
    method, and why: without its stray trailing ``/``, then with ``/v1`` put in front of
    a path that lacks it (``/chat/completions``) or taken off a doubled one
    (``/v1/v1/messages``). The gateway answers 404 rather than Starlette's redirect for
    the trailing ``/`` (whose absolute ``Location`` names the gateway's own address and
    drops a proxy's path prefix), and serves no path twice: it names the one to call."""
    path = request.url.path
    bare = (path.rstrip("/") or "/") if path.endswith("/") else path
    whys = [NO_SLASH] if bare != path else []
    if bare != path and _serves(request, bare):
        return bare, NO_SLASH
    if bare.startswith("/v1/v1/"):
        fixed, why = bare[3:], _V1_ONCE
    elif bare != "/" and not bare.startswith(("/v1/", "/v2/")) and bare not in ("/v1", "/v2"):
        fixed, why = "/v1" + bare, _UNDER_V1
    else:
        return None, NO_SLASH
    if _serves(request, fixed):
        return fixed, "; ".join([*whys, why])
    return None, NO_SLASH


def _serves(request: Request, path: str) -> bool:
    """Whether a route serves `path` for the request's method (a PARTIAL match, another
    method, is a 405 there, not a path to name)."""
    router = request.scope.get("router")
    if router is None:
        return False
    scope = {**request.scope, "path": path}
    return any(route.matches(scope)[0] is Match.FULL for route in router.routes)


def shown_path(request: Request, path: str) -> str:
    """A path as an error may name it: as the client reaches it (`asked_path`),
    bounded, printable."""
    path = asked_path(request.scope, path)
    return path[:200] if path.isprintable() else "(a path with unprintable characters)"


async def handle_any(request: Request, exc: Exception) -> Response:
    """Last resort: a generic 500 (`in_api_shape`); the traceback goes to the log, never
    to the client."""
    log.error(
        "unhandled error on %s %s (request %s)",
        request.method,
        request.url.path,
        request_id_of(request.scope),  # the x-request-id the client gets
        exc_info=exc,
    )
    error = GatewayError(500, "internal server error", code=INTERNAL_ERROR)
    return counted(request, in_api_shape(request, error))


class AnswerUnhandled:
    """An exception no handler took is answered by `handle_any` and logged once. (As an
    ``Exception`` handler, Starlette's last resort answers and then raises it again, so
    uvicorn logged every such error a second time, with a longer traceback.) One raised
    after the answer started cannot be answered: it goes on to uvicorn, which logs it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watched = WatchedSend.of(send)  # the id is stamped outside (`StampRequestIds`)
        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if watched.started:
                raise
            response = await handle_any(Request(scope, receive), exc)
            await response(scope, receive, watched)


async def handle_client_gone(request: Request, exc: Exception) -> Response:
    """A client that hung up before its whole body came: 499, as a hang-up is logged
    elsewhere (nobody reads it), not a 500 with a traceback."""
    return counted(request, Response(status_code=499))


def counted(request: Request, response: Response) -> Response:
    """`response`, an error answer, counted in the metrics unless the request's record
    counted it (`GatewayMetrics.api_error`): an error after the record was written, with
    another status (`recorded_otherwise`), is counted, as no record holds it."""
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        from llmroute.server.auth import api_key_of  # auth imports this module

        key = api_key_of(request.scope)
        path = request.scope.get("path", "")
        status = response.status_code
        late = recorded_otherwise(request.scope, status)
        metrics.api_error(path, status, None if key is None else key.name, late=late)
    return response


def gateway_error(exc: LlmrouteError, headers: Mapping[str, str] | None = None) -> GatewayError:
    """The HTTP answer to a library error: the one place the mapping lives."""
    if isinstance(exc, ModelNotFound):
        return GatewayError(404, str(exc), param=exc.param, code=exc.code, headers=headers)
    if isinstance(exc, PolicyViolation):
        return GatewayError(
            400, str(exc), param="messages", code="content_policy_violation", headers=headers
        )
    if isinstance(exc, RoutingError):
        return GatewayError(400, str(exc), param=exc.param, headers=headers)
    if isinstance(exc, UnsupportedRequest):
        param = exc.param or ("tools" if exc.code == "tools_not_supported" else "messages")
        return GatewayError(400, exc.message, param=param, code=exc.code, headers=headers)
    if isinstance(exc, KeyBudgetReached):  # the key's hard budget fits no model of the chain
        return GatewayError(
            429, exc.message, code="insufficient_quota", headers=headers, kind="insufficient_quota"
        )
    if isinstance(exc, AllFallbacksFailed):
        return _all_failed(exc, headers)
    if isinstance(exc, RateLimited):  # an embeddings or rerank model, retried, not fallen back
        return _rate_limited(exc, str(exc), headers, ())
    if isinstance(exc, ProviderError):
        if exc.retryable or isinstance(exc, CircuitOpen | ProviderTimeout):
            status = (
                504
                if isinstance(exc, ProviderTimeout)
                else 503
                if isinstance(exc, CircuitOpen) or _said_when(exc)
                else 502
            )
            headers = _after_failing(status, headers, exc)
            return GatewayError(status, str(exc), code="upstream_error", headers=headers)
        model = f"model {exc.model!r}" if exc.model else "the model"
        if exc.model and headers is not None and "x-llmroute-model" in headers:
            headers = {**headers, "x-llmroute-model": exc.model}  # a fallback refused it
        # the upstream's status, but never 401/402/403/404, which the client would read as
        # its own key, credit or path refused (OpenRouter's moderation refuses with a 403)
        refused = exc.status
        status = 400 if refused is None or refused in (401, 402, 403, 404) else refused
        return GatewayError(
            status,
            f"{model} rejected the request: {exc}",
            code=exc.code or "upstream_rejected",
            param=exc.param,
            headers=headers,
            attempts=exc.passed_over,
            upstream_param=exc.param is not None,
        )
    return GatewayError(500, "internal server error", code="internal_error", headers=headers)


def _all_failed(exc: AllFallbacksFailed, headers: Mapping[str, str] | None) -> GatewayError:
    if exc.status == 429:
        return _rate_limited(exc, exc.message, headers, exc.attempts)
    status = exc.status or 502
    return GatewayError(
        status,
        exc.message,
        code="upstream_error",
        headers=_after_failing(status, headers, exc),
        attempts=exc.attempts,
    )


def _said_when(exc: ProviderError) -> bool:
    """Whether `exc` is an upstream's 503 that said when to come back (an embeddings or
    rerank model's, retried, not fallen back): the client's 503 with that wait, as a
    chain whose every model said so gets (past ``max_retry_after_s`` the gateway
    neither waited nor retried)."""
    return exc.status == 503 and exc.retry_after_s is not None


def _after_failing(
    status: int, headers: Mapping[str, str] | None, exc: ProviderError
) -> Mapping[str, str] | None:
    """`headers` for a 502, 503 or 504 the gateway answers after its own retries and
    fallbacks. A 503 keeps its ``Retry-After`` (a breaker's cooldown, an upstream 503's
    own; any failure's that said one). Otherwise a 502 or 504 says
    ``x-should-retry: false``: OpenAI's and Anthropic's clients would send it twice more
    (by default), each time through the whole chain, trebling the load on upstreams
    already failing."""
    waited = _with_retry_after(headers, exc)
    if status == 503 or waited is not headers:
        return waited
    return {**(headers or {}), **NO_RETRY}


def _rate_limited(
    exc: ProviderError,
    message: str,
    headers: Mapping[str, str] | None,
    attempts: Sequence[str],
) -> GatewayError:
    """429 ``upstream_rate_limited`` when every try was an upstream's 429: what an
    OpenAI client (`RateLimitError`) and LiteLLM read as a wait, not an outage; with
    ``Retry-After`` when the upstreams said how long."""
    return GatewayError(
        429,
        message,
        code="upstream_rate_limited",
        headers=_with_retry_after(headers, exc),
        attempts=attempts,
        kind="requests",
    )


def _with_retry_after(
    headers: Mapping[str, str] | None, exc: ProviderError
) -> Mapping[str, str] | None:
    """`headers` with ``Retry-After`` (whole seconds, at least 1) when the gateway knows
    when a model could next answer: an open breaker's cooldown, a per-minute limit's next
    minute, an upstream's own ``Retry-After``; clients (the openai SDK among them) wait
    that long before they try again."""
    if exc.retry_after_s is None or exc.status not in (None, 429, 503):
        return headers
    return {**(headers or {}), "retry-after": str(max(1, math.ceil(exc.retry_after_s)))}


def store_unavailable(what: str, exc: Exception) -> GatewayError:
    """503 for a store that did not answer (the response store, the conversation store):
    logged with its cause (no secret: `StoreUnavailable` masks passwords) once a minute
    with how many since (each request that comes while it is down is one), retried by
    the client after a second."""
    paused = getattr(exc, "paused_s", 0.0)
    held = _UNAVAILABLE_SAID.due(f"{what}:{'paused' if paused else 'failed'}")
    if held is not None:
        log.warning("%s store did not answer: %s%s", what, exc, LogEvery.since(held))
    return GatewayError(
        503,
        f"the {what} store did not answer; try again shortly",
        code="store_unavailable",
        headers={"retry-after": "1"},
    )


async def handle_llmroute_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LlmrouteError)
    return counted(request, in_api_shape(request, gateway_error(exc)))
