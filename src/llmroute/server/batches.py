"""OpenAI's Batch API: ``/v1/batches`` (registry ``batches``; docs/gateway.md).

``POST /v1/batches`` names an uploaded file of requests (`llmroute.server.files`) and an
endpoint; the gateway answers the requests in the background (`BatchRun`) and the
client polls ``GET /v1/batches/{id}`` until the batch is ``completed``, then downloads
its ``output_file_id``. ``POST /v1/batches/{id}/cancel`` stops it (the answers made so
far are kept), ``GET /v1/batches`` lists them. A batch runs in the process that took
its request; any gateway sharing the store reads, lists and cancels it, and takes it
over when the process running it has stopped: on a read, or when its sweep
(`llmroute.server.batch_sweep`) finds it (`take_over_lapsed`); in memory, one whose
process died is kept ``failed`` once its lease lapses, with the answers it had made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from contextlib import nullcontext
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmroute.registry.schema import ApiKey
from llmroute.server.auth import api_key_of, let_in_as
from llmroute.server.background import BackgroundRuns, detached
from llmroute.server.batch_lines import ENDPOINTS
from llmroute.server.batch_run import BatchRun, settled_files
from llmroute.server.body import checked_metadata, read_json_object
from llmroute.server.errors import NO_RETRY, GatewayError, not_an_endpoint, store_unavailable
from llmroute.server.files import batch_store, expires_after, listed, owner_of
from llmroute.server.state import Gateway, gateway_of, per_app, pin
from llmroute.state.batches import BatchRecord, BatchStore, new_batch_id, new_file_id
from llmroute.state.stores import StoreUnavailable, owner_tag
from llmroute.telemetry.metrics import GatewayMetrics

__all__ = [
    "BATCHES_PATH",
    "BatchRuns",
    "batch",
    "batches",
    "follow_reload",
    "take_over_lapsed",
]

log = logging.getLogger("llmroute.batches")

BATCHES_PATH = "/v1/batches"
WINDOW_S = 24 * 3600  # the one completion window OpenAI offers
_RUNNING = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
_EXPIRED_AFTER_S = 3600  # past its expiry, a batch noted as running was not ended by anyone


class BatchRuns(BackgroundRuns):
    """This process's running batches, and the slots that bound how many run at once
    (``batches.max_running``; batches past it wait, ``validating``)."""

    kind = "batch(es)"
    unended = "the next read of each takes it over once its lease lapses"

    def __init__(self) -> None:
        super().__init__()
        self._slots: dict[int, asyncio.Semaphore] = {}
        self._runs: dict[str, BatchRun] = {}

    def start_run(self, run: BatchRun, metrics: GatewayMetrics | None = None) -> None:
        """Run `run` in a task of its own, counted in ``llmroute_batches_running``."""
        batch_id = run.record.id
        self._runs[batch_id] = run

        async def counted() -> None:
            with metrics.batches_running.track_inprogress() if metrics else nullcontext():
                await run()

        if not self.start(batch_id, counted()):  # shut down: the next read takes it over
            self._runs.pop(batch_id, None)

    def _finished(self, response_id: str, task: asyncio.Task[None]) -> None:
        super()._finished(response_id, task)
        if not self.running(response_id):
            self._runs.pop(response_id, None)

    def besides(self, gateway: Gateway) -> list[BatchRun]:
        """The runs of this process on a registry version other than `gateway`."""
        return [run for run in self._runs.values() if run.gateway is not gateway]

    def slots(self, most: int) -> asyncio.Semaphore:
        found = self._slots.get(most)
        if found is None:
            found = self._slots[most] = asyncio.Semaphore(most)
        return found


def batch_runs(request: Request) -> BatchRuns:
    return batch_runs_of(request.app)


def batch_runs_of(app: Starlette) -> BatchRuns:
    return per_app(app, "batch_runs", BatchRuns)


def _counted(request: Request, kind: str, outcome: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if not isinstance(metrics, GatewayMetrics):
        return
    if kind == "batch":
        metrics.batches(outcome)
    else:
        metrics.batch_requests(outcome)


async def batches(request: Request) -> Response:
    """``POST /v1/batches`` (create) and ``GET /v1/batches`` (list)."""
    store = batch_store(request)
    owner = owner_of(request)
    if request.method == "POST":
        return JSONResponse(await _create(request, store, owner))
    try:
        records = await store.batches(owner)
        found = [await _current(request, store, owner, record) for record in records]
    except StoreUnavailable as exc:
        raise store_unavailable("batch", exc) from None
    return JSONResponse(listed(request, found, 20, 100))


async def _current(
    request: Request, store: BatchStore, owner: str, batch: dict[str, Any]
) -> dict[str, Any]:
    """`batch` as it stands. One whose process stopped (its lease lapsed, or given up):
    taken over by this process where the store is shared, else kept failed."""
    if batch.get("status") not in _RUNNING or await store.held(owner, str(batch["id"])):
        return await _shown(store, owner, batch)
    record = await store.get_batch(owner, str(batch["id"]))
    if record is None or record.status not in _RUNNING:
        return batch if record is None else await _shown(store, owner, record.batch)
    if await store.held(owner, record.id):  # renewed meanwhile
        return await _shown(store, owner, record.batch)
    asked = await store.cancel_asked(owner, record.id)
    if asked is not None:  # nobody runs it to take the cancel up
        return (await _ended_here(request, store, owner, record, asked)).batch
    if store.url != "memory":  # shared: this process goes on with it where it stopped
        holder = secrets.token_hex(8)
        if await store.take(owner, record.id, holder):
            _take_over(request, store, owner, record, holder)
        return await _shown(store, owner, record.batch)
    return (await _ended_here(request, store, owner, record, None)).batch


async def _ended_here(
    request: Request,
    store: BatchStore,
    owner: str,
    record: BatchRecord,
    cancelled: int | None,
    why: dict[str, Any] | None = None,
) -> BatchRecord:
    """A batch no process runs, kept ``cancelled`` (asked at `cancelled`) or ``failed``
    (`why`, an entry of its ``errors``: by default, its process died, memory store), with
    the answers it had made."""
    output, failed = await settled_files(store, owner, record)
    status = "failed" if cancelled is None else "cancelled"
    counts = dict(record.batch.get("request_counts") or {})
    changes: dict[str, Any] = {
        "status": status,
        f"{status}_at": int(time.time()),
        "output_file_id": output,
        "error_file_id": failed,
        # what its files hold (answers made and not yet written died with the process)
        "request_counts": {
            **counts,
            "completed": record.output_written.lines,
            "failed": record.errors_written.lines,
        },
    }
    if cancelled is not None:
        changes["cancelling_at"] = cancelled
    else:
        changes["errors"] = {
            "object": "list",
            "data": [
                why
                or {
                    "code": "batch_interrupted",
                    "message": "the gateway process running this batch stopped before it "
                    "finished; the answers it had made are in output_file_id and "
                    "error_file_id: send the other requests in a new batch",
                    "param": None,
                    "line": None,
                }
            ],
        }
    record = record.with_batch(**changes)
    await store.put_batch(owner, record)
    await store.unmark_running(owner, record)
    outcome = status if cancelled is not None or why is not None else "abandoned"
    _counted(request, "batch", outcome)
    return record


def _run(
    request: Request,
    sender: Request,
    store: BatchStore,
    owner: str,
    record: BatchRecord,
    holder: str,
    *,
    resume: bool = False,
) -> None:
    """Start running `record` in this process, its requests sent as `sender` would send
    them, on the gateway `request` was pinned to."""
    runs = batch_runs(request)
    run = BatchRun(
        sender,
        gateway_of(request),
        store,
        owner,
        record,
        runs.slots(store.settings.max_running),
        partial(_counted, request),
        holder=holder,
        resume=resume,
    )
    metrics = getattr(request.app.state, "metrics", None)
    runs.start_run(run, metrics if isinstance(metrics, GatewayMetrics) else None)


def follow_reload(runs: BatchRuns, old: Gateway, new: Gateway) -> None:
    """After a registry reload, each batch this process runs on `old` sends no request
    more there, lets those in flight finish, and goes on under the current registry (its
    lease kept, so no request is sent twice), so that a batch of hours does not keep an
    old registry's routes, models and clients: where the new one keeps batches in the
    same store and still has the batch's key (else it ends on `old`, as before). A batch
    whose key the new registry no longer has (revoked) stops instead, whichever older
    registry it runs on (one left on an earlier version too): it sends no request more
    and ends ``failed``, code ``key_removed``; finishing it would go on spending, for
    hours, on a key its operator took away."""
    for run in runs.besides(new):
        removed = _removed_key(run, new)
        if removed is not None and not run.stopped:
            log.warning(
                "batch %s: its client key %r is no longer in the registry: no request more "
                "is sent, and it ends failed (key_removed)",
                run.record.id,
                removed,
            )
            run.stop("key_removed", _key_removed(removed))
        elif removed is None and run.gateway is old and _successor(run, new) is not None:
            run.follow(partial(_go_on, run))


def _key_removed(name: str) -> str:
    return (
        f"the batch's client key {name!r} was removed from the gateway's registry: no "
        "request more was sent"
    )


def _removed_key(run: BatchRun, gateway: object) -> str | None:
    """The name of `run`'s client key when `gateway` has client keys and it is not one of
    them (None otherwise: no key, or no ``auth`` section, which lets anyone in)."""
    key = api_key_of(run.request.scope)
    if key is None or not isinstance(gateway, Gateway) or gateway.auth is None:
        return None
    names = {k.name for k in gateway.auth.settings.keys}
    return None if key.name in names else key.name


def _successor(run: BatchRun, gateway: object) -> tuple[BatchStore, ApiKey | None] | None:
    """Where `run` can go on under `gateway`: its batch store and the run's key there."""
    if not isinstance(gateway, Gateway) or gateway.batches is None:
        return None
    if not run.store.same_place(gateway.batches):
        return None
    key = api_key_of(run.request.scope)
    if key is None:
        return (gateway.batches, None) if gateway.auth is None else None
    if gateway.auth is None:
        return None
    found = next((k for k in gateway.auth.settings.keys if k.name == key.name), None)
    return None if found is None else (gateway.batches, found)


