"""``POST /v1/chat/completions`` and ``POST /v1/route``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from llmroute.decision import Decision
from llmroute.server.body import read_json_object, require_messages
from llmroute.server.dispatch import relay
from llmroute.server.resolve import plan_request
from llmroute.server.state import gateway_of

__all__ = ["chat_completions", "decision_headers", "route_only"]


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
    if body.get("stream") is True:
        opened = await gateway.dispatcher.open_stream(plan, body, headers)
        return StreamingResponse(
            relay(opened),
            media_type="text/event-stream",
            headers={**decision_headers(plan.decision, opened.model), "cache-control": "no-cache"},
        )
    served, data = await gateway.dispatcher.complete(plan, body, headers)
    return JSONResponse(data, headers=decision_headers(plan.decision, served))


async def route_only(request: Request) -> Response:
    """The decision alone: nothing is sent upstream."""
    gateway = gateway_of(request)
    body = await read_json_object(request, gateway.max_body_bytes)
    plan = plan_request(gateway.router, body, request.headers)
    return JSONResponse(plan.decision.to_dict(), headers=decision_headers(plan.decision))
