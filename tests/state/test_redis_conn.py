"""`connect`: one client's connections are capped, whatever the concurrency, and
redis-py never sends a command twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from private_redis import private_redis
from redis_service import REDIS_URL, past_databases, with_db

from llmroute.errors import ConfigError
from llmroute.registry import ConfigErrors, load_registry
from llmroute.state import redis_conn
from llmroute.state.redis_conn import (
    MAX_CONNECTIONS,
    DbOutOfRange,
    RedisConnection,
    client_name,
    connect,
    resending_option,
)
from llmroute.state.stores import check_url


def test_a_burst_shares_a_capped_pool_and_every_call_is_answered(
    redis_namespace: str,
) -> None:
    """A burst of concurrent calls waits for a free connection rather than opening one
    each (the pool grew to the peak concurrency and kept it, idle; with redis-py 8 its
    default cap refused the 101st concurrent call at once, which counted as Redis being
    down). Redis says which connection served each call (`CLIENT ID`)."""
    burst = MAX_CONNECTIONS * 4

    async def run() -> tuple[int, int]:
        connection = connect(REDIS_URL, 2.0, "cache.url")
        client = connection.client
        try:
            key = f"{redis_namespace}:burst"
            counts = await asyncio.gather(*(client.incr(key) for _ in range(burst)))
            ids = await asyncio.gather(*(client.client_id() for _ in range(burst)))
            return len(set(counts)), len(set(ids))
        finally:
            await connection.aclose()

    answered, connections = asyncio.run(run())
    assert answered == burst  # each call counted once
    assert connections <= MAX_CONNECTIONS


def test_features_on_one_url_and_timeout_share_one_capped_pool(redis_namespace: str) -> None:
    """Five features (limits, breakers, cache, affinity, stored responses) on the same
    URL and timeout each had a pool of their own: a burst through each left five times
    `MAX_CONNECTIONS` open. Now they share one; another timeout or database (which a
    pooled connection has selected) gets its own."""
    burst = MAX_CONNECTIONS * 2
    settings = ("dispatch.limits.url", "dispatch.breaker.url", "cache.url", "affinity.url")

    async def run() -> tuple[int, bool, bool]:
        features = [connect(REDIS_URL, 2.0, setting) for setting in settings]
        slower = connect(REDIS_URL, 3.0, "batches.url")
        other_db = connect(with_db(REDIS_URL, 9), 2.0, "stored_responses.url")
        try:
            key = f"{redis_namespace}:burst"
            await asyncio.gather(*(f.client.incr(key) for f in features for _ in range(burst)))
            ids = await asyncio.gather(
                *(f.client.client_id() for f in features for _ in range(burst))
            )
            own = {slower.client, other_db.client}.isdisjoint({f.client for f in features})
            return len(set(ids)), len({id(f.client) for f in features}) == 1, own
        finally:
            for held in (*features, slower, other_db):
                await held.aclose()

    connections, shared, own = asyncio.run(run())
    assert connections <= MAX_CONNECTIONS
    assert shared
    assert own


def test_the_pool_is_closed_by_its_last_user_and_its_connections_are_named(
    redis_namespace: str,
) -> None:
    """A registry reload builds new stores on the pool while the old ones drain: the
    old ones closing must not close the connections the new ones use; the last to
    close does. Each connection is named after this process in ``CLIENT LIST``."""
    import redis as sync_redis

    def listed(ids: set[int]) -> dict[int, str]:
        admin = sync_redis.Redis.from_url(REDIS_URL)
        try:
            return {int(c["id"]): c["name"] for c in admin.client_list() if int(c["id"]) in ids}
        finally:
            admin.close()

    key = f"{redis_namespace}:n"

    async def burst(connection: RedisConnection) -> set[int]:
        await asyncio.gather(*(connection.client.incr(key) for _ in range(8)))
        return set(await asyncio.gather(*(connection.client.client_id() for _ in range(8))))

    async def run() -> None:
        old = connect(REDIS_URL, 2.0, "cache.url")
        ids = await burst(old)
        new = connect(REDIS_URL, 2.0, "cache.url")  # the reload's
        await old.aclose()
        await old.aclose()  # twice is once
        assert listed(ids) == dict.fromkeys(ids, client_name())  # still open, and named
        assert await new.client.incr(key) == 9
        await new.aclose()
        assert listed(ids) == {}
        again = connect(REDIS_URL, 2.0, "cache.url")  # a fresh pool after the last close
        try:
            assert await again.client.incr(key) == 10
        finally:
            await again.aclose()

    asyncio.run(run())


def test_the_url_can_set_another_cap(redis_namespace: str) -> None:
    """``?max_connections=N`` in a feature's URL is the knob for a process that needs more
    (or fewer) than `MAX_CONNECTIONS` concurrent calls to Redis (docs/dispatch.md)."""
    burst = 40
    sep = "&" if "?" in REDIS_URL else "?"

    async def run() -> tuple[int, int]:
        connection = connect(f"{REDIS_URL}{sep}max_connections=3", 2.0, "cache.url")
        try:
            key = f"{redis_namespace}:capped"
            counts = await asyncio.gather(*(connection.client.incr(key) for _ in range(burst)))
            ids = await asyncio.gather(*(connection.client.client_id() for _ in range(burst)))
            return len(set(counts)), len(set(ids))
        finally:
            await connection.aclose()

    answered, connections = asyncio.run(run())
    assert answered == burst
    assert connections <= 3


# a script that counts, and the first time takes longer than the client waits
_SLOW_FIRST_COUNT = """local n = redis.call('INCR', KEYS[1])
if n == 1 then
  local s = redis.call('TIME')
  repeat local t = redis.call('TIME') until (t[1] - s[1]) * 1000000 + (t[2] - s[2]) > 300000