async def _go_on(run: BatchRun, record: BatchRecord, holder: str) -> None:
    """`run`'s batch, drained, started again under the current registry (read now: a
    second reload may have come while it drained); left for the next reader (its lease
    given up) if that one no longer can take it."""
    sender = run.request
    gateway = sender.app.state.gateway
    found = _successor(run, gateway)
    removed = _removed_key(run, gateway)
    if found is None and removed is not None:  # revoked by a reload that came as it drained
        log.warning("batch %s: its client key %r was removed: it ends failed", record.id, removed)
        why = {"code": "key_removed", "message": _key_removed(removed), "param": None, "line": None}
        with contextlib.suppress(StoreUnavailable):  # (else left, unheld, to expire)
            await _ended_here(sender, run.store, run.owner, record, None, why)
        return
    if found is None:
        log.info("batch %s: left for the next reader (the registry changed twice)", record.id)
        with contextlib.suppress(StoreUnavailable):
            await run.store.release(run.owner, record.id, holder)
        return
    store, key = found
    scope = dict(sender.scope)
    pin(scope, gateway)
    let_in_as(scope, key)
    request = Request(scope, sender.receive)
    _run(request, request, store, run.owner, record, holder, resume=True)
    log.info("batch %s: goes on under registry version %s", record.id, gateway.version)


