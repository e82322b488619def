"""What the Redis-backed state shares: a client (`connect`) and riding out a Redis that
fails (`Outage`: leave it alone for a second, log at most once a minute).

Every feature that names the same Redis URL with the same timeout, in the same event
loop, shares one pool of at most `MAX_CONNECTIONS`: with a pool each (limits, breakers,
cache, semantic index, affinity, stored responses, batches) a burst left up to seven
times as many idle connections per process, towards Redis's ``maxclients``.
A pool is closed by the last of its users to close, so a registry reload can build new
stores on it while the old ones drain. Pools never cross event loops (a connection is
bound to the loop it was opened in), nor processes. Each connection is named
``llmroute:<pid>`` (``CLIENT SETNAME``, where the Redis user may) so that ``CLIENT
LIST`` shows which process holds it, or as the URL's ``client_name`` says.

A connection lost while a command waits for its reply (reset, or closed by the server,
once the command was sent) raises `ReplyLost`, a redis-py ``ConnectionError``: Redis
may have made the command; so does a reply that comes too late (a redis-py
``TimeoutError`` too). One lost or timed out before it was sent (refused, reset or slow
while connecting) cannot have been made. redis-py tells them apart only by where it
raised (``parse_response`` reads the reply once the command is sent), so the client
`connect` makes says so, and marks a cancellation that came while the reply was awaited
(`sent`: its caller gave up, its client hung up, once the command was asked). The
error replies redis-py raises as a ``ConnectionError`` too (``LOADING`` from a Redis
restarted and loading its data, ``NOAUTH``, max clients) are Redis's answer that it
did not make the command: left as they are, not `ReplyLost`.

A pipeline's lost or late reply is not told apart (redis-py's ``Pipeline`` reads its
replies itself): `StoreUnavailable.maybe_made` is false for it, and a cancellation while
it waits is not `sent`. No caller's count depends on that: the pipelines (a budget's
``charge`` and the tokens' ``add_tokens`` in `llmroute.state.limits`, an ``INCRBYFLOAT``
or ``INCRBY`` with its ``EXPIRE``; the semantic index's ``add``; the stores' ``touch``,
``append``, ``add_member``) give nothing back and are not made again on a failure (only
`llmroute.state.stores.asked` asks again, and only a call refused unasked, never sent),
so a lost reply leaves its count made once or not at all, never twice. A caller that
would give back, or make again, what a pipeline counted must first make it a script
(as a take, a hold or a settle is), whose lost reply is `ReplyLost`.

So redis-py never sends a command again: a URL whose query asks it to
(`resending_option`: ``retry_on_timeout``, ``retry_on_error``, ``retry``) is refused,
and every connection has a ``retry`` of no retries. redis-py resends a command whose
reply timed out or was lost, so a limit's take or hold was counted twice; the callers
decide themselves what a lost reply means (`ReplyLost`, `sent`). A URL's query is
refused too (`query_refusal`) where it names a timeout (the feature's ``timeout_s`` is
the one: redis-py let the URL's replace it) or an option redis-py's connections refuse
(a typo: every call failed with a ``TypeError``).

A script redis-py loads again (``SCRIPT LOAD`` once ``EVALSHA`` was answered
``NOSCRIPT``: Redis restarted, or its script cache flushed) whose load is lost or cut
is neither `ReplyLost` nor `sent`: the script's own command was refused, not made.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

from llmroute.errors import ConfigError
from llmroute.telemetry.store.url import mask_url

__all__ = [
    "DB_WHY",
    "MAX_CONNECTIONS",
    "RESENDING_WHY",
    "RETRY_AFTER_S",
    "TIMEOUT_WHY",
    "UNKNOWN_WHY",
    "URL_OPTIONS",
    "DbOutOfRange",
    "HandshakeRefused",
    "Outage",
    "RedisConnection",
    "ReplyLost",
    "client_name",
    "connect",
    "db_refusal",
    "error_replies",
    "query_refusal",
    "resending_option",
    "sent",
]

RETRY_AFTER_S = 1.0
LOG_EVERY_S = 60.0
# Connections one pool keeps at most. A call finds one free, or waits for one as long
# as a call may take (then counts as Redis failing): without a cap the pool grew to the
# process's peak concurrency and kept it (a burst of a thousand requests, a thousand
# idle connections per pool and process, towards Redis's own maxclients).
MAX_CONNECTIONS = 64

_PoolKey = tuple[str, float, asyncio.AbstractEventLoop]
# redis-py's URL options that make it send a command again (its ``to_bool`` reads these
# values of ``retry_on_timeout`` as false, where it is not installed: that one asks for
# what is done anyway)
_RESENDING = ("retry_on_timeout", "retry_on_error", "retry")
_FALSE = frozenset({"0", "F", "FALSE", "N", "NO"})
RESENDING_WHY = (
    "redis-py would send a command again when its reply is late or lost, so a limit "
    "or budget could be counted twice (llmroute decides itself what a lost reply "
    "means); remove it"
)
# redis-py's URL options that set how long a call waits: the feature's ``timeout_s``
# does (the URL's won, silently: ``socket_timeout`` for each reply, ``timeout`` for a
# free connection)
_TIMEOUTS = ("socket_timeout", "socket_connect_timeout", "timeout")
TIMEOUT_WHY = (
    "the section's timeout_s bounds every Redis call (this would replace it); set timeout_s instead"
)
# options redis-py's connections take that would break what llmroute relies on (any
# value: redis-py passes them on as strings, and "false" is a true one)
_RELIED_ON = {
    "decode_responses": "llmroute reads Redis's replies as bytes (a stored binary value "
    "failed to decode)",
    "redis_connect_func": "llmroute sets it itself (it names each connection)",
}
# what a URL's query may set, with those the installed redis-py reads from a URL
# (`_parsed`): the options it takes as text (each checked against the connections it
# makes for the URL's scheme). redis-py takes
# others only as a Python object (a URL's text failed every call, not as a Redis error,
# or failed the check itself) or for its own use
URL_OPTIONS = frozenset(
    {
        "db",
        "username",
        "password",
        "client_name",
        "health_check_interval",
        "max_connections",
        "protocol",
        "socket_keepalive",
        "socket_read_size",
        "encoding",
        "encoding_errors",
        "lib_name",
        "lib_version",
        "retry_on_timeout",  # false: what is done anyway
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_ca_path",
        "ssl_check_hostname",
        "ssl_ciphers",
        "ssl_password",
        "ssl_min_version",
        "ssl_include_verify_flags",
        "ssl_exclude_verify_flags",
    }
)
UNKNOWN_WHY = (
    "not an option a Redis URL may set here (redis-py's connections refuse it, or take "
    "it only as a Python object, or for their own use)"
)


class _Pool:
    """One client and how many `RedisConnection`s still use it."""

    def __init__(self, client: Any, key: _PoolKey | None) -> None:
        self.client = client
        self.key = key
        self.users = 1


_pools: dict[_PoolKey, _Pool] = {}
_pools_lock = threading.Lock()


_Errors = tuple[type[BaseException], ...]


class RedisConnection:
    """One feature's hold on a pooled async client; `errors` are the exceptions that
    mean Redis failed (not the caller), `replies` those of them that are Redis's answer
    (an error reply: it is up), `transient` those replies that refuse for now, not for
    good (``READONLY``, ``OOM``...: `llmroute.state.answering`), `unanswered` those
    where the command was asked and no answer came (in time, or before the connection
    was lost: `ReplyLost`), so it may have been made; `url` is masked, for logs."""

    def __init__(
        self, pool: _Pool, errors: tuple[_Errors, _Errors, _Errors, _Errors], url: str
    ) -> None:
        self._pool = pool
        self.client = pool.client
        self.errors, self.replies, self.transient, self.unanswered = errors
        self.url = url
        self._closed = False

    async def aclose(self) -> None:
        """Let go of the pool; the last user to let go closes its connections."""
        if self._closed:
            return
        self._closed = True
        if not _release(self._pool):
            return
        with contextlib.suppress(*self.errors):
            await self.client.aclose()


def client_name() -> str:
    """What this process's connections are called in Redis's ``CLIENT LIST``."""
    return f"llmroute:{os.getpid()}"


def resending_option(url: str) -> str | None:
    """The query option of Redis URL `url` that would make redis-py send a command again
    (``retry_on_timeout`` not false, ``retry_on_error``, ``retry``), None when there is
    none. The query is read as redis-py reads it (names decoded, a name's first value,
    false as the installed redis-py reads it: ``off`` is only in newer ones); redis-py
    need not be installed."""
    if "?" not in url:
        return None
    query = parse_qs(urlsplit(url).query)
    for name in _RESENDING:
        values = query.get(name)
        if values and not (name == "retry_on_timeout" and values[0].upper() in _false()):
            return name
    return None


@functools.cache
def _false() -> frozenset[str]:
    """The values of a boolean URL option the installed redis-py reads as false."""
    try:
        from redis.asyncio.connection import FALSE_STRINGS
    except ImportError:
        return _FALSE
    return frozenset(FALSE_STRINGS)


def query_refusal(url: str) -> str | None:
    """Why the query of Redis URL `url` is refused (``must not set NAME: why``), None
    when it is not: a `resending_option`, a timeout (``socket_timeout``,
    ``socket_connect_timeout``, ``timeout``: the feature's ``timeout_s`` is the one), one
    llmroute relies on (``decode_responses``, ``redis_connect_func``; an ``encoding``
    other than UTF-8), a name not in `URL_OPTIONS` (``?foo=bar``; one redis-py takes
    only as a Python object), ``max_connections`` below 1, or one the connections
    redis-py makes for the URL's scheme refuse (an ``ssl_`` option on ``redis://``:
    every call failed with a ``TypeError``). Names are read as redis-py reads them.
    Without redis-py installed that last one is not told. A `db_refusal` is one too
    (the path's db included)."""
    if (why := db_refusal(url)) is not None:
        return why
    if "?" not in url:
        return None
    if (option := resending_option(url)) is not None:
        return f"must not set {option}: {RESENDING_WHY}"
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    for name, values in query.items():
        if (why := _name_refusal(name, values[0])) is not None:
            return f"must not set {name}: {why}"
    try:
        from redis.asyncio.connection import BlockingConnectionPool
        from redis.exceptions import RedisError
    except ImportError:  # said where a client is made
        return None
    for name, values in query.items():
        alone = urlunsplit(parts._replace(query=urlencode({name: values[0]})))
        try:  # a connection is made without connecting: as each call's would be
            checked = BlockingConnectionPool.from_url(alone)
            _as_driver_info(checked.connection_kwargs)
            checked.make_connection()  # type: ignore[no-untyped-call]
        except TypeError as exc:
            return f"must not set {name}: redis-py's connections refuse it ({exc})"
        except RedisError as exc:  # ``protocol=4``
            return f"{name}: redis-py refuses its value ({exc})"
        except ValueError:
            continue  # a value parse_url refuses: its own message names it
    return None


_DB = re.compile(r"[0-9]+")
DB_WHY = (
    "db: must be a whole number, 0 or more (the path's /N, or ?db=N; not both, unless they agree)"
)


def db_refusal(url: str) -> str | None:
    """Why the database Redis URL `url` names is refused (``db: ...``), None when it is
    not: a path's ``/db`` (``redis://``, ``rediss://``) or a query's ``db`` that is not a
    whole number 0 or more, or a path's that the query's contradicts. redis-py took a
    path it cannot read (``/x``, ``/1.5``) as no db at all (db 0, without a word), read
    ``/0/1`` as db 1, refused ``?db=x`` only when the pool was opened (no file, no line)
    and sent ``-1`` on (every call failed); a query's db replaced the path's silently.
    Whether Redis has that many databases is its own to say, at connect (`_named`)."""
    parts = urlsplit(url)
    path_db: str | None = None
    if parts.scheme.lower() in ("redis", "rediss") and parts.path not in ("", "/"):
        path_db = unquote(parts.path)[1:].removesuffix("/")  # as redis-py unquotes it
        if not _DB.fullmatch(path_db):
            return DB_WHY
    dbs = parse_qs(parts.query).get("db") if parts.query else None
    if dbs is not None:
        if not _DB.fullmatch(dbs[0]):
            return DB_WHY
        if path_db is not None and int(path_db) != int(dbs[0]):
            return DB_WHY
    return None


def _name_refusal(name: str, value: str) -> str | None:
    """Why a URL's query may not set `name` to `value` (None when it may), as far as
    llmroute tells without redis-py."""
    if name in _TIMEOUTS:
        return TIMEOUT_WHY
    if name in _RELIED_ON:
        return _RELIED_ON[name]
    if name not in URL_OPTIONS and name not in _parsed():
        return UNKNOWN_WHY
    if name == "encoding" and _codec(value) != "utf-8":
        return (
            "llmroute's keys and text go to Redis as UTF-8 and are read back so (a key in "
            "another encoding is another key; one it cannot encode failed every call)"
        )
    if name == "max_connections" and _below_one(value):
        return "it must be at least 1 (no call would get a connection)"
    return None


def _below_one(value: str) -> bool:
    try:
        return int(value) < 1
    except ValueError:  # redis-py's own message names it
        return False


@functools.cache
def _parsed() -> frozenset[str]:
    """The options the installed redis-py itself reads from a URL (``legacy_responses``
    in redis-py 8): a URL may set them too."""
    try:
        from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS
    except ImportError:
        return frozenset()
    return frozenset(URL_QUERY_ARGUMENT_PARSERS)


def _codec(name: str) -> str | None:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def connect(url: str, timeout_s: float, setting: str) -> RedisConnection:
    """A client for `url` whose every call (connect included, and the wait for a free
    connection of its pool's `MAX_CONNECTIONS`) is bounded by `timeout_s`, sharing the
    pool of this event loop's other clients of `url` and `timeout_s` (opened outside an
    event loop, it has a pool of its own). Nothing connects yet. `setting` names the
    URL's key in errors; a URL with a `query_refusal` is refused. Nothing is sent
    twice: every connection's ``retry`` makes no retries."""
    masked = mask_url(url)
    if (why := query_refusal(url)) is not None:
        raise ConfigError(f"{setting}={masked}: {why}")
    try:
        import redis.asyncio as redis
    except ImportError:  # pragma: no cover - the extra is part of the test install
        raise ConfigError(
            f"{setting} is a Redis URL but the redis client is not installed; "
            "install it with: pip install 'llmroute[redis]'"
        ) from None
    from redis import exceptions
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    errors = (
        (redis.RedisError, OSError, TimeoutError),
        (redis.ResponseError,),
        (  # redis-py's classes of the codes `answering` reads for the others
            exceptions.ReadOnlyError,
            exceptions.OutOfMemoryError,
            exceptions.TryAgainError,
            exceptions.ClusterDownError,  # and MASTERDOWN
        ),
        # a redis-py timeout once the command was sent is a `ReplyLost`; one before it
        # (connecting) is not: nothing was made
        (TimeoutError, ReplyLost),
    )
    key = _pool_key(url, timeout_s)
    with _pools_lock:
        for stale in [k for k in _pools if k[2].is_closed()]:
            del _pools[stale]  # its loop ended without its users closing them
        found = _pools.get(key) if key is not None else None
        if found is not None:
            found.users += 1
            return RedisConnection(found, errors, masked)
        try:
            pool = redis.BlockingConnectionPool.from_url(
                url,
                max_connections=MAX_CONNECTIONS,
                timeout=timeout_s,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                redis_connect_func=functools.partial(_named, _name_in(url)),
                retry=Retry(NoBackoff(), 0),  # redis-py's default, made sure of
            )
        except ValueError as exc:
            raise ConfigError(f"{setting} {masked}: {str(exc).replace(url, masked)}") from None
        pool.connection_kwargs.pop("client_name", None)  # `_named` names them
        _as_driver_info(pool.connection_kwargs)
        # closing the client closes its pool
        opened = _Pool(_client_class().from_pool(pool), key)
        if key is not None:
            _pools[key] = opened
    return RedisConnection(opened, errors, masked)


def _as_driver_info(kwargs: dict[str, Any]) -> None:
    """A URL's ``lib_name`` and ``lib_version`` (what ``CLIENT SETINFO`` tells Redis)
    in `kwargs`, a pool's connection arguments, as the ``driver_info`` that replaces
    them where the installed redis-py has it (8): given as they are, each connection
    made warned (a ``DeprecationWarning``), and a redis-py that drops them will refuse
    them. An older redis-py takes them as they are, without a word."""
    if "lib_name" not in kwargs and "lib_version" not in kwargs:
        return
    try:
        from redis.driver_info import DriverInfo
    except ImportError:
        return
    given = {"name": kwargs.pop("lib_name", None), "lib_version": kwargs.pop("lib_version", None)}
    # one not given is redis-py's own (its name, its version), as it was
    kwargs["driver_info"] = DriverInfo(**{k: v for k, v in given.items() if v is not None})


class ReplyLost(Exception):
    """No reply to a command once it was sent: its connection lost, raised as a
    redis-py ``ConnectionError`` that is one too, or too late, as a redis-py
    ``TimeoutError`` (`_client_class`)."""


@functools.cache
def error_replies() -> tuple[type[BaseException], ...]:
    """The error replies redis-py raises as a ``ConnectionError`` (``LOADING``,
    ``NOAUTH``, ``WRONGPASS``, max clients...): Redis's answer that it did not make the
    command, not a connection failing (the last three are not in every redis-py the
    extra allows)."""
    from redis import exceptions

    return tuple(
        getattr(exceptions, name)
        for name in (
            "AuthenticationError",
            "BusyLoadingError",
            "AuthorizationError",
            "MaxClientsReachedError",
            "ExternalAuthProviderError",
        )
        if hasattr(exceptions, name)
    )


@functools.cache
def _client_class() -> type[Any]:
    """The async client `connect` makes: redis-py's, whose connection lost or timeout
    while a command waits for its reply raises `ReplyLost` (`from` redis-py's error);
    an error reply redis-py raises as a ``ConnectionError`` is left as it is (not
    made)."""
    import redis.asyncio as redis
    from redis import exceptions
    from redis.exceptions import ConnectionError as Lost

    replies = error_replies()

    class LostAfterSending(Lost, ReplyLost):
        """The connection was lost once the command was sent: it may have been made."""

    class LateAfterSending(exceptions.TimeoutError, ReplyLost):
        """No reply in time once the command was sent: it may have been made."""

    class Client(redis.Redis):
        async def script_load(self, script: Any) -> Any:
            """redis-py's, whose failure is not the script's command's: a script runs
            its load once that command was refused (``NOSCRIPT``), not made, so a load
            lost (late, its connection lost) is a plain ``ConnectionError`` and a
            cancellation while its reply is awaited is not `sent`."""
            try:
                return await super().script_load(script)
            except (ReplyLost, exceptions.TimeoutError) as exc:
                raise Lost(f"{exc} (loading a script: its command was not made)") from exc
            except asyncio.CancelledError as exc:
                with contextlib.suppress(AttributeError):
                    delattr(exc, _SENT)
                raise

        async def parse_response(self, connection: Any, command_name: Any, **options: Any) -> Any:
            try:
                return await super().parse_response(connection, command_name, **options)
            except Lost as exc:
                if isinstance(exc, (ReplyLost, *replies)):
                    raise
                raise LostAfterSending(f"{exc} (once the command was sent)") from exc
            except exceptions.TimeoutError as exc:
                if isinstance(exc, ReplyLost):
                    raise
                raise LateAfterSending(f"{exc} (once the command was sent)") from exc
            except asyncio.CancelledError as exc:
                setattr(exc, _SENT, True)  # an attribute of ours on redis-py's way out
                raise

    return Client


_SENT = "llmroute_sent"


def sent(exc: BaseException) -> bool:
    """Whether `exc`, out of a call of a client `connect` made, came once the command
    was sent (Redis may have made it): `ReplyLost`, or a cancellation that came while
    the reply was awaited. (One cancelled again meanwhile, while redis-py cleans up, is
    a new one: not told.)"""
    return isinstance(exc, ReplyLost) or getattr(exc, _SENT, False) is True


def _pool_key(url: str, timeout_s: float) -> _PoolKey | None:
    try:
        return (url, timeout_s, asyncio.get_running_loop())
    except RuntimeError:
        return None


def _release(pool: _Pool) -> bool:
    """One user fewer; whether it was the last (the pool is then no one's to share)."""
    with _pools_lock:
        pool.users -= 1
        if pool.users > 0:
            return False
        if pool.key is not None and _pools.get(pool.key) is pool:
            del _pools[pool.key]
        return True


def _name_in(url: str) -> str:
    """What `url`'s connections are called: its query's ``client_name``, else
    `client_name`."""
    names = parse_qs(urlsplit(url).query).get("client_name")
    return names[0] if names else client_name()


async def _named(name: str, connection: Any) -> None:
    """redis-py's handshake, then ``CLIENT SETNAME`` `name`. A Redis user whose ACL
    forbids naming still gets a connection; redis-py's own ``client_name`` (the URL's,
    which `connect` takes from it) would make that a Redis that always fails. A db the
    server does not have is said as `_out_of_range` says it, as a `DbOutOfRange`; any
    other error reply to the handshake (a user who may not ``SELECT`` the db, a
    ``HELLO`` Redis does not know) as a `HandshakeRefused`."""
    from redis.exceptions import ResponseError

    try:
        await connection.on_connect()
    except ResponseError as exc:
        if connection.db and _OUT_OF_RANGE in str(exc):
            raise _refused(DbOutOfRange)(await _out_of_range(connection)) from exc
        raise _refused(HandshakeRefused)(str(exc)) from exc
    await connection.send_command("CLIENT", "SETNAME", name)
    with contextlib.suppress(ResponseError):
        await connection.read_response()


# Redis's (and Valkey's) reply to a ``SELECT`` past its ``databases``
_OUT_OF_RANGE = "DB index is out of range"


class HandshakeRefused(Exception):
    """Redis answered a connection's handshake (``AUTH``, ``HELLO``, ``SELECT``) with an
    error reply: no command can be made on it, nor on the next. Raised as a redis-py
    ``ConnectionError`` that is one too (`_refused`), so a feature takes that
    Redis for down (its fallback, its pause, its failure counted), as one that refuses
    connections or a password: an error reply (a ``ResponseError``, as Redis's own is)
    was taken for a Redis that answers, so every call asked again, and failed."""


class DbOutOfRange(HandshakeRefused):
    """The URL's db is past its Redis's ``databases``: every connection is refused at
    its handshake (``SELECT``), said as `_out_of_range` says it."""


@functools.cache
def _refused(kind: type[HandshakeRefused]) -> type[Exception]:
    """`kind` (`HandshakeRefused`, `DbOutOfRange`) as redis-py raises a refused
    connection: its ``ConnectionError`` too (redis-py is imported only where Redis is
    used)."""
    from redis.exceptions import ConnectionError as Refused

    return type(f"{kind.__name__}Error", (Refused, kind), {"__doc__": kind.__doc__})


async def _out_of_range(connection: Any) -> str:
    """What to say of the db that `connection`'s Redis refused: Redis says only "DB index
    is out of range", on every call, as the URL's db is checked where only the server
    knows how many it has (its ``databases``, asked on the same connection; a user
    whose ACL forbids ``CONFIG`` is told the default)."""
    from redis.exceptions import RedisError

    db = connection.db
    reply: Any = None
    with contextlib.suppress(RedisError, OSError):
        await connection.send_command("CONFIG", "GET", "databases")
        reply = await connection.read_response()
    values = list(reply.values()) if isinstance(reply, dict) else list(reply or ())[1:]
    try:
        count = int(values[0])
    except (IndexError, TypeError, ValueError):
        return (
            f"db {db} is out of range: this Redis has fewer databases (its `databases` "
            "setting, 16 by default); name a lower db in the URL, or raise that setting"
        )
    return (
        f"db {db} is out of range: this Redis has {count} databases (0 to {count - 1}); "
        "name one of them in the URL, or raise its `databases` setting"
    )


class Outage:
    """After a failure Redis is not asked again for `RETRY_AFTER_S` (`down`), so a
    Redis that hangs costs one timeout a second, not one a request; failures are logged
    at most once a minute. Both are measured on `clock`, monotonic: on the wall clock an
    NTP step back made during the pause stretched it by the step (a limit or budget left
    uncounted for an hour after a one-second outage). `on_failure` is told of each
    failure (a metric: the log line says one a minute, an alert wants them all); one
    that proves Redis answers (an error reply) is logged and told without a pause.
    """

    def __init__(
        self,
        log: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._log = log
        self._clock = clock
        self._on_failure = on_failure
        self._until = 0.0
        self._logged_at = -LOG_EVERY_S

    def down(self) -> bool:
        return self._clock() < self._until

    def left_s(self) -> float:
        """Seconds until Redis is asked again (0 when it is not taken for down)."""
        return max(0.0, self._until - self._clock())

    def failed(self, message: str, *args: object, pause: bool = True) -> None:
        now = self._clock()
        if pause:
            self._until = now + RETRY_AFTER_S
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            self._log.warning(message, *args)
        if self._on_failure is not None:
            try:
                self._on_failure()
            except Exception:  # a metrics callback must not fail the caller
                self._log.exception("the Redis failure callback failed")
