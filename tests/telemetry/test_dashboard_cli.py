"""`llmroute dashboard`: the web dashboard over a decision log with no gateway, as a real
process on 127.0.0.1, over SQLite and the real PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gateway_proc import log_dashboard, wait_for
from prefix_proxy import prefix_proxy
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


def test_a_stray_trailing_slash_is_a_404_not_a_redirect_to_an_absolute_url(
    tmp_path: Path,
) -> None:
    """Starlette's slash redirect named the dashboard's own address, without a proxy's
    path prefix, where the page's own links are relative to keep it."""
    with log_dashboard(f"sqlite:///{tmp_path / 'none.db'}", tmp_path / "dashboard.log") as base:
        reply = httpx.get(f"{base}/dashboard/data/", timeout=10)
    assert reply.status_code == 404 and "location" not in reply.headers
    assert "GET /dashboard/data is (no trailing /)" in reply.json()["error"]["message"]


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


def test_a_refused_host_is_logged_and_allowed_hosts_are_answered(tmp_path: Path) -> None:
    """The gateway's Host check (`llmroute serve`): each refusal is one warning line,
    the answer names --allowed-host, a name given with it is answered, /health is
    answered to anyone (a proxy's or a kubelet's check)."""
    log = tmp_path / "dashboard.log"
    args = ["--allowed-host", "dash.example.com"]
    with log_dashboard(f"sqlite:///{tmp_path / 'log.db'}", log, args) as base:
        port = base.rpartition(":")[2]
        rebound = {"host": f"rebound.example:{port}"}
        refused = httpx.get(f"{base}/dashboard/data", headers=rebound, timeout=10)
        assert refused.status_code == 400, refused.text
        message = refused.json()["error"]["message"]
        assert message.startswith("this dashboard listens on a loopback address"), message
        assert "--allowed-host NAME" in message and "dash.example.com" not in message
        said = (
            "refused GET /dashboard/data from 127.0.0.1 (invalid_host 400): Host "
            f"'rebound.example:{port}', neither a loopback name nor one --allowed-host gave"
        )
        wait_for("the refusal's log line", lambda: said in log.read_text(), 10, log)
        assert log.read_text().count("refused GET") == 1
        assert httpx.get(f"{base}/health", headers=rebound, timeout=10).status_code == 200
        for host in ("dash.example.com", f"DASH.example.com:{port}"):
            page = httpx.get(f"{base}/dashboard", headers={"host": host}, timeout=10)
            assert page.status_code == 200, (host, page.text)
    assert log.read_text().count("refused GET") == 1


def _fetched_under(proxied: str) -> dict[str, object]:
    """Open the dashboard at `proxied` (a proxy's URL with its prefix) as a browser
    does: its address, the redirect to the page, then every file and the data the page
    asks for by its relative URLs; returns the data."""
    home = httpx.get(f"{proxied}/", follow_redirects=True, timeout=10)
    assert home.status_code == 200 and str(home.url) == f"{proxied}/dashboard", home.url
    linked = re.findall(r'(?:href|src|content)="([^"]*(?:app\.css|app\.js|data))"', home.text)
    assert len(linked) == 3, linked
    data: dict[str, object] = {}
    for link in linked:
        url = str(home.url.join(link))
        assert url.startswith(f"{proxied}/dashboard/"), url
        fetched = httpx.get(url, params={"since": "24h"}, timeout=10)
        assert fetched.status_code == 200, (url, fetched.text)
        if url.endswith("/data"):
            data = fetched.json()
    return data