def _take_over(
    request: Request, store: BatchStore, owner: str, record: BatchRecord, holder: str
) -> None:
    """Run, in this process, the rest of a batch whose process stopped: its requests
    without an answer, with the key of `request` (the same key: the batch is its) and the
    ``x-llmroute-*`` headers of the request that made it."""
    reader = detached(request)
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in record.headers.items()]
    scope = {**reader.scope, "headers": headers}
    _run(request, Request(scope, reader.receive), store, owner, record, holder, resume=True)
    log.info("batch %s: taken over from a process that stopped", record.id)
    _counted(request, "batch", "taken_over")


async def take_over_lapsed(app: Starlette, gateway: Gateway, store: BatchStore) -> None:
    """Take over, in this process, each running batch that no process holds (the one
    running it was killed, stopped or lost the store), as a read of it would: so a batch
    goes on whether or not its client polls it. A batch is run with its own key's limits
    and budget, looked up by the hash the store holds (a key no longer in the registry:
    left alone, to expire); one that has ended or expired leaves the running set."""
    keys = gateway.auth.settings.keys if gateway.auth is not None else None
    owners = {owner_tag(""): None} if keys is None else {owner_tag(k.name): k for k in keys}
    runs = batch_runs_of(app)
    now = time.time()
    for running in await store.running():
        if running.expires_at + _EXPIRED_AFTER_S < now:
            await store.drop_running(running)  # whoever ran it is long gone
            continue
        if running.tag not in owners or runs.running(running.batch_id):
            continue
        key = owners[running.tag]
        owner = "" if key is None else key.name
        if await store.held(owner, running.batch_id):
            continue
        record = await store.get_batch(owner, running.batch_id)
        if record is None or record.status not in _RUNNING:
            await store.drop_running(running)
            continue
        path = f"{BATCHES_PATH}/{record.id}"
        scope: dict[str, Any] = {
            "type": "http",
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [],
            "client": None,
            "server": None,
            "app": app,
        }
        pin(scope, gateway)
        let_in_as(scope, key)
        await _current(Request(scope), store, owner, record.batch)


async def _shown(store: BatchStore, owner: str, batch: dict[str, Any]) -> dict[str, Any]:
    """`batch` with a cancel that was asked and not yet taken up shown as ``cancelling``."""
    if batch.get("status") not in ("validating", "in_progress"):
        return batch
    asked = await store.cancel_asked(owner, str(batch["id"]))
    return batch if asked is None else {**batch, "status": "cancelling", "cancelling_at": asked}


