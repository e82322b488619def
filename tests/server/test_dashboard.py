"""The web dashboard served by `llmroute serve` (a real process on 127.0.0.1): the page
and its assets under a strict CSP, the JSON over the decision log the gateway writes,
this process's circuit breakers, bad windows, and the switches that turn it off."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from dashboard_registry import DASHBOARD_REGISTRY
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve, wait_for
from prefix_proxy import prefix_proxy

REGISTRY = DASHBOARD_REGISTRY
SECRET = "my password is hunter2, write a python function"


def _registry(tmp: Path, upstream: FakeUpstream) -> Path:
    path = tmp / "registry.yaml"
    path.write_text(REGISTRY % {"url": upstream.url})
    return path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("dashboard")
    env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{tmp / 'decisions.db'}"}
    with serve(_registry(tmp, upstream), tmp / "serve.log", env=env) as served:
        yield served


@pytest.fixture(scope="module")
def traffic(gateway: Served) -> dict[str, Any]:
    """Eight requests: three to code (one of them streamed), two to chat and three to
    ops, whose model always answers 503 (its breaker opens after two; chat's model
    answers instead). Returns the dashboard's data once all eight are logged."""
    ids = []
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="-", max_retries=0) as client:
        for text in [SECRET, "fix the bug in my code please", "hello there", "how are you"]:
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": text}]
            )
            ids.append(raw.headers["x-llmroute-decision-id"])
        for i in range(3):
            client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": f"restart the database {i}"}]
            )
        stream = client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "write a python function to add"}],
            stream=True,
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    found: dict[str, Any] = {}

    def logged() -> bool:
        found.update(_data(gateway, "15m"))
        summary = found.get("summary")
        return summary is not None and summary["requests"] == 8

    wait_for("eight logged decisions on the dashboard", logged, 20, gateway.log)
    found["ids"] = ids
    return found


def _data(gateway: Served, since: str) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}/dashboard/data", params={"since": since}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    data: dict[str, Any] = response.json()
    return data


