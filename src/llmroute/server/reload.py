"""Registry hot reload: on SIGHUP, and when the registry file's content changes.

A background task polls the file (stat first, then a content hash, so a ``touch`` does
nothing) and wakes early on SIGHUP. A new registry is loaded and validated in a worker
thread; an invalid one is logged at ERROR (``file:line: field: message``) and the old
gateway keeps serving. A valid one replaces ``app.state.gateway`` in one assignment;
the old gateway's provider clients are closed once its last in-flight request (see
`llmroute.server.state.PinGateway`) has finished.

Each process reloads on its own: with ``--workers N`` every worker polls the file, and
a SIGHUP must go to a worker's pid (uvicorn's supervisor restarts all workers on one).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hashlib
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup
from starlette.datastructures import State

from llmroute.blas import one_blas_thread
from llmroute.deadline import NEVER, Deadline
from llmroute.decide import Router
from llmroute.dispatch import Dispatcher
from llmroute.dispatch.affinity import Affinity
from llmroute.dispatch.dispatcher import Observers
from llmroute.encoders.base import Encoder
from llmroute.errors import ConfigError, LlmrouteError
from llmroute.gates.build import GateFactory
from llmroute.layers.llm_router import LlmRouter
from llmroute.providers import build_providers
from llmroute.providers.base import ChatProvider
from llmroute.providers.bedrock import missing_credentials
from llmroute.registry import LoadedRegistry
from llmroute.registry.lint import lint
from llmroute.registry.loader import parse_registry, read_text
from llmroute.registry.schema import Registry, TelemetrySettings, unset_credentials
from llmroute.registry.summary import headline
from llmroute.server.auth import Charges, KeyTable
from llmroute.server.batches import BatchRuns, follow_reload
from llmroute.server.settings import ServeSettings
from llmroute.server.state import Gateway
from llmroute.state import ResponseCache
from llmroute.state.batches import BatchStore
from llmroute.state.redis_check import RedisUse, check_redis, redis_uses
from llmroute.state.stored_responses import ResponseStore
from llmroute.state.stores import check_registry_urls
from llmroute.telemetry.metrics import GatewayMetrics
from llmroute.telemetry.record import ShadowRecord
from llmroute.telemetry.service import Telemetry
from llmroute.telemetry.shadow import ShadowRunner
from llmroute.telemetry.tracing import Tracing

__all__ = [
    "Fingerprint",
    "Prepared",
    "Reloader",
    "assemble_router",
    "fingerprint",
    "reloading",
]

log = logging.getLogger("llmroute.server")
_UNREADABLE_S = 5.0  # longer than an editor's delete and rename
_LOG_CLOSE_S = 10.0  # the longest a retired decision log takes to write what is queued

Built = tuple[Router, dict[str, ChatProvider], GateFactory]


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What the file looked like: its stat (cheap, checked first) and content hash."""

    stat: tuple[int, int, int, int]
    digest: str


def fingerprint(path: str, previous: Fingerprint | None = None) -> Fingerprint | None:
    """The file's fingerprint, hashing it only when its stat changed; None when it
    cannot be read (for example between an editor's delete and rename)."""
    try:
        st = os.stat(path)
        key = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        if previous is not None and previous.stat == key:
            return previous
        return Fingerprint(key, hashlib.sha256(Path(path).read_bytes()).hexdigest())
    except OSError:
        return None


class ChangedWhileRead(Exception):
    """The file read for loading was not the content the watcher's checks agreed on: a
    writer started again in between."""


def build(
    path: str,
    threads: int | None,
    current: Router | None = None,
    cases: str | None = None,
    settled: str | None = None,
) -> Built | None:
    """Load, validate and assemble the registry at `path` (blocking: run it in a worker
    thread). None when its version equals `current`'s: nothing to swap. The encoder is
    reused when the registry's encoder settings are unchanged. With `cases`, a routing
    cases file, a registry that fails one is refused (`ConfigError`). With `settled`,
    the content hash the checks agreed on, other content raises `ChangedWhileRead`.

    With `current` (a reload, while `current` serves from this process) numpy's BLAS
    runs on one thread: training an intent head on every core starved the event loop
    (p99 177 ms, the slowest up to 620, on 2 busy cores; 74 and 196 on one thread), and
    one thread trains the same head as fast on a quiet machine and faster on a busy
    one, where BLAS threads mostly wait for a core."""
    if current is None:
        return _build(path, threads, current, cases, settled)
    with _ONE_RELOAD, one_blas_thread():
        return _build(path, threads, current, cases, settled)


