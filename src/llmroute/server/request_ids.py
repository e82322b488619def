"""``x-request-id`` on every answer, errors included, as OpenAI sends it: apps log it
(``completion._request_id``, ``err.request_id``) and quote it to whoever runs the
gateway.

A routed request's id is its decision's (`chat.decision_headers`, what
``/v1/feedback`` takes), on every answer once it is routed (`routed_as`): a 500, the
503 of a shutdown, a key's ``tpm`` refusing it before dispatch; its decision record is
then its only request line (but for an error after it was written: `recorded_as`).
Any other answer (a bad body, a key refused, a 404, the model list) gets a fresh id in
the same format when it starts, and nothing more: the hot path pays one scan of the
answer's few headers. The request's own ``x-request-id``
is not echoed: the id names this gateway's answer, and a client's could collide with
or pose as a decision's. An error answered without a decision is one request line
(``--log-requests``) with that id, so an operator can find what the client quotes.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.types import Message, Scope, Send

from llmroute.decision import new_decision_id
from llmroute.telemetry.request_log import REQUESTS_LOGGER

__all__ = [
    "REQUEST_ID",
    "answered_apart",
    "apart",
    "recorded_as",
    "recorded_otherwise",
    "request_id_of",
    "routed_as",
    "speaks_anthropic",
    "stamped",
]

REQUEST_ID = b"x-request-id"
_ANTHROPIC_ID = b"request-id"  # where Anthropic's clients read it (`_request_id`)
_SCOPE_KEY = "llmroute.request_id"
_DECISION_KEY = "llmroute.decision_id"  # set once the request is routed
_RECORDED_KEY = "llmroute.recorded_status"  # the status its decision's record holds
_APART = frozenset({_SCOPE_KEY, _DECISION_KEY, _RECORDED_KEY})
_MESSAGE_MOST = 300  # of an error's message in its request line
_CLIENT_CLOSED = 499  # the status of a request whose client hung up (nginx's)
_log = logging.getLogger(REQUESTS_LOGGER)


def routed_as(scope: Scope, decision_id: str) -> None:
    """The request of `scope` is routed, as `decision_id`: every answer it gets from now
    on carries that id, and writes no request line of its own (the decision's record,
    which its server writes however it ends, is the request's line). A dict write: the
    decision path pays nothing more."""
    scope[_DECISION_KEY] = decision_id


def recorded_as(scope: Scope, status: int) -> None:
    """The routed request of `scope` was served, its decision recorded (or, for a stream,
    to be recorded as it ends) with `status`, the status its answer starts with. A later
    failure on the way to the client (a bug converting the answer for its front) answers
    with another status, which no record holds: that answer is a request line of its own,
    naming the decision's id, so the error the client quotes is found with its status."""
    scope[_RECORDED_KEY] = status


def recorded_otherwise(scope: Scope, status: int) -> bool:
    """Whether an answer of `status` is one no record holds although the request's
    decision was recorded (`recorded_as`, with another status): an error after its record
    was written, a request line of its own and, in the metrics, an error of its own."""
    recorded = scope.get(_RECORDED_KEY)
    return recorded is not None and recorded != status


def request_id_of(scope: Scope) -> str:
    """The id of the request's answer: its decision's once routed (`routed_as`), else
    made the first time it is asked for (a log line that must name it before the answer
    starts), the same one after."""
    decided = scope.get(_DECISION_KEY)
    if isinstance(decided, str):
        return decided
    known = scope.get(_SCOPE_KEY)
    if isinstance(known, str):
        return known
    made = scope[_SCOPE_KEY] = new_decision_id()
    return made


def apart(scope: Scope) -> dict[str, Any]:
    """A copy of `scope` for work answered apart from its request's own answer (a batch's
    line, a background response): it gets ids of its own, neither that answer's nor, once
    routed, the work's written back into the request's scope."""
    return {k: v for k, v in scope.items() if k not in _APART}


def speaks_anthropic(scope: Scope) -> bool:
    """Whether the request came from an Anthropic client: it is under ``/v1/messages``,
    or it carries ``anthropic-version``, which Anthropic's clients send on every call
    (``models.list``, a path this gateway does not serve) and OpenAI's never do."""
    if str(scope.get("path", "")).startswith("/v1/messages"):
        return True
    return any(name == b"anthropic-version" for name, _ in scope.get("headers") or ())


def stamped(message: Message, scope: Scope, send: Send) -> Send:
    """`message`, an answer's start, given an ``x-request-id`` when it has none, and
    for an Anthropic client (`speaks_anthropic`: any path it calls, the embeddings one
    too) the same id as ``request-id``, which it reads; the `send` to go on with: `send`, or
    for an error answer when request lines are on, one that logs the error's first
    body with the id."""
    headers: list[tuple[bytes, bytes]] = message.get("headers") or []
    for name, known in headers:
        if name == REQUEST_ID:  # its handler's (an embeddings row's, a decision's)
            if speaks_anthropic(scope) and not any(n == _ANTHROPIC_ID for n, _ in headers):
                message["headers"] = [*headers, (_ANTHROPIC_ID, known)]
            return send
    request_id = request_id_of(scope)
    value = request_id.encode()
    # a new list: the answer's own (a JSONResponse's raw_headers) is not changed
    added = [*headers, (REQUEST_ID, value)]
    if speaks_anthropic(scope) and not any(n == _ANTHROPIC_ID for n, _ in headers):
        added.append((_ANTHROPIC_ID, value))
    message["headers"] = added
    status = int(message.get("status", 200))
    if not _unrouted_error(scope, status):
        return send
    return _ErrorLine(send, scope, request_id, status)


def answered_apart(scope: Scope, status: int, body: bytes, tries: int = 1) -> str:
    """The id of an answer made apart from any the client is sent (a batch's line, with
    a scope of its own: `apart`), which `stamped` never sees: `request_id_of` its scope,
    and for an error answered without a decision its request line, as `stamped` writes
    a live answer's, so that the id the batch's output gives is found in the log; with
    the `tries` it took, when it was sent more than once."""
    request_id = request_id_of(scope)
    if _unrouted_error(scope, status):
        log_unrouted(scope, request_id, status, body, tries)
    return request_id


def _unrouted_error(scope: Scope, status: int) -> bool:
    """Whether an answer of `status` is a request line of its own (when request lines
    are on): an error no decision's record holds."""
    # a 499 is no line: nobody reads it, and what answered it logged the request (chat's
    # decision, an embeddings row) or nothing came to log (a body cut off); nor is an
    # error after routing (`routed_as`): the decision's record is its line, unless it
    # was written with another status before this error came (`recorded_as`)
    return not (
        status < 400
        or status == _CLIENT_CLOSED
        or (_DECISION_KEY in scope and not recorded_otherwise(scope, status))
        or not _log.isEnabledFor(logging.INFO)
    )


class _ErrorLine:
    """A `send` that logs the request line of an error answered without a decision
    from its first body (the error's JSON), then sends on as it was given."""

    __slots__ = ("_id", "_logged", "_scope", "_send", "_status")

    def __init__(self, send: Send, scope: Scope, request_id: str, status: int) -> None:
        self._send, self._scope, self._id, self._status = send, scope, request_id, status
        self._logged = False

    async def __call__(self, message: Message) -> None:
        if not self._logged and message["type"] == "http.response.body":
            self._logged = True
            log_unrouted(self._scope, self._id, self._status, message.get("body", b""))
        await self._send(message)


def log_unrouted(scope: Scope, request_id: str, status: int, body: bytes, tries: int = 1) -> None:
    """One request line for an error answered before (or without) routing: the id the
    client got, the status, the error's code and message (bounded; never the key, which
    no error message names), the method and path; and ``tries`` when it was sent more
    than once (a batch's line its key's rate limit kept turning away)."""
    code, text = _error_of(body)
    path = str(scope.get("path", ""))[:200]
    fields: dict[str, Any] = {
        "request_id": request_id,
        "status": status,
        "error": code,
        "message": text,
        "method": scope.get("method"),
        "path": path if path.isprintable() else "(unprintable)",
    }
    tried = ""
    if tries > 1:
        fields["tries"] = tries
        tried = f" tries={tries}"
    _log.info(
        "%s status=%s error=%s method=%s path=%s%s message=%s",
        request_id,
        status,
        code,
        fields["method"],
        fields["path"],
        tried,
        json.dumps(text, ensure_ascii=False),
        extra={"request": fields},
    )


def _error_of(body: bytes) -> tuple[str | None, str | None]:
    """The code (else type) and message of an OpenAI or Anthropic error JSON."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None, None
    if not isinstance(error, dict):
        return None, None
    code = error.get("code") or error.get("type")
    message = error.get("message")
    return (
        code if isinstance(code, str) else None,
        message[:_MESSAGE_MOST] if isinstance(message, str) else None,
    )
