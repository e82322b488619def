"""Fixtures of the decision-log tests: records built from real `Decision`s, a SQLite
file per test and a PostgreSQL schema per test (127.0.0.1:5432, database ``test``, user
``postgres``). Without a reachable server the PostgreSQL tests skip, except under
``CI=true``, where they fail."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

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


def _make_record(
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


@pytest.fixture
def make_record() -> MakeRecord:
    return _make_record


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'telemetry.db'}"


def _pg_reachable() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'llmroute[postgres]')"
    try:
        with psycopg.connect(PG_BASE, connect_timeout=2):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable: {str(exc).strip()}"


@pytest.fixture(scope="session")
def _pg_available() -> None:
    why = _pg_reachable()
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {why}")
    pytest.skip(why)


def pg_execute(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(sql.encode())


@pytest.fixture
def pg_schema(_pg_available: None) -> Iterator[str]:
    """A fresh schema, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        pg_execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def postgres_url(pg_schema: str) -> str:
    """A URL whose connections see only this test's schema (and are named after it,
    so a test can find and terminate them)."""
    return f"{PG_BASE}?options=-csearch_path%3D{pg_schema}&application_name={pg_schema}"


@pytest.fixture
def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
