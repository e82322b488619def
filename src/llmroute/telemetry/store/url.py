"""Telemetry URLs: which one applies (`resolve_telemetry_url`), how to show it without
its password (`mask_url`), and which store opens it (`open_store`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from llmroute.errors import ConfigError

if TYPE_CHECKING:
    from llmroute.registry.schema import TelemetrySettings
    from llmroute.telemetry.store.base import Store

__all__ = [
    "ANSWER_TIMEOUT_S",
    "ENV_VAR",
    "LOG_OFF_HOW",
    "check_store_url",
    "mask_url",
    "open_store",
    "resolve_telemetry_url",
    "sqlite_path",
]

ENV_VAR = "LLMROUTE_TELEMETRY_URL"
# why the decision log is off and how to turn it on, for the errors of what needs it
LOG_OFF_HOW = (
    "(the registry's telemetry.enabled is false, or $LLMROUTE_TELEMETRY_URL is off): turn "
    "it on with telemetry: {enabled: true} in the registry (SQLite ./llmroute-telemetry.db "
    "by default), or $LLMROUTE_TELEMETRY_URL=sqlite:///PATH or postgresql://..."
)
# How long a server process's PostgreSQL call (the gateway's writer batches, feedback,
# shadow rows, the dashboards' reads) waits for its answer before its connection is cut
# (`PostgresStore`'s `answer_timeout_s`). The command line's reports wait as long as
# they take.
ANSWER_TIMEOUT_S = 60.0
_OFF = frozenset({"", "off", "none"})
# a scheme as mistyped too (a blank before it, a slash short): its error shows the URL
_SCHEME = r"^(\s*(?:[A-Za-z][A-Za-z0-9+.-]*:/+)?)"
# up to the last "@" before the path: libpq reads a password up to the first "@" or
# "/" ("#" and "?" are part of it), so one holding those, or an unescaped "@", was shown
_USERINFO = re.compile(_SCHEME + r"([^/]*)@")
# else a scheme, a "user:" and a password holding an unescaped "/", up to the last "@"
# before a query
_SLASHED = re.compile(r"^(\s*[A-Za-z][A-Za-z0-9+.-]*:/+)([^?#@:/]*:[^?#]*)@")
# password, and libpq's sslpassword (the client key's passphrase)
_PASSWORD_PARAM = re.compile(r"(?i)\b(\w*password|passwd)=[^&\s]*")
# keys in a query string: Azure's api-key and code, SAS signatures, access tokens
_SECRET_PARAM = re.compile(r"(?i)([?&;](?:[\w-]*(?:key|token|secret|sig|signature)|code))=[^&#\s]*")
_POSTGRES = ("postgresql://", "postgres://")


def mask_url(url: str) -> str:
    """`url` with any password replaced by ``***`` (userinfo, ``password=`` and
    libpq's ``sslpassword=`` params), and so the values of query parameters that hold
    keys (``api-key``, ``key``, ``code``, ``sig``, ``*token``)."""

    def userinfo(match: re.Match[str]) -> str:
        user, sep, _ = match.group(2).partition(":")
        return f"{match.group(1)}{user}{':***' if sep else ''}@"

    masked, found = _USERINFO.subn(userinfo, url, count=1)
    if not found:
        masked = _SLASHED.sub(userinfo, url, count=1)
    masked = _PASSWORD_PARAM.sub(r"\1=***", masked)
    masked = _SECRET_PARAM.sub(r"\1=***", masked) if "=" in masked else masked
    if masked.isascii():
        return masked
    # a lone surrogate (an environment variable's byte that is no UTF-8, as Python
    # decodes it) written as its escape: a log line or an error holding it cannot be
    # written as UTF-8 (a logging error, a test report that cannot cross to its runner)
    return masked.encode("utf-8", "backslashreplace").decode("utf-8")


def resolve_telemetry_url(
    settings: TelemetrySettings, environ: Mapping[str, str] | None = None
) -> str | None:
    """The decision log's URL, or None when it is off.

    ``$LLMROUTE_TELEMETRY_URL`` wins over ``settings.url`` (and over ``enabled: false``,
    so an operator can turn the log on without editing the registry); its value
    ``off``, ``none`` or blank turns the log off.
    """
    env = os.environ if environ is None else environ
    value = env.get(ENV_VAR)
    if value is None:
        if not settings.enabled:
            return None
        value = settings.url
    value = value.strip()
    return None if value.lower() in _OFF else value


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///PATH`` URL: ``sqlite:///rel/path`` is relative to the
    working directory, ``sqlite:////abs/path`` absolute, ``sqlite:///:memory:`` memory."""
    if not url.startswith("sqlite:///"):
        raise ConfigError(
            f"a SQLite telemetry URL reads sqlite:///PATH (three slashes, then the path), "
            f"not {mask_url(url)!r}"
        )
    path = url.removeprefix("sqlite:///").partition("?")[0]
    if not path:
        raise ConfigError("the SQLite telemetry URL names no file: use sqlite:///PATH")
    return path


def check_store_url(url: str) -> None:
    """Raise `ConfigError` unless `url` names a store `open_store` opens: what the
    registry's ``telemetry.url`` is checked by at load (so that `registry check` and a
    reload refuse what `serve` would refuse at start)."""
    url = url.strip()
    lowered = url.lower()
    if lowered.startswith("sqlite:"):
        sqlite_path(url)
    elif not lowered.startswith(_POSTGRES):
        raise ConfigError(
            f"unsupported telemetry URL {mask_url(url)!r}: use sqlite:///PATH, "
            "postgresql://USER@HOST/DB, or off"
        )


def open_store(url: str, *, pool_size: int = 4, answer_timeout_s: float | None = None) -> Store:
    """The store a URL names: ``sqlite:///PATH`` or ``postgresql://...`` (``postgres://``
    too). Opening is lazy for both: nothing connects until the first call.
    `answer_timeout_s` bounds a PostgreSQL call's wait for its answer (a server process's
    store: `PostgresStore`); SQLite's calls are bounded by its busy timeout."""
    check_store_url(url)
    url = url.strip()
    lowered = url.lower()
    if lowered.startswith("sqlite:"):
        from llmroute.telemetry.store.sqlite import SqliteStore

        return SqliteStore(sqlite_path(url))
    if lowered.startswith(_POSTGRES):
        from llmroute.telemetry.store.postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size, answer_timeout_s=answer_timeout_s)
    raise ConfigError(
        f"unsupported telemetry URL {mask_url(url)!r}: use sqlite:///PATH, "
        "postgresql://USER@HOST/DB, or off"
    )