# The BLAS limit is the process's, not the thread's: reloads inside it never overlap (a
# server reloads one at a time; tests may run several servers in one process).
_ONE_RELOAD = threading.Lock()


def _build(
    path: str,
    threads: int | None,
    current: Router | None,
    cases: str | None,
    settled: str | None,
) -> Built | None:
    text = read_text(path, "the registry")
    if settled is not None and hashlib.sha256(text.encode()).hexdigest() != settled:
        raise ChangedWhileRead
    loaded = parse_registry(text, source=path, base_dir=Path(path).resolve().parent)
    check_registry_urls(loaded.registry)  # one line, before anything is opened
    encoder = None
    if current is not None:
        if loaded.version == current.version:
            return None
        if loaded.registry.encoder == current.loaded.registry.encoder:
            encoder = current.encoder
    router, gates = assemble_router(loaded, encoder, threads, cases)
    try:
        providers = build_providers(loaded.registry, base_dir=loaded.base_dir)
    except ConfigError as exc:  # a llamacpp model's GGUF: named at its line in the file
        router.close()  # an encoder it built; the running version's it shares is left
        raise loaded.at(exc) from exc
    return router, providers, gates


def assemble_router(
    loaded: LoadedRegistry, encoder: Encoder | None, threads: int | None, cases: str | None
) -> tuple[Router, GateFactory]:
    """The router and the cascade gates of `loaded`, whose building is what refuses a
    registry whose files (trained artifacts, encoders, keys in the environment) are wrong
    or missing; with `cases`, one that fails its routing cases."""
    router = Router(loaded, encoder=encoder, encoder_threads=threads)
    if cases is not None:
        try:
            check_cases(router, cases)
        except BaseException:
            router.close()  # an encoder it built; the running version's it shares is left
            raise
    # Learned cascade gates loaded with the router, so a bad artifact rejects the registry.
    return router, router.gate_factory()


@dataclass(frozen=True, slots=True)
class Prepared:
    """A first load done before the server starts (`llmroute serve` builds it so that a
    registry that cannot be served fails with one line, not a lifespan traceback): the
    file's fingerprint taken before it was read, its router and gates."""

    seen: Fingerprint | None
    router: Router
    gates: GateFactory


def check_cases(router: Router, path: str) -> None:
    """Run the routing cases at `path` against `router`; `ConfigError` naming the
    failures when any fails (a registry that breaks its own policy is not served)."""
    from llmroute.evaluate.cases import run_cases
    from llmroute.registry.cases import load_cases

    results = run_cases(router, load_cases(path, router.loaded.registry))
    failed = [r for r in results if not r.passed]
    if failed:
        shown_cases = "; ".join(f"{r.label}: {r.failures[0]}" for r in failed[:3])
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        raise ConfigError(
            f"{len(failed)} of {len(results)} routing cases fail: {shown_cases}{more}",
            file=path,
        )


def warn_unset_credentials(registry: Registry, environ: Mapping[str, str] | None = None) -> None:
    """One warning per HTTP provider whose `api_key_env` or `headers_env` names a
    variable that is unset: its requests would go without that credential (and come
    back 401) while the rest of the pool works, so the gateway starts and says so."""
    env = os.environ if environ is None else environ
    for name, spec in registry.providers.items():
        if spec.kind == "llamacpp":
            continue
        if spec.kind == "bedrock":  # a key, or a pair of AWS keys
            missing = missing_credentials(spec, env)
            unset = [missing] if missing else []
        else:
            unset = unset_credentials(spec.api_key_env, spec.headers_env, env)
        if unset:
            log.warning(
                "provider %r: environment variable%s %s not set; its requests go without it",
                name,
                "s" * (len(unset) > 1),
                ", ".join(unset) + (" are" if len(unset) > 1 else " is"),
            )


