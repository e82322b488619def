"""`BatchRun`: one batch's requests answered in the background, and the batch kept as
it goes (``validating`` → ``in_progress`` → ``completed``, or ``failed``, ``expired``,
``cancelled``).

A process that stops (SIGTERM) with a batch running and a store other processes share
writes what it has, gives up the batch's lease and leaves it ``in_progress``; the next
read of the batch on any gateway takes the lease (one wins) and runs the requests that
have no answer yet (`resume`). One killed outright is taken over the same way once its
lease lapses; the requests it had in flight, or answered since its last part (at most
`PART_S`), are sent again.

Each request is served exactly as if its client had sent it alone, with the key and
headers of the request that made the batch: the key's budget, rpm and tpm are checked
for each (a request over its key's rate is tried again when the window has room),
then it is routed, dispatched, cached, logged and charged. Answers are collected and
written to the store in parts (every `PART_S`, or `PART_BYTES`), counted in the batch's
``request_counts`` every `FLUSH_S`; the same tick renews the batch's lease and looks for
a cancel. The
run holds its gateway in flight; a registry reload (`follow`) ends it there once its
requests in flight are answered, a line sleeping before it is sent again included (its
wait ends at once: the reload never waits on it), and the batch goes on under the new
registry, where that keeps batches in the same store (else it finishes on the old one).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import replace
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from llmroute.dispatch.budgets import paid_by
from llmroute.dispatch.text_completions import TextRequest
from llmroute.errors import LlmrouteError
from llmroute.joined_bytes import joined
from llmroute.server.auth import admit, api_key_of, payer_of
from llmroute.server.batch_lines import BatchLine, read_lines_yielding
from llmroute.server.batch_output import answer_line, written_custom_ids
from llmroute.server.body import require_messages
from llmroute.server.chat import GATEWAY_TAGS, note_body_tags, serve_chat
from llmroute.server.completions import COMPLETIONS_FRONT, to_chat_body
from llmroute.server.embeddings import embed
from llmroute.server.errors import GatewayError, gateway_error
from llmroute.server.fronts import answer_converted
from llmroute.server.request_ids import answered_apart, apart, request_id_of
from llmroute.server.responses import answer_responses
from llmroute.server.root_path import paths_as_asked
from llmroute.server.state import Gateway, live_requests
from llmroute.state.batches import BatchRecord, BatchStore, Written
from llmroute.state.stores import StoreUnavailable, asked

__all__ = ["FLUSH_S", "PART_BYTES", "PART_S", "BatchRun", "settled_files"]

log = logging.getLogger("llmroute.batches")

FLUSH_S = 1.0  # how often request_counts is brought up to date (and the lease renewed)
PART_S = 10.0  # how often the answers are written (a process that dies loses at most these)
PART_BYTES = 1 << 20  # or as soon as this much is waiting
_MOST_TRIES = 20  # for a request refused by its key's rate limit
# for a request every model of its chain refused with a 429 (``upstream_rate_limited``)
# or found unavailable (a 503: each said Retry-After, or its breakers were open): the
# providers' own limits and outages, which clear within a minute or so; each send had
# dispatch's retries and fallbacks, so a few sends are enough to ride out a burst, and
# a provider that stays limited gets no more than these from one line
_MOST_UPSTREAM_TRIES = 5
_MOST_WAIT_S = 60.0
_HANDED_OVER = "handed_over"  # a stopping process left the batch to the next reader
_LOST = "lost"  # another process took the batch over while this one could not renew it
_FOLLOWED = "reloaded"  # a registry reload: the batch goes on under the new registry


class _Answers:
    """Answer lines made and not yet written (`output`: 2xx, `errors`), their `size`, and
    how many answers were made in all (`ok`, `failed`: written or not, earlier runs'
    included)."""

    def __init__(self, ok: int = 0, failed: int = 0, usage: Any = None) -> None:
        self.output: list[bytes] = []
        self.errors: list[bytes] = []
        self.size = 0
        self.ok, self.failed = ok, failed
        # input, cached input, output, reasoning tokens of the answers (an earlier run's too)
        self.tokens = _usage_counts(usage)

    def add(self, line: bytes, ok: bool, usage: Any) -> None:
        (self.output if ok else self.errors).append(line)
        self.size += len(line)
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        for i, n in enumerate(_answer_tokens(usage)):
            self.tokens[i] += n

    def usage(self) -> dict[str, Any]:
        """OpenAI's batch ``usage``: the tokens of every answer made."""
        prompt, cached, completion, reasoning = self.tokens
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + completion,
        }


