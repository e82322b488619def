"""A PostgreSQL that goes away for a few seconds and comes back (the `StallProxy`
between the store and the tests' server resetting every connection): the decision log
writes again once it is back, not seconds later (found by benchmarks/chaos_gateway.py
``--telemetry-trouble``)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from stall_proxy import stall_proxy
from telemetry_records import PG_BASE

from llmroute.errors import TelemetryError
from llmroute.telemetry.store import postgres
from llmroute.telemetry.store.postgres import PostgresStore


def _until(condition: object, bound_s: float = 20.0) -> None:
    deadline = time.monotonic() + bound_s
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)


def test_a_connection_the_pool_made_again_is_used_at_once(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a call found no connection within its timeout, calls fail at once for a
    while (`_DOWN_S`) rather than each wait as long again; but once the pool has
    connected again (the server is back), a call is served: it used to fail until the
    while ended, and the writer, failing with it, backed off further each time."""
    monkeypatch.setattr(postgres, "_DOWN_S", 600.0)  # the whole test within it
    with stall_proxy(postgres_url) as (proxy, url):
        store = PostgresStore(url, pool_size=1, timeout_s=0.5)
        try:
            assert store._select("SELECT 1", (), "read") == [(1,)]
            proxy.refuse()
            with pytest.raises(TelemetryError, match="no connection to PostgreSQL"):
                store._select("SELECT 1", (), "read")
            with pytest.raises(TelemetryError, match="moments ago"):  # at once
                store._select("SELECT 1", (), "read")
            proxy.resume()
            _until(lambda: store._pool.get_stats().get("pool_available", 0) >= 1)
            assert store._pool.get_stats().get("pool_available", 0) >= 1
            assert store._select("SELECT 1", (), "read") == [(1,)]
        finally:
            store.close()


