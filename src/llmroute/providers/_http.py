"""What every HTTP provider shares: server-sent event framing, and the one place where
transport errors and upstream error statuses become `llmroute.errors.ProviderError`s."""

from __future__ import annotations

import email.utils
import json
import math
import re
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from llmroute.errors import (
    ConnectTimeout,
    ContentRefused,
    ContextWindowExceeded,
    ProviderError,
    ProviderMisconfigured,
    ProviderTimeout,
    Quoted,
    RateLimited,
    RequestNote,
    UpstreamRejected,
    identifier_code,
)
from llmroute.sse import DONE, event_of, parsed
from llmroute.untrusted_json import loads, loads_replacing

__all__ = [
    "MAX_EVENT_BYTES",
    "EventTooLarge",
    "checked_event",
    "error_from_response",
    "error_in_answer",
    "error_in_event",
    "iter_sse_events",
    "network_error",
    "parse_retry_after",
    "plain_event",
    "retry_after_of",
    "withhold",
]

_CONTEXT_HINTS = re.compile(
    r"context[ _-]?(length|window)|maximum context|prompt is too long|too many tokens"
    r"|reduce the length|exceeds the maximum number of tokens",
    re.IGNORECASE,
)
# An upstream content filter's refusal: Azure OpenAI ("...triggering Azure OpenAI's
# content management policy", code content_filter), OpenAI's reasoning models ("Invalid
# prompt: your prompt was flagged as potentially violating our usage policy", code
# invalid_prompt), Anthropic ("Output blocked by content filtering policy").
_CONTENT_CODES = frozenset({"content_filter", "content_policy_violation", "invalid_prompt"})
_CONTENT_HINTS = re.compile(
    r"content (management|filtering) policy|flagged as potentially violating", re.IGNORECASE
)
# OpenRouter answers 403 when a model that requires moderation flags the input: the
# request's content, unlike any other 403 (the gateway's access).
_MODERATION_HINTS = re.compile(r"moderation|flagged", re.IGNORECASE)
# An account out of credit said with another status than 402: Anthropic's 400 ("Your
# credit balance is too low ..."), OpenAI's 429 insufficient_quota (no wait ends it).
_NO_CREDIT = re.compile(r"credit balance is too low", re.IGNORECASE)
# An account the provider cannot bill, said with a 403 (whose message is not shown: it
# may name the account): Google's ``BILLING_DISABLED`` (its ``ErrorInfo`` reason; "This
# API method requires billing to be enabled"), AWS Marketplace's
# ``INVALID_PAYMENT_INSTRUMENT`` (Bedrock's AccessDeniedException for a model it sells).
_NOT_BILLED = re.compile(
    r"BILLING_DISABLED|INVALID_PAYMENT_INSTRUMENT|requires billing to be enabled", re.IGNORECASE
)
_NOT_BILLED_WHY = (
    "the gateway's account with the provider cannot be billed; billing disabled or no "
    "valid payment method"
)
# Why an upstream refused the gateway itself (`ProviderMisconfigured`).
_MISCONFIGURED = {
    401: "the provider refused the gateway's credentials",
    402: "the gateway's account with the provider is out of credits",  # OpenRouter, DeepSeek
    403: "the provider refused the gateway access",
    404: "the provider has no such model or path",
}
# Anything that looks like a credential is cut from upstream messages before they are
# shown: bearer tokens, sk-/key- prefixed keys, long opaque tokens; not a long name of
# lowercase words (Vertex's quota "online_prediction_requests_per_base_model", which an
# operator's quota increase request names), no token. A long token is read from its
# first character (not from a hyphen inside it, a word boundary too), so a name of
# words joined by hyphens is read whole as well.
_SECRETISH = re.compile(
    r"(bearer\s+\S+|\b(sk|key|api|tok)[-_][A-Za-z0-9_*.-]{6,}"
    r"|(?<![A-Za-z0-9_-])(?!(?-i:[a-z]+(?:[_-][a-z]+)+)(?![A-Za-z0-9_-]))[A-Za-z0-9_-]{32,})",
    re.IGNORECASE,
)
_MAX_MESSAGE = 300
_MAX_PARAM = 120  # a field path, not a value
# The credentials this process sends (keys, headers_env values, a base URL's password),
# cut as they are from every upstream message shown: the pattern above cannot know a
# proxy's or a self-hosted server's key (a vLLM --api-key), which an upstream may echo.
# A tuple, longest first, and one pattern of them all, replaced whole when a provider is
# built (no set to iterate while another thread adds to it). A secret is cut where it
# stands alone, not inside a longer word: a short key ("test") would cut "latest".
_SENT_SECRETS: tuple[str, ...] = ()
_SENT_PATTERN: re.Pattern[str] | None = None
_SHORTEST_SECRET = 4  # shorter ones would cut ordinary words from messages
# Keys servers document as "any value will do" (vLLM's EMPTY, Ollama's ollama, llama.cpp's
# sk-no-key-required): no secret, and words an upstream's message holds ("none").
_PLACEHOLDER_KEYS = frozenset(
    {"empty", "none", "null", "dummy", "ollama", "lm-studio", "not-needed", "sk-no-key-required"}
)
_WITHHOLDING = threading.Lock()
# Who holds each secret: the transports alive that send it (`withhold`'s `owner`), or
# for good (no owner). A secret no transport alive sends is let go: keys rotated by
# registry reloads, or an SDK router per tenant key, grew the pattern without end
# (memory, and the time every upstream message's scan takes).
_FOREVER: set[str] = set()
_HOLDERS: Counter[str] = Counter()
# What transports collected since gave back, applied by the next `withhold` (under its
# lock): a finalizer runs where the garbage collector does, within `withhold` itself too.
_RELEASED: deque[tuple[str, ...]] = deque()
# OpenAI's ``x-request-id`` (req_ + 32 hex), Anthropic's ``request-id`` (req_...): kept
# for the provider's support; anything else a header could hold is not repeated.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}")


