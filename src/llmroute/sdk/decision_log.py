"""`SdkDecisionLog`: in-process calls are logged as the gateway logs its requests.

Same store (the registry's ``telemetry`` section, or ``$LLMROUTE_TELEMETRY_URL``, which
wins), same records, written by the same batching `TelemetryWriter` thread, so
``llmroute report``, ``drift``, ``refresh`` and feedback see SDK traffic too. The store
is opened on the first call (off the event loop), never at import or construction, and
flushed and closed with the router. A store that is slow or down never fails a call:
records are dropped and counted, as in the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from llmroute.decide import Router
from llmroute.decision import Decision
from llmroute.dispatch import Opened, Served
from llmroute.dispatch.spend import Spend, paid_by_model
from llmroute.dispatch.usage import Usage
from llmroute.errors import CallTimeout, LlmrouteError
from llmroute.registry.schema import TelemetrySettings
from llmroute.state import CachedAnswer
from llmroute.telemetry.answers import answer_text, cached_text
from llmroute.telemetry.record import CLIENT_CLOSED, CLIENT_DISCONNECTED, FeedbackRecord
from llmroute.telemetry.recorder import Observer, Recorder
from llmroute.telemetry.request_log import REQUESTS_LOGGER
from llmroute.telemetry.store import mask_url, resolve_telemetry_url
from llmroute.telemetry.store.base import Store
from llmroute.telemetry.store.url import LOG_OFF_HOW
from llmroute.telemetry.writer import TelemetryWriter, start_writer

__all__ = ["TIMEOUT", "CallClock", "SdkDecisionLog"]

GATEWAY_TIMEOUT = 504

log = logging.getLogger("llmroute.telemetry")
_requests_log = logging.getLogger(REQUESTS_LOGGER)
_LINE_ONLY = Recorder(None, None, "off")
"""With no log and no metrics, the recorder of a call while the ``llmroute.requests``
line is on: it still gets its line, as the gateway's requests do with the log off."""


class CallClock:
    """When a call started: its wall time (the record's ``ts``) and a monotonic start."""

    __slots__ = ("started_ns", "ts")

    def __init__(self) -> None:
        self.ts = time.time()
        self.started_ns = time.perf_counter_ns()

    def elapsed_ms(self) -> float:
        return (time.perf_counter_ns() - self.started_ns) / 1e6


class SdkDecisionLog:
    """The decision log of one SDK router (see the module docstring)."""

    def __init__(
        self,
        settings: TelemetrySettings,
        environ: Mapping[str, str] | None = None,
        metrics: Observer | None = None,
    ) -> None:
        self._settings = settings
        self._environ = environ
        self._metrics = metrics
        self._lock = threading.Lock()
        self._opened = False
        self._store: Store | None = None
        self._writer: TelemetryWriter | None = None
        self._recorder: Recorder | None = None
        self._not_opened: str | None = None  # why a log named could not be opened

    @property
    def writer(self) -> TelemetryWriter | None:
        return self._writer

    def recorder(self) -> Recorder | None:
        """The recorder, opening the store on first use (blocking); None when there is
        nothing to record for: no log, no metrics, and the request log line off."""
        if not self._opened:
            with self._lock:
                if not self._opened:
                    self._open()
                    self._opened = True
        return self._or_line_only(self._recorder)

    async def arecorder(self) -> Recorder | None:
        """`recorder` for the event loop: the first call opens the store in a thread."""
        if self._opened:
            return self._or_line_only(self._recorder)
        return await asyncio.to_thread(self.recorder)

    @staticmethod
    def _or_line_only(recorder: Recorder | None) -> Recorder | None:
        """`recorder`, or the line-only one when there is none and the line is on (a
        cached level check: a call with everything off builds no record)."""
        if recorder is None and _requests_log.isEnabledFor(logging.INFO):
            return _LINE_ONLY
        return recorder

    def _open(self) -> None:
        settings = self._settings
        environ = os.environ if self._environ is None else self._environ
        url = resolve_telemetry_url(settings, environ)
        # With metrics but no log, records are still made, for the metrics alone.
        metrics_only = Recorder(None, self._metrics, "off") if self._metrics else None
        if url is None:
            self._recorder = metrics_only
            return
        try:
            # the gateway's metrics (`metrics=`) hear the writer's drops and queue, as serve's
            dropped = getattr(self._metrics, "telemetry_dropped", None)
            reporter = getattr(self._metrics, "depth_reporter", None)
            store, writer = start_writer(
                url,
                settings,
                on_drop=dropped,
                on_depth=reporter() if callable(reporter) else None,
            )
        except Exception as exc:  # a bad URL must not fail the caller's request
            self._not_opened = _not_opened(url, exc)
            log.warning("SDK decision log off, it could not be opened: %s", self._not_opened)
            self._recorder = metrics_only
            return
        self._store, self._writer = store, writer
        self._recorder = Recorder(
            writer,
            self._metrics,
            settings.prompts,
            responses=settings.responses,
            max_response_chars=settings.max_response_chars,
            max_prompt_chars=settings.max_prompt_chars,
            embeddings_text=settings.embeddings_text,
        )
        log.info("SDK decision log: %s (prompts: %s)", mask_url(url), settings.prompts)

    @property
    def enabled(self) -> bool:
        """Whether decisions are stored (after the first `recorder` call opened the log)."""
        return self._store is not None

    def add_feedback(self, feedback: FeedbackRecord) -> bool:
        """Store feedback (blocking); False when the log holds no such decision. The
        writer is flushed first (it also prepares the schema of a store opened moments
        ago), so feedback right after an answer finds its decision. Raises
        `RuntimeError` when the decision log is off."""
        self.recorder()
        store, writer = self._store, self._writer
        if store is None or writer is None:
            if self._not_opened is not None:  # named, not off: what turns it on is done
                raise RuntimeError(
                    f"feedback needs the decision log, which could not be opened: "
                    f"{self._not_opened}"
                )
            raise RuntimeError(f"feedback needs the decision log, and it is off {LOG_OFF_HOW}")
        writer.flush(5.0)
        return store.write_feedback(feedback)

    def close(self) -> None:
        """Flush what is queued and close the store; a later call opens it again."""
        self.detach()()

    def detach(self) -> Callable[[], None]:
        """`close` in two steps: the log is let go of now (a later call opens it again,
        whoever finishes the close), and what is returned flushes and closes it
        (blocking), for a close that waits in a thread."""
        with self._lock:
            writer, store = self._writer, self._store
            self._writer = self._store = self._recorder = None
            self._opened = False

        def finish() -> None:
            if writer is not None:
                writer.close(10.0)
            if store is not None:
                store.close()

        return finish