def warn_registry(registry: Registry, workers: int = 1) -> None:
    """The load's warnings: provider credentials that are unset, what `llmroute registry
    check` warns about (an example taught as two routes), and conversation affinity or
    responses kept in each of several workers' memory (a conversation's turns reach any
    worker), or limits counted in each worker's (they add up)."""
    warn_unset_credentials(registry)
    for warning in lint(registry):
        log.warning("registry: %s", warning)
    if workers > 1 and registry.affinity is not None and registry.affinity.url == "memory":
        log.warning(
            "registry: affinity: each of the %d workers remembers conversations in its own "
            "memory, and a conversation's turns reach any of them; give affinity a Redis url",
            workers,
        )
    if (
        workers > 1
        and registry.stored_responses is not None
        and registry.stored_responses.url == "memory"
    ):
        log.warning(
            "registry: stored_responses: each of the %d workers keeps responses in its own "
            "memory, and a request continuing one (or polling a background one) may reach "
            "another worker; give "
            "stored_responses a Redis url",
            workers,
        )
    counted = _counted_in_memory(registry) if workers > 1 else ()
    if counted:
        log.warning(
            "registry: dispatch.limits: each of the %d workers counts %s in its own memory, "
            "so together they let up to %d times the limits through; give dispatch.limits "
            "a Redis url (or divide each limit by the workers)",
            workers,
            ", ".join(counted),
            workers,
        )
    if workers > 1 and registry.batches is not None and registry.batches.url == "memory":
        log.warning(
            "registry: batches: each of the %d workers keeps files and batches in its own "
            "memory, and a request for one may reach another worker; give batches a Redis url",
            workers,
        )


async def say_redis(registry: Registry) -> None:
    """One line per Redis URL `registry`'s features open, as each check ends (a Redis
    that does not answer is said within `CHECK_S`, 2 s): INFO when it answers, a
    WARNING saying what is wrong when it cannot be used, or when it answers slower than
    a feature using it waits (its ``timeout_s``: `RedisCheck.outlasted`). Run beside serving, never
    before it: the gateway serves meanwhile, and serves on without that Redis, each
    feature as when Redis goes down (docs/gateway.md). Never raises."""
    try:
        uses = redis_uses(registry)
        await asyncio.gather(*(_say_redis(use) for use in uses))
    except Exception:  # a bug here must not take the server down
        log.exception("checking the registry's Redis failed")


async def _say_redis(use: RedisUse) -> None:
    check = await check_redis(use)
    settings = ", ".join(use.settings)
    if check.problem is None and check.outlasted:
        log.warning(
            "redis %s (%s): answered, but %s: calls slower than that time out, each taken "
            "for Redis down",
            use.masked,
            settings,
            check.outlasted_text(),
        )
        return
    if check.problem is None:
        log.info("redis %s (%s): answered in %.1f ms", use.masked, settings, check.latency_ms)
        return
    log.warning(
        "redis %s (%s) cannot be used: %s; serving without it until it answers, each of "
        "these as when Redis is down",
        use.masked,
        settings,
        check.problem,
    )


def _counted_in_memory(registry: Registry) -> tuple[str, ...]:
    """The limits `registry` sets that ``dispatch.limits`` counts, when it counts them in
    each process's memory (nothing when it names a Redis)."""
    if registry.dispatch.limits.url != "memory":
        return ()
    keys = registry.auth.keys if registry.auth is not None else ()
    deployments = [d for m in registry.models.values() for d in m.targets()]
    found = {
        "client keys' rpm": any(k.rpm for k in keys),
        "client keys' tpm": any(k.tpm for k in keys),
        "client keys' budgets": any(k.budget for k in keys),
        "models' budgets": any(m.budget for m in registry.models.values()),
        "deployments' rpm": any(d.rpm for d in deployments),
        "deployments' tpm": any(d.tpm for d in deployments),
        "deployments' max_in_flight": any(d.max_in_flight for d in deployments),
    }
    return tuple(name for name, present in found.items() if present)


