"""A small W3C WebDriver client (plain HTTP, through httpx) for the browser tests that
need more than one page in the same browser: Debian's ``chromedriver`` (package
``chromium-driver``) on a free 127.0.0.1 port, one headless Chromium session.

``--dump-dom`` loads one URL in a fresh profile; a test of what a browser keeps between
pages (the credentials of a login, sent again on another site's behalf) needs a
session. ``$LLMROUTE_CHROMEDRIVER`` names another chromedriver, ``$LLMROUTE_CHROMIUM``
another browser binary. A missing driver fails the test (asking for the browser tests
and getting none is not a pass).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_proc import free_port


class Browser:
    """One WebDriver session."""

    def __init__(self, client: httpx.Client, session: str) -> None:
        self._client = client
        self._session = f"/session/{session}"

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        response = self._client.request(method, f"{self._session}{path}", json=payload)
        body = response.json()
        assert response.status_code == 200, body
        return body["value"]

    def open(self, url: str) -> None:
        """Navigate the window to `url` (returns once the page has loaded)."""
        self._call("POST", "/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """The value of `script` (a function body: ``return ...``) in the page."""
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def url(self) -> str:
        value: str = self._call("GET", "/url")
        return value

    def wait_until(self, what: str, script: str, timeout: float = 20.0) -> Any:
        """Poll `script` until it returns something truthy; fail naming `what`."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script)
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not happen within {timeout} s (at {self.url()})")
            time.sleep(0.1)


def _binary(variable: str, names: tuple[str, ...], install: str) -> str:
    found = os.environ.get(variable) or next(filter(None, map(shutil.which, names)), None)
    if not found:
        pytest.fail(f"no {names[0]}: {install} (or set ${variable})")
    return found


@contextmanager
def browser(tmp: Path, *extra: str) -> Iterator[Browser]:
    """A headless Chromium session with a fresh profile under `tmp` (and `extra`
    command-line switches)."""
    driver = _binary(
        "LLMROUTE_CHROMEDRIVER", ("chromedriver",), "apt-get install -y chromium-driver"
    )
    chromium = _binary(
        "LLMROUTE_CHROMIUM",
        ("chromium", "chromium-browser", "google-chrome"),
        "apt-get install -y chromium",
    )
    port = free_port()
    log = tmp / f"chromedriver-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([driver, f"--port={port}"], stdout=out, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if client.get("/status").json()["value"]["ready"]:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"chromedriver did not start:\n{log.read_text(errors='replace')}")
                time.sleep(0.05)
            args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]
            args += [f"--user-data-dir={tmp / f'profile-{port}'}", *extra]
            options = {"binary": chromium, "args": args}
            capabilities = {"alwaysMatch": {"goog:chromeOptions": options}}
            created = client.post("/session", json={"capabilities": capabilities})
            assert created.status_code == 200, created.text
            session = created.json()["value"]["sessionId"]
            try:
                yield Browser(client, session)
            finally:
                client.delete(f"/session/{session}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def json_form(target: str, content: str) -> str:
    """A form (id ``f``) that posts a chat request for `content` to `target` as
    ``text/plain``, which needs no preflight: its one field's name and value spell the
    JSON body. What another site's page sends to make a browser call the gateway."""
    name = '{"model": "auto", "messages": [{"role": "user", "content": "' + content
    return (
        f'<form id="f" method="POST" action="{target}" enctype="text/plain">'
        f"<input type=\"hidden\" name='{name}' value='\"}}]}}'></form>"
    )


def page_handler(html: bytes) -> type[BaseHTTPRequestHandler]:
    """A handler that answers every GET with `html`: another site's page, for a test
    server (`fake_upstream.serve_in_thread`) on another origin."""

    class Page(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

    return Page