def test_a_connection_got_after_an_outage_ends_the_while_calls_only_peek(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a call in the while after an outage (`_DOWN_S`) got a connection, the server
    is back: a later call waits its timeout for one, as before the outage. It still
    waited 50 ms alone, and with the pool's connection lent to another call (the
    writer's batch) it failed, 'no connection to PostgreSQL ... moments ago', on a
    server that answered."""
    monkeypatch.setattr(postgres, "_DOWN_S", 600.0)  # the whole test within it
    with stall_proxy(postgres_url) as (proxy, url):
        store = PostgresStore(url, pool_size=1, timeout_s=1.0)
        try:
            proxy.refuse()
            with pytest.raises(TelemetryError, match="no connection to PostgreSQL"):
                store._select("SELECT 1", (), "read")
            proxy.resume()
            _until(lambda: store._pool.get_stats().get("pool_available", 0) >= 1)
            assert store._select("SELECT 1", (), "read") == [(1,)]  # back
            lent, release = threading.Event(), threading.Event()

            def hold() -> None:
                with store._connection("hold") as conn:
                    conn.execute("SELECT 1")
                    lent.set()
                    release.wait(0.2)

            holder = threading.Thread(target=hold)
            holder.start()
            assert lent.wait(10)
            try:
                assert store._select("SELECT 1", (), "read") == [(1,)]
            finally:
                release.set()
                holder.join(10)
        finally:
            store.close()


def test_the_pool_tries_to_connect_again_every_second(closed_port: int) -> None:
    """The pool's attempts to connect again after a failure come about every second
    while it keeps trying (`reconnect_timeout`), not 1, 2, 4, 8 s apart as
    psycopg_pool's own: a server away 3.5 s was found back only 7 s after it went, the
    log dropping records all the while."""
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{closed_port}/test", timeout_s=2.5)
    delays: list[float] = []
    schedule = store._pool.schedule_task

    def scheduled(task: Any, delay: float) -> None:
        if type(task).__name__ == "AddConnection":  # not its hourly upkeep
            delays.append(delay)
        schedule(task, delay)

    store._pool.schedule_task = scheduled  # type: ignore[method-assign]
    try:
        with pytest.raises(TelemetryError, match="no connection to PostgreSQL"):
            store._select("SELECT 1", (), "read")
        assert len(delays) >= 2 and all(d <= 1.2 for d in delays), delays
    finally:
        store.close()


def test_a_pool_of_broken_connections_is_walked_through_at_once(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A server restarted (or a proxy reset) breaks every connection the pool holds; a
    call finds them broken one by one as the pool lends them, and psycopg_pool waited
    0, 1, 2, 4 s between them: with four, the call ran out of its timeout on a server
    that was back, and the writer dropped its batch and backed off. The store checks
    them itself (public API): the broken ones it gives back closed are not a WARNING."""
    with stall_proxy(postgres_url) as (proxy, url):
        store = PostgresStore(url, pool_size=4, timeout_s=2.5)
        try:
            held = threading.Barrier(4)

            def hold() -> None:
                with store._connection("hold") as conn:
                    held.wait(10)
                    conn.execute("SELECT 1")

            threads = [threading.Thread(target=hold) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(20)
            _until(lambda: store._pool.get_stats().get("pool_available", 0) == 4)
            assert store._pool.get_stats().get("pool_available", 0) == 4
            proxy.refuse()  # every connection reset; the server answers new ones
            proxy.resume()
            with caplog.at_level(logging.WARNING, logger="psycopg.pool"):
                assert store._select("SELECT 1", (), "read") == [(1,)]
            assert not [r for r in caplog.records if "discarding" in r.getMessage()]
        finally:
            store.close()


def test_a_batch_whose_commit_was_not_heard_is_written_once(
    postgres_url: str, make_record: Any
) -> None:
    """The connection lost as the server committed a batch (its answer never came):
    the batch is written again on another connection, the rows it holds already
    skipped (``ON CONFLICT (id) DO NOTHING``), and the call succeeds. It failed, and the
    writer counted records dropped that were in the table."""
    with stall_proxy(postgres_url) as (proxy, url):
        store = PostgresStore(url, pool_size=2, timeout_s=5)
        try:
            store.migrate()
            records = [make_record(i) for i in range(3)]
            proxy.cut_replies(on=b"COMMIT\x00", once=True)
            assert store.write_decisions(records) == 0
            assert not proxy.holding()  # the commit's answer was cut, once
            found = store._select("SELECT count(*) FROM decisions", (), "count")
            assert found == [(3,)]
        finally:
            store.close()


def test_the_installed_psycopg_pool_has_what_the_steady_pool_overrides() -> None:
    """The steady pool overrides private methods of psycopg_pool: a release that
    renames one or changes its parameters fails here (the store then falls back to
    the stock pool, reconnecting 1, 2, 4 s apart) rather than silently or in every
    write."""
    assert postgres._steady_gaps() == []
    assert postgres._steady_pool().__name__ == "SteadyPool"


def test_a_psycopg_pool_without_them_gets_the_stock_pool_and_a_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from psycopg_pool import ConnectionPool

    needs = {**postgres._STEADY_NEEDS, "ConnectionPool._gone_in_a_later_release": ("self",)}
    monkeypatch.setattr(postgres, "_STEADY_NEEDS", needs)
    postgres._steady_pool.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger=postgres.__name__):
            assert postgres._steady_pool() is ConnectionPool
        said = [r.getMessage() for r in caplog.records if "steady reconnects" in r.getMessage()]
        assert len(said) == 1 and "ConnectionPool._gone_in_a_later_release" in said[0]
    finally:
        postgres._steady_pool.cache_clear()


@pytest.mark.parametrize(
    ("user", "database", "reason"),
    [
        ("postgres", "h8_nosuchdb", 'database "h8_nosuchdb" does not exist'),
        ("h8_nosuchrole:s3cret-pw", "test", 'role "h8_nosuchrole" does not exist'),
    ],
    ids=["database", "role"],
)
def test_a_refusal_no_retry_can_mend_fails_at_once_with_its_reason(
    _pg_available: None, user: str, database: str, reason: str
) -> None:
    """A missing database or role is answered at once, and no attempt within the
    timeout can mend it: the call says so rather than wait out its timeout and report
    no connection ("report --url .../nosuchdb" took 7.8 s to fail)."""
    host = PG_BASE.split("@", 1)[1].rsplit("/", 1)[0]
    store = PostgresStore(f"postgresql://{user}@{host}/{database}", timeout_s=10)
    try:
        with pytest.raises(TelemetryError) as info:
            store.schema_version()
    finally:
        store.close()
    message = str(info.value)
    assert f"refused the connection: FATAL:  {reason}" in message
    assert "within" not in message and "s3cret-pw" not in message


def test_a_store_quotes_its_own_pools_failure_not_anothers(
    postgres_url: str, closed_port: int
) -> None:
    """Each store's pool has a name of its own: a store whose connections hang (no
    failure yet) said the reason another store's pool had just been refused for."""
    refused = PostgresStore(f"postgresql://bob@127.0.0.1:{closed_port}/test", timeout_s=0.3)
    with stall_proxy(postgres_url) as (proxy, url):
        hanging = PostgresStore(url, timeout_s=0.5)
        try:
            with pytest.raises(TelemetryError, match="refused") as first:
                refused.schema_version()
            assert str(closed_port) in str(first.value)
            proxy.stall()
            with pytest.raises(TelemetryError, match="no connection to PostgreSQL") as info:
                hanging.schema_version()
            assert "refused" not in str(info.value) and str(closed_port) not in str(info.value)
        finally:
            hanging.close()
            refused.close()


@pytest.mark.parametrize(
    ("message", "refused"),
    [
        ('FATAL:  password authentication failed for user "bob"', True),
        ('FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "bob", database "x"', True),
        ('FATAL:  role "bob" is not permitted to log in', True),
        ("fe_sendauth: no password supplied", True),
        ("FATAL:  the database system is starting up", False),
        ("FATAL:  sorry, too many clients already", False),
        ("FATAL:  terminating connection due to administrator command", False),
        ("Connection refused\n\tIs the server running on that host?", False),
    ],
    ids=["password", "pg_hba", "nologin", "no-password", "starting", "full", "admin", "down"],
)
def test_which_refusals_no_retry_can_mend(message: str, refused: bool) -> None:
    """Only what a new attempt cannot mend fails a call at once; a server starting up,
    full or restarting is waited for."""
    line = f"error connecting in 'p': connection failed: ... failed: {message}"
    found = postgres._REFUSAL.search(line)
    assert (found is not None) is refused
    if found:
        assert found[0] == message
