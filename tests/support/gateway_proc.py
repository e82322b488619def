"""`llmroute serve` as a subprocess on a free 127.0.0.1 port, for end-to-end tests.

`serve` starts it, waits for ``/ready`` (bounded), and stops it on exit; its stdout and
stderr go to a log file the test can read.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

BIN = Path(sys.executable).parent

# one route on an offline echo model, no decision log: for tests of the server itself
ECHO_ONLY = """
encoder: builtin:static
providers:
  echo: {kind: echo}
models:
  small: {provider: echo, model: echo-small}
routes:
  - {name: chat, examples: [hello there], target: small}
default: {target: small}
telemetry: {enabled: false}
"""


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def version(self) -> str:
        """The registry version ``/ready`` reports."""
        response = httpx.get(f"{self.url}/ready", timeout=5)
        response.raise_for_status()
        version: str = response.json()["registry_version"]
        return version


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    """Poll `check` until it holds; fail naming `what` (and showing the log) after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    shown = f":\n{log.read_text(errors='replace')}" if log is not None else ""
    pytest.fail(f"{what} did not happen within {timeout} s{shown}")


class _PortTaken(Exception):
    """The free port was taken before the process bound it (by another test worker's
    process, or as an outgoing connection's): start again on another."""


_IN_USE = ("cannot listen on", "address already in use")


def _answers(what: str, url: str, proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        said = log.read_text(errors="replace")
        if any(sign in said.lower() for sign in _IN_USE):
            raise _PortTaken(said)
        pytest.fail(f"{what} exited with {proc.returncode}:\n{said}")
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _start(
    command: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None,
    path: str,
    startup_s: float,
) -> tuple[subprocess.Popen[bytes], str]:
    """``COMMAND --port PORT`` on a free port, once ``PATH`` answers 200: the process
    and its base URL. A port taken between `free_port` and the bind (tests run in
    parallel) is tried again on another, at most three times."""
    what = f"{Path(command[0]).name} {command[1]}"  # llmroute serve
    for attempt in range(3):
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*command, "--port", str(port)],
                env={**os.environ, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        check = functools.partial(_answers, what, base + path, proc, log)
        try:
            wait_for(f"{what} ready", check, startup_s, log)
        except _PortTaken as exc:
            stop(proc)
            if attempt == 2:
                pytest.fail(f"{what} found no free port:\n{exc}")
            continue
        except BaseException:
            stop(proc)
            raise
        return proc, base
    raise AssertionError("unreachable")


@contextmanager
def serve(
    registry: Path,
    log: Path,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    startup_s: float = 60,
) -> Iterator[Served]:
    """Run ``llmroute serve --registry REGISTRY ARGS...`` until the block ends."""
    command = [str(BIN / "llmroute"), "serve", "--registry", str(registry), *args]
    with started(command, log, "/ready", env, startup_s) as served:
        yield served


@contextmanager
def started(
    command: Sequence[str],
    log: Path,
    path: str,
    env: Mapping[str, str] | None = None,
    startup_s: float = 60,
) -> Iterator[Served]:
    """Run ``COMMAND --port PORT`` (a server of llmroute's) on a free port until the block
    ends, once PATH answers 200; stopped with SIGTERM if it still runs."""
    proc, url = _start(command, log, env, path, startup_s)
    try:
        yield Served(url, proc, log)
    finally:
        stop(proc)


def serve_refused(
    registry_text: str, tmp_path: Path, args: Sequence[str], env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``llmroute serve`` with `args` that should stop it before it serves (a malformed
    option): its exit and output, for the caller to check the one line it said."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(registry_text)
    return subprocess.run(
        [str(BIN / "llmroute"), "serve", "-r", str(registry), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LLMROUTE_TELEMETRY_URL": "off", **(env or {})},
    )


def stop(proc: subprocess.Popen[bytes], grace_s: float = 10) -> None:
    """SIGTERM, then SIGKILL after `grace_s` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def serve_text(
    text: str, folder: Path, args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> Iterator[Served]:
    """`serve` the registry `text`, written to FOLDER/registry.yaml; the log is
    FOLDER/serve.log (``Served.log``)."""
    registry = folder / "registry.yaml"
    registry.write_text(text)
    with serve(registry, folder / "serve.log", args, env) as served:
        yield served


@contextmanager
def log_dashboard(
    url: str, log: Path, args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """`llmroute dashboard --url URL ARGS...` on a free 127.0.0.1 port (its default
    host), its output in `log`; yields its base URL once /health answers, stops it on
    exit."""
    command = [str(BIN / "llmroute"), "dashboard", "--url", url, *args]
    with started(command, log, "/health", env, 30) as served:
        yield served.url


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """`app` (an ASGI app, `create_app`'s) served by uvicorn in a thread of this process
    on a free 127.0.0.1 port, once ``/ready`` answers: for a test that patches what the
    gateway calls (a store that fails, a bug), which a subprocess would not see."""
    port = free_port()
    config = uvicorn.Config(app, port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()))
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for("the gateway ready", ready, 60)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