async def open_gateway(
    built: Built,
    max_body_bytes: int,
    state: State | None = None,
    replacing: Gateway | None = None,
) -> Gateway:
    """The gateway for a freshly built router; with `state` (the app's), its shadow
    runner stores what it judged in the app's decision log and counts in its metrics;
    `replacing` (a reload), the gateway it replaces, whose circuit breakers go on."""
    router, providers, gates = built
    metrics = getattr(state, "metrics", None)
    tracing = getattr(state, "tracing", None)
    observer = Observers.of(
        metrics if isinstance(metrics, GatewayMetrics) else None,
        tracing.observer if isinstance(tracing, Tracing) else None,
    )
    try:
        dispatcher = Dispatcher(
            router.loaded.registry,
            providers,
            observer=observer,
            gates=gates,
            replacing=replacing.dispatcher if replacing is not None else None,
        )
    except BaseException:
        for provider in providers.values():
            await provider.aclose()
        raise
    registry = router.loaded.registry
    try:
        try:
            auth = KeyTable.build(registry.auth) if registry.auth is not None else None
        except ConfigError as exc:  # a key's variable: named at its line in the file
            raise router.loaded.at(exc) from None
        cache = ResponseCache.open(
            registry,
            router.version,
            on_result=metrics.cache if isinstance(metrics, GatewayMetrics) else None,
        )
        affinity = Affinity.open(
            registry,
            metrics.affinity if isinstance(metrics, GatewayMetrics) else None,
            metrics.state_error("affinity") if isinstance(metrics, GatewayMetrics) else None,
        )
        responses = ResponseStore.open(
            registry, metrics.stored_responses if isinstance(metrics, GatewayMetrics) else None
        )
        batches = BatchStore.open(registry)
    except BaseException:
        await dispatcher.aclose()
        raise
    budgets = registry.auth is not None and any(
        k.budget is not None or k.tpm is not None for k in registry.auth.keys
    )
    limits = dispatcher.limits
    return Gateway(
        router,
        dispatcher,
        max_body_bytes,
        _shadow_runner(router, dispatcher, state),
        _llm_router(router, dispatcher, metrics),
        cache,
        auth,
        Charges(limits) if budgets and limits is not None else None,
        affinity=affinity,
        responses=responses,
        batches=batches,
    )


def _llm_router(router: Router, dispatcher: Dispatcher, metrics: object) -> LlmRouter | None:
    settings = router.loaded.registry.llm_fallback
    if settings is None or not settings.enabled:
        return None
    on_outcome = metrics.llm_router if isinstance(metrics, GatewayMetrics) else None
    return LlmRouter(settings, router.loaded.registry, dispatcher, on_outcome=on_outcome)


def _shadow_runner(
    router: Router, dispatcher: Dispatcher, state: State | None
) -> ShadowRunner | None:
    settings = router.loaded.registry.shadow
    if settings is None or state is None:
        return None

    async def write(record: ShadowRecord) -> None:
        telemetry = getattr(state, "telemetry", None)
        if isinstance(telemetry, Telemetry):
            await telemetry.add_shadow(record)

    metrics = getattr(state, "metrics", None)
    on_outcome = metrics.shadow if isinstance(metrics, GatewayMetrics) else None
    return ShadowRunner(
        settings, dispatcher, router.loaded.registry, write=write, on_outcome=on_outcome
    )


def one_line(exc: LlmrouteError) -> str:
    """The error on one log line: the problems of a `ConfigErrors` (the first 100, and
    how many more), ``; ``-separated."""
    return str(exc).replace("\n", "; ")


def changes(old: Registry, new: Registry) -> str:
    """What a reload changed, in a few words for its log line: the routes, models and
    providers added (+), removed (-) or edited (~) by name, then the other sections
    edited (``auth``, ``dispatch``, ...)."""
    said: list[str] = []
    named = (
        ("routes", {r.name: r for r in old.routes}, {r.name: r for r in new.routes}),
        ("models", old.models, new.models),
        ("providers", old.providers, new.providers),
    )
    for section, before, after in named:
        moved = [f"+{n}" for n in after if n not in before]
        moved += [f"-{n}" for n in before if n not in after]
        moved += [f"~{n}" for n in after if n in before and after[n] != before[n]]
        if moved:
            said.append(f"{section} {' '.join(moved)}")
    for section in type(new).model_fields:
        named_above = section in ("routes", "models", "providers")
        if not named_above and getattr(old, section) != getattr(new, section):
            said.append(section)
    return "; ".join(said) or "no setting"


