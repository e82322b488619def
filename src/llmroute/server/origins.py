"""The CORS origins the gateway allows, checked and written as browsers send them.

One function for both ways they arrive: ``--cors-origin`` (the CLI, which fails the
start with one line) and ``$LLMROUTE_CORS_ORIGINS`` (the workers' settings, and
``uvicorn --factory llmroute.server.app:app_from_env`` run by hand, which no CLI
checks). Starlette compares an allowed origin with the page's ``Origin`` byte for byte,
so one given as ``https://Chat.Example.com:443`` or ``https://*.example.com`` would be
taken and match no page ever. Free of the web stack (the CLI imports it)."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["checked_origins"]

_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
# RFC 3986's scheme: pages of desktop and mobile apps and browser extensions send theirs
# (tauri://localhost, capacitor://localhost, chrome-extension://<id>)
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


def checked_origins(values: Iterable[str], source: str) -> tuple[str, ...]:
    """`values` as browsers write ``Origin`` (lowercase, no trailing ``/``, no default
    port), ``*`` for any; ValueError naming `source` (``--cors-origin``,
    ``$LLMROUTE_CORS_ORIGINS``) and the value for one that is not ``scheme://host[:port]``
    or holds a wildcard. Blank values (``a,b,`` in the variable) are skipped."""
    origins = []
    for value in values:
        origin = value.strip().rstrip("/").lower()
        if not origin:
            continue
        if origin == "*":
            origins.append(origin)
            continue
        scheme, sep, rest = origin.partition("://")
        if not sep or not _SCHEME.fullmatch(scheme) or not rest or "/" in rest or "," in rest:
            raise ValueError(
                f"{source} {value!r}: give an origin such as https://app.example.com "
                "(scheme and host, no path), or '*'"
            )
        if "*" in rest:
            raise ValueError(
                f"{source} {value!r}: an origin is matched whole, with no wildcards: "
                "give each origin, or '*' for any"
            )
        origins.append(origin.removesuffix(_DEFAULT_PORTS.get(scheme, "\0")))
    return tuple(origins)
