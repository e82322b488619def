"""What the gateway answers of the requests browsers send on web pages' behalf.

Whoever can reach the gateway can call it without an ``auth:`` section, and a browser
reaches it for any page its user opens: the gateway on the operator's own machine too.

* **Pages of other origins.** A page of another site can post a form to
  ``http://127.0.0.1:8000/v1/chat/completions`` (``text/plain``: its body JSON) or send
  a ``no-cors`` fetch: it cannot read the answer, but the request is made and paid for.
  Browsers mark every request with ``Sec-Fetch-Site`` (``same-origin``, ``same-site``,
  ``cross-site``, ``none``: typed in, a bookmark) and cross-origin ones and posts with
  ``Origin``; other clients (curl, the SDKs) send neither. A request of a page of
  another origin is a 403 unless ``--cors-origin`` allows that origin; so is one of an
  older browser, without ``Sec-Fetch-Site``, whose ``Origin`` is not the Host it asked.
  127.0.0.1:8000 and 127.0.0.1:3000 are one *site* but two origins: ``same-site`` is
  refused too. A plain link (a ``GET`` that opens a page: ``Sec-Fetch-Mode: navigate``)
  is followed: its page is the gateway's own, out of the linking page's reach.
* **DNS rebinding.** On a loopback address, only requests to a loopback name, or to a
  name given with ``--allowed-host``, are answered (`llmroute.server.hosts`): a 400.
  Where the address listened on is not known (``uvicorn --factory`` without
  ``$LLMROUTE_BIND_HOST``), each request's is: the one its connection came in on
  (ASGI's ``server``), so the check is on there too, not off.

``/health`` and ``/ready`` are answered to anyone. Both checks come after CORS (which
answers the preflights of allowed origins) and before the key check, so a refused
request costs no key's limits; nothing is sent upstream or logged as a decision. Each
refusal is counted (``llmroute_browser_refused_total{reason}``, the error's code); the
first of each reason is logged, then at most one a minute with how many were not
(`llmroute.log_every`: a hostile page repeats its request as fast as it likes): one
warning line, what it repeats of the request bounded and printable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from llmroute.log_every import LogEvery
from llmroute.server.errors import GatewayError, speaks_anthropic
from llmroute.server.hosts import HostNames, is_loopback, shown_host
from llmroute.server.messages_convert import error_response
from llmroute.telemetry.metrics import GatewayMetrics

__all__ = ["ANYONE_PATHS", "GuardBrowsers", "browser_middleware"]

log = logging.getLogger("llmroute.server")

ANYONE_PATHS = frozenset({"/health", "/ready"})
# the requests a browser makes for its own user, not for a page: typed in, a bookmark
_OWN = frozenset({b"same-origin", b"none"})
_SITES = frozenset({*_OWN, b"same-site", b"cross-site"})  # what browsers send in it
_SAFE = frozenset({"GET", "HEAD"})
_EMBEDDED = frozenset({b"object", b"embed"})  # a navigation whose page another page holds
_MARKS = frozenset({b"sec-fetch-site", b"origin"})  # what browsers send, other clients not
_DEFAULT_PORTS = {b"http": b":80", b"https": b":443"}
_LOG_EVERY_S = 60.0  # a refusal's warning, per reason, after the first
_LOCAL_ADDRESSES = 64  # verdicts kept: one per address of this machine's it listens on


def browser_middleware(
    cors_origins: Sequence[str],
    bind_host: str | None,
    allowed_hosts: Sequence[str],
    *,
    server: str = "gateway",
) -> list[Middleware]:
    """The gateway's `GuardBrowsers`, or none when it would check nothing: ``*`` in
    `cors_origins`, and no Host check (`bind_host` not a loopback address, or ``*`` in
    `allowed_hosts`). `bind_host` None (not known): the Host check where a request came
    in on a loopback address. `server` names what refuses, in its answers (``llmroute
    dashboard``'s: ``dashboard``, with `cors_origins` ``*``: the Host check alone)."""
    hosts = None
    if (bind_host is None or is_loopback(bind_host)) and "*" not in allowed_hosts:
        hosts = HostNames(allowed_hosts)
    if "*" in cors_origins and hosts is None:
        return []
    return [
        Middleware(
            GuardBrowsers,
            cors_origins=cors_origins,
            hosts=hosts,
            by_address=bind_host is None,
            server=server,
        )
    ]


class GuardBrowsers:
    """ASGI middleware: the module docstring's two checks. `hosts`: the Host names
    answered (None: any); `by_address`: only on requests that came in on a loopback
    address; `server`: what the answers call this server."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        cors_origins: Sequence[str],
        hosts: HostNames | None,
        by_address: bool = False,
        server: str = "gateway",
    ) -> None:
        self.app = app
        self._any_origin = "*" in cors_origins
        self._origins = frozenset(origin.encode("latin-1") for origin in cors_origins)
        self._hosts = hosts
        self._by_address = by_address
        self._loopback: dict[object, bool] = {}  # a local address's verdict
        self._server = server
        self._log_every = LogEvery(_LOG_EVERY_S)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in ANYONE_PATHS:
            await self.app(scope, receive, send)
            return
        error = self._refusal(scope)
        if error is None:
            await self.app(scope, receive, send)
            return
        _said(scope, error, self._log_every)
        if speaks_anthropic(scope):
            await error_response(error)(scope, receive, send)
        else:
            await error.response()(scope, receive, send)

    def _refusal(self, scope: Scope) -> _Refused | None:
        """Why the request is refused, or None. A request with neither Sec-Fetch-Site
        nor Origin (curl, the SDKs) costs one pass over its headers."""
        host: bytes | None = None
        marked = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name in _MARKS:
                marked = True
        if (
            self._hosts is not None
            and (not self._by_address or self._came_to_loopback(scope))
            and not self._hosts.answers(host)
        ):
            return _not_a_host_of_ours(host, self._server)
        if not marked or self._any_origin:
            return None
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if origin is not None and origin in self._origins:
            return None
        site = headers.get(b"sec-fetch-site")
        if site is not None:
            if site in _OWN or (
                headers.get(b"sec-fetch-mode") == b"navigate"
                and scope["method"] in _SAFE
                and headers.get(b"sec-fetch-dest") not in _EMBEDDED
            ):
                return None
            return _another_origin(origin, site)
        if origin is not None and not _same_origin(origin, host):
            return _another_origin(origin, None)
        return None

    def _came_to_loopback(self, scope: Scope) -> bool:
        """Whether the request's connection came in on a loopback address (uvicorn's
        ``server``: the socket's own; None on a Unix socket, which no page reaches)."""
        server = scope.get("server")
        address = server[0] if server else None
        verdict = self._loopback.get(address)
        if verdict is None:
            verdict = isinstance(address, str) and is_loopback(address)
            if len(self._loopback) < _LOCAL_ADDRESSES:
                self._loopback[address] = verdict
        return verdict


def _same_origin(origin: bytes, host: bytes | None) -> bool:
    """Whether `origin` (``scheme://host[:port]``) names the server at `host` (a Host
    header), default ports aside."""
    if host is None:
        return False
    scheme, sep, authority = origin.lower().partition(b"://")
    if not sep:
        return False  # "null": a sandboxed page, a file
    host = host.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None:
        authority = authority.removesuffix(default)
        host = host.removesuffix(default)
    return authority == host


def _shown(value: bytes) -> str:
    text = value.decode("latin-1")[:200]
    return text if text.isprintable() else "(an origin with unprintable characters)"


class _Refused(GatewayError):
    """A refusal's answer, and what the log line says of the request (`seen`: bounded,
    printable)."""

    def __init__(self, status: int, message: str, code: str, seen: str) -> None:
        super().__init__(status, message, code=code)
        self.seen = seen


def _said(scope: Scope, refused: _Refused, log_every: LogEvery) -> None:
    """Count `refused` (its code the reason) and log it, when `log_every` says so."""
    reason = str(refused.code)
    metrics = getattr(scope["app"].state, "metrics", None) if "app" in scope else None
    if isinstance(metrics, GatewayMetrics):
        metrics.browser_refused(reason)
    held = log_every.due(reason)
    if held is None:
        return
    client = scope.get("client")
    log.warning(
        "refused %s %s from %s (%s %d): %s%s",
        scope["method"],
        _printable(scope["path"], 100),
        "(unknown)" if not client else _printable(str(client[0]), 64),
        refused.code,
        refused.status,
        refused.seen,
        LogEvery.since(held),
    )


def _printable(text: str, limit: int) -> str:
    """`text` as a log line may repeat it: at most `limit` characters, printable."""
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return cut if cut.isprintable() else repr(cut)


def _another_origin(origin: bytes | None, site: bytes | None) -> _Refused:
    if origin is None:
        # a no-cors request (an image, a script) carries no Origin; only its site
        where = f"a page of another {'site' if site == b'cross-site' else 'origin'}"
        allow = "--cors-origin ORIGIN"
    else:
        where = f"a page of another origin ({_shown(origin)})"
        allow = f"--cors-origin {_shown(origin)}"
    seen = f"Origin {'(none)' if origin is None else repr(_shown(origin))}, Sec-Fetch-Site "
    seen += "(none)" if site is None else site.decode() if site in _SITES else "(another value)"
    return _Refused(
        403,
        f"this request came from {where} through a browser, and this gateway answers "
        f"only the pages of the origins --cors-origin allows; start it with {allow} "
        "to let that web app's pages call it",
        "cross_origin_forbidden",
        seen,
    )


def _not_a_host_of_ours(host: bytes | None, server: str) -> _Refused:
    # the names --allowed-host gave are not said: a rebinding page reads this answer
    return _Refused(
        400,
        f"this {server} listens on a loopback address and answers only requests to "
        f"127.0.0.1, localhost, [::1] or a name given with --allowed-host, not to "
        f"{shown_host(host)} (a page of another site whose name was made to resolve to "
        "this machine, or a proxy forwarding its own Host); to answer that name, start "
        "it with --allowed-host NAME (or $LLMROUTE_ALLOWED_HOSTS)",
        "invalid_host",
        f"Host {shown_host(host)}, neither a loopback name nor one --allowed-host gave",
    )