class Reloader:
    """Keeps ``state.gateway`` in step with the registry file at `path`; polls every
    `interval_s` seconds (None: only on SIGHUP, via `kick`)."""

    def __init__(
        self, state: State, path: str, settings: ServeSettings, first: Prepared | None = None
    ) -> None:
        self._state = state
        self._first = first
        self._path = path
        self._max_body_bytes = settings.max_body_bytes
        self._threads = settings.encoder_threads
        self._interval_s = settings.reload_interval_s or None
        self._cases = settings.cases
        self._workers = settings.workers
        self._kicked = asyncio.Event()
        self._seen: Fingerprint | None = None  # the file as last loaded (or refused)
        self._looked: Fingerprint | None = None  # the file at the last check
        self._unreadable_since: float | None = None  # when the file could not be read
        self._said_unreadable = False
        self._retiring: list[Gateway] = []
        self._retiring_logs: dict[Gateway, Telemetry] = {}  # closed when their gateway is
        self._closing_by = NEVER  # the shutdown's, once it has begun (`stopping`)
        # the closes of retiring gateways, and of their decision logs, under way
        # (`_retire`), cut at that deadline
        self._closing: set[anyio.CancelScope] = set()
        self._closing_logs: set[Telemetry] = set()

    @property
    def current(self) -> Gateway:
        gateway = self._state.gateway
        assert isinstance(gateway, Gateway)
        return gateway

    async def load_first(self) -> None:
        """The startup load: an invalid registry raises, and the server does not start."""
        first, self._first = self._first, None
        built: Built | None
        if first is None:
            self._seen = await anyio.to_thread.run_sync(fingerprint, self._path)
            built = await anyio.to_thread.run_sync(
                build, self._path, self._threads, None, self._cases
            )
        else:
            self._seen = first.seen
            registry, base_dir = first.router.loaded.registry, first.router.loaded.base_dir
            providers = await anyio.to_thread.run_sync(
                functools.partial(build_providers, registry, base_dir=base_dir)
            )
            built = first.router, providers, first.gates
        assert built is not None
        self._state.gateway = await open_gateway(built, self._max_body_bytes, self._state)
        log.info("serving %s", headline(built[0].loaded))
        await anyio.to_thread.run_sync(warn_registry, built[0].loaded.registry, self._workers)
        # What is loaded by now (the modules, the first registry) lives as long as the
        # server: out of the collector's generations, a full collection during a reload
        # no longer walks it on the event loop's time (50-115 ms at 300 routes, 5-38
        # after, on a busy machine). Garbage is collected first so as not to keep it;
        # the first registry's few reference cycles stay until shutdown once replaced.
        gc.collect()
        gc.freeze()

    def kick(self) -> None:
        """Reload now (the SIGHUP handler), whether or not the file looks changed."""
        self._kicked.set()

    async def watch(self, tasks: TaskGroup) -> None:
        """Poll (or wait for a kick), then reload; never raises, so it cannot take the
        server down with it."""
        while True:
            forced = await self._wait()
            loaded = self._seen
            try:
                if await self._changed() or forced:
                    self._seen = self._looked or self._seen
                    settled = None if forced or self._looked is None else self._looked.digest
                    await self.reload("SIGHUP" if forced else "file changed", tasks, settled)
            except ChangedWhileRead:  # checked again until two checks agree once more
                self._seen = loaded
                log.info("registry file changed while it was read: loading it once it settles")
            except Exception:
                log.exception("registry reload failed; still serving %s", self.current.version)

    async def reload(self, reason: str, tasks: TaskGroup, settled: str | None = None) -> None:
        """Load the file (with `settled`, only as the checks found it: see `build`) and,
        when it is valid and changed, swap the gateway."""
        old = self.current
        try:
            built = await anyio.to_thread.run_sync(
                build, self._path, self._threads, old.router, self._cases, settled
            )
        except LlmrouteError as exc:
            log.error(
                "registry reload (%s) rejected, still serving version %s: %s",
                reason,
                old.version,
                one_line(exc),
            )
            return
        if built is None:
            log.info("registry reload (%s): version %s unchanged", reason, old.version)
            # checked again all the same: an operator who fixed Redis (or the network)
            # sends SIGHUP for a fresh check line
            tasks.start_soon(say_redis, old.router.loaded.registry)
            return
        try:
            new = await open_gateway(built, self._max_body_bytes, self._state, replacing=old)
        except LlmrouteError as exc:  # e.g. a client key's variable unset
            log.error(
                "registry reload (%s) rejected, still serving version %s: %s",
                reason,
                old.version,
                one_line(exc),
            )
            return
        settings = new.router.loaded.registry.telemetry
        try:
            if settings != old.router.loaded.registry.telemetry:
                retired_log = await self._swap_telemetry(settings)
                if retired_log is not None:
                    self._retiring_logs[old] = retired_log
        except BaseException:
            # cut before the swap (the shutdown's cancel, come while the build ran):
            # `new` never serves, and is closed, or its limits were the heir of the
            # retiring version's give-backs, and its clients were left open
            with anyio.CancelScope(shield=True):
                await new.aclose(self._closing_by)
            raise
        self._state.gateway = new  # the swap: requests from now on get `new`
        log.info(
            "registry reloaded (%s): version %s → %s (%s)",
            reason,
            old.version,
            new.version,
            changes(old.router.loaded.registry, new.router.loaded.registry),
        )
        if old.router.loaded.registry.auth is not None and new.router.loaded.registry.auth is None:
            log.warning(
                "registry version %s has no auth section: requests are served without a "
                "client key from now on",
                new.version,
            )
        runs = getattr(self._state, "batch_runs", None)
        if isinstance(runs, BatchRuns):
            follow_reload(runs, old, new)
        self._retiring.append(old)
        tasks.start_soon(self._retire, old)
        tasks.start_soon(say_redis, new.router.loaded.registry)
        # in a thread: the lint reads every example (60-400 ms at 300 routes / 15k examples),
        # which on the event loop stalled every request the new registry had just taken;
        # a reload that left the examples as they were reuses their warnings (lint.py)
        await anyio.to_thread.run_sync(warn_registry, new.router.loaded.registry, self._workers)

    async def _swap_telemetry(self, settings: TelemetrySettings) -> Telemetry | None:
        """Open the decision log the reloaded registry asks for and make it current; the
        one it replaces (returned) is closed once the old gateway's requests are done,
        so none of their records is lost. A log that cannot be opened keeps the old."""
        current = getattr(self._state, "telemetry", None)
        metrics = getattr(self._state, "metrics", None)
        if not isinstance(current, Telemetry) or not isinstance(metrics, GatewayMetrics):
            return None
        try:
            fresh = await anyio.to_thread.run_sync(Telemetry.open, settings, metrics)
        except LlmrouteError as exc:
            log.error("decision log settings not applied, still logging as before: %s", exc)
            return None
        self._state.telemetry = fresh
        log.info("decision log settings changed: the new log takes the next requests")
        return current

    def stopping(self, by: Deadline) -> None:
        """The shutdown has begun: a retiring gateway whose last request ends from now
        on (one cut by the graceful timeout) closes by `by` too, as `aclose` closes
        the others, instead of taking each step's own bound after the decision log
        closed. One already closing (its last request ended in the graceful timeout),
        which took each step's own bound, is cut when `by` comes, and so is the close
        of the decision log retired with it (by a reload that changed the log's
        settings), which says what it did not write."""
        self._closing_by = by
        for scope in self._closing:
            scope.deadline = min(scope.deadline, anyio.current_time() + by.left())
        for retired_log in self._closing_logs:
            retired_log.hurry(by.left())

    async def aclose(self, by: Deadline = NEVER) -> None:
        """Close every gateway still open (the current one and any still retiring), then
        the decision logs retiring with them, all by `by` (one deadline for them all,
        each step of theirs taking what the ones before it left); again, only what
        opened since (a reload that finished meanwhile). The app's shutdown calls it
        before it closes the current decision log, which the gateways' shadows still
        write to as they end."""
        gateways = [*self._retiring, self._state.gateway]
        self._retiring.clear()
        self._state.gateway = None
        retired_logs: list[Telemetry] = []
        for gateway in gateways:
            if isinstance(gateway, Gateway):
                await gateway.aclose(by)
                retired_log = self._retiring_logs.pop(gateway, None)
                if retired_log is not None:
                    retired_logs.append(retired_log)
        if retired_logs:  # together: each says what it could not write in time
            within_s = by.bounded(_LOG_CLOSE_S)
            await asyncio.gather(*(retired.aclose(within_s) for retired in retired_logs))

    async def _wait(self) -> bool:
        """Sleep one interval or until kicked; True when kicked."""
        with anyio.move_on_after(self._interval_s):
            await self._kicked.wait()
        forced = self._kicked.is_set()
        self._kicked.clear()
        return forced

    async def _changed(self) -> bool:
        """Whether the file's content differs from what was last loaded and is what the
        check before this one found too: a file still being written (not replaced
        atomically) is not loaded half-way, though its first part may be a valid
        registry (one without its last section, `auth` say)."""
        looked = self._looked or self._seen
        seen = await anyio.to_thread.run_sync(fingerprint, self._path, looked)
        self._say_unreadable(seen is None)
        if seen is None:
            return False
        self._looked = seen
        if self._seen is not None and seen.digest == self._seen.digest:
            return False
        return looked is not None and seen.digest == looked.digest

    def _say_unreadable(self, unreadable: bool) -> None:
        """Log once when the file has been gone or unreadable for `_UNREADABLE_S` (not
        for an editor's delete and rename), and once when it is back: the old registry
        serves meanwhile, and an operator must know edits are not being read."""
        if not unreadable:
            if self._said_unreadable:
                log.warning("registry file %s can be read again", self._path)
            self._unreadable_since, self._said_unreadable = None, False
            return
        now = time.monotonic()
        if self._unreadable_since is None:
            self._unreadable_since = now
        elif not self._said_unreadable and now - self._unreadable_since >= _UNREADABLE_S:
            self._said_unreadable = True
            log.warning(
                "registry file %s is gone or cannot be read: still serving version %s, "
                "and no edit is read until it is back",
                self._path,
                self.current.version,
            )

    async def _retire(self, old: Gateway) -> None:
        """Close `old`'s clients once no request is using them (by the shutdown's
        deadline, once it has begun: `stopping`)."""
        await old.inflight.wait_idle()
        if old not in self._retiring:
            return  # closed at shutdown
        self._retiring.remove(old)
        retired_log = self._retiring_logs.pop(old, None)
        with anyio.CancelScope(shield=True):
            closing = anyio.CancelScope()  # `stopping` cuts it at the shutdown's deadline
            self._closing.add(closing)
            try:
                with closing:
                    await old.aclose(self._closing_by)
            finally:
                self._closing.discard(closing)
            if closing.cancelled_caught:
                log.warning(
                    "stopping: registry version %s, retiring, was still closing at the "
                    "shutdown's deadline: cut; what it had not finished (charges, "
                    "give-backs, cache writes) is dropped",
                    old.version,
                )
            if retired_log is not None:
                self._closing_logs.add(retired_log)  # `stopping` hurries it
                try:
                    await retired_log.aclose(self._closing_by.bounded(_LOG_CLOSE_S))
                finally:
                    self._closing_logs.discard(retired_log)
        if closing.cancelled_caught:
            return
        log.info(
            "registry version %s retired: its last request finished, its clients are closed",
            old.version,
        )


