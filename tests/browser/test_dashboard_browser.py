"""The dashboard page in real headless Chromium (Debian's ``chromium`` package), against a
real `llmroute serve` and a real `llmroute dashboard` on 127.0.0.1.

Not part of the default run (the ``browser`` marker is deselected in pyproject.toml,
since the suite's install command cannot install a browser). Run it with::

    apt-get install -y chromium     # once, as root
    pytest -m browser

Here a missing Chromium fails the test rather than skipping it: asking for the
browser tests and getting none is not a pass. ``$LLMROUTE_CHROMIUM`` names another
binary. Chromium runs the page's script and we read the DOM it leaves
(``--dump-dom``, with a virtual-time budget so the data fetch completes) and its
console (``--enable-logging=stderr``) for script errors and CSP violations.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from dashboard_registry import DASHBOARD_REGISTRY
from fake_upstream import FakeUpstream, fake_upstream
from gateway_proc import Served, free_port, log_dashboard, serve, wait_for

pytestmark = pytest.mark.browser

REGISTRY = DASHBOARD_REGISTRY
PROBLEMS = re.compile(r"Uncaught|Content Security Policy|Refused to", re.IGNORECASE)


@pytest.fixture(scope="module")
def chromium() -> str:
    found = os.environ.get("LLMROUTE_CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    if not found:
        pytest.fail("no Chromium: apt-get install -y chromium (or set $LLMROUTE_CHROMIUM)")
    return found


def render(
    chromium: str,
    url: str,
    tmp: Path,
    *,
    screenshot: Path | None = None,
    problems_ok: bool = False,
) -> str:
    """The DOM after the page's script ran; fails on a script error or CSP violation
    (unless `problems_ok`: a page refused on purpose logs its failed requests)."""
    profile = tmp / f"profile-{free_port()}"
    common = [
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
    ]
    done = subprocess.run(
        [*common, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    problems = [line for line in done.stderr.splitlines() if PROBLEMS.search(line)]
    assert problems_ok or not problems, "\n".join(problems)
    if screenshot is not None:
        size = ["--hide-scrollbars", "--window-size=1280,2200"]
        subprocess.run(
            [*common, *size, f"--screenshot={screenshot}", url],
            capture_output=True,
            timeout=120,
            check=True,
        )
    return done.stdout


def _cell_text(dom: str, element_id: str) -> str:
    """The text of the `.value` element inside the element with `element_id`."""
    start = dom.index(f'id="{element_id}"')
    match = re.search(r'class="value[^"]*">([^<]*)<', dom[start:])
    assert match is not None, f"no .value in #{element_id}"
    return match.group(1)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[tuple[Served, Path]]:
    """A gateway with eight logged decisions: seven requests (three fell back from the
    broken model, whose breaker is open) and one ``/v1/route`` decision."""
    tmp = tmp_path_factory.mktemp("browser")
    (tmp / "registry.yaml").write_text(REGISTRY % {"url": upstream.url})
    db = tmp / "decisions.db"
    env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{db}"}
    with serve(tmp / "registry.yaml", tmp / "serve.log", env=env) as served:
        with openai.OpenAI(base_url=f"{served.url}/v1", api_key="-", max_retries=0) as client:
            prompts = ["write a python function", "fix the bug in my code", "hello there"]
            prompts += ["how are you today"] + [f"restart the database {i}" for i in range(3)]
            for text in prompts:
                client.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": text}]
                )
        decided = httpx.post(
            f"{served.url}/v1/route",
            json={"messages": [{"role": "user", "content": "hello there"}]},
            timeout=10,
        )
        assert decided.status_code == 200

        def logged() -> bool:
            data = httpx.get(f"{served.url}/dashboard/data?since=15m", timeout=10).json()
            return (data.get("summary") or {}).get("requests") == 8

        wait_for("eight logged decisions", logged, 20, served.log)
        yield served, db


def test_the_dashboard_renders_the_gateway_in_chromium(
    chromium: str, gateway: tuple[Served, Path], tmp_path: Path
) -> None:
    served, _ = gateway
    shot = tmp_path / "dashboard.png"
    dom = render(chromium, f"{served.url}/dashboard#since=15m", tmp_path, screenshot=shot)
    assert 'data-state="ready"' in dom
    assert _cell_text(dom, "tile-requests") == "8"
    assert "route only" in dom  # the /v1/route decision in the newest decisions
    for route in ("code", "chat", "ops"):
        assert f'data-route="{route}"' in dom
    assert 'data-state="open"' in dom and 'data-state="closed"' in dom  # the breakers
    assert 'data-budget="model:large" data-hard="true"' in dom  # the budgets, as counted
    assert 'data-budget="model:small" data-hard="false"' in dom
    assert served.version() in dom  # the registry version in the header
    assert dom.count("<svg") >= 4  # the four charts drew
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    sys.stdout.write(f"screenshot: {shot}\n")


def test_a_bad_window_shows_its_error_beside_the_selector(
    chromium: str, gateway: tuple[Served, Path], tmp_path: Path
) -> None:
    served, _ = gateway
    dom = render(chromium, f"{served.url}/dashboard#since=yesterday", tmp_path)
    match = re.search(r'id="window-error"[^>]*>([^<]*)<', dom)
    assert match is not None and "invalid time 'yesterday'" in match.group(1)


def test_the_log_only_dashboard_renders_without_live_state(
    chromium: str, gateway: tuple[Served, Path], tmp_path: Path
) -> None:
    _, db = gateway
    with log_dashboard(f"sqlite:///{db}", tmp_path / "dashboard.log") as base:
        dom = render(chromium, f"{base}/dashboard#since=1h", tmp_path)
    assert 'data-state="ready"' in dom
    assert _cell_text(dom, "tile-requests") == "8"
    assert re.search(r'id="breakers-section"[^>]*hidden', dom)
    assert re.search(r'id="budgets-section"[^>]*hidden', dom)  # nothing counts them here


def test_with_client_keys_the_page_takes_an_admin_key(
    chromium: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """With ``auth:``, a browser reaches the page with an admin key as its Basic password
    (here in the URL, as a login prompt would send it); the page's data requests reuse
    it, and the per-key and per-tag tables show who spent what."""
    admin, team = "ops-key-1234", "team-key-5678"
    registry = tmp_path / "registry.yaml"
    digest = {key: hashlib.sha256(key.encode()).hexdigest() for key in (admin, team)}
    keys = (
        "auth:\n  keys:\n"
        f'    - {{name: ops, sha256: "{digest[admin]}", admin: true}}\n'
        f'    - {{name: team, sha256: "{digest[team]}"}}\n'
    )
    registry.write_text(REGISTRY % {"url": upstream.url} + keys)
    env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{tmp_path / 'log.db'}"}
    with serve(registry, tmp_path / "serve.log", env=env) as served:
        with openai.OpenAI(base_url=f"{served.url}/v1", api_key=team, max_retries=0) as client:
            client.chat.completions.create(
                model="auto",
                messages=[{"role": "user", "content": "hello there"}],
                extra_headers={"x-llmroute-tags": "team:search"},
            )
        ops = {"Authorization": f"Bearer {admin}"}

        def logged() -> bool:
            data = httpx.get(f"{served.url}/dashboard/data", headers=ops, timeout=10).json()
            return bool(data.get("clients")) and bool(data.get("tags"))

        wait_for("the keyed request in the log", logged, 20, served.log)
        without = render(chromium, f"{served.url}/dashboard", tmp_path, problems_ok=True)
        assert 'data-state="ready"' not in without  # 401: the page is not served
        base = served.url.replace("http://", f"http://ops:{admin}@")
        shot = tmp_path / "dashboard-keys.png"
        dom = render(chromium, f"{base}/dashboard#since=15m", tmp_path, screenshot=shot)
    assert 'data-state="ready"' in dom
    assert 'data-client="team"' in dom
    assert 'data-tag="team:search"' in dom  # and the spend per tag
    assert 'data-api="chat"' in dom  # and the API the request came by
    assert shot.stat().st_size > 20_000
    assert _cell_text(dom, "tile-requests") == "1"