end
return n"""

RESENDING = [
    ("retry_on_timeout=true", "retry_on_timeout"),
    ("retry_on_timeout=1", "retry_on_timeout"),
    ("retry_on_error=TimeoutError,ConnectionError", "retry_on_error"),
    ("retry=3", "retry"),
    ("db=0&retry%5Fon%5Ftimeout=yes", "retry_on_timeout"),  # a name decoded, as redis-py does
]


@pytest.mark.parametrize(("query", "option"), RESENDING)
def test_a_url_that_makes_redis_py_send_a_command_again_is_refused(query: str, option: str) -> None:
    """redis-py reads ``retry_on_timeout`` and ``retry_on_error`` from a URL's query and
    then sends a command again when its reply was late or lost: one request's rpm take
    counted twice (``_SLOW_FIRST_COUNT`` with ``?retry_on_timeout=true`` counted 2 on the
    old code); ``?retry=`` broke every call (an AttributeError). `connect` and
    `check_url` refuse them, naming the setting and the option, password masked."""
    url = f"redis://:hunter2@127.0.0.1:6379/0?{query}"
    for refuse in (
        lambda: connect(url, 0.2, "dispatch.limits.url"),
        lambda: check_url(url, "cache.url"),
    ):
        with pytest.raises(
            ConfigError, match=rf"\.url=redis://:\*\*\*@.*must not set {option}: "
        ) as refused:
            refuse()
        assert "counted twice" in str(refused.value) and "hunter2" not in str(refused.value)


def _registry(tmp_path: Path, limits_url: str, cache_url: str) -> Path:
    """A registry whose limits URL is on line 8 and cache URL on line 9."""
    path = tmp_path / "registry.yaml"
    path.write_text(
        "encoder: builtin:static\n"
        "providers: {p: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}}\n"
        "models: {small: {provider: p, model: up-small, rpm: 10}}\n"
        "routes: [{name: chitchat, examples: [hello there], target: small}]\n"
        "default: {target: small}\n"
        "dispatch:\n"
        "  limits:\n"
        f"    url: '{limits_url}'\n"
        f"cache: {{url: '{cache_url}'}}\n"
    )
    return path


def test_a_registry_with_such_a_url_fails_to_load_at_its_line(tmp_path: Path) -> None:
    path = _registry(
        tmp_path,
        "redis://:hunter2@127.0.0.1:6379/0?retry_on_timeout=true",
        "redis://127.0.0.1:6379/0?retry_on_error=TimeoutError",
    )
    with pytest.raises(ConfigErrors) as refused:
        load_registry(path)
    said = str(refused.value)
    assert f"{path}:8: dispatch.limits.url: must not set retry_on_timeout: " in said
    assert f"{path}:9: cache.url: must not set retry_on_error: " in said
    assert "hunter2" not in said


def test_a_late_reply_is_not_sent_again(redis_namespace: str) -> None:
    """Whatever the URL says (``retry_on_timeout=false`` is what is done anyway), a
    command whose reply came too late is not sent again: counted once, and the call
    fails (its caller decides what that means)."""
    key = f"{redis_namespace}:once"

    async def run(url: str) -> None:
        connection = connect(url, 0.1, "dispatch.limits.url")
        try:
            with pytest.raises(connection.unanswered):
                await connection.client.eval(_SLOW_FIRST_COUNT, 1, key)
            await asyncio.sleep(0.4)  # the script has ended
            assert await connection.client.get(key) == b"1"
        finally:
            await connection.aclose()

    sep = "&" if "?" in REDIS_URL else "?"
    asyncio.run(run(f"{REDIS_URL}{sep}retry_on_timeout=false"))


REFUSED = [
    # a name redis-py's connections do not take: every call failed with a TypeError
    ("foo=bar", "foo", "refuse it"),
    ("db=0&socket_keepalive=true&health_chek_interval=5", "health_chek_interval", "refuse it"),
    ("ssl_cert_reqs=none", "ssl_cert_reqs", "refuse it"),  # a rediss:// option on redis://
    # a timeout: it replaced the section's timeout_s
    ("socket_timeout=30", "socket_timeout", "timeout_s"),
    ("socket_connect_timeout=30", "socket_connect_timeout", "timeout_s"),
    ("timeout=30", "timeout", "timeout_s"),
    # taken by redis-py, as strings: any value decodes replies, or replaces our hook
    ("decode_responses=false", "decode_responses", "as bytes"),
    ("redis_connect_func=x", "redis_connect_func", "itself"),
    # taken by redis-py only as a Python object: the URL's text passed every check, then
    # every call failed (an AttributeError, no Redis error: credential_provider,
    # event_dispatcher; a ConnectionError: socket_keepalive_options), or the check
    # itself did (an AttributeError at registry load: maint_notifications_config)
    ("credential_provider=x", "credential_provider", "may set"),
    ("event_dispatcher=x", "event_dispatcher", "may set"),
    ("socket_keepalive_options=x", "socket_keepalive_options", "may set"),
    ("maint_notifications_config=x", "maint_notifications_config", "may set"),
    # keys and text went to Redis in it, read back as UTF-8 (a value written failed to
    # read, one it cannot encode failed to write: neither a Redis error)
    ("encoding=latin-1", "encoding", "UTF-8"),
    ("socket_type=2", "socket_type", "may set"),
    ("max_connections=0", "max_connections", "at least 1"),  # no call got a connection
    ("max_connections=-1", "max_connections", "at least 1"),  # check_url let it through
]


@pytest.mark.parametrize(("query", "option", "why"), REFUSED)
def test_a_url_option_redis_py_refuses_or_that_replaces_timeout_s_is_refused(
    query: str, option: str, why: str
) -> None:
    """A query name redis-py's connections do not take passed every check and then
    failed every call with a ``TypeError`` (a bug, not an outage); a timeout in the query
    silently replaced the section's ``timeout_s`` (``?socket_timeout=30``: each call
    waited 30 s where the registry said 0.05). Both are refused, naming the setting and
    the option, password masked; the options redis-py takes still work (below)."""
    url = f"redis://:hunter2@127.0.0.1:6379/0?{query}"
    for refuse in (
        lambda: connect(url, 0.2, "dispatch.limits.url"),
        lambda: check_url(url, "cache.url"),
    ):
        with pytest.raises(
            ConfigError, match=rf"\.url=redis://:\*\*\*@.*: must not set {option}: .*{why}"
        ) as refused:
            refuse()
        assert "hunter2" not in str(refused.value)


def test_a_registry_with_an_unknown_url_option_fails_to_load_at_its_line(tmp_path: Path) -> None:
    path = _registry(
        tmp_path,
        "redis://:hunter2@127.0.0.1:6379/0?max_conections=10",
        "redis://127.0.0.1:6379/0?socket_timeout=5",
    )
    with pytest.raises(ConfigErrors) as refused:
        load_registry(path)
    said = str(refused.value)
    assert f"{path}:8: dispatch.limits.url: must not set max_conections: " in said
    assert f"{path}:9: cache.url: must not set socket_timeout: " in said
    assert "hunter2" not in said


def test_a_registry_with_an_object_url_option_fails_to_load_at_its_line(tmp_path: Path) -> None:
    """``maint_notifications_config`` broke the check itself: the registry failed to load
    with redis-py's AttributeError and its stack trace, not the file and line."""
    path = _registry(
        tmp_path,
        "redis://127.0.0.1:6379/0?maint_notifications_config=x",
        "redis://127.0.0.1:6379/0?credential_provider=x",
    )
    with pytest.raises(ConfigErrors) as refused:
        load_registry(path)
    said = str(refused.value)
    assert f"{path}:8: dispatch.limits.url: must not set maint_notifications_config: " in said
    assert f"{path}:9: cache.url: must not set credential_provider: " in said


