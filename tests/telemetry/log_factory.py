"""Synthetic decision-log rows for the analysis tests (drift, refresh, report)."""

from __future__ import annotations

import itertools
from typing import Any

from llmroute.telemetry.record import LoggedDecision, prompt_hash

_IDS = itertools.count()


def logged(
    route: str = "code",
    *,
    ts: float = 1_000.0,
    margin: float | None = 0.5,
    layer: str | None = None,
    model: str = "small",
    prompt: str | None = None,
    **fields: Any,
) -> LoggedDecision:
    """A stored decision with plausible defaults; any column can be overridden."""
    values: dict[str, Any] = {
        "id": f"d{next(_IDS):08d}",
        "ts": ts,
        "registry_version": "abc123",
        "route": route,
        "model": model,
        "served_model": None,
        "deployment": None,
        "layer": layer if layer is not None else ("default" if route == "default" else "intent"),
        "confidence": 0.9,
        "margin": margin,
        "signals": {},
        "status": 200,
        "error": None,
        "latency_ms": 100.0,
        "ttft_ms": None,
        "tokens_in": None,
        "tokens_out": None,
        "cost_usd": None,
        "usage_estimated": False,
        "attempts": (),
        "cache_hit": False,
        "stream": False,
        "shadow": False,
        "prompt_mode": "full" if prompt is not None else "hash",
        "prompt_hash": prompt_hash(prompt) if prompt is not None else None,
        "prompt": prompt,
    }
    values.update(fields)
    return LoggedDecision(**values)
