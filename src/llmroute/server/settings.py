"""`ServeSettings`: what ``llmroute serve`` is told besides the registry. Kept free of
the web stack so the CLI can read it; worker processes get it through the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from llmroute.server.hosts import host_name
from llmroute.server.origins import checked_origins
from llmroute.server.root_path import ROOT_PATH_ENV, root_path_problem

__all__ = [
    "ALLOWED_HOSTS_ENV",
    "BIND_HOST_ENV",
    "CASES_ENV",
    "CORS_ORIGINS_ENV",
    "DASHBOARD_ENV",
    "DEFAULT_ENCODER_THREADS",
    "DEFAULT_GRACEFUL_TIMEOUT_S",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_RELOAD_INTERVAL_S",
    "DEFAULT_SSE_KEEPALIVE_S",
    "ENCODER_THREADS_ENV",
    "GRACEFUL_TIMEOUT_ENV",
    "LOG_FORMAT_ENV",
    "LOG_REQUESTS_ENV",
    "MAX_BODY_ENV",
    "REGISTRY_ENV",
    "RELOAD_INTERVAL_ENV",
    "ROOT_PATH_ENV",
    "SSE_KEEPALIVE_ENV",
    "WORKERS_ENV",
    "ServeSettings",
    "env_choice",
    "env_flag",
    "split_hosts",
]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_RELOAD_INTERVAL_S = 1.0  # how often the registry file is checked for changes
# One encoder thread per worker: requests and workers give the parallelism, and a
# second thread per request cost 55% more CPU for 1 ms less latency (docs/benchmarks.md).
DEFAULT_ENCODER_THREADS = 1
# What requests in flight get to finish after SIGTERM / SIGINT; then they are cancelled
# and the decision log is flushed. Under Kubernetes' default 30 s grace period.
DEFAULT_GRACEFUL_TIMEOUT_S = 25
# A quiet stream gets an SSE comment this often: well under the 60 s after which common
# proxies and load balancers close an idle connection.
DEFAULT_SSE_KEEPALIVE_S = 15.0
REGISTRY_ENV = "LLMROUTE_REGISTRY"  # read by the app factory of multi-worker serving
MAX_BODY_ENV = "LLMROUTE_MAX_BODY_BYTES"
RELOAD_INTERVAL_ENV = "LLMROUTE_RELOAD_INTERVAL"
ENCODER_THREADS_ENV = "LLMROUTE_ENCODER_THREADS"
DASHBOARD_ENV = "LLMROUTE_DASHBOARD"  # "0" leaves /dashboard out
WORKERS_ENV = "LLMROUTE_WORKERS"  # so a worker's dashboard can say its live state is its own
GRACEFUL_TIMEOUT_ENV = "LLMROUTE_GRACEFUL_TIMEOUT"
CORS_ORIGINS_ENV = "LLMROUTE_CORS_ORIGINS"  # comma-separated
CASES_ENV = "LLMROUTE_CASES"  # routing cases every load of the registry must pass
SSE_KEEPALIVE_ENV = "LLMROUTE_SSE_KEEPALIVE"
LOG_REQUESTS_ENV = "LLMROUTE_LOG_REQUESTS"  # serve's --log-requests; the factory reads it too
LOG_FORMAT_ENV = "LLMROUTE_LOG_FORMAT"  # serve's --log-format; the factory reads it too
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})  # as click reads a flag's variable
_FALSE = frozenset({"", "0", "false", "f", "no", "n", "off"})
ALLOWED_HOSTS_ENV = "LLMROUTE_ALLOWED_HOSTS"  # comma-separated; also --allowed-host's
BIND_HOST_ENV = "LLMROUTE_BIND_HOST"  # the --host, for the workers' Host check


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """`reload_interval_s` 0 means: reload on SIGHUP only. `workers` is how many
    processes serve (each holds its own breakers and in-flight count).
    `graceful_timeout_s` is how long requests in flight get to finish on shutdown.
    `cors_origins` are the browser origins allowed to call the API (``*``: any).
    `cases`, a routing cases file (``llmroute registry test``) every load of the
    registry must pass: at start, or the server does not start; on reload, or the running
    registry is kept. `sse_keepalive_s`: a stream that sent nothing for this long gets a
    keep-alive comment (0: never). `bind_host`, the address it listens on (None: not
    known, as under ``uvicorn --factory``, and the address each request came in on
    decides): on a loopback one, only requests to loopback names and to `allowed_hosts`
    are answered (``*`` in it: any name). `root_path`, a
    path prefix a proxy passes on (``/llm``): paths below it are served as without it
    (`llmroute.server.root_path`); None: none."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    reload_interval_s: float = DEFAULT_RELOAD_INTERVAL_S
    encoder_threads: int = DEFAULT_ENCODER_THREADS
    dashboard: bool = True
    workers: int = 1
    graceful_timeout_s: int = DEFAULT_GRACEFUL_TIMEOUT_S
    cors_origins: tuple[str, ...] = ()
    cases: str | None = None
    sse_keepalive_s: float = DEFAULT_SSE_KEEPALIVE_S
    bind_host: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    root_path: str | None = None

    def to_env(self) -> dict[str, str]:
        return {
            MAX_BODY_ENV: str(self.max_body_bytes),
            RELOAD_INTERVAL_ENV: str(self.reload_interval_s),
            ENCODER_THREADS_ENV: str(self.encoder_threads),
            DASHBOARD_ENV: "1" if self.dashboard else "0",
            WORKERS_ENV: str(self.workers),
            GRACEFUL_TIMEOUT_ENV: str(self.graceful_timeout_s),
            CORS_ORIGINS_ENV: ",".join(self.cors_origins),
            CASES_ENV: self.cases or "",
            SSE_KEEPALIVE_ENV: str(self.sse_keepalive_s),
            BIND_HOST_ENV: self.bind_host or "",
            ALLOWED_HOSTS_ENV: ",".join(self.allowed_hosts),
            ROOT_PATH_ENV: self.root_path or "",
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServeSettings:
        env = os.environ if environ is None else environ
        return cls(
            max_body_bytes=_number(env, MAX_BODY_ENV, int, DEFAULT_MAX_BODY_BYTES, 1),
            reload_interval_s=_number(
                env, RELOAD_INTERVAL_ENV, float, DEFAULT_RELOAD_INTERVAL_S, 0
            ),
            encoder_threads=_number(env, ENCODER_THREADS_ENV, int, DEFAULT_ENCODER_THREADS, 1),
            dashboard=(env.get(DASHBOARD_ENV) or "1").strip().lower() not in ("0", "false", "off"),
            workers=_number(env, WORKERS_ENV, int, 1, 1),
            graceful_timeout_s=_number(
                env, GRACEFUL_TIMEOUT_ENV, int, DEFAULT_GRACEFUL_TIMEOUT_S, 0
            ),
            cors_origins=checked_origins(
                (env.get(CORS_ORIGINS_ENV) or "").split(","), f"${CORS_ORIGINS_ENV}"
            ),
            cases=env.get(CASES_ENV) or None,
            sse_keepalive_s=_number(env, SSE_KEEPALIVE_ENV, float, DEFAULT_SSE_KEEPALIVE_S, 0),
            bind_host=env.get(BIND_HOST_ENV) or None,
            allowed_hosts=split_hosts(env.get(ALLOWED_HOSTS_ENV) or ""),
            root_path=_root_path(env.get(ROOT_PATH_ENV) or None),
        )


N = TypeVar("N", int, float)


def _number(env: Mapping[str, str], name: str, kind: type[N], default: N, least: N) -> N:
    """The number variable `name` holds (`default` when unset or empty); a `ValueError`
    naming the variable and its value for one that is not (``int('x')``'s own message
    names neither), or is under `least`, the least its ``serve`` option takes (a
    ``$LLMROUTE_MAX_BODY_BYTES`` of -1 answered every request 413)."""
    raw = env.get(name)
    if not raw:
        return default
    words = "an integer" if kind is int else "a number"
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"${name} {raw[:80]!r}: not {words}") from None
    if value < least:
        raise ValueError(f"${name} {raw[:80]!r}: {words} at least {least}")
    return value


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """The on/off variable `name` (unset: off), read as ``serve`` reads it for its
    option; a `ValueError` naming it for another value."""
    raw = (os.environ if environ is None else environ).get(name, "")
    value = raw.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ValueError(f"${name} {raw[:80]!r}: not on or off (1, true, yes, on / 0, false, no, off)")