def withhold(*secrets: str | None, owner: object | None = None) -> None:
    """Cut `secrets` (what a provider sends as credentials) from the upstream messages
    errors repeat, in this process, from now on: while `owner` (the transport sending
    them) lives, or for good without one."""
    global _SENT_SECRETS, _SENT_PATTERN
    sent = [s for s in secrets if s] + [c for s in secrets if s and (c := _credential(s))]
    cut = tuple(
        {s for s in sent if len(s) >= _SHORTEST_SECRET and s.lower() not in _PLACEHOLDER_KEYS}
    )
    with _WITHHOLDING:  # providers built in two threads at once both count
        while _RELEASED:
            _HOLDERS.subtract(_RELEASED.popleft())
        if owner is None:
            _FOREVER.update(cut)
        elif cut:
            _HOLDERS.update(cut)
            finalizer = weakref.finalize(owner, _RELEASED.append, cut)
            finalizer.atexit = False
        known = _FOREVER | {s for s, n in list(_HOLDERS.items()) if n > 0}
        if known != set(_SENT_SECRETS):
            _SENT_SECRETS = tuple(sorted(known, key=len, reverse=True))
            _SENT_PATTERN = (
                re.compile("|".join(map(_standing_alone, _SENT_SECRETS))) if known else None
            )
        for gone in [s for s, n in list(_HOLDERS.items()) if n <= 0]:
            del _HOLDERS[gone]


def _credential(value: str) -> str | None:
    """The credential of a header value sent with its scheme (``Bearer TOKEN``, as a
    ``headers_env`` Authorization holds it): an upstream may echo the token alone."""
    scheme, _, credential = value.strip().partition(" ")
    credential = credential.strip()
    return credential if scheme.lower() in _AUTH_SCHEMES and credential else None


_AUTH_SCHEMES = frozenset({"bearer", "basic", "token"})


def _standing_alone(secret: str) -> str:
    """A pattern of `secret` not inside a longer word: no letter or digit touching an end
    of it that is itself a letter or digit."""
    before = r"(?<![A-Za-z0-9])" if secret[0].isalnum() else ""
    after = r"(?![A-Za-z0-9])" if secret[-1].isalnum() else ""
    return before + re.escape(secret) + after


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
    return max(0.0, seconds) if math.isfinite(seconds) else None  # "inf", "1e309", NaN


