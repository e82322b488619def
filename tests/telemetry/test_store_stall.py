"""A PostgreSQL that keeps its connections open and stops answering (the `StallProxy`
between the store and the tests' server) fails the decision log's calls in bounded time,
and the writer writes again once it answers: the writer thread used to wait forever."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter

import pytest
from stall_proxy import silent_server, stall_proxy
from telemetry_records import build_record, pg_execute

from llmroute.errors import TelemetryError
from llmroute.registry.schema import TelemetrySettings
from llmroute.telemetry.metrics import GatewayMetrics
from llmroute.telemetry.service import Telemetry
from llmroute.telemetry.store.postgres import PostgresStore
from llmroute.telemetry.writer import TelemetryWriter

_SECRET = "s3cret-pw-h8"


def test_a_call_the_server_does_not_answer_is_cut(postgres_url: str) -> None:
    store = PostgresStore(postgres_url, pool_size=1, timeout_s=5, answer_timeout_s=0.3)
    try:
        with pytest.raises(TelemetryError, match=r"did not answer within 0\.3 s"):
            store._select("SELECT pg_sleep(30)", (), "read")
        # the cut connection is replaced: the next call is served
        assert store._select("SELECT 1", (), "read") == [(1,)]
    finally:
        store.close()


def test_the_writer_drops_while_postgres_stalls_and_writes_once_it_answers(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    drops: Counter[str] = Counter()
    with_password = postgres_url.replace("postgres@", f"postgres:{_SECRET}@", 1)
    with stall_proxy(with_password) as (proxy, url):
        store = PostgresStore(url, pool_size=1, timeout_s=0.5, answer_timeout_s=0.5)
        writer = TelemetryWriter(
            store, batch_size=10, flush_seconds=0.02, on_drop=lambda n, r: drops.update({r: n})
        )
        with caplog.at_level(logging.WARNING):
            writer.start()
            writer.offer(build_record(0))
            assert writer.flush(10) and writer.written == 1

            proxy.stall()
            for i in range(1, 6):
                writer.offer(build_record(i))
            # bounded: the pooled connection's check is cut, the batch dropped
            assert writer.flush(10)
            assert writer.written == 1
            assert drops["store_error"] == 5

            proxy.resume()
            deadline = time.monotonic() + 30  # past the writer's backoff
            i = 100
            while writer.written < 2 and time.monotonic() < deadline:
                i += 1
                writer.offer(build_record(i))
                writer.flush(10)
                time.sleep(0.1)
            assert writer.written >= 2
            assert writer.close(10)
        store.close()
    assert not [r for r in caplog.records if _SECRET in r.getMessage()]
    assert any("store_error" in r.getMessage() for r in caplog.records)


def test_a_commit_the_server_does_not_answer_is_cut(postgres_url: str) -> None:
    """The commit is part of the call: a server whose disk stalls answers the insert
    and then waits on its flush at COMMIT (here: a deferred trigger that sleeps), which
    the pool sends after the watched block ended, unbounded."""
    store = PostgresStore(postgres_url, pool_size=1, timeout_s=5, answer_timeout_s=0.3)
    pids: list[int] = []
    try:
        store.migrate()
        with store._connection("set up") as conn:
            pids += [conn.info.backend_pid]  # pool_size=1: the write's connection too
            conn.execute(
                "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_sleep(30); RETURN NULL; END $$"
            )
            conn.execute(
                "CREATE CONSTRAINT TRIGGER stall AFTER INSERT ON decisions DEFERRABLE "
                "INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION stall()"
            )
        with pytest.raises(TelemetryError, match=r"did not answer within 0\.3 s"):
            store.write_decisions([build_record(0)])
    finally:
        store.close()
        for pid in pids:  # its sleep would hold the schema's drop
            pg_execute(f"SELECT pg_terminate_backend({pid})")


def test_closing_the_log_leaves_connection_attempts_behind_at_its_deadline() -> None:
    """A PostgreSQL that takes connections and never answers: the pool's workers try to
    connect for up to `connect_timeout_s` each, and closing the store waited for them
    (up to 5 s each), past the deadline a gateway's shutdown gave the log: a gateway
    stopped while its database hung exited ~10 s after SIGTERM with nothing in flight.
    Now the close returns by its deadline, the attempts left to end in their daemon
    threads (checked by what still runs, not by a clock)."""
    before = set(threading.enumerate())
    with silent_server() as url:
        pg = "postgresql://u@" + url.removeprefix("http://") + "/test"
        store = PostgresStore(pg, pool_size=1, timeout_s=0.3, connect_timeout_s=3)
        writer = TelemetryWriter(store, flush_seconds=0.02).start()
        telemetry = Telemetry(TelemetrySettings(url=pg), GatewayMetrics(), store, writer)
        writer.offer(build_record(0))
        assert writer.flush(10) and writer.dropped_by_reason["store_error"] == 1
        asyncio.run(telemetry.aclose(0.3))
        connecting = [
            t
            for t in set(threading.enumerate()) - before
            if t.name.startswith(f"{store._pool_name}-worker") and t.is_alive()
        ]
        assert connecting  # not waited for: its attempt has seconds to go
    for thread in connecting:  # the server gone, the attempt fails and the worker ends
        thread.join(10)
