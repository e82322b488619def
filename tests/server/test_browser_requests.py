"""What the gateway answers of requests browsers make on web pages' behalf
(`llmroute.server.browsers`): a page of another origin is refused unless
``--cors-origin`` allows it; on a loopback address only requests to loopback names and
``--allowed-host`` names are answered (DNS rebinding). End to end: `llmroute serve` as
a subprocess without an ``auth:`` section, a fake upstream behind it; the headers are
what Chromium sends (the browser tests show it sending them)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_refused, serve_text, wait_for
from prometheus_client.parser import text_string_to_metric_families

from llmroute.server.settings import ServeSettings

APP = "https://chat.example.com"
REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: small}
routes:
  - {name: chat, examples: ["hello there"], target: small}
default: {target: small}
"""
ASK = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}
CLAUDE = {"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
# a page of another site posting a form (text/plain: no preflight), as Chromium sends it
FORM = {
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Origin": "http://localhost:8080",
    "Content-Type": "text/plain",
}


@pytest.fixture(scope="module")
def decisions_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browsers") / "decisions.db"


@pytest.fixture(scope="module")
def gateway(decisions_db: Path, upstream: FakeUpstream) -> Iterator[Served]:
    """The default: 127.0.0.1, no --cors-origin, no auth; a decision log."""
    env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{decisions_db}"}
    with serve_text(REGISTRY % {"url": upstream.url}, decisions_db.parent, env=env) as served:
        yield served


def _post(
    url: str, headers: Mapping[str, str], path: str = "/v1/chat/completions"
) -> httpx.Response:
    body = CLAUDE if path == "/v1/messages" else ASK
    return httpx.post(f"{url}{path}", json=body, headers=dict(headers), timeout=10)


def _own(served: Served) -> str:
    return served.url  # http://127.0.0.1:PORT: what its own pages' Origin is


REFUSED = {
    "a form of another site": FORM,
    "a fetch of another site": {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.test"},
    # 127.0.0.1:8080 is the gateway's site, another origin: a local dev server's page
    "a page on another port": {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:1"},
    "a no-cors fetch (no Origin)": {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
    "an older browser (Origin only)": {"Origin": "https://evil.test"},
    "a sandboxed page": {"Sec-Fetch-Site": "cross-site", "Origin": "null"},
    "an older browser's sandboxed page": {"Origin": "null"},
}


@pytest.mark.parametrize("headers", REFUSED.values(), ids=REFUSED.keys())
def test_a_page_of_another_origin_is_refused(
    gateway: Served, upstream: FakeUpstream, headers: dict[str, str]
) -> None:
    before = len(upstream.requests)
    reply = _post(gateway.url, headers)
    assert reply.status_code == 403, reply.text
    error = reply.json()["error"]
    assert error["code"] == "cross_origin_forbidden"
    assert error["type"] == "invalid_request_error"
    assert "--cors-origin" in error["message"]
    origin = headers.get("Origin")
    if origin is not None:
        assert f"--cors-origin {origin}" in error["message"]
    assert len(upstream.requests) == before  # nothing sent upstream
    assert "access-control-allow-origin" not in reply.headers


@pytest.mark.parametrize("path", ["/v1/models", "/v1/key", "/metrics", "/dashboard/data"])
def test_another_origins_page_cannot_read_either(gateway: Served, path: str) -> None:
    """What DNS rebinding would read, asked for by a page of another origin: refused
    too (the browser would not show it to that page, but the gateway should not care)."""
    headers = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.test"}
    reply = httpx.get(f"{gateway.url}{path}", headers=headers, timeout=10)
    assert reply.status_code == 403, reply.text
    assert reply.json()["error"]["code"] == "cross_origin_forbidden"


def test_on_v1_messages_the_refusal_is_in_anthropics_shape(
    gateway: Served, upstream: FakeUpstream
) -> None:
    before = len(upstream.requests)
    reply = _post(gateway.url, FORM, "/v1/messages")
    assert reply.status_code == 403, reply.text
    body = reply.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert "--cors-origin http://localhost:8080" in body["error"]["message"]
    assert len(upstream.requests) == before


def test_clients_and_the_gateways_own_pages_are_answered(
    gateway: Served, upstream: FakeUpstream
) -> None:
    own = _own(gateway)
    port = own.rpartition(":")[2]
    allowed: list[dict[str, str]] = [
        {},  # curl, the SDKs: no browser headers
        {"Sec-Fetch-Site": "same-origin", "Origin": own},  # the gateway's own page
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
        {"Origin": own},  # an older browser, on the gateway's own page
        # ... opened as http://localhost:PORT (a Host in capitals: names have no case)
        {"Origin": f"http://localhost:{port}", "Host": f"LocalHost:{port}"},
        # ... on a page at the default port, which neither header need spell out
        {"Origin": "http://localhost", "Host": "localhost:80"},
    ]
    for headers in allowed:
        reply = _post(gateway.url, headers)
        assert reply.status_code == 200, (headers, reply.text)
    # a link another site's page shows, followed: the page opened is the gateway's own
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    link |= {"Sec-Fetch-Dest": "document"}
    assert httpx.get(f"{gateway.url}/v1/models", headers=link, timeout=10).status_code == 200
    # the same link opened inside another page's <object>: that page holds it
    held = {**link, "Sec-Fetch-Dest": "object"}
    assert httpx.get(f"{gateway.url}/v1/models", headers=held, timeout=10).status_code == 403
    # loopback names, any port, any case; any loopback address (no DNS answer makes it
    # another site's)
    for name in ("localhost", "[::1]", "127.0.0.1", "127.0.0.2", "LocalHost"):
        for host in (name, f"{name}:{port}"):
            reply = httpx.get(f"{gateway.url}/v1/models", headers={"Host": host}, timeout=5)
            assert reply.status_code == 200, (host, reply.text)


REBOUND = {
    "a rebinding page": "rebound.test",
    "with a port": "rebound.test:8000",
    "a local name": "my-laptop.local",
}  # an empty Host is HTTP's 400 before this check (tests/server/test_invalid_http.py)


@pytest.mark.parametrize("host", REBOUND.values(), ids=REBOUND.keys())
def test_on_loopback_a_request_to_another_name_is_refused(
    gateway: Served, upstream: FakeUpstream, host: str
) -> None:
    before = len(upstream.requests)
    # same-origin in the browser's eyes: the page's name now resolves to 127.0.0.1
    headers = {"Host": host, "Sec-Fetch-Site": "same-origin"}
    for path in ("/v1/models", "/v1/chat/completions"):
        reply = (
            httpx.get(f"{gateway.url}{path}", headers=headers, timeout=5)
            if path == "/v1/models"
            else _post(gateway.url, headers)
        )
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["code"] == "invalid_host"
        assert "--allowed-host" in error["message"] and "LLMROUTE_ALLOWED_HOSTS" in error["message"]
        assert "Traceback" not in reply.text
    reply = _post(gateway.url, headers, "/v1/messages")
    assert reply.status_code == 400 and reply.json()["type"] == "error"
    assert len(upstream.requests) == before
    # /health and /ready answer anyone, a page of another origin too
    anyone = {"Host": host, "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.test"}
    for path in ("/health", "/ready"):
        assert httpx.get(f"{gateway.url}{path}", headers=anyone, timeout=5).status_code == 200


def test_nothing_refused_is_logged_as_a_decision(gateway: Served, decisions_db: Path) -> None:
    """Refused requests (other origins, other names) write no decision: between two
    answered requests, each waited for in the log, a burst of refused ones adds none."""
    before = _logged_after(gateway, decisions_db)
    for _ in range(3):
        assert _post(gateway.url, FORM).status_code == 403
        assert _post(gateway.url, {"Host": "rebound.test"}).status_code == 400
    assert _logged_after(gateway, decisions_db) == before + 1


def _logged_after(gateway: Served, db: Path) -> int:
    """Make one answered request, wait for its decision in the log; the log's count."""
    answered = _post(gateway.url, {})
    assert answered.status_code == 200
    decision = answered.headers["x-llmroute-decision-id"]

    def rows() -> list[str]:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            try:
                return [row[0] for row in conn.execute("SELECT id FROM decisions")]
            except sqlite3.OperationalError:  # not made yet
                return []

    wait_for("the answered request's decision in the log", lambda: decision in rows(), 20)
    return len(rows())


def _refused_counts(served: Served) -> dict[str, float]:
    """``llmroute_browser_refused_total`` by reason, as /metrics reads now."""
    text = httpx.get(f"{served.url}/metrics", timeout=10).text
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llmroute_browser_refused_total"
    }


def test_refusals_are_counted_and_logged(tmp_path: Path, upstream: FakeUpstream) -> None:
    """Each refusal counts in ``llmroute_browser_refused_total{reason}`` (the error's
    code; no label takes a client's value); the first of each reason logs one warning
    naming the request and what it came with, bounded and on one line whatever the
    client sent, and the ones after it within a minute none (a hostile page repeats its
    request as fast as it likes)."""
    with serve_text(REGISTRY % {"url": upstream.url}, tmp_path) as gateway:
        # a Host of 5000 characters, a path with a line break (%0a) and a fake log line
        forged = "/v1/models%0aINFO:     forged line"
        reply = httpx.get(f"{gateway.url}{forged}", headers={"Host": "x" * 5000}, timeout=5)
        assert reply.status_code == 400
        for _ in range(2):
            assert _post(gateway.url, {"Host": "rebound.test"}).status_code == 400
        for _ in range(3):
            assert _post(gateway.url, FORM).status_code == 403
        counts = _refused_counts(gateway)
        assert counts == {"cross_origin_forbidden": 3, "invalid_host": 3}

        def refused_lines() -> list[str]:
            return [line for line in gateway.log_text().splitlines() if "refused " in line]

        wait_for("the refusals' log lines", lambda: len(refused_lines()) >= 2, 10, gateway.log)
        log_text = gateway.log_text()
    lines = refused_lines()
    assert len(lines) == 2, lines  # one a reason: the repeats are counted, not logged
    assert (
        "WARNING" in lines[1]
        and "refused POST /v1/chat/completions from 127.0.0.1 (cross_origin_forbidden 403)"
        in lines[1]
        and "Origin 'http://localhost:8080', Sec-Fetch-Site cross-site" in lines[1]
    ), lines
    assert "(invalid_host 400): Host 'xxxx" in lines[0] and len(lines[0]) < 400, lines
    assert "'/v1/models\\nINFO:     forged line'" in lines[0]
    assert "more since" not in log_text
    assert not any(line.startswith("INFO:     forged") for line in log_text.splitlines())


def test_allowed_origins_allowed_hosts_and_the_environment(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """--cors-origin lets that origin's pages in (and only them); --allowed-host and
    $LLMROUTE_ALLOWED_HOSTS add names (a port is any port)."""
    args = ["--cors-origin", APP, "--allowed-host", "LLM.example.com:443"]
    with serve_text(REGISTRY % {"url": upstream.url}, tmp_path, args) as served:
        page = {"Sec-Fetch-Site": "cross-site", "Origin": APP}
        reply = _post(served.url, page)
        assert reply.status_code == 200, reply.text
        assert reply.headers["access-control-allow-origin"] == APP  # and it may read it
        other = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.test"}
        assert _post(served.url, other).status_code == 403
        assert _post(served.url, {"Host": "llm.example.com"}).status_code == 200
        refused = _post(served.url, {"Host": "other.example.com"})
        assert refused.status_code == 400
        # the allowed names are not told to whoever asks under another
        assert "llm.example.com" not in refused.json()["error"]["message"]
    env = {"LLMROUTE_ALLOWED_HOSTS": "a.example, b.example"}
    with serve_text(
        REGISTRY % {"url": upstream.url}, tmp_path, ["--cors-origin", "*"], env
    ) as served:
        for host in ("a.example", "b.example:8000"):
            assert _post(served.url, {"Host": host}).status_code == 200, host
        assert _post(served.url, {"Host": "c.example"}).status_code == 400
        # '*': every origin may call it
        assert _post(served.url, FORM).status_code == 200


def test_allowed_host_star_and_a_non_loopback_address_answer_any_name(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    for args in (["--allowed-host", "*"], ["--host", "0.0.0.0"]):
        with serve_text(REGISTRY % {"url": upstream.url}, tmp_path, args) as served:
            reply = _post(served.url, {"Host": "rebound.test"})
            assert reply.status_code == 200, (args, reply.text)
            # the other check still holds
            assert _post(served.url, FORM).status_code == 403


def test_with_workers_each_worker_checks(tmp_path: Path, upstream: FakeUpstream) -> None:
    """--workers N: the workers build the app from the environment; each knows it
    listens on a loopback address and which names were allowed."""
    args = ["--workers", "2", "--allowed-host", "llm.example.com"]
    with serve_text(REGISTRY % {"url": upstream.url}, tmp_path, args) as served:
        for _ in range(4):  # whichever worker takes the connection
            assert _post(served.url, {"Host": "rebound.test"}).status_code == 400
            assert _post(served.url, FORM).status_code == 403
            assert _post(served.url, {"Host": "llm.example.com"}).status_code == 200
        # every worker's refusals, whichever one is scraped
        for _ in range(2):
            assert _refused_counts(served) == {"cross_origin_forbidden": 4, "invalid_host": 4}


@pytest.mark.parametrize("value", ["http://llm.example.com", "llm.example.com/v1", "a,b", " "])
def test_a_malformed_allowed_host_stops_the_start_with_one_line(value: str, tmp_path: Path) -> None:
    registry = REGISTRY % {"url": "http://127.0.0.1:9/v1"}
    done = serve_refused(registry, tmp_path, ["--allowed-host", value])
    assert done.returncode == 2, done.stderr
    assert f"--allowed-host {value!r}" in done.stderr and "Traceback" not in done.stderr


def test_a_malformed_allowed_hosts_variable_is_named_as_the_variable(tmp_path: Path) -> None:
    """No --allowed-host was given: the line names $LLMROUTE_ALLOWED_HOSTS, where the
    value is; with the option, the option's value is the one checked (and named)."""
    registry = REGISTRY % {"url": "http://127.0.0.1:9/v1"}
    env = {"LLMROUTE_ALLOWED_HOSTS": "ok.example,http://llm.example.com"}
    done = serve_refused(registry, tmp_path, [], env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "error: $LLMROUTE_ALLOWED_HOSTS 'http://llm.example.com': give a host name such as "
        "llm.example.com (no scheme, no path), an address, or '*'"
    )
    done = serve_refused(registry, tmp_path, ["--allowed-host", "a/b"], env)
    assert done.stderr.strip().startswith("error: --allowed-host 'a/b': "), done.stderr


def test_the_host_check_reaches_the_workers_through_the_environment() -> None:
    settings = ServeSettings(bind_host="::1", allowed_hosts=("llm.example.com", "*"), workers=2)
    assert ServeSettings.from_env(settings.to_env()) == settings
    unknown = ServeSettings.from_env({})  # uvicorn --factory: where it listens is not known
    assert (unknown.bind_host, unknown.allowed_hosts) == (None, ())
    named = ServeSettings.from_env({"LLMROUTE_ALLOWED_HOSTS": " A.example:8000,[::2], "})
    assert named.allowed_hosts == ("a.example", "::2")


def test_the_checks_outlive_a_registry_reload(gateway: Served) -> None:
    registry = gateway.log.parent / "registry.yaml"
    version = gateway.version()
    registry.write_text(registry.read_text().replace('"hello there"', '"hello there", "hi"'))
    wait_for("the reload", lambda: gateway.version() != version, 30, gateway.log)
    assert _post(gateway.url, FORM).status_code == 403
    assert _post(gateway.url, {"Host": "rebound.test"}).status_code == 400
    assert _post(gateway.url, {}).status_code == 200