# OpenAI's rate-limit reset headers: Go-style durations ("1s", "6m0s", "20ms", "1h2m3.5s").
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def retry_after_of(headers: Mapping[str, str], *, limited: bool = True) -> float | None:
    """Seconds to wait before trying the upstream again, from its answer's headers:
    ``retry-after-ms`` (OpenAI, Azure OpenAI; the finer one), else ``Retry-After``, else
    on a 429 (`limited`), for each limit OpenAI says is used up
    (``x-ratelimit-remaining-requests`` / ``-tokens`` at 0), when its window resets
    (``x-ratelimit-reset-requests`` / ``-tokens``), the later of them; None when nothing
    says."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = float("nan")
        if math.isfinite(value) and value >= 0:
            return value
    said = parse_retry_after(headers.get("retry-after"))
    if said is not None or not limited:
        return said
    resets = [
        _duration_s(headers.get(f"x-ratelimit-reset-{kind}", ""))
        for kind in ("requests", "tokens")
        if headers.get(f"x-ratelimit-remaining-{kind}", "").strip() == "0"
    ]
    known = [r for r in resets if r is not None]
    return max(known) if known else None


def _duration_s(text: str) -> float | None:
    """A Go-style duration in seconds ("6m0s" → 360.0); None when it is not one."""
    text = text.strip()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    return seconds if math.isfinite(seconds) else None


TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


def network_error(provider: str, exc: BaseException) -> ProviderError:
    """No (complete) response: what went wrong in a few fixed words and the class name,
    never the exception's message, since transport messages can carry the URL and a URL
    can carry credentials."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # nothing was sent
        return ConnectTimeout(provider, f"could not connect in time ({type(exc).__name__})")
    if isinstance(exc, TimeoutError):
        return ProviderTimeout(provider, f"upstream timed out ({type(exc).__name__})")
    reason = _transport_reason(exc)
    said = f"upstream request failed{f': {reason}' if reason else ''} ({type(exc).__name__})"
    return ProviderError(provider, (said,))  # the gateway's words throughout


