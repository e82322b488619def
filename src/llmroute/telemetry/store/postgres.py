"""`PostgresStore`: the decision log in PostgreSQL, for fleets of gateway workers.

psycopg 3 with a `psycopg_pool.ConnectionPool`, both imported when a store is made so
the core package works without the ``postgres`` extra. The pool is opened on first use
and checks a connection before lending it, so a server restart costs the batches
written while it is down, not the store: broken connections are replaced and new ones
made with backoff until the server answers.

Batches go in with ``COPY ... FROM STDIN`` into a per-connection temporary table, then
one ``INSERT ... SELECT ... ON CONFLICT (id) DO NOTHING``: measured against
``executemany`` (pipeline mode) it is several times faster for batches of hundreds
(benchmarks/bench_telemetry_writer.py). Times are Unix seconds (double precision);
``signals`` and ``attempts`` are jsonb.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from llmroute.errors import TelemetryError
from llmroute.telemetry.record import (
    DECISION_COLUMNS,
    UNROUTED_LAYER,
    DecisionRecord,
    FeedbackRecord,
    ShadowRecord,
    decision_rows,
)
from llmroute.telemetry.store._cutoff import Cutoff
from llmroute.telemetry.store._sql import (
    DECISION_LIST,
    FEEDBACK_LIST,
    SHADOW_COLUMNS,
    SHADOW_LIST,
    SqlReads,
    forget_sql,
    shadow_row,
)
from llmroute.telemetry.store.migrate import Backend, pending
from llmroute.telemetry.store.url import mask_url

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = ["PostgresStore"]

InsertMethod = Literal["copy", "executemany"]

_DECISION_JSON = frozenset(
    i for i, name in enumerate(DECISION_COLUMNS) if name in ("signals", "attempts", "tags")
)
_SHADOW_JSON = frozenset((SHADOW_COLUMNS.index("extra"),))
# jsonb's \u0000 escape (an odd number of backslashes before it, so not an escaped
# backslash followed by the letters)
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _storable(row: tuple[Any, ...], json_columns: frozenset[int]) -> tuple[Any, ...]:
    """`row` with every NUL character replaced by U+FFFD: PostgreSQL refuses NUL in
    text and in jsonb (as ``\\u0000``), and refuses the whole batch for it, so one
    client sending ``"\\u0000"`` (in a prompt, its ``user``, an answer it elicits)
    would drop every tenant's records with it."""
    if not any(
        isinstance(v, str) and ("\x00" in v or (i in json_columns and "\\u0000" in v))
        for i, v in enumerate(row)
    ):
        return row
    return tuple(
        _without_nul(v, i in json_columns) if isinstance(v, str) else v for i, v in enumerate(row)
    )


def _without_nul(text: str, is_json: bool) -> str:
    text = text.replace("\x00", "\ufffd")
    return _NUL_ESCAPE.sub(r"\1\\ufffd", text) if is_json else text


_STAGE = "llmroute_decisions_stage"
_CREATE_STAGE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} "
    "(LIKE decisions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_COPY_STAGE = f"COPY {_STAGE} ({DECISION_LIST}) FROM STDIN"
_FROM_STAGE = (
    f"INSERT INTO decisions ({DECISION_LIST}) SELECT {DECISION_LIST} FROM {_STAGE} "
    "ON CONFLICT (id) DO NOTHING"
)
_INSERT_DECISION = (
    f"INSERT INTO decisions ({DECISION_LIST}) "
    f"VALUES ({', '.join(['%s'] * len(DECISION_COLUMNS))}) ON CONFLICT (id) DO NOTHING"
)
_INSERT_FEEDBACK = (
    f"INSERT INTO feedback ({FEEDBACK_LIST}) "
    "SELECT %s::text, %s::float8, %s::float8, %s::text, %s::text "
    "WHERE EXISTS (SELECT 1 FROM decisions WHERE id = %s AND (%s::text IS NULL OR client = %s) "
    f"AND layer <> '{UNROUTED_LAYER}')"  # feedback judges routing: not embeddings, rerank
)
_INSERT_SHADOW = (
    f"INSERT INTO shadow ({SHADOW_LIST}) VALUES ({', '.join(['%s'] * len(SHADOW_COLUMNS))})"
)
# Serialises migrations per schema (tests and tenants may share a database).
_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtext('llmroute.migrate:' || coalesce(current_schema(), '')))"
)

