"""How `llmroute serve` (one process and `--workers`) and `llmroute dashboard` end when
a signal stops them, as real processes given real signals: one convention for all three
(0 after SIGTERM, a supervisor's ordinary stop; 130 after Ctrl-C), and `--port 0` said
as the port picked."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest
from gateway_proc import BIN, ECHO_ONLY, started, stop, wait_for

SIGNALS = [(signal.SIGTERM, 0), (signal.SIGINT, 130)]


def _stopped_by(proc: subprocess.Popen[bytes], signum: int, log: Path) -> int:
    proc.send_signal(signum)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        stop(proc)
        pytest.fail(f"still running 60 s after {signum!r}:\n{log.read_text(errors='replace')}")


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(("signum", "status"), SIGNALS)
def test_serve_stopped_by_a_signal_exits_by_the_convention(
    tmp_path: Path, workers: int, signum: int, status: int
) -> None:
    """One process was killed by the SIGTERM uvicorn raised again after its clean
    shutdown (143 to a shell: a failure to systemd's and Kubernetes' eyes); `--workers`
    exited 0 after Ctrl-C, which a script could not tell from a finished run."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(ECHO_ONLY)
    log = tmp_path / "serve.log"
    command = [str(BIN / "llmroute"), "serve", "-r", str(registry), "--workers", str(workers)]
    with started(command, log, "/ready") as served:
        assert _stopped_by(served.proc, signum, log) == status, log.read_text()


@pytest.mark.parametrize(("signum", "status"), SIGNALS)
def test_dashboard_stopped_by_a_signal_exits_as_serve_does(
    tmp_path: Path, signum: int, status: int
) -> None:
    """It exited 0 after Ctrl-C and was killed by SIGTERM (143)."""
    log = tmp_path / "dashboard.log"
    url = f"sqlite:///{tmp_path / 'log.db'}"
    command = [str(BIN / "llmroute"), "dashboard", "--url", url]
    with started(command, log, "/health", startup_s=30) as served:
        assert _stopped_by(served.proc, signum, log) == status, log.read_text()


def test_serve_port_0_says_the_port_it_listens_on(tmp_path: Path) -> None:
    """`serve --port 0 --root-path /llm` said "the API is at http://127.0.0.1:0/llm/v1":
    the port is picked before it is said, as `dashboard` does."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(ECHO_ONLY)
    log = tmp_path / "serve.log"
    command = [str(BIN / "llmroute"), "serve", "-r", str(registry), "--root-path", "/llm"]
    with log.open("wb") as out:
        proc = subprocess.Popen([*command, "--port", "0"], stdout=out, stderr=subprocess.STDOUT)
    try:
        running = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
        wait_for(
            "uvicorn's start line", lambda: running.search(log.read_text()) is not None, 60, log
        )
        said = log.read_text()
        match = running.search(said)
        assert match is not None
        port = match.group(1)
        assert port != "0"
        assert f"the API is at http://127.0.0.1:{port}/llm/v1" in said, said
    finally:
        stop(proc)
