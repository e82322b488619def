"""One log line a finished request, on the ``llmroute.requests`` logger: the decision
and its outcome as fields (no prompt text), for log pipelines that do not read the
decision log's database.

Off unless that logger is enabled at INFO: ``llmroute serve --log-requests`` does it
(with ``--log-format json`` the fields become the JSON object's keys, the cost a
number; the text line writes it in fixed point, ``cost_usd=0.0000006``); an SDK user
turns it on with ``logging.getLogger("llmroute.requests").setLevel(logging.INFO)`` and a
handler. When it is off, a request pays one cached level check.
"""

from __future__ import annotations

import logging
from typing import Any

from llmroute.money import dollars
from llmroute.telemetry.record import DecisionRecord

__all__ = ["REQUESTS_LOGGER", "log_request"]

REQUESTS_LOGGER = "llmroute.requests"
_log = logging.getLogger(REQUESTS_LOGGER)


def log_request(record: DecisionRecord) -> None:
    """Log `record` (a finished request) when the requests logger is on."""
    if not _log.isEnabledFor(logging.INFO):
        return
    fields = request_fields(record)
    _log.info(
        "%s route=%s model=%s served=%s status=%s error=%s latency_ms=%s cost_usd=%s",
        fields["decision_id"],
        fields["route"],
        fields["model"],
        fields["served_model"],
        fields["status"],
        fields["error"],
        fields["latency_ms"],
        _cost(fields["cost_usd"]),
        extra={"request": fields},
    )


def _cost(cost_usd: float | None) -> str | None:
    """The text line's cost: every digit, in fixed point (``0.0000006``, not ``6e-07``,
    which a grep for the cost does not match) and ungrouped (``12345.5``: summed by a
    program); the JSON line keeps the number."""
    return None if cost_usd is None else dollars(cost_usd, exact=True, grouped=False)


def request_fields(record: DecisionRecord) -> dict[str, Any]:
    """The line's fields: what the decision log's row holds, less the prompt."""
    decision = record.decision
    return {
        "decision_id": decision.id,
        "route": decision.route,
        "model": decision.model,
        "layer": decision.layer,
        "confidence": round(decision.confidence, 4),
        "served_model": record.served_model,
        "deployment": record.deployment,
        "status": record.status,
        "error": record.error,
        "latency_ms": round(record.latency_ms, 1),
        "ttft_ms": None if record.ttft_ms is None else round(record.ttft_ms, 1),
        "tokens_in": record.tokens_in,
        "tokens_out": record.tokens_out,
        "cost_usd": record.cost_usd,
        "route_only": record.route_only,
        "api": record.api,
        "stream": record.stream,
        "cache_hit": record.cache_hit,
        # the row's attempt path, counted: the models passed over (as the response's
        # x-llmroute-attempts), not the upstream calls (retries, the answering call)
        "attempts": len(record.attempts),
        "client": record.client,
        "end_user": record.end_user,
        "tags": list(record.tags),
        "registry_version": decision.registry_version,
    }
