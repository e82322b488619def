"""Errors in the OpenAI wire format: ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["GatewayError", "handle_any", "handle_gateway_error", "handle_http"]

log = logging.getLogger("llmroute.server")


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
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        self.attempts = tuple(attempts)

    def response(self) -> JSONResponse:
        """The OpenAI error JSON: ``{"error": {"message", "type", "param", "code"}}``."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        error: dict[str, object] = {
            "message": self.message,
            "type": kind,
            "param": self.param,
            "code": self.code,
        }
        if self.attempts:
            error["attempts"] = list(self.attempts)
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


async def handle_gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return exc.response()


async def handle_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return GatewayError(exc.status_code, exc.detail, headers=exc.headers).response()


async def handle_any(request: Request, exc: Exception) -> Response:
    """Last resort: a generic 500; the traceback goes to the log, never to the client."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return GatewayError(500, "internal server error", code="internal_error").response()