def test_the_url_options_redis_py_takes_still_work(redis_namespace: str) -> None:
    """Options redis-py's connections take (its own parsed ones, and those it passes on
    as they are) are not refused, and a call through them is answered."""
    sep = "&" if "?" in REDIS_URL else "?"
    url = (
        f"{REDIS_URL}{sep}health_check_interval=5&socket_keepalive=true&max_connections=8"
        "&retry_on_timeout=false&client_name=mine&socket_read_size=65536"
    )
    check_url(url, "cache.url")
    assert check_url("rediss://127.0.0.1:6379/0?ssl_cert_reqs=none", "cache.url") is None
    tls = (
        "rediss://u:p@127.0.0.1:6380/1?ssl_cert_reqs=required&ssl_ca_certs=/etc/ssl/ca.pem"
        "&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_check_hostname=false&ssl_min_version=3"
        "&protocol=3&encoding=utf-8&legacy_responses=true"
    )
    assert check_url(tls, "cache.url") is None

    async def run() -> tuple[bytes | None, str]:
        connection = connect(url, 2.0, "cache.url")
        try:
            await connection.client.set(f"{redis_namespace}:k", b"v")
            value: bytes | None = await connection.client.get(f"{redis_namespace}:k")
            name = await connection.client.client_getname()
            return value, name.decode() if isinstance(name, bytes) else str(name)
        finally:
            await connection.aclose()

    # the URL's client_name names its connections (ours replaced it, without a word)
    assert asyncio.run(run()) == (b"v", "mine")