INSTALL_HINT = "PostgreSQL telemetry needs the postgres extra: pip install 'llmroute[postgres]'"


_POOL_PREFIX = "llmroute-telemetry"
_POOL_NUMBERS = itertools.count(1)  # each store's pool its own name: its failures its own
_CLOSE_S = 5.0  # a close waits this long at most for the pool's workers (all of them)
_DOWN_S = 5.0  # after a timeout without a connection, calls fail at once this long
_PEEK_S = 0.05  # ... unless the pool has a connection within this (made again since)
_REFUSED_POLL_S = 0.1  # a call waiting for a connection looks this often for a refusal
# A migration (an index built on a large table) and a forget (a user's rows across the
# whole log) may take longer than `answer_timeout_s` on a server that works.
_LONG_ANSWER_S = 900.0


_RECONNECT_EVERY_S = 1.0
_NEXT_CHECK_S = 0.05  # between a pooled connection found broken and the next's check

# What `_steady_pool` overrides or calls of psycopg_pool's private API, with the
# parameters it passes: as in psycopg_pool 3.2.1 to 3.3.3 (read: 3.2.1, 3.2.2, 3.2.3,
# 3.2.6, 3.3.3). 3.2.0 has no `AttemptWithBackoff` and gets the stock pool;
# test_store_outage fails on a release that differs.
_STEADY_NEEDS: dict[str, tuple[str, ...]] = {
    "ConnectionPool._add_connection": ("self", "attempt", "growing"),
    "AttemptWithBackoff.__init__": ("self", "timeout"),
    "AttemptWithBackoff.update_delay": ("self", "now"),
    "AttemptWithBackoff.time_to_give_up": ("self", "now"),
}
# ... and what those must read or call for the overrides to take effect
_STEADY_USES: dict[str, tuple[str, ...]] = {
    "ConnectionPool._add_connection": ("update_delay", "time_to_give_up"),
    "AttemptWithBackoff.update_delay": ("INITIAL_DELAY", "DELAY_BACKOFF"),
}


def _steady_gaps() -> list[str]:
    """What `_steady_pool` needs of psycopg_pool's private API that the installed
    psycopg_pool lacks (a name, or a name with other parameters, or a method that no
    longer goes through an override): empty where the steady pool is safe to use."""
    import inspect

    from psycopg_pool import ConnectionPool

    try:
        from psycopg_pool import base
    except ImportError:  # pragma: no cover - another psycopg_pool
        return ["psycopg_pool.base"]
    owners: dict[str, object] = {
        "ConnectionPool": ConnectionPool,
        "AttemptWithBackoff": getattr(base, "AttemptWithBackoff", None),
    }

    def member(dotted: str) -> Any:
        owner, name = dotted.split(".")
        return getattr(owners[owner], name, None)

    gaps: list[str] = []
    for dotted, params in _STEADY_NEEDS.items():
        try:
            found = tuple(inspect.signature(member(dotted)).parameters)
        except (TypeError, ValueError):  # missing, or not a function
            found = None
        if found != params:
            gaps.append(f"{dotted}({', '.join(params)})")
    for dotted, names in _STEADY_USES.items():
        code = getattr(member(dotted), "__code__", None)
        for name in names:
            if code is None or name not in code.co_names:
                gaps.append(f"{dotted} using {name}")
    return gaps


@functools.cache
def _steady_pool() -> type[ConnectionPool[Any]]:
    """`psycopg_pool.ConnectionPool` whose attempts to connect again, once one failed,
    come every `_RECONNECT_EVERY_S` (jittered by a tenth) until `reconnect_timeout`,
    rather than 1, 2, 4, 8 s apart: a server away 3.5 s was found back 7 s after it
    went, the decision log dropping records all the while (each call waits
    `timeout_s` for a connection, then the writer backs off). psycopg_pool has no
    public setting for it: it overrides a private method and subclasses a private
    class; where the installed psycopg_pool lacks them as `_STEADY_NEEDS` says
    (`_steady_gaps`), the stock pool, and a line saying so."""
    from psycopg_pool import ConnectionPool

    gaps = _steady_gaps()
    if gaps:
        logging.getLogger(__name__).info(
            "telemetry: psycopg_pool %s lacks what the decision log's steady reconnects "
            "need (%s): its pool reconnects as psycopg_pool does (1, 2, 4 s apart)",
            _pool_version(),
            "; ".join(gaps),
        )
        return ConnectionPool
    from psycopg_pool.base import AttemptWithBackoff

    class SteadyAttempt(AttemptWithBackoff):
        INITIAL_DELAY = _RECONNECT_EVERY_S
        DELAY_BACKOFF = 1.0

    class SteadyPool(ConnectionPool[Any]):
        def reconnect_attempt(self) -> AttemptWithBackoff:
            """A new chain of attempts to connect, as the pool starts one."""
            return SteadyAttempt(timeout=self.reconnect_timeout)

        def _add_connection(
            self, attempt: AttemptWithBackoff | None, growing: bool = False
        ) -> None:
            super()._add_connection(attempt or self.reconnect_attempt(), growing)

    return SteadyPool