def test_the_page_and_its_assets_are_served_under_a_strict_csp(gateway: Served) -> None:
    page = httpx.get(f"{gateway.url}/dashboard", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    # relative URLs (a proxy may serve the gateway under a path prefix)
    assert 'src="dashboard/app.js"' in page.text and 'href="dashboard/app.css"' in page.text
    assert 'content="dashboard/data"' in page.text
    assert "{{" not in page.text
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline
    slashed = httpx.get(f"{gateway.url}/dashboard/", timeout=10).text
    assert slashed == page.text.replace('"dashboard/', '"./')
    script = httpx.get(f"{gateway.url}/dashboard/app.js", timeout=10)
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "fetch(" in script.text
    style = httpx.get(f"{gateway.url}/dashboard/app.css", timeout=10)
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    missing = httpx.get(f"{gateway.url}/dashboard/secrets.txt", timeout=10)
    assert missing.status_code == 404 and "error" in missing.json()
    for answer in (page, script, style):
        assert answer.headers["x-frame-options"] == "DENY"  # for browsers before CSP 2
    # the data, and its errors: JSON nothing renders, frames or keeps
    for since in ("1h", "bad"):
        data = httpx.get(f"{gateway.url}/dashboard/data", params={"since": since}, timeout=10)
        assert data.headers["content-type"] == "application/json"
        assert data.headers["x-content-type-options"] == "nosniff"
        assert data.headers["content-security-policy"].startswith("default-src 'none'")
        assert data.headers["x-frame-options"] == "DENY"
        assert data.headers["cache-control"] == "no-store"


def _linked(page: httpx.Response) -> list[str]:
    """The URLs the page asks for: its stylesheet, its script and its data."""
    found = re.findall(r'(?:href|src|content)="([^"]*(?:app\.css|app\.js|data))"', page.text)
    assert len(found) == 3, found
    return [str(page.url.join(link)) for link in found]


@pytest.mark.parametrize("page", ["dashboard", "dashboard/"])
def test_the_page_works_under_a_proxys_path_prefix(
    gateway: Served, traffic: dict[str, Any], page: str
) -> None:
    """Behind ``location /llm/ { proxy_pass http://gateway/; }`` the browser asks for
    /llm/dashboard; the page's files and data must be asked for under /llm too."""
    with prefix_proxy(gateway.url) as proxied:
        answer = httpx.get(f"{proxied}/{page}", timeout=10)
        assert answer.status_code == 200, answer.text
        for url in _linked(answer):
            assert url.startswith(f"{proxied}/dashboard/"), url
            fetched = httpx.get(url, params={"since": "15m"}, timeout=10)
            assert fetched.status_code == 200, (url, fetched.text)
        # the window `traffic` waited for (another test's 1h read, made before the
        # traffic, is the dashboard's cached answer for 5 s)
        through = httpx.get(f"{proxied}/dashboard/data", params={"since": "15m"}, timeout=10)
        assert through.json()["summary"]["requests"] == 8
    direct = httpx.get(f"{gateway.url}/{page}", timeout=10)
    for url in _linked(direct):
        assert url.startswith(f"{gateway.url}/dashboard/"), url
        assert httpx.get(url, timeout=10).status_code == 200, url


def test_the_data_shows_the_logged_traffic(traffic: dict[str, Any]) -> None:
    summary = traffic["summary"]
    assert summary["requests"] == 8
    assert summary["error_rate"] == 0
    assert summary["fallback_rate"] == pytest.approx(3 / 8)  # every ops request fell back
    assert summary["strongest_model"] == "large"
    assert summary["spend_usd"] > 0 and summary["savings"] is not None
    routes = {r["name"]: r for r in traffic["routes"]}
    assert {"code", "chat", "ops"} <= set(routes)
    assert routes["code"]["n"] == 3 and routes["ops"]["n"] == 3
    assert routes["code"]["median_margin"] is not None
    assert sum(traffic["series"]["requests"]) == 8
    assert {m["name"] for m in traffic["models"]} >= {"large", "small", "broken"}
    recent = traffic["recent"]
    assert len(recent) == 8 and set(traffic["ids"]) <= {r["id"] for r in recent}
    assert recent[0]["stream"] is True  # newest first: the streamed request came last
    assert traffic["log"]["enabled"] and traffic["log"]["message"] is None
    assert "hunter2" not in json.dumps(traffic)  # aggregates and ids only, never prompts


def test_live_state_shows_this_process_and_its_breakers(
    gateway: Served, traffic: dict[str, Any]
) -> None:
    live = traffic["live"]
    assert live["registry_version"] == gateway.version()
    assert live["workers"] == 1 and live["in_flight"] == 0 and live["pid"] > 0
    assert live["cache"] is None  # no cache: in the registry
    states = {(b["model"], b["upstream"]): b for b in live["breakers"]}
    broken = states[("broken", "broken?status=503")]
    assert broken["state"] == "open" and broken["consecutive_failures"] >= 2
    assert states[("small", "small")]["state"] == "closed"
    assert live["breakers_shared"] is None  # each process's own
    budgets = {b["name"]: b for b in live["budgets"]}
    assert set(budgets) == {"small", "large"}
    large = budgets["large"]
    assert (large["kind"], large["period"], large["hard"], large["usd"]) == (
        "model",
        "month",
        True,
        5.0,
    )
    assert 0 < large["spent_usd"] < 0.01  # three code requests; nothing held once answered
    assert budgets["small"]["hard"] is False and budgets["small"]["spent_usd"] > 0


@pytest.mark.parametrize(
    ("since", "message"),
    [
        ("bad", "invalid time 'bad'"),
        ("2099-01-01", "starts in the future"),
        ("1h..2h", "ends"),
        ("99999999999999999999d", "reaches back before 1970"),  # was a 500
        ("9" * 2000 + "h", "reaches back before 1970"),
    ],
)
def test_a_bad_window_is_an_openai_style_400(gateway: Served, since: str, message: str) -> None:
    response = httpx.get(f"{gateway.url}/dashboard/data", params={"since": since}, timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_window" and error["param"] == "since"
    assert message in error["message"]


def test_an_empty_window_has_a_message(gateway: Served, traffic: dict[str, Any]) -> None:
    data = _data(gateway, "2h..1h")
    assert data["summary"] is None and data["routes"] == []
    assert data["log"]["message"] == "no decisions in the last 2h..1h"
    assert data["live"]["registry_version"] == gateway.version()


def test_the_dashboard_can_be_turned_off_and_works_without_a_log(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    registry = _registry(tmp_path, upstream)
    with serve(registry, tmp_path / "off.log", ["--no-dashboard"]) as served:
        assert httpx.get(f"{served.url}/dashboard", timeout=10).status_code == 404
        assert httpx.get(f"{served.url}/dashboard/data", timeout=10).status_code == 404
    env = {"LLMROUTE_TELEMETRY_URL": "off"}
    with serve(registry, tmp_path / "nolog.log", env=env) as served:
        data = _data(served, "1h")
        message = data["log"]["message"]
        assert data["log"]["enabled"] is False and "decision log is off" in message
        assert "turn it on with telemetry: {enabled: true}" in message  # says how
        assert data["live"]["breakers"]


def test_a_model_behind_an_open_breaker_says_when_to_retry(
    gateway: Served, traffic: dict[str, Any]
) -> None:
    """Pinned to the model whose breaker the traffic opened: a 503 with ``Retry-After``,
    the rest of its cooldown, which the openai client honours."""
    body = {"model": "broken", "messages": [{"role": "user", "content": "restart it"}]}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 503
    assert "circuit open" in response.json()["error"]["message"]
    assert 1 <= int(response.headers["retry-after"]) <= 600  # its cooldown_s
