"""SIGHUP while the gateway starts (a config-reloader sidecar, an operator's `kill -HUP`
right after a restart) is ignored: its default action ended the process (exit 129), and
with `--workers` it ended the starting workers and so the whole supervisor. Once the
gateway serves, SIGHUP reloads the registry as before."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from gateway_proc import BIN, ECHO_ONLY, free_port, stop, wait_for

_SIGHUP_BIT = 1 << (signal.SIGHUP - 1)


def _ignores_sighup(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    line = next(line for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(line.split()[1], 16) & _SIGHUP_BIT)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_while_starting_is_ignored_and_reloads_once_serving(
    tmp_path: Path, workers: int
) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(ECHO_ONLY)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    command = [str(BIN / "llmroute"), "serve", "-r", str(registry), "--port", str(port)]
    command += ["--workers", str(workers), "--reload-interval", "0"]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        ignored = False
        while not ignored and not _ready(url) and time.monotonic() < deadline:
            ignored = _ignores_sighup(proc.pid)
            time.sleep(0.005)
        assert ignored, "SIGHUP kept its default action (end the process) while starting"
        ready = threading.Event()
        hups: list[float] = []

        def hang_up() -> None:  # every 20 ms until it serves, whatever it is doing
            while not ready.is_set() and time.monotonic() < deadline and proc.poll() is None:
                os.kill(proc.pid, signal.SIGHUP)
                hups.append(time.monotonic())
                time.sleep(0.02)

        sender = threading.Thread(target=hang_up)
        sender.start()
        try:
            wait_for("serving", lambda: proc.poll() is not None or _ready(url), 60, log)
        finally:
            ready.set()
            sender.join(timeout=10)
        assert proc.poll() is None and _ready(url), log.read_text(errors="replace")
        assert hups  # some came while it started
        os.kill(proc.pid, signal.SIGHUP)  # serving: a reload, as before
        wait_for("the reload on SIGHUP", lambda: "SIGHUP" in log.read_text(), 20, log)
        # still serving: one probe (1 s) could miss on a loaded machine while workers reload
        wait_for("ready after the reload", lambda: proc.poll() is not None or _ready(url), 20, log)
        assert proc.poll() is None
    finally:
        stop(proc, 15)
