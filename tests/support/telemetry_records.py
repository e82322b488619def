"""Decision-log records built from real `Decision`s, and PostgreSQL access, for the
telemetry tests (their conftest's fixtures and the tests that build records themselves)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from llmroute.decision import (
    Decision,
    LayerSignal,
    Outcome,
    ReasoningOutcome,
    RouteScore,
    SafetyOutcome,
    Verdict,
    new_decision_id,
)
from llmroute.telemetry.record import DecisionRecord, PromptMode

PG_HOST = os.environ.get("LLMROUTE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("LLMROUTE_TEST_PG_PORT", "5432"))
PG_BASE = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"

MakeRecord = Callable[..., DecisionRecord]


class ListSink:
    """A recorder's sink that keeps what it is offered, for tests of what a record holds."""

    def __init__(self) -> None:
        self.records: list[DecisionRecord] = []

    def offer(self, record: DecisionRecord) -> bool:
        self.records.append(record)
        return True


def make_decision(i: int = 0, *, ts_safety: bool = True) -> Decision:
    """A Decision with every part filled: layer signals, candidates, safety, reasoning."""
    candidates = (
        RouteScore("billing", 0.81 + i * 1e-6, 0.5),
        RouteScore("support", 0.42, 0.5),
    )
    verdict = Verdict("billing", "small-model", 0.81, "intent match", margin=0.39)
    signals = (
        LayerSignal("rules", Outcome.PASSED, 3.2),
        LayerSignal(
            "intent",
            Outcome.DECIDED,
            41.7,
            verdict=verdict,
            candidates=candidates,
            detail={"method": "linear", "n": i},
        ),
    )
    safety = SafetyOutcome(
        "default", "redact", fired=("pii:EMAIL",), injection_score=0.0123, pii={"EMAIL": 1}
    )
    reasoning = ReasoningOutcome(needed=False, reason="short request", score=0.12)
    return Decision(
        id=new_decision_id(),
        route="billing",
        model="small-model",
        layer="intent",
        confidence=0.81,
        margin=0.39,
        reason="intent match",
        registry_version="v-abc123",
        signals=signals,
        encode_us=120.5,
        total_us=180.25,
        safety=safety if ts_safety else None,
        reasoning=reasoning,
    )


def build_record(
    i: int = 0, *, ts: float | None = None, prompt_mode: PromptMode = "hash", **over: Any
) -> DecisionRecord:
    base: dict[str, Any] = {
        "decision": make_decision(i),
        "ts": 1_700_000_000.0 + i if ts is None else ts,
        "status": 200,
        "latency_ms": 812.5,
        "served_model": "small-model-2024",
        "deployment": "eu-1",
        "ttft_ms": 95.25,
        "tokens_in": 120 + i,
        "tokens_out": 48,
        "cost_usd": 0.000123,
        "usage_estimated": True,
        "attempts": ("big-model (timeout)",),
        "cache_hit": False,
        "stream": True,
        "shadow": False,
        "prompt_mode": prompt_mode,
        "prompt": f"my email is alice@example.com, request {i}",
        "redacted_prompt": f"my email is <EMAIL>, request {i}",
    }
    base.update(over)
    return DecisionRecord(**base)


def pg_reachable() -> str | None:
    """None when the tests' PostgreSQL answers, else why not (for `services.require`)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'llmroute[postgres]')"
    try:
        with psycopg.connect(PG_BASE, connect_timeout=2):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable: {str(exc).strip()}"


def pg_execute(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(sql.encode())
