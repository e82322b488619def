"""`llmroute export`: decision-log rows as JSON lines, with the prompt and answer where
the log kept them and the feedback given on each: real traffic turned into data for the
tools that take JSONL (`llmroute calibrate` reads ``prompt``, `llmroute registry record`
pins today's decisions, an offline judge or a labeller reads ``prompt`` and
``response``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from llmroute.telemetry.record import FeedbackRecord, LoggedDecision

__all__ = ["export_rows"]


def export_rows(
    decisions: Sequence[LoggedDecision], feedback: Sequence[FeedbackRecord] = ()
) -> Iterator[dict[str, Any]]:
    """One object a decision, oldest first; `feedback` on it (any time) as a list."""
    given: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in feedback:
        given[f.decision_id].append(
            {"ts": f.ts, "score": f.score, "thumbs": f.thumbs, "comment": f.comment}
        )
    for d in decisions:
        yield {
            "id": d.id,
            "ts": d.ts,
            "registry_version": d.registry_version,
            "route": d.route,
            "model": d.model,
            "served_model": d.served_model,
            "layer": d.layer,
            "confidence": d.confidence,
            "margin": d.margin,
            "status": d.status,
            "error": d.error,
            "route_only": d.route_only,
            "api": d.api,
            "cache_hit": d.cache_hit,
            "stream": d.stream,
            "latency_ms": d.latency_ms,
            "tokens_in": d.tokens_in,
            "tokens_out": d.tokens_out,
            "cost_usd": d.cost_usd,
            "client": d.client,
            "end_user": d.end_user,
            # null, as the log holds it (and the decisions table documents it), for a
            # request without x-llmroute-tags: [] said an empty header was sent
            "tags": list(d.tags) if d.tags else None,
            "prompt_hash": d.prompt_hash,
            "prompt": d.prompt,
            "response": d.response,
            "feedback": given.get(d.id, []),
        }