def _transport_reason(exc: BaseException) -> str:
    """The kind of transport failure, as an operator would look for it."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host name not resolved"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate not trusted"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "could not connect"
    return ""


def error_from_response(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    in_answer: bool = False,
    sent_as: str | None = None,
) -> ProviderError:
    """The error for an upstream error status, from its headers and whole body. Its
    message ends with the upstream's request id when it sent one (what the provider's
    support asks for), so the attempts in the error and the decision log carry it.
    `in_answer`: the status is the one an error inside a 200 answer gave
    (`error_in_answer`), which the message says instead of an HTTP status. `sent_as`:
    what the upstream sent instead of a status, which the message names (Bedrock's
    ``ThrottlingException in its stream``: no HTTP status came, `status` is the one its
    type stands for); the server's own words are kept, as an answer's are."""
    message, code, param = _upstream_message(body)
    quoted = Quoted(message)  # the upstream's words: left out of the attempt's outline
    note = _request_id_note(headers)
    retry_after = retry_after_of(headers, limited=status == 429)
    reasons, delay = _google_details(body) if status in (403, 429) else ((), None)
    if retry_after is None and status == 429:
        retry_after = delay  # Google's RetryInfo (Gemini's quota: "retryDelay": "37s")
    if sent_as is not None:
        said, limited = f"sent {sent_as}", sent_as
    elif in_answer:
        said, limited = f"answered with error {status}", "429 in its answer"
    else:
        said, limited = f"returned HTTP {status}", "HTTP 429"
    if status in (400, 429) and (code == "insufficient_quota" or _NO_CREDIT.search(message)):
        return ProviderMisconfigured(  # the account's credit, as a 402 says
            provider,
            (f"upstream {said} ({_MISCONFIGURED[402]})", quoted, note),
            status=status,
            code=code,
        )
    if status == 429:
        return RateLimited(
            provider,
            (f"upstream rate limited ({limited})", quoted, note),
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
            ("the request is longer than the model's context window", quoted, note),
            status=status,
            code="context_length_exceeded",
            param=param,
        )
    moderated = status == 403 and bool(_MODERATION_HINTS.search(message))
    if moderated or (
        400 <= status < 500
        and status not in (401, 403, 408, 409)
        and (code in _CONTENT_CODES or _CONTENT_HINTS.search(message))
    ):
        return ContentRefused(
            provider,
            ("the upstream's content filter refused the request", quoted, note),
            status=status,
            code=code or "content_filter",
            param=param,
        )
    if status in _MISCONFIGURED:
        shown = "" if status in (401, 403) else quoted  # auth messages may echo key parts
        why = _MISCONFIGURED[status]
        if status == 403 and ("BILLING_DISABLED" in reasons or _NOT_BILLED.search(message)):
            why = _NOT_BILLED_WHY
            code = "BILLING_DISABLED" if "BILLING_DISABLED" in reasons else code
        return ProviderMisconfigured(
            provider,
            (f"upstream {said} ({why})", shown, note),
            status=status,
            code=code,
        )
    if 400 <= status < 500 and status not in (408, 409):
        return UpstreamRejected(
            provider, (f"upstream {said}", quoted, note), status=status, code=code, param=param
        )
    overloaded = " (overloaded)" if status == 529 or code == "overloaded_error" else ""
    # an error inside an answer is the server's own word on what went wrong midway: kept
    # (scrubbed, cut); a 5xx body is often a proxy's page, left out as before
    told = quoted if in_answer or sent_as is not None else ""
    return ProviderError(
        provider,
        (f"upstream {said}{overloaded}", told, note),
        status=status,
        retry_after_s=retry_after,
        code=code,
    )


# Statuses for the string codes of errors reported inside a 200 (no number given); the
# OpenAI API's insufficient_quota (its account out of credit) is its 429's, which
# `error_from_response` reads as the account's, not a rate limit.
_CODE_STATUS = {
    "context_length_exceeded": 400,
    "insufficient_quota": 429,
    "rate_limit_exceeded": 429,
    **{code: 400 for code in _CONTENT_CODES},
}


def error_in_answer(provider: str, data: Any) -> ProviderError | None:
    """The error an upstream reported inside a 200 instead of answering, or None for an
    answer: an ``error`` object in place of the choices (OpenRouter once the model has
    started; the OpenAI API, vLLM and Ollama inside streams), vLLM's older bare error
    object (``"object": "error"``), or a choice that finished with ``error`` (OpenRouter
    mid-stream). Its status is the error's numeric ``code`` (or ``status``), else one
    its string code implies, else 502: a failure another model may not have."""
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if not error and data.get("object") == "error":
        error = data
    if not error:
        choices = data.get("choices")
        for choice in choices if isinstance(choices, list) else ():  # no generator an event
            if isinstance(choice, dict) and choice.get("finish_reason") == "error":
                break
        else:
            return None
        error = {"message": "the model's answer ended with an error"}
    if not isinstance(error, dict):
        error = {"message": str(error)}
    status = _status_number(error.get("code")) or _status_number(error.get("status"))
    if status is None:
        code = error.get("code") if isinstance(error.get("code"), str) else error.get("type")
        code = code if isinstance(code, str) else None  # a list or object is no code
        status = _CODE_STATUS.get(code, 502) if code is not None else 502
        if code in _CODE_STATUS and code != error.get("code"):
            # a type that names the code (the OpenAI API's {"type": "insufficient_quota"}
            # in a stream): read as the code it is, as it gave the status
            error = {**error, "code": code}
    body = json.dumps({"error": error}, default=str).encode()
    return error_from_response(provider, status, {}, body, in_answer=True)


def error_in_event(provider: str, event: bytes) -> ProviderError | None:
    """`error_in_answer` for one server-sent event of a chat-completions stream: its
    ``data:`` (or llama.cpp server's ``error:``) JSON. Only an event with the word
    ``error`` in it is parsed."""
    if b"error" not in event:
        return None
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            payload = line[5:].strip()
        elif line.startswith(b"error:"):
            payload = b'{"error": ' + line[6:].strip() + b"}"
        else:
            continue
        if payload == b"[DONE]":
            continue
        try:
            data = loads(payload)
        except (ValueError, UnicodeDecodeError):
            continue
        failed = error_in_answer(provider, data)
        if failed is not None:
            return failed
    return None


def _status_number(value: Any) -> int | None:
    """`value` as an HTTP error status (400-599), else None."""
    if isinstance(value, str) and value.isascii() and value.isdigit():  # int("²") raises
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
        return value
    return None


def _request_id_note(headers: Mapping[str, str]) -> RequestNote:
    """``" [upstream request <id>]"`` from ``x-request-id`` / ``request-id``, or ""."""
    value = headers.get("x-request-id") or headers.get("request-id")
    if value is None or _REQUEST_ID.fullmatch(value.strip()) is None:
        return RequestNote()
    return RequestNote(f" [upstream request {value.strip()}]")


def _google_details(body: bytes) -> tuple[frozenset[str], float | None]:
    """The reasons of a Google error's ``ErrorInfo`` details (``BILLING_DISABLED``) and
    the seconds its ``RetryInfo`` says to wait (``"retryDelay": "37s"``), from
    ``{"error": {"details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
    ...}]}}`` (or the OpenAI-compatible endpoint's list of one)."""
    try:
        data = loads(body)
    except (ValueError, UnicodeDecodeError):
        return frozenset(), None
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    reasons: set[str] = set()
    delay = None
    for detail in details if isinstance(details, list) else ():
        kind = detail.get("@type") if isinstance(detail, dict) else None
        if not isinstance(kind, str):
            continue
        if kind.endswith("google.rpc.ErrorInfo") and isinstance(detail.get("reason"), str):
            reasons.add(detail["reason"])
        elif kind.endswith("google.rpc.RetryInfo") and isinstance(detail.get("retryDelay"), str):
            delay = _duration_s(detail["retryDelay"])
    return frozenset(reasons), delay


def _upstream_message(body: bytes) -> tuple[str, str | None, str | None]:
    """``": <message>"`` from an OpenAI- or Anthropic-style error body (scrubbed and
    shortened), its code and its ``param`` (the request field at fault, as OpenAI's
    400s name it); empty when the body says nothing usable. Google's OpenAI-compatible
    endpoint wraps its error object in a list."""
    try:
        data = loads(body)
    except (ValueError, UnicodeDecodeError):
        return "", None, None
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return "", None, None
    text = error.get("message")
    code = error.get("code") if isinstance(error.get("code"), str) else None
    if code is None and data.get("type") == "error" and isinstance(error.get("type"), str):
        code = error["type"]  # Anthropic: {"type": "error", "error": {"type": ..}}
    if code is None and isinstance(error.get("status"), str):
        code = error["status"]  # Google: {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}
    if code is not None and (identifier_code(code) is None or _holds_secret(code)):
        # passed on to the client as its error's code, as a param is: dropped here, before
        # the error is chosen, so a refusal's default (content_filter) stands in for it
        code = None
    param = _param_of(error.get("param"))
    if not isinstance(text, str) or not text.strip():
        return "", code, param
    text = " ".join(text.split())
    if _SENT_PATTERN is not None:
        text = _SENT_PATTERN.sub("[redacted]", text)
    text = _SECRETISH.sub("[redacted]", text)
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + "..."
    return f": {text}", code, param


def _param_of(value: object) -> str | None:
    """An error's ``param`` when it can name a request field (``messages[1].content``,
    ``temperature``): a short printable string; anything else is dropped, not passed to
    the client; so is one holding a credential, the pattern's or one this process sends
    (`withhold`: a self-hosted server's key the pattern cannot know)."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > _MAX_PARAM or not value.isprintable() or _holds_secret(value):
        return None
    return value


def _holds_secret(value: str) -> bool:
    """Whether `value` holds a credential: the pattern's, or one this process sends."""
    sent = _SENT_PATTERN
    return bool(_SECRETISH.search(value) or (sent is not None and sent.search(value)))


MAX_EVENT_BYTES = 32 * 1024 * 1024  # a chunk with an image in it is a few MB


class EventTooLarge(ValueError):
    """An upstream's event grew past `MAX_EVENT_BYTES` without ending."""


async def iter_sse_events(
    chunks: AsyncIterator[bytes], max_bytes: int = MAX_EVENT_BYTES
) -> AsyncIterator[bytes]:
    """Server-sent events, one complete event (ending ``\n\n``) at a time, whatever
    chunks the bytes arrived in; ``\r\n`` line ends are accepted. A final event with no
    blank line after it is still yielded. A long line costs time in proportion to its
    size, however many chunks it comes in (a 16 MB event: tens of milliseconds, where
    re-splitting all that had come at each chunk took most of a second); an event past
    `max_bytes` raises `EventTooLarge` instead of growing."""
    held: list[bytes] = []  # the line not yet ended, in the chunks it came in
    held_bytes = 0
    pending: list[bytes] = []  # the event's ended lines
    size = 0
    async for chunk in chunks:
        if b"\n" not in chunk:
            held.append(chunk)
            held_bytes += len(chunk)
            if size + held_bytes > max_bytes:
                raise EventTooLarge(f"an event larger than {max_bytes // (1 << 20)} MiB")
            continue
        if held:
            held.append(chunk)
            chunk = b"".join(held)
            held.clear()
        *ended, rest = chunk.split(b"\n")
        for line in ended:
            line = line.rstrip(b"\r")
            if line:
                pending.append(line)
                size += len(line)
            elif pending:
                yield b"\n".join(pending) + b"\n\n"
                pending.clear()
                size = 0
        held_bytes = len(rest)
        if rest:
            held.append(rest)
        if size + held_bytes > max_bytes:
            raise EventTooLarge(f"an event larger than {max_bytes // (1 << 20)} MiB")
    last = b"".join(held).rstrip(b"\r")
    if last:
        pending.append(last)
    if pending:
        yield b"\n".join(pending) + b"\n\n"


def plain_event(event: bytes) -> bytes | None:
    """`event` (one whole server-sent event, as `iter_sse_events` yields) as the one form
    everything after the provider reads: a single ``data: <payload>\n\n`` line. A
    server may write valid events otherwise (``id:``/``event:``/``retry:`` lines, no
    space after the colon, the JSON spread over several ``data:`` lines); those are
    joined per the SSE rules (their line breaks, which only JSON whitespace can hold,
    become spaces). An event typed ``error`` whose JSON has no ``error`` member is
    wrapped in one, so it reads as the error it is. None for an event with no data
    (comments, a bare ``id:``)."""
    if event.startswith(b"data: ") and event.find(b"\n") == len(event) - 2:
        return event  # already plain: the usual case, one check
    data: list[bytes] = []
    kind = b""
    for line in event.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            kind = value
    if not data:
        return None
    payload = b" ".join(data) if len(data) > 1 else data[0]
    if kind == b"error":
        payload = _as_error(payload)
    return b"data: " + payload + b"\n\n"


def checked_event(provider: str, raw: bytes) -> bytes | None:
    """`raw` as `plain_event` makes it, its data parsed once: the error it reports
    (`error_in_answer`, or llama.cpp server's ``error:`` line) is raised, and so is data
    that is not a JSON object (``[DONE]`` aside), as a body that is not JSON is: what
    reads the stream after (a client's SDK, usage, the fronts) cannot read it, and
    passed on it would begin the stream, so that the fallback could no longer answer.
    A ``[DONE]`` with blanks around it is `DONE`, as the stream's end is read after.
    None for an event with nothing in it (comments, a bare ``id:``, empty data)."""
    event = plain_event(raw)
    if event is not raw and (raw.startswith(b"error:") or b"\nerror:" in raw):
        failed = error_in_event(provider, raw)
        if failed is not None:
            raise failed
    if event is None:
        return None
    payload = event[6:-2]
    if payload == b"[DONE]":
        return event
    try:
        # NaN, Infinity: not JSON a client could read; a character cut in two (bytes that
        # are not UTF-8, half a surrogate pair): U+FFFD, and the event written again
        data, replaced = loads_replacing(payload, finite=True)
        if replaced:
            event = event_of(data) if isinstance(data, dict) else event
    except (ValueError, UnicodeDecodeError):
        said = payload.strip()
        if said == b"[DONE]":  # written loosely: the one form what reads it knows
            return DONE
        if not said:
            return None
        raise ProviderError(provider, "upstream sent an event that is not JSON") from None
    if not isinstance(data, dict):
        raise ProviderError(provider, "upstream sent an event whose JSON is not an object")
    failed = error_in_answer(provider, data)
    if failed is not None:
        raise failed
    parsed(event, data)  # for the stream's meter, which reads it next
    return event


def _as_error(payload: bytes) -> bytes:
    """An ``event: error`` event's data as ``{"error": ...}`` unless it says so itself."""
    try:
        data = loads(payload)
    except (ValueError, UnicodeDecodeError):
        data = {"message": payload.decode("utf-8", "replace")}
    if isinstance(data, dict) and "error" in data:
        return payload
    return json.dumps({"error": data}, separators=(",", ":"), ensure_ascii=False).encode()