def _not_opened(url: str, exc: Exception) -> str:
    """Why the log at `url` could not be opened, as the gateway says a store's error:
    ours name its URL masked (said once), another's text may hold a secret (its type)."""
    masked = mask_url(url)
    if not isinstance(exc, LlmrouteError):
        return f"{masked} ({type(exc).__name__})"
    why = next(iter(str(exc).splitlines()), "")
    return why if masked in why else f"{masked} ({why})"


def record_success(
    recorder: Recorder | None,
    router: Router,
    decision: Decision,
    body: Mapping[str, Any],
    clock: CallClock,
    answer: Served | Opened,
    *,
    error: str | None = None,
    ttft_ms: float | None = None,
    text: str | None = None,
    spend: Spend | None = None,
) -> None:
    """Log a call that was answered: a completion, or a stream once it ended (`error`
    saying how; `text` what it streamed, when collected); `spend`, what the call paid
    for as it was sent, splits its usage by model for the metrics (`paid_by_model`)."""
    if recorder is not None:
        if isinstance(answer, Served) and recorder.wants_answers:
            text = answer_text(answer.data)
        recorder.finished(
            router,
            decision,
            body,
            ts=clock.ts,
            started_ns=clock.started_ns,
            status=200,
            served_model=answer.model,
            deployment=answer.deployment,
            error=error,
            usage=answer.usage,
            attempts=answer.attempts,
            stream=isinstance(answer, Opened),
            ttft_ms=ttft_ms,
            answer=text,
            by_model=() if spend is None else paid_by_model(spend, answer.model, answer.usage),
        )


def record_cache_hit(
    recorder: Recorder | None,
    router: Router,
    decision: Decision,
    body: Mapping[str, Any],
    clock: CallClock,
    answer: CachedAnswer,
) -> None:
    """Log a call answered from the response cache: no upstream call, no tokens spent."""
    if recorder is not None:
        recorder.finished(
            router,
            decision,
            body,
            ts=clock.ts,
            started_ns=clock.started_ns,
            status=200,
            served_model=answer.model,
            deployment=answer.deployment,
            stream=answer.stream,
            ttft_ms=clock.elapsed_ms() if answer.stream else None,
            cache_hit=True,
            answer=cached_text(answer) if recorder.wants_answers else None,
        )


TIMEOUT = "timeout"  # the error code of a call its own `timeout` stopped, streamed or not


def record_failure(
    recorder: Recorder | None,
    router: Router,
    decision: Decision,
    body: Mapping[str, Any],
    clock: CallClock,
    exc: BaseException,
    *,
    stream: bool,
    usage: Usage | None = None,
    by_model: tuple[tuple[str, Usage], ...] = (),
    tried: tuple[str, ...] = (),
) -> None:
    """Log a call that raised, with the status and code the gateway would have sent; one
    its caller cancelled (`asyncio.CancelledError`: ``wait_for``'s timeout, a cancelled
    task) as the gateway logs a client that hung up, 499 ``client_disconnected``, and one
    its own `timeout` stopped (`CallTimeout`) 504 ``timeout``, both with the attempt
    path they were cut on (`tried`: `Spend.tried`), as a bug's 500 has the one it ended
    on (an error of ours has its own). `usage`
    is what it cost all the same: a cancelled call's prompt sent, the answers paid for
    and not served (one an upstream's content filter withheld); None when nothing;
    `by_model` that split by the model that spent it (`paid_by_model`)."""
    if recorder is None:
        return
    status, code, attempts = 500, type(exc).__name__, tried  # a bug: 500, as the gateway's
    if isinstance(exc, asyncio.CancelledError):
        status, code = CLIENT_CLOSED, CLIENT_DISCONNECTED
    elif isinstance(exc, CallTimeout):
        status, code = GATEWAY_TIMEOUT, TIMEOUT
    elif isinstance(exc, LlmrouteError):
        from llmroute.server.errors import gateway_error

        error = gateway_error(exc)
        status, code, attempts = error.status, error.code or "error", tuple(error.attempts)
    recorder.finished(
        router,
        decision,
        body,
        ts=clock.ts,
        started_ns=clock.started_ns,
        status=status,
        error=code,
        attempts=attempts,
        stream=stream,
        usage=usage,
        by_model=by_model,
    )
