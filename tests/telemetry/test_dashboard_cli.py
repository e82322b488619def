"""`llmroute dashboard`: the web dashboard over a decision log with no gateway, as a real
process on 127.0.0.1, over SQLite and the real PostgreSQL."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gateway_proc import log_dashboard
from telemetry_records import MakeRecord

from llmroute.telemetry.store import open_store

BIN = Path(sys.executable).parent


def _fill(url: str, make_record: MakeRecord, n: int) -> None:
    store = open_store(url)
    try:
        store.migrate()
        now = time.time()
        store.write_decisions([make_record(i, ts=now - 60 - i) for i in range(n)])
        store.write_decisions([make_record(100, ts=now - 3 * 86400)])  # outside 24h
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_dashboard_reads_any_decision_log(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, make_record: MakeRecord
) -> None:
    url: str = request.getfixturevalue(f"{backend}_url")
    _fill(url, make_record, 12)
    with log_dashboard(url, tmp_path / "dashboard.log") as base:
        home = httpx.get(base, timeout=10)
        # relative (kept under a proxy's path prefix)
        assert home.status_code == 307 and home.headers["location"] == "dashboard"
        page = httpx.get(f"{base}/dashboard", timeout=10)
        assert page.status_code == 200 and '"dashboard/app.js"' in page.text
        data = httpx.get(f"{base}/dashboard/data", params={"since": "24h"}, timeout=10).json()
    assert data["live"] is None  # no gateway behind this one
    assert data["summary"]["requests"] == 12
    assert [r["name"] for r in data["routes"]] == ["billing"]
    assert data["recent"][0]["model"] == "small-model"
    assert "alice@example.com" not in str(data)
    assert "dashboard: http://127.0.0.1:" in (tmp_path / "dashboard.log").read_text()


def test_a_log_not_written_yet_is_a_message_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "none.db"
    with log_dashboard(f"sqlite:///{path}", tmp_path / "dashboard.log") as base:
        response = httpx.get(f"{base}/dashboard/data", timeout=10)
    assert response.status_code == 200
    assert response.json()["log"]["message"] == f"no decision log at {path} yet"
    assert not path.exists()  # looking does not create it


def test_an_unreadable_log_is_a_503_with_the_password_masked(
    tmp_path: Path, closed_port: int
) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://bob:s3cret@127.0.0.1:{closed_port}/nope?connect_timeout=1"
    with log_dashboard(url, tmp_path / "dashboard.log") as base:
        response = httpx.get(f"{base}/dashboard/data", timeout=30)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "telemetry_unavailable" and "bob:***@" in error["message"]
    assert "s3cret" not in response.text
    assert "s3cret" not in (tmp_path / "dashboard.log").read_text()


def test_an_unusable_url_fails_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "llmroute"), "dashboard", "--url", "mysql://x/y"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "mysql://x/y" in done.stderr


def test_on_a_loopback_address_it_answers_only_loopback_names(tmp_path: Path) -> None:
    """A page of another site can make its own name resolve to 127.0.0.1 (DNS
    rebinding) and then read this dashboard as its own: requests under any name but
    localhost or a loopback address are refused."""
    with log_dashboard(f"sqlite:///{tmp_path / 'log.db'}", tmp_path / "dashboard.log") as base:
        port = base.rpartition(":")[2]
        # an address is no name DNS could rebind: any loopback one is the dashboard's
        # own (`--host 127.0.0.2` prints http://127.0.0.2:PORT/dashboard)
        loopback = ("127.0.0.1", "localhost", "LOCALHOST", "[::1]", "127.0.0.2", "[0::1]")
        for name in loopback:
            for path in ("/dashboard", "/dashboard/data", "/health"):
                answer = httpx.get(f"{base}{path}", headers={"host": f"{name}:{port}"})
                assert answer.status_code == 200, (name, path)
        for name in ("attacker.example", "127.0.0.1.attacker.example", "10.0.0.5"):
            for path in ("/dashboard", "/dashboard/data", "/dashboard/app.js"):
                answer = httpx.get(f"{base}{path}", headers={"host": f"{name}:{port}"})
                assert answer.status_code == 400, (name, path)
                assert answer.json()["error"]["code"] == "invalid_host"


def test_a_port_in_use_fails_in_one_line(tmp_path: Path) -> None:
    """Said before uvicorn starts (it logged an ERROR line and exited 3)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        url = f"sqlite:///{tmp_path / 'log.db'}"
        done = subprocess.run(
            [str(BIN / "llmroute"), "dashboard", "--url", url, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    said = f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert done.stderr.strip() == said


def test_the_printed_address_is_one_a_browser_takes() -> None:
    from llmroute.cli.dashboard import page_url

    assert page_url("127.0.0.1", 8100) == "http://127.0.0.1:8100/dashboard"
    assert page_url("::1", 8100) == "http://[::1]:8100/dashboard"  # was http://::1:8100
    assert page_url("[::1]", 8100) == "http://[::1]:8100/dashboard"
    assert page_url("localhost", 80) == "http://localhost:80/dashboard"