async def _create(request: Request, store: BatchStore, owner: str) -> dict[str, Any]:
    gateway = gateway_of(request)
    body = await read_json_object(request, gateway.max_body_bytes)
    input_file_id = body.get("input_file_id")
    if not isinstance(input_file_id, str) or not input_file_id:
        raise GatewayError(
            400, "'input_file_id' (the id of an uploaded file) is required", param="input_file_id"
        )
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise GatewayError(
            400,
            f"'endpoint' must be one of {', '.join(ENDPOINTS)}",
            param="endpoint",
        )
    if body.get("completion_window") != "24h":
        raise GatewayError(400, "'completion_window' must be \"24h\"", param="completion_window")
    metadata = checked_metadata(body.get("metadata"))
    output_ttl_s = expires_after(body.get("output_expires_after"), "output_expires_after")
    try:
        file = await store.get_file(owner, input_file_id)
    except StoreUnavailable as exc:
        raise store_unavailable("batch", exc) from None
    if file is None:
        shown = input_file_id if len(input_file_id) <= 80 else input_file_id[:80] + "…"
        raise GatewayError(
            404, f"no file with id '{shown}'", param="input_file_id", code="not_found"
        )
    if file.get("purpose") != "batch":
        raise GatewayError(
            400, "the input file must be one uploaded with purpose 'batch'", param="input_file_id"
        )
    now = int(time.time())
    batch = {
        "id": new_batch_id(),
        "object": "batch",
        "endpoint": endpoint,
        "errors": None,
        "input_file_id": input_file_id,
        "completion_window": "24h",
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": now,
        "in_progress_at": None,
        "expires_at": now + WINDOW_S,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": metadata,
        "model": None,  # a batch's requests are routed each on its own
        "usage": None,
    }
    headers = {k: v for k, v in request.headers.items() if k.startswith("x-llmroute-")}
    record = BatchRecord(
        batch, new_file_id(), new_file_id(), headers=headers, output_ttl_s=output_ttl_s
    )
    try:
        holder = secrets.token_hex(8)
        # the record last: a store that fails first leaves nothing a sweep would run
        if (why := await store.mark_running(owner, record)) is not None:
            raise _over_quota(owner, why)
        await store.hold(owner, record.id, holder)
        await store.put_batch(owner, record, new=True)
    except StoreUnavailable as exc:
        raise store_unavailable("batch", exc) from None
    _run(request, detached(request), store, owner, record, holder)
    _counted(request, "batch", "created")
    return batch


def _over_quota(owner: str, why: str) -> GatewayError:
    """A 429 ``batch_quota_exceeded``: `owner` has ``batches.max_key_batches`` batches
    running or queued already (`why`)."""
    whose = f"client key {owner!r}" if owner else "the gateway's client"
    return GatewayError(
        429,
        f"{whose} {why}: wait for one to end, or cancel one (POST /v1/batches/{{id}}/cancel)",
        code="batch_quota_exceeded",
        headers=NO_RETRY,
        kind="insufficient_quota",
    )


async def batch(request: Request) -> Response:
    """``GET /v1/batches/{batch_id}`` and ``POST /v1/batches/{batch_id}/cancel``."""
    store = batch_store(request)
    owner, batch_id = owner_of(request), request.path_params["batch_id"]
    action = request.path_params.get("action")
    if action not in (None, "cancel") or (action == "cancel") != (request.method == "POST"):
        raise GatewayError(404, not_an_endpoint(request), code="not_found")
    try:
        record = await store.get_batch(owner, batch_id)
        if record is None:
            shown = batch_id if len(batch_id) <= 80 else batch_id[:80] + "…"
            raise GatewayError(
                404, f"no batch with id '{shown}'", param="batch_id", code="not_found"
            )
        if action == "cancel":
            return JSONResponse(await _cancel(request, store, owner, record))
        return JSONResponse(await _current(request, store, owner, record.batch))
    except StoreUnavailable as exc:
        raise store_unavailable("batch", exc) from None


async def _cancel(
    request: Request, store: BatchStore, owner: str, record: BatchRecord
) -> dict[str, Any]:
    """The batch asked to stop: ``cancelling`` until its run has kept what it made, then
    ``cancelled`` (at once when no process runs it). A batch that has ended is 409."""
    current = await _shown(store, owner, record.batch)
    status = current.get("status")
    if status not in _RUNNING:
        raise GatewayError(
            409,
            f"batch {record.id} is {status}: only a batch that is validating or in progress "
            "can be cancelled",
            code="conflict",
        )
    asked = current.get("cancelling_at") or int(time.time())
    await store.ask_cancel(owner, record.id, asked)
    if not batch_runs(request).cancel(record.id) and not await store.held(owner, record.id):
        return (await _ended_here(request, store, owner, record, asked)).batch
    # this process's run stops now; another process's within a second
    return {**current, "status": "cancelling", "cancelling_at": asked}