@pytest.mark.parametrize("given", ["option", "environment"])
def test_behind_a_proxy_that_keeps_the_prefix(
    given: str, tmp_path: Path, make_record: MakeRecord
) -> None:
    """nginx's ``proxy_pass http://127.0.0.1:8100;`` (no trailing /) asks for
    /llm/dashboard as it is: served as /dashboard with --root-path /llm (or
    $LLMROUTE_ROOT_PATH), the page's files and data under /llm too; without the prefix
    too."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    _fill(url, make_record, 3)
    args = ["--root-path", "/llm"] if given == "option" else []
    env = {"LLMROUTE_ROOT_PATH": "/llm"} if given == "environment" else {}
    log = tmp_path / "dashboard.log"
    with log_dashboard(url, log, args, env) as base, prefix_proxy(base, keep=True) as proxied:
        data = _fetched_under(proxied)
        assert isinstance(data["summary"], dict) and data["summary"]["requests"] == 3
        assert httpx.get(f"{base}/dashboard", timeout=10).status_code == 200
        # no second prefix: what the Host check saw is what the routes match
        assert httpx.get(f"{base}/llm/llm/dashboard", timeout=10).status_code == 404
        rebound = {"host": "rebound.example"}
        refused = httpx.get(f"{base}/llm/dashboard", headers=rebound, timeout=10)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_host"
    source = "--root-path" if given == "option" else "$LLMROUTE_ROOT_PATH"
    assert f"paths under /llm are served as without it ({source})" in log.read_text()


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (["--root-path", "llm/"], {}, "--root-path 'llm/': it must start with '/'"),
        (["--root-path", "/dashboard"], {}, "--root-path '/dashboard': the gateway's own"),
        # a variable's value is named by the variable: no --root-path was given
        ([], {"LLMROUTE_ROOT_PATH": "/a//b"}, "$LLMROUTE_ROOT_PATH '/a//b': each part must be"),
        (["--root-path", "/l m"], {"LLMROUTE_ROOT_PATH": "/llm"}, "--root-path '/l m': "),
        (["--allowed-host", "https://x.example/"], {}, "--allowed-host 'https://x.example/':"),
        ([], {"LLMROUTE_ALLOWED_HOSTS": "a b"}, "$LLMROUTE_ALLOWED_HOSTS 'a b': give a host"),
    ],
)
def test_a_malformed_root_path_or_allowed_host_fails_in_one_line(
    args: list[str], env: dict[str, str], said: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    done = subprocess.run(
        [str(BIN / "llmroute"), "dashboard", "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], done.stderr


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


def test_port_0_is_said_as_the_port_picked() -> None:
    """`dashboard --port 0` printed http://127.0.0.1:0/dashboard, and at its default log
    level nothing said the port uvicorn had picked: the port is picked before, and said."""
    from llmroute.cli._app import check_port

    port = check_port("127.0.0.1", 0)
    assert isinstance(port, int) and 0 < port < 65536
    assert check_port("127.0.0.1", port) == port


def test_log_level_and_format_as_serve_takes_them(tmp_path: Path) -> None:
    """--log-level and --log-format (and their variables) as `llmroute serve` has them:
    at info, uvicorn's start-up lines, one JSON object each; a refused Host's warning in
    JSON too. The default (warning, text) keeps the start quiet."""
    log = tmp_path / "dashboard.log"
    url = f"sqlite:///{tmp_path / 'log.db'}"
    env = {"LLMROUTE_LOG_FORMAT": "JSON"}  # any case, as serve's
    with log_dashboard(url, log, ["--log-level", "info"], env) as base:
        refused = httpx.get(f"{base}/dashboard/data", headers={"host": "rebound.test"})
        assert refused.status_code == 400
        wait_for("the refusal's line", lambda: "refused GET" in log.read_text(), 10, log)
    objects = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    levels = {(o["logger"], o["level"]) for o in objects}
    assert ("uvicorn.error", "info") in levels, objects
    refusal = [o for o in objects if o["message"].startswith("refused GET")]
    assert (
        refusal and refusal[0]["level"] == "warning" and refusal[0]["logger"] == ("llmroute.server")
    )
    quiet = tmp_path / "quiet.log"
    with log_dashboard(url, quiet):
        pass
    assert "Application startup complete" not in quiet.read_text()
    assert not any(line.startswith("{") for line in quiet.read_text().splitlines())


def test_the_log_levels_are_serves(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "llmroute"), "dashboard", "--url", "sqlite:///x.db", "--log-level", "loud"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert "'loud' is not one of 'debug', 'info', 'warning', 'error'" in done.stderr
    assert "Value error" not in done.stderr  # pydantic's prefix on typer's message


def test_what_is_not_http_is_answered_as_the_gateway_answers_it(tmp_path: Path) -> None:
    """Bytes uvicorn's parser refuses get the gateway's error JSON (not uvicorn's plain
    text), and one warning for the first, not uvicorn's line for each: whoever reaches
    the dashboard can send them as fast as they like."""
    log = tmp_path / "dashboard.log"
    garbage = (
        b"GARBAGE\r\n\r\n",
        b"GET /dashboard HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\x01b\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        # a request naming its server ambiguously (`llmroute.server.one_host`): served before
        b"GET http://evil.example/dashboard HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\n\r\n",
    )
    with log_dashboard(f"sqlite:///{tmp_path / 'log.db'}", log) as base:
        port = int(base.rpartition(":")[2])
        for data in garbage:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(data)
                received = b""
                while chunk := sock.recv(65536):  # until the dashboard closes it
                    received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 "), received
            assert b"content-type: application/json" in head.lower(), received
            assert json.loads(body)["error"]["code"] == "invalid_http_request"
        said = "not an HTTP/1.1 request from 127.0.0.1: answered 400 invalid_http_request"
        wait_for("the warning", lambda: said in log.read_text(), 10, log)
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200  # serves on
    text = log.read_text()
    assert text.count("not an HTTP/1.1 request") == 1, text
    assert "Invalid HTTP request received." not in text, text
