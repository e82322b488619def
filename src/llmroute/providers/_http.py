"""What every HTTP provider shares: timeouts, server-sent events, and the one place
where httpx errors and upstream error statuses become `llmroute.errors.ProviderError`s."""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import AsyncIterator

import httpx

from llmroute.errors import (
    ContextWindowExceeded,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    UpstreamRejected,
)
from llmroute.providers.base import Timeouts

__all__ = [
    "error_from_response",
    "httpx_timeout",
    "iter_sse_events",
    "network_error",
    "parse_retry_after",
]

_CONTEXT_HINTS = re.compile(
    r"context[ _-]?(length|window)|maximum context|prompt is too long|too many tokens"
    r"|reduce the length",
    re.IGNORECASE,
)
# Anything that looks like a credential is cut from upstream messages before they are
# shown: bearer tokens, sk-/key- prefixed keys, long opaque tokens.
_SECRETISH = re.compile(
    r"(bearer\s+\S+|\b(sk|key|api|tok)[-_][A-Za-z0-9_*.-]{6,}|\b[A-Za-z0-9_-]{32,})", re.IGNORECASE
)
_MAX_MESSAGE = 300


def httpx_timeout(timeouts: Timeouts) -> httpx.Timeout:
    return httpx.Timeout(timeouts.total_s, connect=timeouts.connect_s)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if seconds == seconds else None  # NaN → None


def network_error(provider: str, exc: httpx.HTTPError) -> ProviderError:
    """No response: the class name only, since httpx messages can carry the URL and a URL
    can carry credentials."""
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(provider, f"upstream timed out ({type(exc).__name__})")
    return ProviderError(provider, f"upstream request failed ({type(exc).__name__})")


def error_from_response(provider: str, response: httpx.Response) -> ProviderError:
    """The error for an upstream error status; the body must have been read."""
    status = response.status_code
    message, code = _upstream_message(response)
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status == 429:
        return RateLimited(
            provider,
            f"upstream rate limited (HTTP 429){message}",
            status=429,
            retry_after_s=retry_after,
            code=code,
        )
    if (
        400 <= status < 500
        and status not in (408, 409)
        and (code == "context_length_exceeded" or _CONTEXT_HINTS.search(message))
    ):
        return ContextWindowExceeded(
            provider,
            f"the request is longer than the model's context window{message}",
            status=status,
            code="context_length_exceeded",
        )
    if 400 <= status < 500 and status not in (408, 409):
        shown = "" if status in (401, 403) else message  # auth messages may echo key parts
        return UpstreamRejected(
            provider, f"upstream returned HTTP {status}{shown}", status=status, code=code
        )
    overloaded = " (overloaded)" if status == 529 or code == "overloaded_error" else ""
    return ProviderError(
        provider,
        f"upstream returned HTTP {status}{overloaded}",
        status=status,
        retry_after_s=retry_after,
        code=code,
    )


def _upstream_message(response: httpx.Response) -> tuple[str, str | None]:
    """``": <message>"`` from an OpenAI- or Anthropic-style error body (scrubbed and
    shortened), and its code; empty when the body says nothing usable."""
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return "", None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return "", None
    text = error.get("message")
    code = error.get("code") if isinstance(error.get("code"), str) else None
    if code is None and data.get("type") == "error" and isinstance(error.get("type"), str):
        code = error["type"]  # Anthropic: {"type": "error", "error": {"type": ..}}
    if not isinstance(text, str) or not text.strip():
        return "", code
    text = _SECRETISH.sub("[redacted]", " ".join(text.split()))
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + "..."
    return f": {text}", code


async def iter_sse_events(response: httpx.Response) -> AsyncIterator[bytes]:
    """The response's server-sent events, one complete event (ending ``\\n\\n``) at a
    time, whatever chunks the bytes arrived in. A final event with no blank line after
    it is still yielded."""
    pending: list[str] = []
    async for line in response.aiter_lines():
        if line:
            pending.append(line)
            continue
        if pending:
            yield ("\n".join(pending) + "\n\n").encode()
            pending.clear()
    if pending:
        yield ("\n".join(pending) + "\n\n").encode()
