"""A refusal no retry mends (`postgres._REFUSAL`) fails a PostgreSQL call at once; once
the pool has connected since (the refusal mended), a call waits for a connection as
any other does."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from telemetry_records import PG_HOST, PG_PORT, pg_execute

from llmroute.errors import TelemetryError
from llmroute.telemetry.store.postgres import PostgresStore


@pytest.fixture
def nologin_role(_pg_available: None) -> Iterator[str]:
    """A role that exists but may not log in (a refusal no retry mends), dropped after."""
    name = f"llmroute_nologin_{uuid.uuid4().hex[:8]}"
    pg_execute(f"CREATE ROLE {name} NOLOGIN")
    try:
        yield name
    finally:
        pg_execute(f"DROP ROLE IF EXISTS {name}")


def test_a_refusal_mended_since_the_pool_connected_fails_no_call(nologin_role: str) -> None:
    """The role may log in again and the pool has connected: a call finding the pool's
    one connection lent waits for it. It failed at once, 'refused the connection: role
    ... is not permitted to log in', on a server that answered, for `timeout_s` + 1 s
    after the last refusal."""
    store = PostgresStore(
        f"postgresql://{nologin_role}@{PG_HOST}:{PG_PORT}/test", pool_size=1, timeout_s=10
    )
    try:
        with pytest.raises(TelemetryError, match="is not permitted to log in"):
            store.schema_version()
        pg_execute(f"ALTER ROLE {nologin_role} LOGIN")
        deadline = time.monotonic() + 20
        while store._pool.get_stats().get("pool_available", 0) < 1:
            assert time.monotonic() < deadline, "the pool did not connect again"
            time.sleep(0.05)
        lent, release = threading.Event(), threading.Event()

        def hold() -> None:
            with store._connection("hold"):
                lent.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert lent.wait(10)
            threading.Timer(0.3, release.set).start()
            assert store._select("SELECT 1", (), "read") == [(1,)]
        finally:
            release.set()
            holder.join(10)
    finally:
        store.close()


def test_a_call_waiting_on_a_healthy_pool_keeps_its_place_in_line(postgres_url: str) -> None:
    """A pool that has connected with no failed attempt since refuses nothing: a call
    waiting for a lent connection waits in psycopg_pool's line once, first come first
    served. It left the line and joined its end every 0.1 s to look for a refusal, so
    under contention (8 threads, one connection) the slowest waits were 3 times as
    long as before (p99 0.17 -> 0.40 s)."""
    store = PostgresStore(postgres_url, pool_size=1, timeout_s=10)
    try:
        assert store._select("SELECT 1", (), "read") == [(1,)]
        asked: list[float | None] = []
        getconn = store._pool.getconn

        def counted(timeout: float | None = None) -> Any:
            asked.append(timeout)
            return getconn(timeout=timeout)

        store._pool.getconn = counted  # type: ignore[method-assign]
        lent, release = threading.Event(), threading.Event()

        def hold() -> None:
            with store._connection("hold"):
                lent.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert lent.wait(10)
            asked.clear()
            threading.Timer(0.5, release.set).start()
            assert store._select("SELECT 1", (), "read") == [(1,)]
        finally:
            release.set()
            holder.join(10)
        assert len(asked) <= 2, asked  # a first look, then one wait in line
    finally:
        store.close()
