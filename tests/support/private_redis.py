"""A Redis server of a test's own (``redis-server`` on a Unix socket in a scratch
folder, nothing saved), for states the shared one must not be put in: a replica
(``READONLY``), full memory (``OOM``), one still loading its data after a restart
(``LOADING``: `loading_redis`). Without the ``redis-server`` program the test skips,
or fails under ``CI=true`` (`services.require`)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services import require

__all__ = ["loading_redis", "private_redis", "without_select"]


@contextmanager
def private_redis() -> Iterator[str]:
    """A fresh ``redis-server``'s ``unix://`` URL, until the block ends."""
    folder = Path(tempfile.mkdtemp(prefix="llmroute-redis-"))
    try:
        with _server(folder, "--save", "", "--appendonly", "no") as url:
            yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def without_select(url: str, password: str) -> str:
    """`url` (a `private_redis`) as an ACL user ``limited`` who may run anything but
    ``SELECT``, at db 1: a Redis that refuses every connection at its handshake."""
    import redis

    with redis.Redis.from_url(url) as admin:
        admin.acl_setuser(
            "limited",
            enabled=True,
            passwords=[f"+{password}"],
            keys=["*"],
            commands=["+@all", "-select"],
        )
    return f"{url}?db=1&username=limited&password={password}"


@contextmanager
def loading_redis(keys: int = 5000) -> Iterator[str]:
    """The ``unix://`` URL of a ``redis-server`` restarted on a dump of `keys` keys and
    loading them a millisecond each (``key-load-delay``, a setting Redis's own tests
    use): until it has (5 s for the default), every command but a few (``CLIENT``,
    ``HELLO``, ``AUTH``...) is answered ``-LOADING``, as a Redis restarted with its data
    on disk answers."""
    import redis

    folder = Path(tempfile.mkdtemp(prefix="llmroute-redis-"))
    options = ["--save", "", "--appendonly", "no"]
    try:
        filled = _server(folder, *options, "--enable-debug-command", "local")
        with filled as url, redis.Redis.from_url(url) as filling:
            filling.execute_command("DEBUG", "POPULATE", keys)
            filling.save()
        delay = ["--key-load-delay", "1000", "--loading-process-events-interval-bytes", "1024"]
        with _server(folder, *options, *delay, ready=_loading) as url:
            yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _answers(client: Any) -> None:
    client.ping()


def _loading(client: Any) -> None:
    import redis

    try:
        client.ping()
    except redis.BusyLoadingError:
        return
    raise RuntimeError("redis-server loaded its dump before the test could use it")


@contextmanager
def _server(folder: Path, *options: str, ready: Callable[[Any], None] = _answers) -> Iterator[str]:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    once = Retry(NoBackoff(), 0)
    program = shutil.which("redis-server")
    require(None if program else "the redis-server program is not installed")
    assert program is not None
    sock = folder / "redis.sock"
    server = subprocess.Popen(
        [program, "--port", "0", "--unixsocket", str(sock), *options, "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(  # asked once: no retry (LOADING is one redis-py retries)
                    unix_socket_path=str(sock), socket_timeout=1, retry=once
                ) as probe:
                    ready(probe)
                break
            except (redis.RedisError, OSError):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"unix://{sock}"
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
