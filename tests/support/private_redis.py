"""A Redis server of a test's own (``redis-server`` on a Unix socket in a scratch
folder, nothing saved), for states the shared one must not be put in: a replica
(``READONLY``), full memory (``OOM``). Without the ``redis-server`` program the test
skips, or fails under ``CI=true`` (`services.require`)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services import require

__all__ = ["private_redis"]


@contextmanager
def private_redis() -> Iterator[str]:
    """A fresh ``redis-server``'s ``unix://`` URL, until the block ends."""
    import redis

    program = shutil.which("redis-server")
    require(None if program else "the redis-server program is not installed")
    assert program is not None
    folder = Path(tempfile.mkdtemp(prefix="llmroute-redis-"))
    sock = folder / "redis.sock"
    options = ["--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(
        [program, *options, "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(unix_socket_path=str(sock), socket_timeout=1) as probe:
                    probe.ping()
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
        shutil.rmtree(folder, ignore_errors=True)