def test_a_unix_url_with_a_user_a_db_and_a_name_the_user_may_not_set() -> None:
    """``unix://user:password@/path?db=1&client_name=...``: the password's special
    characters percent-encoded, the db from the query, and a user whose ACL forbids
    ``CLIENT SETNAME`` still connects (unnamed), as without a client_name: redis-py's own
    naming failed every connection (``NOPERM``)."""
    import redis as sync_redis

    with private_redis() as url:
        with sync_redis.Redis.from_url(url) as admin:
            admin.execute_command(
                "ACL", "SETUSER", "app", "on", ">p@ss/w?rd#1", "~*", "+@all", "-client|setname"
            )
            admin.select(1)
        path = url.removeprefix("unix://")
        mine = f"unix://app:p%40ss%2Fw%3Frd%231@{path}?db=1&client_name=mine"
        check_url(mine, "cache.url")

        async def run() -> tuple[bytes | None, Any]:
            connection = connect(mine, 2.0, "cache.url")
            try:
                await connection.client.set("k", b"v")
                return await connection.client.get("k"), await connection.client.client_getname()
            finally:
                await connection.aclose()

        assert asyncio.run(run()) == (b"v", None)
        with sync_redis.Redis.from_url(url + "?db=1") as admin:
            assert admin.get("k") == b"v"  # in db 1