def env_choice(
    name: str, choices: tuple[str, ...], environ: Mapping[str, str] | None = None
) -> str:
    """The variable `name`, one of `choices` in any case (unset or empty: the first), as
    ``serve`` reads it for its option; a `ValueError` naming it for another value."""
    raw = (os.environ if environ is None else environ).get(name) or choices[0]
    if (value := raw.strip().lower()) in choices:
        return value
    raise ValueError(f"${name} {raw[:80]!r}: not {' or '.join(choices)}")


def _root_path(value: str | None) -> str | None:
    """``$LLMROUTE_ROOT_PATH``, checked as ``--root-path`` is (the variable also reaches
    ``uvicorn --factory llmroute.server.app:app_from_env``, which no CLI checks): a typo
    would otherwise strip nothing, or take the gateway's own paths."""
    if value is not None and (problem := root_path_problem(value)) is not None:
        raise ValueError(f"${ROOT_PATH_ENV} {value!r}: {problem}")
    return value


def split_hosts(value: str) -> tuple[str, ...]:
    """The names in a comma-separated `value` (``$LLMROUTE_ALLOWED_HOSTS``), each as a
    Host header's name compares (lower case, no port, IPv6 without brackets)."""
    return tuple(host_name(name) for name in value.split(",") if name.strip())
