"""The dashboard's security in a real headless Chromium, driven through chromedriver
(``apt-get install -y chromium chromium-driver``, then ``pytest -m browser``): what a
browser that logged in to the dashboard lets another site's page do with that login,
and that whatever the decision log holds reaches the page as text, never as markup.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from dashboard_registry import DASHBOARD_REGISTRY
from fake_upstream import FakeUpstream, fake_upstream, serve_in_thread
from gateway_proc import log_dashboard, serve
from prefix_proxy import prefix_proxy
from telemetry_records import build_record
from webdriver import browser, json_form, page_handler

from llmroute.telemetry.store import open_store

pytestmark = pytest.mark.browser

ADMIN, TEAM = "ops-key-1234567890", "team-key-5678901234"
MARK = "posted by another site"
# sets a flag if it ever runs; the page's CSP would also refuse it, so the checks below
# look for the element itself too
PAYLOAD = '<img src=x onerror="window.__pwned=1">'
SETTLED = "const s = document.body.dataset.state; return s !== 'loading' && s"  # ready, error


def _form_page(target: str) -> type[BaseHTTPRequestHandler]:
    """Another site's page: a form that posts itself to `target` as ``text/plain``
    (no preflight), its one field spelling a chat request in JSON."""
    html = (
        f"<!doctype html>{json_form(target, MARK)}"
        '<script>document.getElementById("f").submit()</script>'
    ).encode()
    return page_handler(html)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as fake:
        yield fake


def test_another_sites_form_cannot_use_the_dashboard_login(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """After the operator logs in to the dashboard, the browser keeps the admin key
    (Basic) and sends it with a form another site's page posts to the gateway: the
    gateway must not take it there, or that page spends on the admin key."""
    registry = tmp_path / "registry.yaml"
    digest = {key: hashlib.sha256(key.encode()).hexdigest() for key in (ADMIN, TEAM)}
    keys = (
        "auth:\n  keys:\n"
        f'    - {{name: ops, sha256: "{digest[ADMIN]}", admin: true}}\n'
        f'    - {{name: team, sha256: "{digest[TEAM]}"}}\n'
    )
    registry.write_text(DASHBOARD_REGISTRY % {"url": upstream.url} + keys)
    env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{tmp_path / 'log.db'}"}
    with (
        serve(registry, tmp_path / "serve.log", env=env) as served,
        browser(tmp_path) as chromium,
    ):
        target = f"{served.url}/v1/chat/completions"
        with serve_in_thread(_form_page(target)) as served_at:
            # "localhost" is another site than the gateway's 127.0.0.1
            site = served_at.replace("127.0.0.1", "localhost")
            login = served.url.replace("http://", f"http://ops:{ADMIN}@")
            chromium.open(f"{login}/dashboard#since=15m")
            chromium.wait_until("the page's data", SETTLED)
            assert chromium.run("return document.body.dataset.state") == "ready"
            chromium.open(site)
            chromium.wait_until(
                "the form's answer",
                f"return location.href === {target!r} && document.body.innerText",
            )
            answer = chromium.run("return document.body.innerText")
    assert not any(MARK in str(r.body) for r in upstream.requests), answer
    # a page of another origin is refused before its credentials are looked at
    # (tests/browser/test_gateway_browsers.py); without that check, the key check
    # answers 401 (test_auth: Basic credentials count only on /dashboard and /metrics)
    assert '"code":"cross_origin_forbidden"' in answer and ADMIN not in answer


def _log_with_payloads(path: Path) -> None:
    """A decision log whose every name the page shows is markup: `llmroute dashboard`
    reads logs written by anything (a copied file, a shared database)."""
    store = open_store(f"sqlite:///{path}")
    try:
        store.migrate()
        now = time.time()
        records = []
        for i in range(6):
            record = build_record(i, ts=now - 60 + i)
            decision = dataclasses.replace(
                record.decision, route=f"{PAYLOAD}{i % 2}", model=PAYLOAD, layer=PAYLOAD
            )
            records.append(
                dataclasses.replace(
                    record,
                    decision=decision,
                    status=200 if i % 2 else 502,
                    served_model=f"{PAYLOAD}served",
                    deployment=PAYLOAD,
                    error=None if i % 2 else PAYLOAD,
                    client=PAYLOAD,
                    tags=(PAYLOAD,),
                    api=PAYLOAD,
                    end_user=PAYLOAD,
                )
            )
        # routes named like what every JavaScript object has
        for i, route in enumerate(("constructor", "toString", "__proto__")):
            record = build_record(10 + i, ts=now - 30 + i)
            decision = dataclasses.replace(record.decision, route=route)
            records.append(dataclasses.replace(record, decision=decision))
        store.write_decisions(records)
    finally:
        store.close()


_INJECTED = r"""
const found = document.querySelectorAll("img, iframe, object, embed, script:not([src])");
const handlers = [...document.querySelectorAll("*")].filter(
  (e) => [...e.attributes].some((a) => a.name.startsWith("on")));
const fills = [...document.querySelectorAll("#chart-requests rect[fill], .swatch")].map(
  (e) => e.getAttribute("fill") || e.style.backgroundColor);
const tables = [...document.querySelectorAll("table.data")].map((t) => [
  t.getAttribute("aria-label"),
  [...t.querySelectorAll("th")].every((th) => th.getAttribute("scope") === "col")]);
