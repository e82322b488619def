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
    UNROUTED_LAYER,
    DecisionRecord,
    FeedbackRecord,
    ShadowRecord,
    decision_rows,
)
from llmroute.telemetry.store._sql import (
    DECISION_LIST,
    FEEDBACK_LIST,
    SHADOW_COLUMNS,
    SHADOW_LIST,
    SqlReads,
    forget_sql,
    prune_sql,
    shadow_row,
)
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
    "WHERE EXISTS (SELECT 1 FROM decisions WHERE id = ? AND (? IS NULL OR client = ?) "
    f"AND layer <> '{UNROUTED_LAYER}')"  # feedback judges routing: not embeddings, rerank
)


class SqliteStore(SqlReads):
    """A decision log in the SQLite file `path` (``:memory:`` for a private one).

    The file and its folder are created on first use, not here, so a bad path shows up
    as a `TelemetryError` from the writer rather than failing the gateway's start.
    """

    backend: Backend = "sqlite"
    _marker = "?"
    _bucket = "CAST((ts - ?) / ? AS INTEGER)"
    # most rows hold "[]": a text compare spares them the JSON parse (a third of the
    # buckets query's time over 400,000 rows)
    _attempts = "(CASE WHEN attempts = '[]' THEN 0 ELSE json_array_length(attempts) END)"
    _first_attempt = "json_extract(attempts, '$[0]')"
    _each_tag = "json_each(decisions.tags) AS j"

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

    def write_decisions(self, records: Sequence[DecisionRecord]) -> int:
        rows = decision_rows(records)  # outside the lock
        if rows:
            with self._transaction("write decisions") as conn:
                conn.executemany(_INSERT_DECISION, rows)
        return len(records) - len(rows)

    def write_feedback(self, feedback: FeedbackRecord, *, by: str | None = None) -> bool:
        row = (
            feedback.decision_id,
            feedback.ts,
            feedback.score,
            feedback.thumbs,
            feedback.comment,
            feedback.decision_id,
            by,
            by,
        )
        with self._transaction("write feedback") as conn:
            return conn.execute(_INSERT_FEEDBACK, row).rowcount == 1

    def forget(
        self, *, end_users: Sequence[str] = (), client: str | None = None
    ) -> tuple[int, int, int]:
        statements, params = forget_sql(end_users, client, "?")
        with self._transaction("forget") as conn:
            counts = [conn.execute(sql, params).rowcount for sql in statements]
        shadow, feedback, decisions = counts
        return decisions, feedback, shadow

    def prune(self, before: float, *, most: int) -> tuple[int, int, int]:
        statements = prune_sql("?", most)
        with self._transaction("prune") as conn:
            counts = [conn.execute(sql, (before,)).rowcount for sql in statements]
        shadow, feedback, decisions = counts
        return decisions, feedback, shadow

    def write_shadow(self, record: ShadowRecord) -> None:
        row = shadow_row(record)
        with self._transaction("write a shadow record") as conn:
            conn.execute(_INSERT_SHADOW, row)

    # -- reads ---------------------------------------------------------------------

    def _select(self, sql: str, params: tuple[Any, ...], what: str) -> list[tuple[Any, ...]]:
        with self._session(what) as conn:
            return list(conn.execute(sql, params).fetchall())

    def close(self, timeout_s: float | None = None) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"