def _pool_version() -> str:
    try:
        from importlib.metadata import version

        return version("psycopg-pool")
    except Exception:  # pragma: no cover - not installed as a distribution
        return "(version unknown)"


class _ConnectionLost(TelemetryError):
    """A call's connection was lost (reset, closed by the server) before its answer
    came, not cut for want of one: what the server made of it is not known."""


# A server's refusal of a connection that trying again cannot mend (libpq's message,
# the server's in English): a missing database or role, a refused password, no
# pg_hba.conf entry, no CONNECT privilege, a password the server wants and the URL lacks.
_REFUSAL = re.compile(
    r'(FATAL:\s+(database "[^"]*" does not exist|role "[^"]*" does not exist'
    r'|role "[^"]*" is not permitted to log in|[\w ]*authentication failed for user'
    r"|no pg_hba\.conf entry|permission denied for database"
    r"|User does not have CONNECT privilege)|fe_sendauth: no password supplied)[^\n]*"
)
_OWN_POOL = re.compile(rf"'({_POOL_PREFIX}-\d+)'")


class _OwnPoolFailures(logging.Filter):
    """psycopg_pool logs every failed connection attempt of a pool (WARNING, unformatted,
    on the host's stderr when it has no logging set up): for these stores' pools, the
    store says it itself, masked and at most every 10 s. Other pools' records pass."""

    def __init__(self) -> None:
        super().__init__()
        self._quiet = threading.local()  # this thread is giving back a connection it closed
        self.last_error: dict[str, tuple[float, str]] = {}
        """Per pool name, when and what its newest failed connection attempt logged
        (psycopg's own message: a missing database, a refused password, a refused
        connection), so that a timeout can say why rather than guess the server is
        down."""
        self.connected: dict[str, float] = {}
        """Per pool name, when it last made a connection (its `configure` callback): a
        refusal before it was mended since."""

    @contextmanager
    def discarding(self) -> Iterator[None]:
        """psycopg_pool's WARNING for a closed connection given back is left out: the
        store closed it, having found it broken (the pool's own check says that at INFO)."""
        self._quiet.on = True
        try:
            yield
        finally:
            self._quiet.on = False

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(self._quiet, "on", False) and str(record.msg).startswith("discarding closed"):
            return False
        message = record.getMessage()
        own = _OWN_POOL.search(message)
        if own is None:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        if record.levelno >= logging.WARNING and any(isinstance(a, Exception) for a in args):
            self.last_error[own[1]] = (time.monotonic(), message)  # a failed attempt
        return False

    def reason(self, pool: str, within_s: float) -> str | None:
        """The last failure of `pool`, if it came in the last `within_s` seconds."""
        last = self.last_error.get(pool)
        return last[1] if last is not None and time.monotonic() - last[0] <= within_s else None

    def made(self, pool: str, conn: object) -> None:
        """`pool` made connection `conn` (the pool's `configure` callback)."""
        self.connected[pool] = time.monotonic()

    def healthy(self, pool: str) -> bool:
        """`pool` has made a connection and no attempt of its failed since."""
        made = self.connected.get(pool)
        last = self.last_error.get(pool)
        return made is not None and (last is None or last[0] < made)

    def refusal(self, pool: str, within_s: float) -> str | None:
        """That failure's reason, if it is a refusal no new attempt can mend and the pool
        has made no connection since (the refusal mended: a call waits for one)."""
        last = self.last_error.get(pool)
        if last is not None and self.connected.get(pool, -math.inf) > last[0]:
            return None
        found = _REFUSAL.search(self.reason(pool, within_s) or "")
        return found[0] if found else None


_POOL_FILTER = _OwnPoolFailures()


def _quiet_pool_log() -> None:
    pool_log = logging.getLogger("psycopg.pool")
    if _POOL_FILTER not in pool_log.filters:
        pool_log.addFilter(_POOL_FILTER)


