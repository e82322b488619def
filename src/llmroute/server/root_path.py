"""``--root-path``: the gateway served under a path prefix that its proxy passes on.

A proxy that serves the gateway at ``https://llm.example.com/llm/`` either strips the
prefix (nginx's ``proxy_pass http://gateway/;``, with its trailing ``/``: the gateway is
asked ``/v1/models``) or passes it on (``proxy_pass http://gateway;``, an ingress or
Traefik route without a rewrite: the gateway is asked ``/llm/v1/models``). For the
second, `StripRootPath` takes the prefix off before anything else reads the path, so
every check after it (the paths answered to anyone, the admin paths where Basic
credentials count, the API paths a key's limits count) compares the same path the
routes match: ``/llm/health`` is ``/health``. A path without the prefix is served as it
is (a kubelet's health check, the pod's own address).

Not uvicorn's ``root_path``: that one is for the first kind of proxy (uvicorn adds the
prefix to every path it is asked, and Starlette takes it off again to route), and a path
asked with the prefix is then a 404. The ASGI ``root_path`` is left as it is, so that
Starlette routes on exactly the path the checks saw (with ``root_path`` set to the
prefix, it would take a second one off ``/llm/llm/dashboard`` after the checks had
compared it whole).

Free of the web stack at import (the CLI checks the option with `root_path_problem`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "GATEWAY_SEGMENTS",
    "ROOT_PATH_ENV",
    "STRIPPED",
    "StripRootPath",
    "asked_path",
    "paths_as_asked",
    "root_path_problem",
]

ROOT_PATH_ENV = "LLMROUTE_ROOT_PATH"  # also --root-path's
# the scope key of the prefix `StripRootPath` took off the request's path
STRIPPED = "llmroute.root_path"
# The first segment of every path the gateway serves: a prefix starting with one would
# take the gateway's own paths for its (/v1 would make /v1/models /models).
GATEWAY_SEGMENTS = frozenset({"v1", "v2", "metrics", "dashboard", "health", "ready", "favicon.ico"})
# a segment: RFC 3986's unreserved characters, which no proxy encodes or decodes (no
# '%': the path the gateway compares is decoded; nothing a shell or nginx reads)
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
# a call an error message tells the client to make: a method, then one of the gateway's
# own paths (``GET /v1/models``, ``POST /v1/embeddings``); not one already prefixed
_CALL = re.compile(
    r"\b(GET|POST|PUT|PATCH|DELETE) (/(?:"
    + "|".join(re.escape(s) for s in sorted(GATEWAY_SEGMENTS))
    + r")(?=[/\s),;:.'\"]|$))"
)


def root_path_problem(value: str) -> str | None:
    """Why `value` cannot be a --root-path (None: it can): it starts with ``/``, has no
    trailing ``/``, and each of its segments is plain (no ``?``, ``#``, ``%``, spaces,
    ``.`` or ``..``, nothing empty); its first is none of the gateway's own."""
    if not value.startswith("/") or value.endswith("/"):
        return "it must start with '/' and not end with one"
    segments = value[1:].split("/")
    for segment in segments:
        if segment in ("", ".", "..") or _SEGMENT.fullmatch(segment) is None:
            return (
                "each part must be letters, digits or - . _ ~ (no '?', '#', '%', spaces, "
                "'//', '.' or '..')"
            )
    if segments[0] in GATEWAY_SEGMENTS:
        return f"the gateway's own paths start with /{segments[0]}"
    return None


class StripRootPath:
    """ASGI middleware, outermost: a request for `prefix` or below it goes on with the
    prefix taken off its path (``/llm/v1/models``: ``/v1/models``; ``/llm``: ``/``);
    any other goes on unchanged. The scope is copied, so uvicorn's access line shows the
    path as asked; the prefix taken off is kept in it (`STRIPPED`, `asked_path`)."""

    def __init__(self, app: ASGIApp, *, prefix: str) -> None:
        self.app = app
        self._prefix = prefix
        self._below = prefix + "/"
        self._raw_below = self._below.encode("ascii")  # plain: `root_path_problem`

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(self._below) or path == self._prefix:
                scope = dict(scope)
                scope["path"] = path[len(self._prefix) :] or "/"
                scope[STRIPPED] = self._prefix
                raw = scope.get("raw_path")
                if isinstance(raw, bytes) and raw.startswith(self._raw_below):
                    scope["raw_path"] = raw[len(self._prefix) :]
                else:  # the prefix asked percent-encoded, or the bare prefix
                    scope["raw_path"] = scope["path"].encode("utf-8")
        await self.app(scope, receive, send)


def asked_path(scope: Scope, path: str) -> str:
    """`path` (one the gateway serves: the request's, or one an error names for the
    client to call) as the client reaches it: with the prefix when the request came
    through it, for the proxy that passes it on serves nothing without it."""
    prefix = scope.get(STRIPPED)
    return path if prefix is None else f"{prefix}{path}"


def paths_as_asked(text: str, scope: Scope) -> str:
    """`text` (an error message) with each call it names (``GET /v1/models lists
    them``) as the client makes it (`asked_path`): messages written where no request is
    at hand (the dispatch layer's, which the SDK raises too) name the gateway's own
    paths, and behind ``--root-path`` only the prefixed one is served."""
    if scope.get(STRIPPED) is None:
        return text
    return _CALL.sub(lambda m: f"{m[1]} {asked_path(scope, m[2])}", text)
