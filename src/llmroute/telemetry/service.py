"""`Telemetry`: the process's decision log (store + batching writer), metrics and
recorder, opened once at gateway start-up and closed at shutdown.

The store is chosen by ``$LLMROUTE_TELEMETRY_URL`` or the registry's ``telemetry.url``
when the gateway starts; a registry reload that changes the ``telemetry`` section opens
a new one, current from the swap, and closes the old one once its last request is done
(`llmroute.server.reload`). A store that is down at start-up does not stop the gateway: the
writer keeps trying in its thread and counts what it drops meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import os
import time
from collections.abc import Mapping

import anyio.to_thread

from llmroute.errors import outline_of
from llmroute.registry.schema import TelemetrySettings
from llmroute.telemetry.metrics import GatewayMetrics
from llmroute.telemetry.record import FeedbackRecord, PromptMode, ResponseMode, ShadowRecord
from llmroute.telemetry.recorder import Recorder, redact_text
from llmroute.telemetry.store import mask_url, resolve_telemetry_url
from llmroute.telemetry.store.base import Store
from llmroute.telemetry.writer import TelemetryWriter, start_writer

__all__ = ["Telemetry"]

log = logging.getLogger("llmroute.telemetry")


_ELSEWHERE_S = 1.0  # beyond two of another writer's flush periods: its batch's write
_ELSEWHERE_MAX_S = 3.0  # whatever the flush period: past it a client would have given up
_POLL_S = 0.05  # the first read's wait, doubled after each (0.05, 0.1, 0.2, 0.4, 0.4 ...)
_WAITING = 16  # feedbacks waiting for another process at once; more get their 404 now


def as_kept(
    record: ShadowRecord, mode: ResponseMode, most: int, prompts: PromptMode = "hash"
) -> ShadowRecord:
    """A shadow's answers as `telemetry.responses` keeps answers: none with ``off`` (the
    judge compared them in memory; its verdict and score are kept), with PII replaced by
    its type with ``redacted``, cut to `most` characters; so are the judge's extracts of
    them (the exact judge's final answers). The reference call's attempts, and the
    failure of a reference or judge call (`judge_error`), are kept as the decision row's
    attempts are (`DecisionRecord.stored_attempts`): an upstream's words only with
    `prompts` ``full``; `judge_error`'s only with `mode` ``full`` too, since a judge
    call's upstream was sent the answers, which its words may quote."""

    def keep(text: str | None) -> str | None:
        if text is None or mode == "off":
            return None
        cut = text[:most]
        return redact_text(cut) if mode == "redacted" else cut

    extra = dict(record.extra)
    for key in _ANSWER_EXTRAS:
        value = extra.pop(key, None)
        kept = keep(value) if isinstance(value, str) else None
        if kept is not None:
            extra[key] = kept
    tried = extra.get("reference_attempts")
    if prompts != "full" and isinstance(tried, list):
        extra["reference_attempts"] = [outline_of(a) if isinstance(a, str) else a for a in tried]
    failed = record.judge_error
    quoting = prompts == "full" and mode == "full"  # both texts are kept whole
    return dataclasses.replace(
        record,
        routed_answer=keep(record.routed_answer),
        reference_answer=keep(record.reference_answer),
        judge_error=failed if failed is None or quoting else outline_of(failed),
        extra=extra,
    )


_ANSWER_EXTRAS = ("routed_final", "reference_final")  # the exact judge's final answers


class Telemetry:
    """What a gateway process records with. `store` and `writer` are None when the
    decision log is off; `metrics` always exists."""

    def __init__(
        self,
        settings: TelemetrySettings,
        metrics: GatewayMetrics,
        store: Store | None = None,
        writer: TelemetryWriter | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.writer = writer
        self._waiting = asyncio.Semaphore(_WAITING)  # feedback waiting for another process
        self._hurry_by = math.inf  # monotonic: when a close under way, or to come, ends
        self.recorder = Recorder(
            writer,
            metrics,
            settings.prompts,
            responses=settings.responses,
            max_response_chars=settings.max_response_chars,
            max_prompt_chars=settings.max_prompt_chars,
            embeddings_text=settings.embeddings_text,
        )

    @classmethod
    def open(
        cls,
        settings: TelemetrySettings,
        metrics: GatewayMetrics,
        environ: Mapping[str, str] | None = None,
    ) -> Telemetry:
        """Open the store named by the environment or `settings` and start its writer
        (which applies migrations in its own thread)."""
        url = resolve_telemetry_url(settings, os.environ if environ is None else environ)
        if url is None:
            log.info("decision log off")
            return cls(settings, metrics)
        store, writer = start_writer(
            url, settings, on_drop=metrics.telemetry_dropped, on_depth=metrics.depth_reporter()
        )
        log.info("decision log: %s (prompts: %s)", mask_url(url), settings.prompts)
        return cls(settings, metrics, store, writer)

    @property
    def enabled(self) -> bool:
        return self.store is not None

    async def add_feedback(self, feedback: FeedbackRecord, *, by: str | None = None) -> bool:
        """Store feedback; False when the decision is unknown (or made for another client
        key than `by`, when given: see `Store.write_feedback`). A decision still in this
        process's writer queue is flushed first, so feedback right after a response
        works; one another process answered (another worker, another replica on the
        same log) is waited for while its writer may still hold it: it writes at least
        every `flush_seconds`."""
        store, writer = self.store, self.writer
        assert store is not None and writer is not None

        def add() -> bool:
            if not writer.migrated:
                writer.flush(2.0)  # a fresh log has no tables until the writer's first pass
            if store.has_decision(feedback.decision_id, by=by):
                return store.write_feedback(feedback, by=by)
            writer.flush(2.0)
            return store.write_feedback(feedback, by=by)

        if await anyio.to_thread.run_sync(add):
            return True
        if self._waiting.locked():  # enough feedback waits already: no pile-up of polls
            return False
        async with self._waiting:
            return await self._feedback_elsewhere(feedback, store, writer.flush_seconds, by)

    async def has_decision(self, decision_id: str, *, by: str | None = None) -> bool:
        """Whether the log holds the decision (made for the client key `by`, when given)."""
        store = self.store
        assert store is not None
        found = functools.partial(store.has_decision, decision_id, by=by)
        return bool(await anyio.to_thread.run_sync(found))

    async def _feedback_elsewhere(
        self, feedback: FeedbackRecord, store: Store, flush_seconds: float, by: str | None
    ) -> bool:
        """`feedback` written once its decision shows up, written by another process:
        polled with reads (no write transaction that would hold up that process's
        writer), backing off, for at most `_ELSEWHERE_MAX_S`."""
        deadline = time.monotonic() + min(2 * flush_seconds + _ELSEWHERE_S, _ELSEWHERE_MAX_S)
        pause = _POLL_S
        while time.monotonic() < deadline:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.4)
            found = functools.partial(store.has_decision, feedback.decision_id, by=by)
            if await anyio.to_thread.run_sync(found):
                write = functools.partial(store.write_feedback, feedback, by=by)
                return bool(await anyio.to_thread.run_sync(write))
        return False

    async def add_shadow(self, record: ShadowRecord) -> None:
        store, writer = self.store, self.writer
        if store is None or writer is None:
            return

        mode = self.settings.responses
        most = self.settings.max_response_chars
        prompts = self.settings.prompts

        def add() -> None:
            if not writer.migrated or not store.has_decision(record.decision_id):
                writer.flush(2.0)  # the shadow row refers to its decision
            store.write_shadow(as_kept(record, mode, most, prompts))

        await anyio.to_thread.run_sync(add)

    def hurry(self, within_s: float) -> None:
        """Make a close under way (`aclose`), or to come, stop waiting for the writer
        `within_s` from now at the latest (see `TelemetryWriter.hurry`)."""
        self._hurry_by = min(self._hurry_by, time.monotonic() + within_s)
        if self.writer is not None:
            self.writer.hurry(within_s)

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then close the store, both within `timeout_s` (or by
        when `hurry` says): the writer says what it could not write, and the store stops
        waiting on its connection attempts to a server that does not answer, which held a
        gateway's shutdown up to 5 s past its deadline."""
        writer, store = self.writer, self.store
        close_by = time.monotonic() + timeout_s
        if writer is not None:
            await anyio.to_thread.run_sync(writer.close, timeout_s)
        if store is not None:
            left_s = max(0.0, min(close_by, self._hurry_by) - time.monotonic())
            await anyio.to_thread.run_sync(store.close, left_s)
