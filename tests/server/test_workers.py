"""``llmroute serve --workers 2`` end to end: the workers each listen on a socket of their
own, so a burst of keep-alive connections is spread across them (checked through
/proc: which worker holds which connection); a worker that dies is replaced; SIGHUP
reaches every worker; SIGTERM stops them all; a port in use is a clean error.
Linux only (SO_REUSEPORT balancing)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import BIN, serve, wait_for

from llmroute.server.workers import Supervisor, Target, reuse_port_supported

pytestmark = pytest.mark.skipif(
    not reuse_port_supported(), reason="SO_REUSEPORT balancing is Linux's"
)

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
routes:
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
"""

BODY = json.dumps({"model": "small", "messages": [{"role": "user", "content": "hi"}]})


def _workers(parent: int) -> set[int]:
    """The worker processes of the supervisor `parent` (not multiprocessing's tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in (Path("/proc") / str(pid) / "fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(match.group(1))
    return inodes


def _server_side_inodes(server_port: int, client_ports: set[int]) -> set[str]:
    """Inodes of the gateway's ends of the connections from `client_ports`."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        remote_port = int(fields[2].split(":")[1], 16)
        if local_port == server_port and remote_port in client_ports:
            inodes.add(fields[9])
    return inodes


def _request(conn: http.client.HTTPConnection) -> int:
    conn.request("POST", "/v1/chat/completions", BODY, {"content-type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status


def test_workers_share_the_connections_restart_reload_and_stop(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also the default case of `test_workers_run_numpys_blas_on_one_thread_unless_the_
    operator_chose` (no BLAS variable set by the operator), checked on these workers
    rather than on two more started for it alone."""
    _without_blas_variables(monkeypatch)
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY % {"url": upstream.url})
    log = tmp_path / "serve.log"
    prom = tmp_path / "prom"
    prom.mkdir()
    env = {"LLMROUTE_TELEMETRY_URL": "off", "PROMETHEUS_MULTIPROC_DIR": str(prom)}
    with serve(registry, log, ["--workers", "2"], env=env) as served:
        parent = served.proc.pid
        workers = _workers(parent)
        assert len(workers) == 2
        for pid in workers:  # one BLAS thread each, as the operator chose none
            assert _blas_environ(pid, BLAS_DEFAULT) == BLAS_DEFAULT
        port = int(served.url.rsplit(":", 1)[1])
        live = httpx.get(f"{served.url}/dashboard/data", timeout=10).json()["live"]
        assert live["workers"] == 2 and live["pid"] in workers  # the page says whose it is

        # a burst of keep-alive connections, as a proxy's pool opens them, as soon as the
        # first worker answers (the other may still be starting: its socket listens
        # already, and what it is given waits in its queue)
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(16)]
        try:
            for conn in conns:
                conn.connect()
            assert all(_request(conn) == 200 for conn in conns for _ in range(3))
            client_ports = {conn.sock.getsockname()[1] for conn in conns}
            ends = _server_side_inodes(port, client_ports)
            assert len(ends) == 16
            held = {pid: len(ends & _socket_inodes(pid)) for pid in workers}
            assert sum(held.values()) == 16, held
            assert all(n > 0 for n in held.values()), f"one worker took every connection: {held}"
        finally:
            for conn in conns:
                conn.close()

        # SIGHUP to the supervisor reaches every worker
        os.kill(parent, signal.SIGHUP)
        wait_for(
            "both workers reloaded", lambda: log.read_text().count("reload (SIGHUP)") >= 2, 30, log
        )

        # a worker that dies is replaced, and the port keeps answering
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_for(
            f"a replacement worker for pid {victim} (workers {sorted(workers)})",
            lambda: len(_workers(parent)) == 2 and victim not in _workers(parent),
            60,
            log,
        )
        wait_for("three startups", lambda: log.read_text().count("startup complete") >= 3, 60, log)
        for _ in range(10):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                assert _request(conn) == 200
            finally:
                conn.close()
        assert "exited with status -9; starting another" in log.read_text()
        # the killed worker's live gauges are gone (it could not remove them itself)
        assert any(f"_{victim}.db" in p.name for p in prom.iterdir() if "live" not in p.name)
        assert not [p.name for p in prom.iterdir() if "live" in p.name and f"_{victim}." in p.name]

        # SIGTERM stops the workers and the supervisor
        alive = _workers(parent)
        served.proc.terminate()
        assert served.proc.wait(timeout=60) == 0
        assert not any(Path(f"/proc/{pid}").exists() and _zombie_or_alive(pid) for pid in alive)


def _zombie_or_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_a_clean_error(
    tmp_path: Path, upstream: FakeUpstream, workers: str
) -> None:
    """One line and exit 2, with one process as with several (one process was uvicorn's
    ERROR among its start-up lines and exit 3)."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY % {"url": upstream.url})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [str(BIN / "llmroute"), "serve", "--registry", str(registry)]
        done = subprocess.run(
            [*command, "--port", str(port), "--workers", workers],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "LLMROUTE_TELEMETRY_URL": "off"},
        )
    assert done.returncode == 2, done.stderr
    said = f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert done.stderr.strip() == said


def test_a_worker_that_cannot_start_stops_the_server(caplog: pytest.LogCaptureFixture) -> None:
    """A worker that exits before it serves ends the server with status 1 at once, not a
    restart loop (its error is in its own output)."""
    from worker_targets import fails_at_startup

    handler = signal.getsignal(signal.SIGINT)
    sockets = [socket.socket(), socket.socket()]
    try:
        supervisor = Supervisor(sockets, {"version": 1}, target=fails_at_startup)
        started = time.monotonic()
        assert supervisor.run() == 1
    finally:
        for sock in sockets:
            sock.close()
    assert time.monotonic() - started < 60
    assert "before serving" in caplog.text and "starting another" not in caplog.text
    assert all(not slot.process.is_alive() for slot in supervisor.slots)
    assert signal.getsignal(signal.SIGINT) is handler  # the caller's handlers are back


def _run_two_workers_for_4s(target: Target) -> Supervisor:
    """Two workers on unbound sockets, supervised for 4 s, then stopped (status 0)."""
    sockets = [socket.socket(), socket.socket()]
    supervisor = Supervisor(sockets, {"version": 1}, target=target)
    timer = threading.Timer(4.0, supervisor.stop.set)
    timer.start()
    try:
        assert supervisor.run() == 0
    finally:
        timer.cancel()
        for sock in sockets:
            sock.close()
    return supervisor


def test_a_crash_looping_worker_is_restarted_after_growing_pauses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Workers that serve, then die at once, are restarted after 1 s, 2 s, ... (not in a
    tight loop that would spend a core on start-ups)."""
    from worker_targets import serves_then_exits

    caplog.set_level("WARNING", logger="llmroute.server")
    supervisor = _run_two_workers_for_4s(serves_then_exits)
    # without pauses each worker would restart every few hundred ms (about 16 starts)
    assert supervisor.starts <= 8, supervisor.starts
    assert "starting another in 1s" in caplog.text
    assert "starting another in 2s" in caplog.text


def test_a_replacement_that_cannot_start_is_retried_while_the_others_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """After a worker served and died, a replacement that fails before serving does not
    take the healthy workers down: it is retried after growing pauses."""
    from worker_targets import second_worker_breaks_after_one_run

    monkeypatch.setenv("WORKER_MARKERS", str(tmp_path))
    caplog.set_level("WARNING", logger="llmroute.server")
    supervisor = _run_two_workers_for_4s(second_worker_breaks_after_one_run)
    healthy = supervisor.slots[0].process
    assert healthy.name == "llmroute-worker-0" and 0 not in supervisor.replaced
    assert "starting another in 1s" in caplog.text  # the first run of worker 1 served
    assert "replacement worker exited with status 3 before serving" in caplog.text
    assert "trying again in 2s" in caplog.text and "stopping" not in caplog.text
    assert 3 <= supervisor.starts <= 6, supervisor.starts  # 2, then 1 s, 2 s pauses
    # its socket was closed for each wait (connections there would hang), then opened again
    assert supervisor.reopened == supervisor.starts - 2


def test_a_bad_telemetry_url_fails_before_any_worker_starts(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY % {"url": upstream.url})
    done = subprocess.run(
        [str(BIN / "llmroute"), "serve", "--registry", str(registry), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "LLMROUTE_TELEMETRY_URL": "bogus://nowhere"},
    )
    assert done.returncode != 0
    # the variable named, not the registry's telemetry.url it won over
    assert "$LLMROUTE_TELEMETRY_URL: unsupported telemetry URL 'bogus://nowhere'" in done.stderr
    assert "telemetry.url" not in done.stderr and "Traceback" not in done.stderr


def test_a_worker_says_it_serves_before_it_answers_anything() -> None:
    """The ready message goes out from the server's startup, before the first request is
    read: a worker killed right after its first answers is restarted, not taken for one
    that could not start (which stops the whole gateway)."""
    import asyncio

    import uvicorn

    from llmroute.server.shutdown import Server

    told = threading.Event()

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        body = b"told" if told.is_set() else b"not told"
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": body})  # type: ignore[operator]

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    # requests already waiting in the socket's queue when the server starts: the first
    # thing it can answer
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(4)]
    for conn in conns:
        conn.connect()
        conn.putrequest("GET", "/")
        conn.endheaders()
    config = uvicorn.Config(app, lifespan="off", log_config=None)
    server = Server(config, on_started=told.set)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    try:
        answers = []
        for conn in conns:
            response = conn.getresponse()
            answers.append(response.read())
            conn.close()
        assert answers == [b"told"] * 4
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _environ(pid: int) -> dict[str, str]:
    raw = (Path("/proc") / str(pid) / "environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


BLAS_DEFAULT = {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": None}


def _without_blas_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)  # tests/conftest.py sets them


def _blas_environ(pid: int, expected: dict[str, str | None]) -> dict[str, str | None]:
    """The variables of `expected` in worker `pid`'s environment as it started (read
    before numpy is imported)."""
    seen = _environ(pid)
    return {name: seen.get(name) for name in expected}


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        # no variable set: checked on the workers of
        # test_workers_share_the_connections_restart_reload_and_stop (BLAS_DEFAULT)
        ({"OPENBLAS_NUM_THREADS": "3"}, {"OPENBLAS_NUM_THREADS": "3", "MKL_NUM_THREADS": None}),
        ({"OMP_NUM_THREADS": "2"}, {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": None}),
    ],
)
def test_workers_run_numpys_blas_on_one_thread_unless_the_operator_chose(
    tmp_path: Path,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    operator: dict[str, str],
    expected: dict[str, str | None],
) -> None:
    """A worker's environment as it started (read before numpy is imported): one BLAS
    thread by default, the operator's own setting of any of the variables kept."""
    _without_blas_variables(monkeypatch)
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY % {"url": upstream.url})
    env = {"LLMROUTE_TELEMETRY_URL": "off", **operator}
    with serve(registry, tmp_path / "serve.log", ["--workers", "2"], env=env) as served:
        workers = _workers(served.proc.pid)
        assert len(workers) == 2
        for pid in workers:
            assert _blas_environ(pid, expected) == expected