@pytest.mark.parametrize("older", [False, True])
@pytest.mark.parametrize("value", ["false", "No", "0", "off", "OFF", "true", "yes", "2", "x"])
def test_retry_on_timeout_is_read_as_the_installed_redis_py_reads_it(
    value: str, older: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``retry_on_timeout=off`` is false to redis-py 8, true to 5 (``OFF`` was not among
    its false strings: it resent, and the URL was let through): refused exactly when
    the installed one would resend. `older`: redis-py 5's false strings."""
    from redis.asyncio import connection

    if older:
        monkeypatch.setattr(connection, "FALSE_STRINGS", ("0", "F", "FALSE", "N", "NO"))
    redis_conn._false.cache_clear()
    try:
        url = f"redis://127.0.0.1:6379/0?retry_on_timeout={value}"
        resends = bool(connection.parse_url(url).get("retry_on_timeout"))
        assert (resending_option(url) == "retry_on_timeout") is resends
    finally:
        redis_conn._false.cache_clear()


@pytest.mark.parametrize("url", [" redis://:s3cr3t-pw@h:6379/0", "redis:/:s3cr3t-pw@h:6379/0"])
def test_a_mistyped_redis_urls_error_holds_no_password(url: str) -> None:
    """The URL a user mistyped is the one its error names: masked all the same."""
    with pytest.raises(ConfigError) as raised:
        check_url(url, "cache.url")
    assert "s3cr3t-pw" not in str(raised.value) and "***" in str(raised.value)


BAD_DBS = [
    "redis://:hunter2@127.0.0.1:6379/x",  # redis-py ignored it: db 0, without a word
    "redis://:hunter2@127.0.0.1:6379/1.5",
    "redis://:hunter2@127.0.0.1:6379/0/1",  # read as db 1 (its slashes dropped)
    "redis://:hunter2@127.0.0.1:6379/-1",  # every call failed (SELECT -1)
    "redis://:hunter2@127.0.0.1:6379/0?db=x",  # refused only when the gateway started
    "redis://:hunter2@127.0.0.1:6379?db=-1",
    "redis://:hunter2@127.0.0.1:6379/1?db=2",  # the query's won, silently
    "unix://:hunter2@/tmp/redis.sock?db=x",
]


@pytest.mark.parametrize("url", BAD_DBS)
def test_a_db_that_is_no_whole_number_is_refused(url: str) -> None:
    """A db that is not a whole number 0 or more (the path's ``/x``, ``?db=x``, ``-1``),
    or a path's db the query's contradicts: ``/x`` and ``/1.5`` were db 0 without a word
    (redis-py drops a path it cannot read), ``?db=x`` failed only once the gateway
    started (no file, no line), ``-1`` failed every call. Refused by `connect` and
    `check_url`, password masked."""
    for refuse in (
        lambda: connect(url, 0.2, "dispatch.limits.url"),
        lambda: check_url(url, "cache.url"),
    ):
        with pytest.raises(ConfigError, match=r"\.url=\w+://:\*\*\*@.*: db: ") as refused:
            refuse()
        assert "hunter2" not in str(refused.value)


def test_a_registry_with_a_bad_db_fails_to_load_at_its_line(tmp_path: Path) -> None:
    path = _registry(
        tmp_path,
        "redis://:hunter2@127.0.0.1:6379/x",
        "redis://:hunter2@127.0.0.1:6379/0?db=-1",
    )
    with pytest.raises(ConfigErrors) as refused:
        load_registry(path)
    said = str(refused.value)
    assert f"{path}:8: dispatch.limits.url: db: " in said
    assert f"{path}:9: cache.url: db: " in said
    assert "hunter2" not in said


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379",
        "redis://127.0.0.1:6379/",
        "redis://127.0.0.1:6379/3",
        "redis://127.0.0.1:6379/3/",
        "redis://127.0.0.1:6379/3?db=3",
        "redis://127.0.0.1:6379?db=12",
        "unix:///tmp/redis.sock?db=2",
        "unix:///tmp/redis.sock",
    ],
)
def test_a_whole_number_db_is_taken(url: str) -> None:
    check_url(url, "cache.url")


