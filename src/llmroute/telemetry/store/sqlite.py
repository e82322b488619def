"""`SqliteStore`: the decision log in one SQLite file (the default; no server needed).

One connection, guarded by a lock, serves the writer thread and the callers that come
through ``asyncio.to_thread``. The file is in WAL mode with a busy timeout, so several
gateway worker processes can write it at once: each batch is one short ``BEGIN
IMMEDIATE`` transaction and a writer that finds the lock taken waits for it instead of
failing.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmroute.errors import TelemetryError
from llmroute.telemetry.record import (
    DECISION_COLUMNS,
    DecisionRecord,
    FeedbackRecord,
    LoggedDecision,
    ShadowRecord,
)
from llmroute.telemetry.store._sql import (
    DECISION_LIST,
    FEEDBACK_LIST,
    SHADOW_COLUMNS,
    SHADOW_LIST,
    SUMMARY_LIST,
    buckets_from_rows,
    buckets_sql,
    client_totals_from_rows,
    clients_sql,
    feedback_from_row,
    shadow_from_row,
    shadow_row,
)
from llmroute.telemetry.store.base import ClientTotal, DecisionBucket
from llmroute.telemetry.store.migrate import Backend, pending

__all__ = ["SqliteStore"]

_INSERT_DECISION = (
    f"INSERT OR IGNORE INTO decisions ({DECISION_LIST}) "
    f"VALUES ({', '.join('?' * len(DECISION_COLUMNS))})"
)
_INSERT_SHADOW = (
    f"INSERT INTO shadow ({SHADOW_LIST}) VALUES ({', '.join('?' * len(SHADOW_COLUMNS))})"
)
_INSERT_FEEDBACK = (
    f"INSERT INTO feedback ({FEEDBACK_LIST}) SELECT ?, ?, ?, ?, ? "
    "WHERE EXISTS (SELECT 1 FROM decisions WHERE id = ?)"
)


_BUCKET = "CAST((ts - ?) / ? AS INTEGER)"  # the dashboard's time bucket of a row
_FELL_BACK = "attempts <> '[]'"  # the row's attempt path is not empty


def _between(since: float, until: float | None) -> tuple[str, tuple[float, ...]]:
    if until is None:
        return "ts >= ?", (since,)
    return "ts >= ? AND ts < ?", (since, until)


class SqliteStore:
    """A decision log in the SQLite file `path` (``:memory:`` for a private one).

    The file and its folder are created on first use, not here, so a bad path shows up
    as a `TelemetryError` from the writer rather than failing the gateway's start.
    """

    backend: Backend = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = str(path)
        self.url = f"sqlite:///{self.path}"
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    # -- connection ----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise TelemetryError(f"{self.url}: the store is closed")
        if self._conn is not None:
            return self._conn
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a batch is exactly
        # one transaction and migrations (DDL included) are atomic.
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
            self._wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")  # durable across app crashes in WAL
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL. The switch takes an exclusive lock and SQLite does not
        wait for it (no busy handler), so workers opening a new file together retry."""
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @contextmanager
    def _session(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection under the lock; sqlite errors become `TelemetryError`."""
        with self._lock:
            try:
                yield self._connect()
            except sqlite3.Error as exc:
                raise TelemetryError(f"{self.url}: cannot {what}: {exc}") from exc
            except OSError as exc:
                raise TelemetryError(f"{self.url}: cannot {what}: {exc.strerror}") from exc

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._session(what) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- schema --------------------------------------------------------------------

    @staticmethod
    def _applied(conn: sqlite3.Connection) -> list[int]:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        if exists is None:
            return []
        return [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]

    def migrate(self) -> int:
        with self._transaction("migrate") as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            applied = self._applied(conn)
            for migration in pending(self.backend, applied):
                for statement in migration.statements():
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    (migration.version, migration.name, time.time()),
                )
                applied.append(migration.version)
            return max(applied, default=0)

    def schema_version(self) -> int:
        with self._session("read the schema version") as conn:
            return max(self._applied(conn), default=0)

    # -- writes --------------------------------------------------------------------

    def write_decisions(self, records: Sequence[DecisionRecord]) -> None:
        if not records:
            return
        rows = [record.to_row() for record in records]  # outside the lock
        with self._transaction("write decisions") as conn:
            conn.executemany(_INSERT_DECISION, rows)

    def write_feedback(self, feedback: FeedbackRecord) -> bool:
        row = (
            feedback.decision_id,
            feedback.ts,
            feedback.score,
            feedback.thumbs,
            feedback.comment,
            feedback.decision_id,
        )
        with self._transaction("write feedback") as conn:
            return conn.execute(_INSERT_FEEDBACK, row).rowcount == 1

    def write_shadow(self, record: ShadowRecord) -> None:
        row = shadow_row(record)
        with self._transaction("write a shadow record") as conn:
            conn.execute(_INSERT_SHADOW, row)

    # -- reads ---------------------------------------------------------------------

    def _select(self, sql: str, params: tuple[Any, ...], what: str) -> list[tuple[Any, ...]]:
        with self._session(what) as conn:
            return list(conn.execute(sql, params).fetchall())

    def has_decision(self, decision_id: str) -> bool:
        sql = "SELECT 1 FROM decisions WHERE id = ?"
        return bool(self._select(sql, (decision_id,), "read decisions"))

    def decisions(
        self,
        since: float,
        until: float | None = None,
        *,
        newest: int | None = None,
        details: bool = True,
    ) -> list[LoggedDecision]:
        where, params = _between(since, until)
        columns = DECISION_LIST if details else SUMMARY_LIST
        sql = f"SELECT {columns} FROM decisions WHERE {where} ORDER BY ts, id"
        if newest is not None:
            sql = (
                f"SELECT * FROM (SELECT {columns} FROM decisions WHERE {where} "
                f"ORDER BY ts DESC, id DESC LIMIT ?) AS newest ORDER BY ts, id"
            )
            params = (*params, max(0, int(newest)))
        return [LoggedDecision.from_row(r) for r in self._select(sql, params, "read decisions")]

    def feedback(self, since: float, until: float | None = None) -> list[FeedbackRecord]:
        where, params = _between(since, until)
        sql = f"SELECT {FEEDBACK_LIST} FROM feedback WHERE {where} ORDER BY ts, id"
        return [feedback_from_row(r) for r in self._select(sql, params, "read feedback")]

    def shadows(self, since: float, until: float | None = None) -> list[ShadowRecord]:
        where, params = _between(since, until)
        sql = f"SELECT {SHADOW_LIST} FROM shadow WHERE {where} ORDER BY ts, id"
        return [shadow_from_row(r) for r in self._select(sql, params, "read shadow records")]

    def decision_buckets(
        self, since: float, until: float | None, start: float, step: float
    ) -> list[DecisionBucket]:
        where, params = _between(since, until)
        sql = buckets_sql(_BUCKET, _FELL_BACK, where)
        return buckets_from_rows(self._select(sql, (start, step, *params), "count decisions"))

    def client_totals(self, since: float, until: float | None) -> list[ClientTotal]:
        where, params = _between(since, until)
        return client_totals_from_rows(self._select(clients_sql(where), params, "count decisions"))

    def count_decisions(self, since: float | None = None, until: float | None = None) -> int:
        if since is None and until is None:
            rows = self._select("SELECT count(*) FROM decisions", (), "count decisions")
        else:
            where, params = _between(since if since is not None else float("-inf"), until)
            sql = f"SELECT count(*) FROM decisions WHERE {where}"
            rows = self._select(sql, params, "count decisions")
        return int(rows[0][0])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"
