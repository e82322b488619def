"""`Gateway`: what the server loads once at startup, kept on ``app.state.gateway``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from llmroute.decide import Router
from llmroute.dispatch import Dispatcher
from llmroute.server.errors import GatewayError

__all__ = ["Gateway", "gateway_of"]


@dataclass(frozen=True, slots=True)
class Gateway:
    router: Router
    dispatcher: Dispatcher
    max_body_bytes: int


def gateway_of(request: Request) -> Gateway:
    gateway = getattr(request.app.state, "gateway", None)
    if not isinstance(gateway, Gateway):
        raise GatewayError(503, "the router is not loaded yet", code="not_ready")
    return gateway
