"""`TelemetryWriter`: decision records leave the request path through a bounded queue
and reach the store in batches, from one daemon thread.

`offer` never blocks: it appends to a deque and returns (about a microsecond). When the
queue is full the record is dropped and counted; the gateway never waits for its log.

The thread wakes when a batch is ready or every `flush_seconds`, and writes the queue in
batches of up to `batch_size`, one transaction each. It also owns the store's start-up:
`start` returns at once and the thread runs ``store.migrate()`` first, so a database that
is down when the gateway starts does not stop it. Any store failure (migration or
write) drops the batch in hand, counts it as ``store_error`` and backs off (0.5 s,
doubling to 10 s): records arriving meanwhile are dropped without calling the store, so
a dead database costs neither memory nor a blocked `flush`. The next attempt migrates
again before writing (cheap when up to date; it also recreates a lost schema), and the
first success resets the backoff: the log recovers by itself. A migration failing with
no batch in hand (a database refusing every connection) is logged at most every 10 s,
with how many tries failed since the last line.

With a retention period (``telemetry.retention_days``) the thread also erases the
decisions older than it, once migrated and then hourly: at most `PRUNE_BATCH` a
transaction, one transaction a wake-up, so that writing never waits long behind it. A
failure is logged and tried again a minute later; it drops nothing.

A record whose row cannot be built (`llmroute.telemetry.record.decision_rows`) is left
out of its batch, the rest written, and counted as ``row_error``.

Drops are reported three ways: the `dropped` counters, ``on_drop(n, reason)`` (reason
``queue_full``, ``store_error``, ``closed`` or ``row_error``) and a WARNING at most
every 10 s per reason with the running count (``row_error``'s is the one
`decision_rows` logs, naming a decision). Drops that came after a reason's last WARNING
are said by `close`, so that none is lost unsaid when the process exits within those
10 s (a gateway stopping while its database is down). Log lines carry the store's
masked URL only.

``on_depth(n)`` is told how many records wait in the queue each time the thread wakes,
after each batch it hands the store, and on each record offered while a batch or more
waits (the ``llmroute_telemetry_queue_depth`` gauge): a store falling behind, or a write
hanging, shows before the queue is full and records are dropped.

The writer does not own the store: closing the writer flushes and stops the thread;
the caller closes the store.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from llmroute.log_every import LogEvery
from llmroute.registry.schema import TelemetrySettings
from llmroute.telemetry.record import DecisionRecord
from llmroute.telemetry.store import open_store
from llmroute.telemetry.store.base import Store
from llmroute.telemetry.store.url import ANSWER_TIMEOUT_S

__all__ = ["PRUNE_BATCH", "DropReason", "TelemetryWriter", "start_writer"]

log = logging.getLogger("llmroute.telemetry")

DropReason = str  # "queue_full" | "store_error" | "closed" | "row_error"
QUEUE_FULL: Final = "queue_full"
STORE_ERROR: Final = "store_error"
CLOSED: Final = "closed"
ROW_ERROR: Final = "row_error"  # its row could not be built: the store left it out

_LOG_EVERY_S = 10.0
_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 10.0
PRUNE_BATCH: Final = 5_000  # decisions erased in one transaction
_PRUNE_EVERY_S = 3600.0
_PRUNE_RETRY_S = 60.0


class _Marker:
    """Put in the queue by `flush`: set once everything queued before it is handled."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class TelemetryWriter:
    """Batches `DecisionRecord`s into `store` from a daemon thread (see the module)."""

    def __init__(
        self,
        store: Store,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        flush_seconds: float = 0.2,
        on_drop: Callable[[int, str], None] | None = None,
        retention_s: float | None = None,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        if queue_size < 1 or batch_size < 1 or flush_seconds <= 0:
            raise ValueError("queue_size and batch_size must be >= 1, flush_seconds > 0")
        if retention_s is not None and not retention_s > 0:
            raise ValueError("retention_s must be > 0")
        self.store = store
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self._on_drop = on_drop
        self._on_depth = on_depth
        self._queue: deque[DecisionRecord | _Marker] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()  # start/close and drop counting, never offer
        self._closing = False
        self._written = 0
        self._dropped = {QUEUE_FULL: 0, STORE_ERROR: 0, CLOSED: 0, ROW_ERROR: 0}
        self._last_log: dict[str, float] = {}
        self._unsaid: dict[str, int] = {}  # per reason: drops since its last WARNING
        self._unprepared = LogEvery(_LOG_EVERY_S)  # failed migrations without a batch
        self._ready = False  # migrated since the last store error
        self._retry_at = 0.0  # monotonic time before which the store is not called
        self._backoff = _BACKOFF_FIRST_S
        self.retention_s = retention_s
        self._prune_at = 0.0  # monotonic time of the next pruning (0: once migrated)
        self._in_hand = 0  # records taken from the queue that the store has not taken yet
        self._pruned = [0, 0, 0]  # decisions, feedback, shadow erased this round
        # a close waits on this for the thread's end, until its timeout or `_hurry_by`
        # (monotonic), which `hurry` may bring nearer while it waits
        self._ended = threading.Condition()
        self._ran_out = False  # the thread has ended
        self._hurry_by = math.inf

    # -- request path ----------------------------------------------------------------

    def offer(self, record: DecisionRecord) -> bool:
        """Queue `record` for writing; False (and counted as dropped) when the queue is
        full or the writer is closed. Never blocks, never raises."""
        queue = self._queue
        if len(queue) >= self.queue_size or self._closing:
            self._drop(1, CLOSED if self._closing else QUEUE_FULL)
            return False
        queue.append(record)
        if len(queue) >= self.batch_size:
            self._wake.set()
            # said here too: a writer held up in a slow store call says nothing meanwhile
            self._report_depth()
        return True

    # -- counters --------------------------------------------------------------------

    @property
    def written(self) -> int:
        """Records the store has accepted (duplicates ignored by the store included)."""
        return self._written

    @property
    def dropped(self) -> int:
        """Records lost for any reason (`dropped_by_reason` splits them)."""
        return sum(self._dropped.values())

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        return dict(self._dropped)

    @property
    def pending(self) -> int:
        """Records queued and not yet handled (approximate)."""
        return len(self._queue)

    def _drop(self, n: int, reason: str, detail: str = "") -> None:
        with self._state_lock:
            self._dropped[reason] = total = self._dropped.get(reason, 0) + n
            now = time.monotonic()
            # a row_error `decision_rows` has said, naming the decision
            due = reason != ROW_ERROR and (
                now - self._last_log.get(reason, -_LOG_EVERY_S) >= _LOG_EVERY_S
            )
            if due:
                self._last_log[reason] = now
                self._unsaid[reason] = 0
            elif reason != ROW_ERROR:
                self._unsaid[reason] = self._unsaid.get(reason, 0) + n
        if due:
            log.warning(
                "telemetry %s: dropped %d decision record(s) (%s; %d %s so far)%s",
                self.store.url,
                n,
                reason,
                total,
                reason,
                f": {detail}" if detail else "",
            )
        if self._on_drop is not None:
            try:
                self._on_drop(n, reason)
            except Exception:  # a metrics callback must not break the caller
                log.exception("telemetry: the on_drop callback failed")

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> TelemetryWriter:
        """Start the thread (once); it migrates the store before the first write."""
        with self._state_lock:
            if self._thread is None and not self._closing:
                self._thread = threading.Thread(
                    target=self._run_and_end, name="llmroute-telemetry-writer", daemon=True
                )
                self._thread.start()
        return self

    @property
    def migrated(self) -> bool:
        """Whether the store's tables are known to exist (migrated since the last store
        error): until then a read may find none."""
        return self._ready

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record offered before this call is written or dropped;
        False when `timeout` passed first (or the thread is not running)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return not self._queue
        marker = _Marker()
        self._queue.append(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush, then stop the thread (idempotent). Records offered afterwards are
        dropped as ``closed``. True when everything was handled in time; when not (a
        store slow or hung: a locked table, a PostgreSQL that stopped answering), a
        WARNING says how many records were not written yet: the daemon thread goes on
        with them, but a process that exits now loses them."""
        with self._state_lock:
            already = self._closing
            self._closing = True
            thread = self._thread
        if thread is None:
            left = sum(1 for item in self._queue if isinstance(item, DecisionRecord))
            self._queue.clear()
            if left and not already:
                self._drop(left, CLOSED, "the writer was closed before it started")
            if not already:
                self._say_unsaid()
            return left == 0
        self._wake.set()
        began = time.monotonic()
        close_by = math.inf if timeout is None else began + timeout
        with self._ended:
            while not self._ran_out:
                left_s = min(close_by, self._hurry_by) - time.monotonic()
                if left_s <= 0:
                    break
                self._ended.wait(None if math.isinf(left_s) else left_s)
            ended = self._ran_out
        if not already:
            self._say_unsaid()
        if ended:
            return True
        left = self._in_hand + sum(
            1 for item in list(self._queue) if isinstance(item, DecisionRecord)
        )
        if left and not already:
            log.warning(
                "telemetry %s: %d decision record(s) not written within %.1f s of closing "
                "the decision log (the store is slow or not answering): lost if the "
                "process exits now",
                self.store.url,
                left,
                time.monotonic() - began,
            )
        return False

    def _say_unsaid(self) -> None:
        """One WARNING per reason for the drops its last WARNING did not count: the
        process may exit before the next one would have been due."""
        with self._state_lock:
            unsaid = {reason: n for reason, n in self._unsaid.items() if n}
            self._unsaid.clear()
            totals = dict(self._dropped)
        for reason, n in unsaid.items():
            log.warning(
                "telemetry %s: dropped %d more decision record(s) (%s) since the last "
                "warning; %d %s in all",
                self.store.url,
                n,
                reason,
                totals[reason],
                reason,
            )

    def hurry(self, within_s: float) -> None:
        """Make a close under way, or to come, stop waiting `within_s` from now at the
        latest (its own timeout, when that ends sooner): as when that runs out, it says
        what it has not written."""
        with self._ended:
            self._hurry_by = min(self._hurry_by, time.monotonic() + within_s)
            self._ended.notify_all()

    def __enter__(self) -> TelemetryWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writer thread ---------------------------------------------------------------

    def _run_and_end(self) -> None:
        try:
            self._run()
        finally:
            with self._ended:
                self._ran_out = True
                self._ended.notify_all()

    def _run(self) -> None:
        queue = self._queue
        while True:
            if len(queue) < self.batch_size and not self._closing:
                self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self._report_depth()
            closing = self._closing
            if not self._ready and time.monotonic() >= self._retry_at:
                self._call_store(None)  # migrate at start-up, and retry it while idle
            self._drain()
            if closing and not queue:
                self._report_depth()
                return
            if self.retention_s is not None and self._ready:
                self._prune(self.retention_s)

    def _drain(self) -> None:
        """Handle everything queued now, in batches."""
        queue = self._queue
        batch: list[DecisionRecord] = []
        while True:
            try:
                item = queue.popleft()
            except IndexError:
                break
            if isinstance(item, _Marker):
                self._handle(batch)
                batch = []
                item.done.set()
                continue
            batch.append(item)
            if len(batch) >= self.batch_size:
                self._handle(batch)
                batch = []
        self._handle(batch)

    def _handle(self, batch: list[DecisionRecord]) -> None:
        if not batch:
            return
        if time.monotonic() < self._retry_at:
            self._drop(len(batch), STORE_ERROR, "the store is backing off after an error")
            return
        self._in_hand = len(batch)
        try:
            left_out = self._call_store(batch)
            if left_out is not None:
                self._written += len(batch) - left_out
            if left_out:
                self._drop(left_out, ROW_ERROR)
        finally:
            self._in_hand = 0
            self._report_depth()

    def _report_depth(self) -> None:
        if self._on_depth is not None:
            try:
                self._on_depth(len(self._queue))
            except Exception:  # a metrics callback must not break the writer
                log.exception("telemetry: the on_depth callback failed")

    def _prune(self, retention_s: float) -> None:
        """Erase one batch of decisions older than the retention period, when due."""
        now = time.monotonic()
        if now < self._prune_at:
            return
        try:
            counts = self.store.prune(time.time() - retention_s, most=PRUNE_BATCH)
        except Exception as exc:
            self._prune_at = now + _PRUNE_RETRY_S
            log.warning(
                "telemetry %s: erasing decisions past the retention period failed: %s",
                self.store.url,
                _describe(exc),
            )
            return
        self._pruned = [a + b for a, b in zip(self._pruned, counts, strict=True)]
        if counts[0] >= PRUNE_BATCH:
            return  # more to erase: the next wake-up goes on
        self._prune_at = now + _PRUNE_EVERY_S
        decisions, feedback, shadow = self._pruned
        self._pruned = [0, 0, 0]
        if decisions or feedback or shadow:
            log.info(
                "telemetry %s: erased %d decision(s) older than %g day(s), %d feedback and "
                "%d shadow row(s)",
                self.store.url,
                decisions,
                retention_s / 86400,
                feedback,
                shadow,
            )

    def _call_store(self, batch: list[DecisionRecord] | None) -> int | None:
        """Migrate if needed, then write `batch` (None: only migrate); the number of its
        records the store left out, None when it failed. A failure drops the batch and
        starts or extends the backoff."""
        left_out = 0
        try:
            if not self._ready:
                self.store.migrate()
                self._ready = True
            if batch:
                left_out = self.store.write_decisions(batch)
        except Exception as exc:
            self._ready = False
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX_S)
            detail = _describe(exc)
            if batch:
                self._drop(len(batch), STORE_ERROR, detail)
            elif (held := self._unprepared.due("migrate")) is not None:
                # a refusal no retry mends (a missing database) fails at once: said at
                # most every 10 s, not at each try of the backoff
                log.warning(
                    "telemetry %s: cannot prepare the decision log: %s%s",
                    self.store.url,
                    detail,
                    LogEvery.since(held),
                )
            return None
        if self._backoff != _BACKOFF_FIRST_S:
            log.warning("telemetry: %s is back; writing decisions again", self.store.url)
        self._backoff = _BACKOFF_FIRST_S
        return left_out


def _describe(exc: BaseException) -> str:
    """One line about a store error. Our stores raise `TelemetryError` with the masked
    URL; anything else is shown by type only, as its text might hold a secret."""
    from llmroute.errors import TelemetryError

    if isinstance(exc, TelemetryError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return type(exc).__name__


def start_writer(
    url: str,
    settings: TelemetrySettings,
    on_drop: Callable[[int, str], None] | None = None,
    on_depth: Callable[[int], None] | None = None,
) -> tuple[Store, TelemetryWriter]:
    """The store at `url` (opened lazily: nothing connects yet) and its batching writer,
    started (its thread applies the migrations first). A URL no store can open raises
    `ConfigError`."""
    store = open_store(url, pool_size=settings.pool_size, answer_timeout_s=ANSWER_TIMEOUT_S)
    writer = TelemetryWriter(
        store,
        queue_size=settings.queue_size,
        batch_size=settings.batch_size,
        flush_seconds=settings.flush_seconds,
        on_drop=on_drop,
        on_depth=on_depth,
        retention_s=None if settings.retention_days is None else settings.retention_days * 86400,
    )
    writer.start()
    return store, writer