_PRUNE = (
    "WITH chosen AS (SELECT id FROM decisions WHERE ts < %%s ORDER BY ts, id LIMIT %(most)d "
    "FOR UPDATE SKIP LOCKED), "
    "s AS (DELETE FROM shadow WHERE decision_id IN (SELECT id FROM chosen) RETURNING 1), "
    "f AS (DELETE FROM feedback WHERE decision_id IN (SELECT id FROM chosen) RETURNING 1), "
    "d AS (DELETE FROM decisions WHERE id IN (SELECT id FROM chosen) RETURNING 1) "
    "SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM f), (SELECT count(*) FROM s)"
)


class PostgresStore(SqlReads):
    """A decision log in the PostgreSQL database at `url` (libpq URL syntax; a
    ``?options=-csearch_path%3Dname`` parameter selects a schema).

    `timeout_s` bounds the wait for a pooled connection, so a down server fails a call
    in that time with a `TelemetryError` instead of hanging the writer thread;
    `answer_timeout_s` (None: no bound) bounds the wait for a server that took the call
    and stopped answering; the pool's check of a connection it lends is bounded by
    `timeout_s` whatever it is.
    """

    backend: Backend = "postgres"
    _marker = "%s"
    _bucket = "floor((ts - %s) / %s)::bigint"
    _attempts = "jsonb_array_length(attempts)"
    _first_attempt = "(attempts ->> 0)"
    _each_tag = "jsonb_array_elements_text(decisions.tags) AS j(value)"

    def __init__(
        self,
        url: str,
        pool_size: int = 4,
        *,
        timeout_s: float = 5.0,
        connect_timeout_s: int = 5,
        answer_timeout_s: float | None = None,
        insert_method: InsertMethod = "copy",
    ) -> None:
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict

            pool_class = _steady_pool()  # imports psycopg_pool
        except ImportError as exc:
            raise TelemetryError(INSTALL_HINT) from exc
        self.url = mask_url(url)
        self.insert_method: InsertMethod = insert_method
        self._psycopg_error: type[Exception] = psycopg.Error
        try:
            password = conninfo_to_dict(url).get("password")
        except (psycopg.Error, UnicodeError):  # the latter: a %-escape that is no UTF-8
            raise TelemetryError(f"invalid PostgreSQL URL {self.url}") from None
        self._secret = str(password) if password else None
        self._timeout_s = timeout_s
        self._answer_s = answer_timeout_s
        self._pool_name = f"{_POOL_PREFIX}-{next(_POOL_NUMBERS)}"
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = pool_class(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            open=False,
            name=self._pool_name,
            timeout=timeout_s,
            # A new attempt chain starts on the next request once one gives up, so
            # recovery after an outage takes seconds, not the default 5-minute backoff.
            reconnect_timeout=10.0,
            # no `check=`: `_lend` checks what it is lent, and walks through broken
            # connections 50 ms apart (psycopg_pool's own check waits 0, 1, 2, 4 s)
            kwargs={"connect_timeout": max(2, connect_timeout_s), "application_name": "llmroute"},
            # a refusal before the pool's newest connection fails no call (`_getconn`)
            configure=functools.partial(_POOL_FILTER.made, self._pool_name),
        )
        self._open_lock = threading.Lock()
        self._opened = False
        self._closed = False
        self._down_until = 0.0  # monotonic: no connection came within a timeout until now
        _quiet_pool_log()

    # -- connection ----------------------------------------------------------------

    def _clean(self, message: str) -> str:
        """An error message without the URL's password, should a driver echo it."""
        if self._secret:
            message = message.replace(self._secret, "***")
        return message.strip().splitlines()[0] if message.strip() else message

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        """The check of a pooled connection before a call uses it (an empty query), cut
        after `timeout_s`: on a server that stopped answering it waited forever."""
        from psycopg_pool import ConnectionPool

        with Cutoff(self._timeout_s).watching(conn):
            ConnectionPool.check_connection(conn)

    @contextmanager
    def _connection(
        self, what: str, *, long: bool = False
    ) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A pooled connection in a transaction (committed on success); driver errors,
        pool timeouts and a call with no answer within `answer_timeout_s` (at least
        `_LONG_ANSWER_S` when `long`) become `TelemetryError` naming the masked URL."""
        from psycopg_pool import PoolTimeout

        with self._open_lock:
            if self._closed:
                raise TelemetryError(f"{self.url}: the store is closed")
            if not self._opened:
                self._pool.open(wait=False)
                self._opened = True
        # it just went a whole timeout without a connection: a call takes one the pool
        # has made again since (the server is back), else says so at once, rather than
        # have every reader (a dashboard polling, feedback) wait as long again
        down = time.monotonic() < self._down_until
        limit = self._answer_s
        if limit is not None and long:
            limit = max(limit, _LONG_ANSWER_S)
        cutoff = Cutoff(math.inf if limit is None else limit)
        lent: list[psycopg.Connection[tuple[Any, ...]]] = []
        try:
            with (
                self._lend(what, _PEEK_S if down else self._timeout_s) as conn,
                cutoff.watching(conn),
            ):
                lent.append(conn)
                if down:  # the server is back: calls wait their timeout again
                    self._down_until = 0.0
                yield conn
                # the commit too (the pool's own, after this block, finds none): a
                # stalled disk shows at COMMIT, waiting on its flush
                conn.commit()
        except PoolTimeout:
            if down:
                raise TelemetryError(
                    f"cannot {what}: no connection to PostgreSQL at {self.url} (none within "
                    f"{self._timeout_s:g} s moments ago; tried again in {_DOWN_S:g} s)"
                ) from None
            self._down_until = time.monotonic() + _DOWN_S
            last = _POOL_FILTER.reason(self._pool_name, self._timeout_s + 1.0)
            why = f": {self._clean(last)}" if last else " (is the server up?)"
            raise TelemetryError(
                f"cannot {what}: no connection to PostgreSQL at {self.url} within "
                f"{self._timeout_s:g} s{why}"
            ) from None
        except self._psycopg_error as exc:
            if cutoff.fired:
                raise TelemetryError(
                    f"cannot {what}: PostgreSQL at {self.url} did not answer within "
                    f"{cutoff.after_s:g} s (the connection was closed)"
                ) from None
            message = f"cannot {what} in PostgreSQL at {self.url}: {self._clean(str(exc))}"
            if lent and lent[0].broken:
                raise _ConnectionLost(message) from None
            raise TelemetryError(message) from None

    @contextmanager
    def _lend(self, what: str, timeout_s: float) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """`ConnectionPool.connection(timeout_s)`, the pool's check of a connection made
        here through its public API: one that fails it is closed and given back (the
        pool makes another) and the next is checked `_NEXT_CHECK_S` later, not 0, 1, 2,
        4 s later as psycopg_pool's own check loop waits (a call finding the four
        connections of a restarted server broken ran out of its timeout on a server that
        was back). A wait `_getconn` finds refused for good fails at once."""
        from psycopg_pool import PoolTimeout

        deadline = time.monotonic() + timeout_s
        while True:
            conn = self._getconn(what, deadline)
            try:
                self._check(conn)
            except Exception:
                conn.close()
                with _POOL_FILTER.discarding():
                    self._pool.putconn(conn)
                if time.monotonic() + _NEXT_CHECK_S >= deadline:
                    raise PoolTimeout() from None
                time.sleep(_NEXT_CHECK_S)
                continue
            except BaseException:
                self._pool.putconn(conn)  # cancelled: given back, not tried again
                raise
            break
        try:
            with conn:
                yield conn
        finally:
            self._pool.putconn(conn)

    def _getconn(self, what: str, deadline: float) -> psycopg.Connection[tuple[Any, ...]]:
        """A connection from the pool by `deadline` (else `PoolTimeout`), unchecked; a
        wait that finds the pool's newest attempt refused for good (`_REFUSAL`: a missing
        database or role, a refused password) fails at once with the server's reason
        rather than wait out the deadline: no attempt before it could succeed. Only a pool
        that has no connection made since its last failed attempt (or none yet) is
        looked at every `_REFUSED_POLL_S`: a call waiting on a healthy pool's lent
        connections keeps its place in psycopg_pool's line (first come, first served),
        where leaving it and joining its end each time made the slowest waits under
        contention three times as long."""
        from psycopg_pool import PoolTimeout

        while True:
            left = deadline - time.monotonic()
            wait = left if _POOL_FILTER.healthy(self._pool_name) else min(left, _REFUSED_POLL_S)
            try:
                return self._pool.getconn(timeout=max(0.001, wait))
            except PoolTimeout:
                refused = _POOL_FILTER.refusal(self._pool_name, self._timeout_s + 1.0)
                if refused is not None:
                    raise TelemetryError(
                        f"cannot {what}: PostgreSQL at {self.url} refused the connection: "
                        f"{self._clean(refused)}"
                    ) from None
                if left <= wait:
                    raise

    # -- schema --------------------------------------------------------------------

    def migrate(self) -> int:
        with self._connection("migrate", long=True) as conn, conn.transaction():
            conn.execute(_LOCK)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
                " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
            for migration in pending(self.backend, applied):
                for statement in migration.statements():
                    conn.execute(statement.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied.append(migration.version)
            return max(applied, default=0)

    def schema_version(self) -> int:
        with self._connection("read the schema version") as conn:
            exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
            if exists is None or exists[0] is None:
                return 0
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            found = row.fetchone()
            return int(found[0]) if found else 0

    # -- writes --------------------------------------------------------------------

    def forget(
        self, *, end_users: Sequence[str] = (), client: str | None = None
    ) -> tuple[int, int, int]:
        statements, params = forget_sql(end_users, client, "%s")
        with self._connection("forget", long=True) as conn:  # one transaction
            counts = [conn.execute(sql.encode(), params).rowcount for sql in statements]
        shadow, feedback, decisions = counts
        return decisions, feedback, shadow

    def prune(self, before: float, *, most: int) -> tuple[int, int, int]:
        # one statement: the batch is chosen once, and rows another pruner holds are
        # skipped, so processes pruning one log at once take batches apart
        with self._connection("prune") as conn:
            row = conn.execute(_PRUNE % {"most": int(most)}, (before,)).fetchone()
        decisions, feedback, shadow = row if row is not None else (0, 0, 0)
        return int(decisions), int(feedback), int(shadow)

    def write_decisions(self, records: Sequence[DecisionRecord]) -> int:
        rows = [_storable(row, _DECISION_JSON) for row in decision_rows(records)]
        if rows:
            self._insert_decisions(rows)
        return len(records) - len(rows)

    def _insert_decisions(self, rows: list[tuple[Any, ...]]) -> None:
        try:
            self._insert_once(rows)
        except _ConnectionLost:
            # lost before its COMMIT's answer came: written or not, it is written again
            # on another connection, the rows already there skipped (ON CONFLICT (id) DO
            # NOTHING); it was dropped, and counted dropped though the server had it
            self._insert_once(rows)

    def _insert_once(self, rows: list[tuple[Any, ...]]) -> None:
        with self._connection("write decisions") as conn, conn.cursor() as cur:
            if self.insert_method == "executemany":
                cur.executemany(_INSERT_DECISION, rows)
                return
            cur.execute(_CREATE_STAGE)
            with cur.copy(_COPY_STAGE) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(_FROM_STAGE)

    def write_feedback(self, feedback: FeedbackRecord, *, by: str | None = None) -> bool:
        params = (
            feedback.decision_id,
            feedback.ts,
            feedback.score,
            feedback.thumbs,
            feedback.comment,
            feedback.decision_id,
            by,
            by,
        )
        params = _storable(params, frozenset())
        with self._connection("write feedback") as conn:
            return conn.execute(_INSERT_FEEDBACK, params).rowcount == 1

    def write_shadow(self, record: ShadowRecord) -> None:
        with self._connection("write a shadow record") as conn:
            conn.execute(_INSERT_SHADOW, _storable(shadow_row(record), _SHADOW_JSON))

    # -- reads ---------------------------------------------------------------------

    def _select(self, sql: str, params: tuple[Any, ...], what: str) -> list[tuple[Any, ...]]:
        with self._connection(what) as conn:
            return conn.execute(sql.encode(), params).fetchall()

    def close(self, timeout_s: float | None = None) -> None:
        """Close the pool. Its workers may be trying to connect to a server that does
        not answer (each attempt up to `connect_timeout_s`); the pool waits for each in
        turn, so `timeout_s` is shared among them: a gateway's shutdown closes the log
        within its deadline, the attempts left to end in their daemon threads."""
        with self._open_lock:
            if self._closed:
                return
            self._closed = True
            opened = self._opened
        if opened:
            bound = _CLOSE_S if timeout_s is None else max(0.0, timeout_s)
            self._pool.close(timeout=bound / max(1, self._pool.num_workers))
        _POOL_FILTER.last_error.pop(self._pool_name, None)
        _POOL_FILTER.connected.pop(self._pool_name, None)

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"
