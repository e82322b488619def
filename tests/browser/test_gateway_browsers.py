"""The gateway and the pages a browser opens, in a real headless Chromium driven through
chromedriver (``apt-get install -y chromium chromium-driver``, then ``pytest -m
browser``): a page of another origin cannot make the gateway's operator's browser call
it, and a page that made its own name resolve to 127.0.0.1 cannot read it; the
gateway's own dashboard page still works. The gateway has no ``auth:`` section, its
default: whoever reaches it may call it, and a browser reaches it for any page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from dashboard_registry import DASHBOARD_REGISTRY
from fake_upstream import FakeUpstream, fake_upstream, serve_in_thread
from gateway_proc import serve
from webdriver import browser, json_form, page_handler

pytestmark = pytest.mark.browser

MARK = "sent by another site's page"
SETTLED = "const s = document.body.dataset.state; return s !== 'loading' && s"  # ready, error


def _attack_page(target: str) -> type[BaseHTTPRequestHandler]:
    """Another site's page: a ``no-cors`` fetch posting a chat request as text/plain
    (no preflight; the page cannot read the answer, but the request is made), then a
    form posting itself the same way, its one field spelling the JSON."""
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": MARK}]})
    html = (
        f"<!doctype html>{json_form(target, MARK)}"
        f"<script>fetch({json.dumps(target)}, {{method: 'POST', mode: 'no-cors', "
        f"headers: {{'content-type': 'text/plain'}}, body: {json.dumps(body)}}})"
        '.finally(() => document.getElementById("f").submit())</script>'
    ).encode()
    return page_handler(html)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as fake:
        yield fake


def test_another_origins_page_cannot_make_the_browser_call_the_gateway(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(DASHBOARD_REGISTRY % {"url": upstream.url})
    env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{tmp_path / 'log.db'}"}
    answers = {}
    with (
        serve(registry, tmp_path / "serve.log", env=env) as served,
        browser(tmp_path) as chromium,
    ):
        target = f"{served.url}/v1/chat/completions"
        with serve_in_thread(_attack_page(target)) as page:
            # localhost: another site than the gateway's 127.0.0.1; 127.0.0.1 on another
            # port: the same site, another origin (a local dev server's page)
            for site in (page.replace("127.0.0.1", "localhost"), page):
                chromium.open(site)
                chromium.wait_until(
                    f"the form's answer ({site})",
                    f"return location.href === {target!r} && document.body.innerText",
                )
                answers[site] = chromium.run("return document.body.innerText")
        # the gateway's own page (same-origin fetches of its data) is answered
        chromium.open(f"{served.url}/dashboard#since=15m")
        chromium.wait_until("the dashboard's data", SETTLED)
        dashboard = chromium.run("return document.body.dataset.state")
    assert not any(MARK in str(r.body) for r in upstream.requests), answers
    for answer in answers.values():
        assert '"code":"cross_origin_forbidden"' in answer, answer
    assert dashboard == "ready"


def test_a_page_that_rebinds_its_name_to_loopback_cannot_read_the_gateway(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """DNS rebinding: another site makes its own name resolve to 127.0.0.1 (here
    Chromium's resolver is told so), and its pages are then same-origin with whatever
    answers there: the gateway on 127.0.0.1 answers only loopback names."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(DASHBOARD_REGISTRY % {"url": upstream.url})
    env = {"LLMROUTE_TELEMETRY_URL": "off"}
    rules = "--host-resolver-rules=MAP rebound.test 127.0.0.1"
    with (
        serve(registry, tmp_path / "serve.log", env=env) as served,
        browser(tmp_path, rules) as chromium,
    ):
        port = served.url.rpartition(":")[2]
        chromium.open(f"http://rebound.test:{port}/v1/models")
        rebound = chromium.run("return document.body.innerText")
        chromium.open(f"{served.url}/v1/models")  # under its own name: answered
        own = chromium.run("return document.body.innerText")
    assert '"code":"invalid_host"' in rebound and '"small"' not in rebound, rebound
    assert '"small"' in own and '"object":"list"' in own.replace(" ", ""), own
