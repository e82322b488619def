"""``POST /v1/chat/completions`` and ``POST /v1/route``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from llmroute.decide import Router
from llmroute.decision import Decision
from llmroute.dispatch import Opened, plan_request
from llmroute.errors import LlmrouteError, ProviderError
from llmroute.server.body import read_json_object, require_messages
from llmroute.server.errors import gateway_error
from llmroute.server.state import gateway_of

__all__ = ["chat_completions", "decision_headers", "route_only"]

log = logging.getLogger("llmroute.server")


def decision_headers(decision: Decision, model: str | None = None) -> dict[str, str]:
    """The ``x-llmroute-*`` headers; `model` is the pool model that served, when known."""
    return {
        "x-llmroute-decision-id": decision.id,
        "x-llmroute-route": decision.route,
        "x-llmroute-model": model or decision.model,
        "x-llmroute-confidence": f"{decision.confidence:.4f}",
        "x-llmroute-layer": decision.layer,
    }


async def chat_completions(request: Request) -> Response:
    gateway = gateway_of(request)
    body = await read_json_object(request, gateway.max_body_bytes)
    require_messages(body)
    plan = plan_request(gateway.router, body, request.headers)
    headers = decision_headers(plan.decision)
    if plan.decision.blocked:
        log_blocked(gateway.router, plan.decision, body)
    try:
        if body.get("stream") is True:
            opened = await gateway.dispatcher.open_stream(plan, body)
            return StreamingResponse(
                relay(opened),
                media_type="text/event-stream",
                headers={
                    **decision_headers(plan.decision, opened.model),
                    "cache-control": "no-cache",
                },
            )
        served = await gateway.dispatcher.complete(plan, body)
    except LlmrouteError as exc:
        raise gateway_error(exc, headers) from None
    return JSONResponse(served.data, headers=decision_headers(plan.decision, served.model))


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
    """The decision alone: nothing is sent upstream."""
    gateway = gateway_of(request)
    body = await read_json_object(request, gateway.max_body_bytes)
    plan = plan_request(gateway.router, body, request.headers)
    return JSONResponse(plan.decision.to_dict(), headers=decision_headers(plan.decision))


async def relay(opened: Opened) -> AsyncIterator[bytes]:
    """The stream's events; an upstream failure mid-stream ends it with an error event
    and ``[DONE]`` (the status line has gone out, so nothing is retried silently)."""
    try:
        async for event in opened.events:
            yield event
    except ProviderError as exc:
        log.warning("stream from %s broke off: %s", opened.model, exc)
        yield b'data: {"error": {"message": "the upstream stream broke off", '
        yield b'"type": "server_error", "param": null, "code": "upstream_error"}}\n\n'
        yield b"data: [DONE]\n\n"