def test_a_db_the_server_does_not_have_is_said_with_how_many_it_has(
    redis_namespace: str,
) -> None:
    """A URL's db past the server's ``databases`` (16 by default) loads: only Redis
    knows how many it has. Every call then failed at connect with Redis's own "DB index
    is out of range", which names neither the db nor what the server has. It is raised
    as a refused connection is (a redis-py ``ConnectionError``), not as an error reply:
    the Redis cannot be used."""
    from redis.exceptions import ConnectionError as Refused

    url, db, count = past_databases()
    check_url(url, "cache.url")

    async def run() -> str:
        connection = connect(url, 2.0, "cache.url")
        try:
            with pytest.raises(Refused) as refused:
                await connection.client.get(f"{redis_namespace}:k")
            assert isinstance(refused.value, DbOutOfRange)
            return str(refused.value)
        finally:
            await connection.aclose()

    said = asyncio.run(run())
    assert said.startswith(
        f"db {db} is out of range: this Redis has {count} databases (0 to {count - 1})"
    )


def test_a_db_out_of_range_is_said_to_a_user_that_may_not_read_the_config() -> None:
    """A Redis user whose ACL forbids ``CONFIG`` is told the default instead."""
    import redis as sync_redis

    with private_redis() as url:
        with sync_redis.Redis.from_url(url) as admin:
            admin.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all", "-config")
        path = url.removeprefix("unix://")

        async def run() -> str:
            connection = connect(f"unix://app:pw@{path}?db=99", 2.0, "cache.url")
            try:
                with pytest.raises(DbOutOfRange) as refused:
                    await connection.client.get("k")
                return str(refused.value)
            finally:
                await connection.aclose()

        said = asyncio.run(run())
    assert said.startswith("db 99 is out of range: this Redis has fewer databases")
    assert "16 by default" in said


def test_a_registry_whose_state_is_memory_or_a_whole_number_db_loads(tmp_path: Path) -> None:
    """``memory`` has no db (read as a URL, its path ``memory`` is no number)."""
    load_registry(_registry(tmp_path, "memory", "redis://127.0.0.1:6379/2?db=2"))


def test_a_urls_lib_name_and_lib_version_name_the_library_without_a_warning(
    redis_namespace: str,
) -> None:
    """``lib_name`` and ``lib_version`` (``CLIENT SETINFO``) are deprecated as redis-py
    8's connection arguments: each connection made warned (a ``DeprecationWarning``,
    an error in this suite), the registry's check too. They are passed as the
    ``driver_info`` redis-py 8 takes instead, and still name the library (Redis 7.2
    shows it in ``CLIENT INFO``; an older one refuses ``CLIENT SETINFO``, unsaid)."""
    sep = "&" if "?" in REDIS_URL else "?"
    url = f"{REDIS_URL}{sep}lib_name=my-gateway&lib_version=1.2.3"
    check_url(url, "cache.url")

    async def run() -> tuple[Any, Any, Any]:
        connection = connect(url, 2.0, "cache.url")
        try:
            await connection.client.set(f"{redis_namespace}:k", b"v")
            made = connection.client.connection_pool.make_connection()
            info = made.driver_info
            return await connection.client.get(f"{redis_namespace}:k"), info.name, info.lib_version
        finally:
            await connection.aclose()

    assert asyncio.run(run()) == (b"v", "my-gateway", "1.2.3")