const charts = [...document.querySelectorAll(".chart svg")].map(
  (e) => [e.getAttribute("role"), e.getAttribute("aria-label")]);
return {pwned: window.__pwned === 1, elements: found.length, handlers: handlers.length,
        text: document.body.innerText, state: document.body.dataset.state,
        colorless: fills.filter((c) => !/^(#[0-9a-f]{6}|rgb\(\d+, \d+, \d+\))$/.test(c)),
        fills: fills.length, charts, tables};
"""


def test_what_the_log_holds_reaches_the_page_as_text(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    _log_with_payloads(db)
    with log_dashboard(f"sqlite:///{db}", tmp_path / "dashboard.log") as base:
        data = httpx.get(f"{base}/dashboard/data?since=15m", timeout=10).json()
        assert data["summary"]["requests"] == 9  # the payloads are in what the page reads
        with browser(tmp_path) as chromium:
            chromium.open(f"{base}/dashboard#since=15m")
            chromium.wait_until("the page's data", SETTLED)
            page = chromium.run(_INJECTED)
            # a window that is markup: its error is shown beside the selector, as text
            chromium.open(f"{base}/dashboard#since={PAYLOAD}")
            chromium.wait_until(
                "the window's error", "return !document.getElementById('window-error').hidden"
            )
            window = chromium.run(_INJECTED)
    assert page["state"] == "ready", page["text"][:2000]
    assert page["text"].count(PAYLOAD) >= 5, page["text"][:2000]  # shown, as text
    assert (page["pwned"], page["elements"], page["handlers"]) == (False, 0, 0)
    # every route drawn in a color, "constructor" and "toString" too
    assert page["fills"] > 0 and page["colorless"] == []
    # each table named by its section's heading, its header cells headers of columns
    tables = dict(page["tables"])
    assert {"Routes", "Models", "Recent decisions", "Tags", "Client keys"} <= set(tables)
    assert all(tables.values()), page["tables"]
    # each chart one image to a screen reader, named by its caption
    assert len(page["charts"]) == 4
    assert all(
        role == "img" and label.endswith("chart, per time bucket; the tables hold the numbers")
        for role, label in page["charts"]
    )
    assert PAYLOAD in window["text"]
    assert (window["pwned"], window["elements"], window["handlers"]) == (False, 0, 0)


def test_a_page_that_rebinds_its_name_to_loopback_cannot_read_the_log_dashboard(
    tmp_path: Path,
) -> None:
    """DNS rebinding: another site makes its own name resolve to 127.0.0.1 (here
    Chromium's resolver is told so), and its page then reads what answers there as its
    own. `llmroute dashboard` on 127.0.0.1 answers only loopback names."""
    db = tmp_path / "log.db"
    _log_with_payloads(db)
    with log_dashboard(f"sqlite:///{db}", tmp_path / "dashboard.log") as base:
        port = base.rpartition(":")[2]
        with browser(tmp_path, "--host-resolver-rules=MAP rebound.test 127.0.0.1") as chromium:
            chromium.open(f"http://rebound.test:{port}/dashboard#since=15m")
            rebound = chromium.run("return [document.body.dataset.state, document.body.innerText]")
            chromium.open(f"{base}/dashboard#since=15m")  # under its own name: as before
            chromium.wait_until("the page's data", SETTLED)
            own = chromium.run("return document.body.dataset.state")
    assert rebound[0] is None and '"code":"invalid_host"' in rebound[1], rebound
    assert own == "ready"


@pytest.mark.parametrize("keep", [False, True], ids=["strips", "keeps"])
def test_the_dashboard_login_works_under_a_proxys_path_prefix(
    upstream: FakeUpstream, tmp_path: Path, keep: bool
) -> None:
    """Behind a proxy that serves the gateway under /llm/ (nginx's ``location /llm/ {
    proxy_pass http://gateway/; }``, or without the trailing ``/``, passing the prefix on
    to a gateway started with ``--root-path /llm``), the operator logs in (Basic) at
    /llm/dashboard and the page loads its script, style and data through the proxy: with
    absolute URLs the browser would ask the proxy's root for /dashboard/app.js and get
    its 404."""
    registry = tmp_path / "registry.yaml"
    digest = hashlib.sha256(ADMIN.encode()).hexdigest()
    keys = f'auth:\n  keys:\n    - {{name: ops, sha256: "{digest}", admin: true}}\n'
    registry.write_text(DASHBOARD_REGISTRY % {"url": upstream.url} + keys)
    env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{tmp_path / 'log.db'}"}
    with (
        serve(registry, tmp_path / "serve.log", ["--root-path", "/llm"] * keep, env) as served,
        prefix_proxy(served.url, keep=keep) as proxied,
        browser(tmp_path) as chromium,
    ):
        for page in ("dashboard", "dashboard/"):
            login = proxied.replace("http://", f"http://ops:{ADMIN}@")
            chromium.open(f"{login}/{page}#since=15m")
            chromium.wait_until("the page's data", SETTLED)
            assert chromium.run("return document.body.dataset.state") == "ready", page
            rules = "return [...document.styleSheets].map((s) => s.cssRules.length)"
            styles = chromium.run(rules)
            assert len(styles) == 1 and styles[0] > 0, (page, styles)  # app.css applied
