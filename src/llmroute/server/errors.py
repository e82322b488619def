"""Errors in the OpenAI wire format: ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["GatewayError", "error_response", "handle_any", "handle_gateway_error", "handle_http"]

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


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
    attempts: Sequence[str] = (),
) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    error: dict[str, object] = {"message": message, "type": kind, "param": param, "code": code}
    if attempts:
        error["attempts"] = list(attempts)
    return JSONResponse({"error": error}, status_code=status, headers=headers)


async def handle_gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(
        exc.status,
        exc.message,
        param=exc.param,
        code=exc.code,
        headers=exc.headers,
        attempts=exc.attempts,
    )


async def handle_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, headers=exc.headers)


async def handle_any(request: Request, exc: Exception) -> Response:
    """Last resort: a generic 500; the traceback goes to the log, never to the client."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error", code="internal_error")