@contextmanager
def on_sighup(callback: Callable[[], None]) -> Iterator[None]:
    """Call `callback` on SIGHUP while inside; a no-op off the main thread (where
    signals cannot be handled) and on platforms without SIGHUP."""
    sighup = getattr(signal, "SIGHUP", None)
    if sighup is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(sighup)
    try:
        loop.add_signal_handler(sighup, callback)
    except (NotImplementedError, RuntimeError, ValueError):
        log.warning("cannot handle SIGHUP here; the registry reloads on file changes only")
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(sighup)
        if previous is not None:
            signal.signal(sighup, previous)


@asynccontextmanager
async def reloading(
    state: State, path: str, settings: ServeSettings, first: Prepared | None = None
) -> AsyncIterator[Reloader]:
    """Load the registry into ``state.gateway`` (`first`, when it was prepared before
    the server started) and keep it current until exit, each load's Redis checked
    beside serving (`say_redis`); then close every gateway's clients."""
    reloader = Reloader(state, path, settings, first)
    await reloader.load_first()
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(say_redis, reloader.current.router.loaded.registry)
            tasks.start_soon(reloader.watch, tasks)
            with on_sighup(reloader.kick):
                try:
                    yield reloader
                finally:
                    tasks.cancel_scope.cancel()
    finally:
        await reloader.aclose()
        gc.unfreeze()  # collectable again (a process may serve more than once: tests)