class BatchRun:
    """Runs batch `record` of `owner` for `request` (detached: the client that made it
    has gone) on `gateway`; `slots` bounds the batches this process runs at once and
    `count(outcome)` is told how the batch ended and each request."""

    def __init__(
        self,
        request: Request,
        gateway: Gateway,
        store: BatchStore,
        owner: str,
        record: BatchRecord,
        slots: asyncio.Semaphore,
        count: Callable[[str, str], None],
        *,
        holder: str,
        resume: bool = False,
    ) -> None:
        self.request, self.gateway, self.store, self.owner = request, gateway, store, owner
        self.record = record
        self.slots = slots
        self.count = count
        self.endpoint = str(record.batch["endpoint"])
        self.resume = resume  # taking over from a process that stopped: skip what it answered
        self.holder = holder  # the token its lease holds
        self._lost = False  # another process took the batch over (this one's lease lapsed)
        self.answers = _Answers(
            record.output_written.lines, record.errors_written.lines, record.batch.get("usage")
        )
        self._parted = time.monotonic()  # when a part was last written
        self._written = asyncio.Lock()  # one write of the record at a time, in order
        self._stopping = asyncio.Event()
        self._draining = asyncio.Event()  # a reload: start no request more
        self._left = False  # a line waiting to be sent again was left for the new registry
        # cleared while the store does not answer: what the run made could not be kept
        # nor its lease renewed, so it starts no request more until the store is back
        self._store_answering = asyncio.Event()
        self._store_answering.set()
        self._then: Callable[[BatchRecord, str], Awaitable[None]] | None = None
        self._stopped_for: dict[str, Any] | None = None  # `stop`'s errors
        self._queued = True  # waiting for one of `slots`
        self._task: asyncio.Task[None] | None = None
        self._tags = (f"batch={record.id}",)  # in the decision log, beside the request's own

    def follow(self, then: Callable[[BatchRecord, str], Awaitable[None]]) -> None:
        """After a registry reload: send no request more, let those in flight finish,
        write what was made, then await ``then(record, holder)`` to go on (with the lease
        still held: no other process can take the batch in between, and no request is
        sent twice)."""
        self._then = then
        self._draining.set()

    def stop(self, code: str, message: str) -> None:
        """Send no request more, let those in flight finish, and end the batch
        ``failed`` with error `code` (its answers so far in its files): a reload that
        removed the batch's client key, whose spending must stop with it."""
        self._stopped_for = _error(code, message)
        self._draining.set()
        if self._queued and self._task is not None:
            self._task.cancel()  # waiting for a slot, maybe for hours: ended now

    @property
    def stopped(self) -> bool:
        """Whether `stop` was called."""
        return self._stopped_for is not None

    async def __call__(self) -> None:
        task = self._task = asyncio.current_task()
        assert task is not None
        if self._stopped_for is not None:  # `stop` before this began: no slot waited for
            task.cancel()
        ticking = asyncio.create_task(self._ticking(task))
        status: str = "failed"
        changes: dict[str, Any] = {}
        with self.gateway.inflight:
            try:
                deadline = float(self.record.batch["expires_at"]) - time.time()
                async with asyncio.timeout(max(0.0, deadline)), self.slots:
                    self._queued = False
                    status, changes = await self._run()
            except TimeoutError:
                status = "expired"
            except asyncio.CancelledError:
                asked = await self._cancel_asked()
                if self._lost:
                    status = _LOST  # the process that has it now keeps it
                elif asked is not None:
                    status, changes = "cancelled", {"cancelling_at": asked}
                elif self._stopped_for is not None:  # (`stop` while it waited for a slot)
                    changes = {"errors": self._stopped_for}
                elif self.store.url != "memory":
                    status = _HANDED_OVER  # the next read, on any gateway, takes it over
                else:  # the gateway is stopping, and the batch goes with it
                    changes = {"errors": _stopped()}
                raise
            except StoreUnavailable as exc:
                # (memory never fails) left, as by a stopping process, for the next read
                log.warning(
                    "batch %s: the batch store did not answer (%s): left for the next read "
                    "to take over",
                    self.record.id,
                    exc,
                )
                status = _HANDED_OVER
            except Exception:
                log.exception("batch %s", self.record.id)
                failed = _error("internal_error", "the gateway failed while running the batch")
                changes = {"errors": failed}
            finally:
                self._stopping.set()
                await asyncio.shield(self._settle(ticking, status, changes))

    async def _run(self) -> tuple[str, dict[str, Any]]:
        """The batch's requests answered: ``completed``, or ``failed`` with its errors."""
        content = await self.store.content(self.owner, str(self.record.batch["input_file_id"]))
        if content is None:
            missing = "the input file is no longer kept (deleted or expired)"
            return "failed", {"errors": _error("file_not_found", missing, "input_file_id")}
        most, longest = self.store.settings.max_requests, self.gateway.max_body_bytes
        lines, problems = await read_lines_yielding(content, self.endpoint, most, longest)
        if problems:
            return "failed", {"errors": {"object": "list", "data": problems}}
        if self.record.status != "in_progress":
            counts = {
                "total": len(lines),
                "completed": self.record.output_written.lines,
                "failed": self.record.errors_written.lines,
            }
            now = int(time.time())
            await self._write(status="in_progress", in_progress_at=now, request_counts=counts)
        if self.resume:
            answered = await self._answered()
            lines = lines.without(answered)
        pending = iter(lines)

        async def worker() -> None:
            while not self._draining.is_set():
                await self._store_answering.wait()
                line = next(pending, None)  # shared: each line taken by one worker
                if line is None:
                    return
                await self._answer(line, content)

        workers = min(self.store.settings.concurrency, len(lines))
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
        if self._stopped_for is not None:
            return "failed", {"errors": self._stopped_for}
        if self._draining.is_set() and (self._left or next(pending, None) is not None):
            return _FOLLOWED, {}  # the rest under the new registry
        return "completed", {}

    async def _answered(self) -> set[str]:
        """The custom_ids the batch's earlier run answered (its counted parts)."""
        record = self.record
        answered: set[str] = set()
        for file_id, written in (
            (record.output, record.output_written),
            (record.errors, record.errors_written),
        ):
            parts = await self.store.written(self.owner, file_id, written.parts)
            answered.update(await asyncio.to_thread(written_custom_ids, parts))
        return answered

    async def _answer(self, line: BatchLine, content: bytes) -> None:
        body = line.body(content)
        live = live_requests(self.request.app)
        await live.idle_within(self.store.settings.yield_s)  # live traffic first
        response, apart_scope = await self._send(body)
        tries, upstream_tries = 1, 1
        while True:
            if _rate_limited(response) and tries < _MOST_TRIES:
                tries += 1
                wait_s = _wait_s(response)
            elif _upstream_waiting(response) and upstream_tries < _MOST_UPSTREAM_TRIES:
                # OpenAI's batches retry an upstream's 429 (or 503) within the window, as
                # here: Retry-After when the upstreams said, else 2 s, 4 s, 8 s, 16 s
                wait_s = _wait_s(response, 2.0**upstream_tries)
                upstream_tries += 1
            else:
                break
            if await self._drained_within(wait_s):
                # a reload: sent again under the new registry (unwritten, the followed
                # run sends it), which may have moved the model the providers limit
                self._left = True
                return
            response, apart_scope = await self._send(line.body(content))
        ok = 200 <= response.status_code < 300
        request_id = response.headers["x-request-id"]  # `_send` names each answer
        raw = bytes(getattr(response, "body", b""))  # (a stream has none: never asked)
        if apart_scope is not None:  # the last send's line alone: the id the output gives
            answered_apart(apart_scope, response.status_code, raw, tries + upstream_tries - 1)
        answer = {
            "id": f"batch_req_{secrets.token_hex(16)}",
            "custom_id": line.custom_id,
            "response": {"status_code": response.status_code, "request_id": request_id},
            "error": None,
        }
        written, usage = await answer_line(answer, raw, self.endpoint)
        self.answers.add(written, ok, usage)
        self.count("request", "completed" if ok else "failed")

    async def _drained_within(self, wait_s: float) -> bool:
        """Whether a reload asked the run to drain (`follow`) before `wait_s` passed: a
        line waiting to be sent again is not sent on the old registry."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._draining.wait(), wait_s)
        return self._draining.is_set()

    async def _send(self, body: dict[str, Any]) -> tuple[Response, dict[str, Any] | None]:
        """`body` answered as its endpoint answers it, the error as its JSON response;
        with an ``x-request-id`` as the gateway's answers have: its decision's (or its
        embeddings row's), else made as the gateway makes one, and then the scope that
        names it, for the request line of the line's last send (`answered_apart`: a
        refused send tried again writes none, its id shown nowhere)."""
        # a scope of its own: serving notes per-request state in it (its id too)
        scope = {
            **apart(self.request.scope),
            "path": self.endpoint,
            "method": "POST",
            GATEWAY_TAGS: self._tags,
        }
        response = await self._answered_by_endpoint(scope, body)
        if "x-request-id" in response.headers:
            return response, None
        response.headers["x-request-id"] = request_id_of(scope)
        return response, scope

    async def _answered_by_endpoint(self, scope: dict[str, Any], body: dict[str, Any]) -> Response:
        request = Request(scope, self.request.receive)
        gateway = self.gateway
        ts, started_ns = time.time(), time.perf_counter_ns()
        key = api_key_of(scope)
        try:
            with paid_by(payer_of(key)):  # its calls hold their worst case in a hard budget
                if key is not None and gateway.auth is not None:
                    await admit(scope, key, gateway)
                if self.endpoint == "/v1/embeddings":
                    return await embed(request, gateway, body)
                if self.endpoint == "/v1/responses":
                    return await answer_responses(request, gateway, body, ts, started_ns)
                if self.endpoint == "/v1/completions":
                    chat = to_chat_body(body)
                    text = TextRequest.of(body)
                    return await answer_converted(
                        request, COMPLETIONS_FRONT, body, chat, ts, started_ns, text
                    )
                note_body_tags(request, body, require_messages(body))
                return await serve_chat(request, gateway, body, ts, started_ns)
        except GatewayError as exc:
            return _as_asked(exc, scope).response()
        except LlmrouteError as exc:
            return _as_asked(gateway_error(exc), scope).response()
        except Exception:  # one request's failure is its own, not the batch's
            request_id = request_id_of(scope)  # its decision's, once routed
            log.exception("batch %s: a request failed (request %s)", self.record.id, request_id)
            return GatewayError(500, "internal server error").response()

    async def _ticking(self, task: asyncio.Task[None]) -> None:
        """Every `FLUSH_S` (a third of the lease if shorter) until the run stops: answers
        written, lease renewed, and the run cancelled once a cancel is asked (by a request
        any gateway took)."""
        tick_s = min(FLUSH_S, self.store.settings.lease_s / 3)
        while not self._stopping.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), tick_s)
            if self._stopping.is_set():
                return
            try:
                # renewed each tick, and checked before anything is written: a run whose
                # lease another process took must not write over that process's parts
                if not await self._still_held():
                    self._lost = True
                    task.cancel()
                    return
                await self._flush()
                if await self.store.cancel_asked(self.owner, self.record.id) is not None:
                    task.cancel()
                    return
                if not self._store_answering.is_set():
                    log.info("batch %s: the batch store answers again; going on", self.record.id)
                self._store_answering.set()
            except StoreUnavailable as exc:
                if self._store_answering.is_set():
                    log.warning(
                        "batch %s: the batch store did not answer (%s): no request more is "
                        "sent until it does",
                        self.record.id,
                        exc,
                    )
                self._store_answering.clear()

    async def _still_held(self) -> bool:
        """The lease renewed (or taken back, if it lapsed and nobody took it); False when
        another process holds the batch now: this run must stop writing it."""
        record_id = self.record.id
        if await self.store.renew(self.owner, record_id, self.holder):
            return True
        if await self.store.take(self.owner, record_id, self.holder):
            return True
        log.warning(
            "batch %s: its lease lapsed (the store did not answer for longer than "
            "batches.lease_s) and another process took it over: this one stops",
            record_id,
        )
        return False

    async def _flush(self, final: bool = False) -> None:
        """The record's ``request_counts`` brought up to date; and, every `PART_S` (or
        once `PART_BYTES` are waiting; in memory, only at the end: nothing there outlives
        the process anyway) or when `final`, the answers made since written as a part of
        their file and counted in the record. A part whose write failed is tried again,
        whole, next time. (Flushes never overlap: the ticker makes them, then the
        settling once the run has ended.)"""
        answers = self.answers
        due = final or (
            self.store.url != "memory"
            and (answers.size >= PART_BYTES or time.monotonic() - self._parted >= PART_S)
        )
        output, errors = (answers.output, answers.errors) if due else ([], [])
        if due:
            answers.output, answers.errors, answers.size = [], [], 0
        out_written, err_written = self.record.output_written, self.record.errors_written
        try:
            if output:
                data = await joined(output)
                await self.store.put_part(self.owner, self.record.output, out_written.parts, data)
                out_written = out_written.plus(data, len(output))
                output = []
            if errors:
                data = await joined(errors)
                await self.store.put_part(self.owner, self.record.errors, err_written.parts, data)
                err_written = err_written.plus(data, len(errors))
                errors = []
            if due:
                self._parted = time.monotonic()
        finally:
            answers.output[:0] = output  # not written: kept for the next flush
            answers.errors[:0] = errors
            answers.size += sum(map(len, output)) + sum(map(len, errors))
            counts = dict(self.record.batch.get("request_counts") or {})
            made = {**counts, "completed": answers.ok, "failed": answers.failed}
            usage = answers.usage()
            written = (out_written, err_written)
            if written != (self.record.output_written, self.record.errors_written):
                await self._write(written=written, request_counts=made, usage=usage)
            elif made != counts or usage != self.record.batch.get("usage"):
                await self._write(request_counts=made, usage=usage)

    async def _write(self, written: tuple[Written, Written] | None = None, **changes: Any) -> None:
        """The record kept with `changes` to the batch object (and the files' `written`)."""
        async with self._written:
            record = self.record
            if written is not None:
                record = replace(record, output_written=written[0], errors_written=written[1])
            self.record = record.with_batch(**changes)
            await self.store.put_batch(self.owner, self.record)

    async def _cancel_asked(self) -> int | None:
        """When a cancel was asked (None: not asked, or the store did not say)."""
        try:
            return await asyncio.shield(self.store.cancel_asked(self.owner, self.record.id))
        except StoreUnavailable:
            return None

    async def _settle(
        self, ticking: asyncio.Task[None], status: str, changes: dict[str, Any]
    ) -> None:
        """The last answers written and the batch kept `status` (with `changes`), with
        its files."""
        with suppress(asyncio.CancelledError):
            await ticking
        if status != _LOST and self.store.url != "memory":
            with suppress(StoreUnavailable):
                if not await self._still_held():
                    status = _LOST
        if status == _LOST:  # what it made and did not write is made again there
            self.count("batch", status)
            return
        try:
            flushed = partial(self._flush, final=True)
            try:
                await asked(flushed)  # asked of the store, past a pause after a failure
            except StoreUnavailable:
                await asked(flushed)  # once more: the parts are kept for it
            if status == _FOLLOWED and self._then is not None:
                self.count("batch", status)
                await self._then(self.record, self.holder)
                return
            if status == _HANDED_OVER:
                await self.store.release(self.owner, self.record.id, self.holder)
                log.info("batch %s: left running for the next gateway to read it", self.record.id)
                self.count("batch", status)
                return
            if status == "completed" and await self.store.lost(self.owner, self.record):
                status, changes = "failed", {"errors": _evicted(self.store.url)}
            output, failed = await settled_files(self.store, self.owner, self.record)
            now = int(time.time())
            if status == "completed":
                changes["finalizing_at"] = now
            changes.update(
                {"status": status, f"{status}_at": now, "output_file_id": output},
                error_file_id=failed,
            )
            await self._write(**changes)
            with suppress(StoreUnavailable):  # else the sweep drops it, finding it ended
                await self.store.unmark_running(self.owner, self.record)
        except StoreUnavailable as exc:
            log.warning(
                "batch %s: the batch store did not answer as it ended (%s): the next read "
                "takes it over once its lease lapses",
                self.record.id,
                exc,
            )
            status = _HANDED_OVER  # not ended here: counted where it ends
        self.count("batch", status)


async def settled_files(
    store: BatchStore, owner: str, record: BatchRecord
) -> tuple[str | None, str | None]:
    """The ids of the batch's output and error files, kept as made so far (None for one
    with no line)."""
    now = int(time.time())
    found: list[str | None] = []
    for file_id, written, suffix in (
        (record.output, record.output_written, "output"),
        (record.errors, record.errors_written, "error"),
    ):
        if written.lines == 0:
            found.append(None)
            continue
        file = {
            "id": file_id,
            "object": "file",
            "bytes": written.size,
            "created_at": now,
            "expires_at": now + int(store.ttl(record.output_ttl_s)),
            "filename": f"{record.id}_{suffix}.jsonl",
            "purpose": "batch_output",
            "status": "processed",
            "status_details": None,
        }
        await store.put_file(owner, file, parts=written.parts, ttl_s=record.output_ttl_s)
        found.append(file_id)
    return found[0], found[1]


def _as_asked(error: GatewayError, scope: dict[str, Any]) -> GatewayError:
    """`error` with each call its message names (``GET /v1/models lists them``) as the
    batch's client makes it, behind ``--root-path`` too (`paths_as_asked`), as a live
    request's error says it; always in OpenAI's shape (a batch's answers are)."""
    error.message = paths_as_asked(error.message, scope)
    return error


def _rate_limited(response: Response) -> bool:
    """A 429 of the key's rate (worth waiting for), not of its spent budget."""
    if response.status_code != 429:
        return False
    error = _json(response.body).get("error")
    return isinstance(error, dict) and error.get("code") == "rate_limit_exceeded"


def _upstream_waiting(response: Response) -> bool:
    """A 429 of the upstreams' own rate (every model of the chain answered 429), or a
    503 of a chain whose every model was unavailable for now: each answered 503 with a
    ``Retry-After``, or its breakers were open or its limits reached (dispatch's
    ``upstream_error`` 503, which says when it knows), or a 503 saying when to come back
    (a store that did not answer). Either clears within minutes; a 502 or 504 is a
    failure, written at once."""
    if response.status_code not in (429, 503):
        return False
    error = _json(response.body).get("error")
    code = error.get("code") if isinstance(error, dict) else None
    if response.status_code == 429:
        return code == "upstream_rate_limited"
    return code == "upstream_error" or "retry-after" in response.headers


def _wait_s(response: Response, unsaid_s: float = 1.0) -> float:
    """The response's ``Retry-After`` (`unsaid_s` without one), within 0.5 s and
    `_MOST_WAIT_S`."""
    raw = response.headers.get("retry-after")
    try:
        wait = unsaid_s if raw is None else float(raw)
    except ValueError:
        wait = unsaid_s
    return min(max(wait, 0.5), _MOST_WAIT_S)


def _json(raw: bytes | memoryview) -> dict[str, Any]:
    try:
        value = json.loads(bytes(raw))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _whole(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _answer_tokens(usage: Any) -> tuple[int, int, int, int]:
    """Input, cached input, output and reasoning tokens of an answer's ``usage`` (chat and
    completions, Responses, or embeddings shape); zeros for none."""
    if not isinstance(usage, dict):
        return 0, 0, 0, 0
    prompt = _whole(usage.get("prompt_tokens")) or _whole(usage.get("input_tokens"))
    completion = _whole(usage.get("completion_tokens")) or _whole(usage.get("output_tokens"))
    cached_in = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    reasoning_in = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
    cached = _whole(cached_in.get("cached_tokens")) if isinstance(cached_in, dict) else 0
    reasoning = (
        _whole(reasoning_in.get("reasoning_tokens")) if isinstance(reasoning_in, dict) else 0
    )
    return prompt, cached, completion, reasoning


def _usage_counts(usage: Any) -> list[int]:
    """A batch's ``usage`` (as `_Answers.usage` writes it) as the four counts."""
    if not isinstance(usage, dict):
        return [0, 0, 0, 0]
    return list(_answer_tokens(usage))


def _error(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"code": code, "message": message, "param": param, "line": None}],
    }


def _evicted(url: str) -> dict[str, Any]:
    unread = "so its output_file_id and error_file_id cannot be read whole"
    if url == "memory":
        return _error(
            "output_evicted",
            "the gateway's memory store (batches.max_bytes, max_entries) had no room for all "
            f"of this batch's answers, {unread}: send it again in smaller batches, or ask the "
            "operator for a Redis batches.url",
        )
    return _error(
        "output_evicted",
        f"the batch store (Redis) evicted some of this batch's answers to free memory, {unread}: "
        "send it again, or ask the operator for more Redis memory or maxmemory-policy "
        "noeviction",
    )


def _stopped() -> dict[str, Any]:
    return _error(
        "batch_interrupted",
        "the gateway stopped before the batch finished; the answers it made are in "
        "output_file_id and error_file_id: send the other requests in a new batch",
    )
