"""``POST /v1/feedback``: a user's verdict on a decision, stored beside it.

Body: ``{"decision_id": str, "score": number in [0, 1] | "thumbs": "up" | "down",
"comment": str}`` (score or thumbs, or both; comment optional). The decision id is the
``x-llmroute-decision-id`` header of the response being judged. 200 ``{"ok": true}``;
404 for an id the log does not hold (or holds for another client key: a key judges
its own decisions, an ``admin`` key any); 400 ``decision_not_routed`` for an embeddings
or rerank request's (logged, not routed); 503 when the decision log is off or unreachable.
Negative feedback (thumbs down, a score under 0.5) on an answer that came from, or went
into, the response cache drops it there (``cache.evict_on_feedback``), and the answer
says so (``"cache_evicted": true``).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmroute.errors import TelemetryError
from llmroute.log_every import LogEvery
from llmroute.server.auth import api_key_of
from llmroute.server.body import read_json_object
from llmroute.server.errors import GatewayError
from llmroute.server.state import gateway_of
from llmroute.telemetry.record import FeedbackRecord
from llmroute.telemetry.service import Telemetry
from llmroute.telemetry.store.url import LOG_OFF_HOW

__all__ = ["feedback", "negative_feedback", "parse_feedback"]

log = logging.getLogger("llmroute.server")

MAX_COMMENT_CHARS = 4000
_MAX_BODY = 64 * 1024
# While the decision log is down every feedback fails the same way: the first said, then
# one a minute (a client retrying its feedback wrote a line a try)
_UNSTORED = LogEvery(60.0)
_KEYS = frozenset({"decision_id", "score", "thumbs", "comment"})


def parse_feedback(body: dict[str, Any], now: float) -> FeedbackRecord:
    """Validate the body; a `GatewayError` 400 names the field at fault."""
    unknown = sorted(set(body) - _KEYS)
    if unknown:
        raise _invalid(
            unknown[0], f"unknown field {unknown[0]!r}; fields: {', '.join(sorted(_KEYS))}"
        )
    decision_id = body.get("decision_id")
    if (
        not isinstance(decision_id, str)
        or not decision_id.strip()
        or len(decision_id) > 128
        or "\x00" in decision_id
    ):
        raise _invalid(
            "decision_id",
            ("'decision_id' is required" if decision_id is None else "'decision_id' must be")
            + ": the x-llmroute-decision-id header of the response",
        )
    score = body.get("score")
    if score is not None and (
        isinstance(score, bool)
        or not isinstance(score, int | float)
        or not 0 <= score <= 1  # before isfinite, which cannot take a huge int
        or not math.isfinite(score)
    ):
        raise _invalid("score", "'score' must be a number from 0 to 1")
    thumbs = body.get("thumbs")
    if thumbs is not None and thumbs not in ("up", "down"):
        raise _invalid("thumbs", '\'thumbs\' must be "up" or "down"')
    if score is None and thumbs is None:
        raise _invalid("score", "give 'score' (0 to 1) or 'thumbs' (\"up\" or \"down\")")
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS):
        raise _invalid(
            "comment", f"'comment' must be a string of at most {MAX_COMMENT_CHARS} characters"
        )
    return FeedbackRecord(
        decision_id=decision_id.strip(),
        ts=now,
        score=None if score is None else float(score),
        thumbs=thumbs,
        comment=comment,
    )


async def feedback(request: Request) -> Response:
    body = await read_json_object(request, _MAX_BODY)
    record = parse_feedback(body, time.time())
    telemetry = getattr(request.app.state, "telemetry", None)
    if not isinstance(telemetry, Telemetry) or not telemetry.enabled:
        raise GatewayError(
            503,
            f"feedback needs the decision log, and it is off {LOG_OFF_HOW}",
            code="telemetry_disabled",
        )
    # a key judges its own decisions (an admin key any): another key's feedback would
    # skew that key's quality numbers and evict its cached answers
    key = api_key_of(request.scope)
    by = None if key is None or key.admin else key.name
    try:
        stored = await telemetry.add_feedback(record, by=by)
    except Exception as exc:
        held = _UNSTORED.due("unavailable")
        if held is not None:
            # our stores' errors name the masked URL; another's text may hold a secret
            why = next(iter(str(exc).splitlines()), "") if isinstance(exc, TelemetryError) else ""
            log.warning(
                "feedback not stored: %s%s",
                why or type(exc).__name__,
                LogEvery.since(held),
            )
        raise GatewayError(
            503, "the decision log is unavailable; try again later", code="telemetry_unavailable"
        ) from None
    if not stored and await _known(telemetry, record.decision_id, by):
        # there, but not a routing decision: an embeddings or rerank request
        raise GatewayError(
            400,
            f"decision {record.decision_id!r} is an embeddings or rerank request: it was "
            "not routed, and feedback judges a routing decision",
            param="decision_id",
            code="decision_not_routed",
        )
    if not stored:
        raise GatewayError(
            404,
            f"no decision {record.decision_id!r} in the log",
            param="decision_id",
            code="decision_not_found",
        )
    answer: dict[str, Any] = {"ok": True, "decision_id": record.decision_id}
    cache = gateway_of(request).cache
    if cache is not None and cache.settings.evict_on_feedback and negative_feedback(record):
        answer["cache_evicted"] = await cache.evict(record.decision_id)
    return JSONResponse(answer)


async def _known(telemetry: Telemetry, decision_id: str, by: str | None) -> bool:
    try:
        return await telemetry.has_decision(decision_id, by=by)
    except Exception:  # unreachable now: the id is not known, as the store said
        return False


def negative_feedback(record: FeedbackRecord) -> bool:
    """A user said the answer was wrong: thumbs down, or a score under one half."""
    return record.thumbs == "down" or (record.score is not None and record.score < 0.5)


def _invalid(param: str, message: str) -> GatewayError:
    return GatewayError(400, message, param=param, code="invalid_feedback")
