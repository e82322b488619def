"""``--cors-origin``: a browser page on an allowed origin may call the gateway (its
preflight answered before the key check, the decision headers readable by its script);
other origins get no CORS grant, and without the option no CORS header is sent. End to
end: `llmroute serve` as a subprocess, a fake upstream behind it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fake_upstream import fake_upstream
from gateway_proc import Served, serve_refused, serve_text

from llmroute.server.settings import ServeSettings

KEY = "sk-browser-0123456789"
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
auth:
  keys:
    - {name: web, key_env: LLMROUTE_TEST_WEB_KEY}
"""
ASK = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}
ENV = {"LLMROUTE_TEST_WEB_KEY": KEY, "LLMROUTE_TELEMETRY_URL": "off"}
ID = re.compile(r"[0-9a-f]{24}")  # a request id's format (a decision id's)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("cors")
    with fake_upstream() as upstream:
        text = REGISTRY % {"url": upstream.url}
        with serve_text(text, tmp, ["--cors-origin", APP], ENV) as served:
            yield served


def _preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        f"{url}/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
        timeout=5,
    )


def test_an_allowed_origins_preflight_passes_before_the_key_check(gateway: Served) -> None:
    reply = _preflight(gateway.url, APP)  # a preflight never carries the key
    assert reply.status_code == 200, reply.text
    assert reply.headers["access-control-allow-origin"] == APP
    assert "POST" in reply.headers["access-control-allow-methods"]
    assert "authorization" in reply.headers["access-control-allow-headers"].lower()


def test_the_answer_grants_the_origin_and_exposes_the_decision(gateway: Served) -> None:
    reply = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=ASK,
        headers={"Origin": APP, "Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["access-control-allow-origin"] == APP
    exposed = reply.headers["access-control-expose-headers"].lower()
    for name in ("x-llmroute-route", "x-llmroute-model", "x-request-id"):
        assert name in exposed and name in reply.headers
    refused = httpx.post(f"{gateway.url}/v1/chat/completions", json=ASK, headers={"Origin": APP})
    assert refused.status_code == 401  # CORS is no way around the key
    assert refused.headers["access-control-allow-origin"] == APP  # the page can read why


def test_another_origin_gets_no_grant(gateway: Served) -> None:
    reply = _preflight(gateway.url, "https://evil.example.net")
    assert reply.status_code == 400
    assert "access-control-allow-origin" not in reply.headers


def test_preflights_and_refusals_carry_a_request_id(gateway: Served) -> None:
    """CORS answers a preflight itself, before any other layer: its answers (a grant,
    or a 400 for another origin) carried no ``x-request-id``, which every other answer
    has. Each is a fresh one, and ``x-request-id`` is among what a page may read."""
    granted = _preflight(gateway.url, APP)
    other = _preflight(gateway.url, "https://evil.example.net")
    refused = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=ASK,
        headers={"Origin": "https://evil.example.net", "Sec-Fetch-Site": "cross-site"},
        timeout=10,
    )
    assert (granted.status_code, other.status_code, refused.status_code) == (200, 400, 403)
    assert refused.json()["error"]["code"] == "cross_origin_forbidden"
    ids = [r.headers.get_list("x-request-id") for r in (granted, other, refused)]
    assert all(len(one) == 1 and ID.fullmatch(one[0]) for one in ids), ids
    assert len({one[0] for one in ids}) == 3


@pytest.mark.parametrize("stream", [False, True])
def test_a_routed_answer_through_cors_has_one_id_its_decisions(
    gateway: Served, stream: bool
) -> None:
    """CORS wraps the answer's ``send`` between the outermost layer that stamps ids and
    the ones inside: a routed answer (a stream's headers too, sent once it is routed)
    still carries one ``x-request-id``, its decision's, and on ``/v1/messages`` the same
    as ``request-id``, not a second or a fresh one. (Checked, no bug: a guard.)"""
    headers = {"Authorization": f"Bearer {KEY}", "Origin": APP}
    chat = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={**ASK, "stream": stream},
        headers=headers,
        timeout=10,
    )
    message = httpx.post(
        f"{gateway.url}/v1/messages",
        json={**ASK, "max_tokens": 16, "stream": stream},
        headers={**headers, "anthropic-version": "2023-06-01"},
        timeout=10,
    )
    for answer in (chat, message):
        assert answer.status_code == 200, answer.text
        assert answer.headers["access-control-allow-origin"] == APP
        ids = answer.headers.get_list("x-request-id")
        assert ids == [answer.headers["x-llmroute-decision-id"]], ids
    assert message.headers.get_list("request-id") == message.headers.get_list("x-request-id")
    assert "request-id" not in chat.headers


def test_without_the_option_no_cors_header_is_sent(tmp_path: Path) -> None:
    with (
        fake_upstream() as upstream,
        serve_text(REGISTRY % {"url": upstream.url}, tmp_path, (), ENV) as served,
    ):
        reply = httpx.post(
            f"{served.url}/v1/chat/completions",
            json=ASK,
            headers={"Origin": APP, "Authorization": f"Bearer {KEY}"},
            timeout=10,
        )
        # an origin no --cors-origin allows: refused (test_browser_requests), no grant
        assert reply.status_code == 403, reply.text
        assert reply.json()["error"]["code"] == "cross_origin_forbidden"
        assert not any(h.startswith("access-control-") for h in reply.headers)
        preflight = _preflight(served.url, APP)  # no preflight answered
        assert preflight.status_code == 403
        assert not any(h.startswith("access-control-") for h in preflight.headers)


@pytest.mark.parametrize(
    "origin", ["chat.example.com", "https://chat.example.com/app", "https://", "1a://x"]
)
def test_a_malformed_origin_stops_the_start_with_one_line(origin: str, tmp_path: Path) -> None:
    registry = REGISTRY % {"url": "http://127.0.0.1:9/v1"}
    done = serve_refused(registry, tmp_path, ["--cors-origin", origin], ENV)
    assert done.returncode == 2
    assert f"--cors-origin {origin!r}" in done.stderr and "Traceback" not in done.stderr


def test_a_wildcard_within_an_origin_stops_the_start(tmp_path: Path) -> None:
    """It was taken, and compared byte for byte it matched no page ever: the pages of
    ``https://app.example.com`` were refused as another origin's."""
    registry = REGISTRY % {"url": "http://127.0.0.1:9/v1"}
    done = serve_refused(registry, tmp_path, ["--cors-origin", "https://*.example.com"], ENV)
    assert done.returncode == 2
    line = "--cors-origin 'https://*.example.com': an origin is matched whole, with no wildcards"
    assert line in done.stderr and "Traceback" not in done.stderr


def test_an_origin_is_written_as_browsers_send_it(tmp_path: Path) -> None:
    """A browser's ``Origin`` has a lowercase scheme and host and no default port: an
    origin given as ``https://Chat.Example.com:443`` was taken as written, matched no
    page, and its pages were refused."""
    with (
        fake_upstream() as upstream,
        serve_text(
            REGISTRY % {"url": upstream.url},
            tmp_path,
            [
                "--cors-origin",
                "https://Chat.Example.com:443",
                "--cors-origin",
                "http://LOCALHOST:80",
            ],
            ENV,
        ) as served,
    ):
        for origin in (APP, "http://localhost"):
            preflight = _preflight(served.url, origin)
            assert preflight.status_code == 200, preflight.text
            assert preflight.headers["access-control-allow-origin"] == origin
        reply = httpx.post(
            f"{served.url}/v1/chat/completions",
            json=ASK,
            headers={
                "Origin": APP,
                "Sec-Fetch-Site": "cross-site",
                "Authorization": f"Bearer {KEY}",
            },
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["access-control-allow-origin"] == APP


def test_the_origins_reach_the_workers_through_the_environment() -> None:
    settings = ServeSettings(cors_origins=(APP, "http://localhost:3000"), workers=2)
    assert ServeSettings.from_env(settings.to_env()) == settings
    assert ServeSettings.from_env({}).cors_origins == ()


def test_the_variable_is_written_as_browsers_send_it_as_the_option_is() -> None:
    """``uvicorn --factory llmroute.server.app:app_from_env`` reads
    ``$LLMROUTE_CORS_ORIGINS`` with no CLI to check it: it took each origin as written
    (``https://Chat.Example.com:443`` matched no page) and a wildcard within one."""
    given = {"LLMROUTE_CORS_ORIGINS": " https://Chat.Example.com:443 ,http://LOCALHOST:80/,,"}
    assert ServeSettings.from_env(given).cors_origins == (APP, "http://localhost")
    assert ServeSettings.from_env({"LLMROUTE_CORS_ORIGINS": "*"}).cors_origins == ("*",)


def test_the_origins_of_apps_and_extensions_are_taken() -> None:
    """Desktop and mobile apps' pages and browser extensions send their own schemes;
    only http and https were taken (a Tauri or Capacitor app, or an extension, could not
    be allowed)."""
    apps = "tauri://localhost,capacitor://localhost,chrome-extension://abcdefghijklmnop"
    assert ServeSettings.from_env({"LLMROUTE_CORS_ORIGINS": apps}).cors_origins == (
        "tauri://localhost",
        "capacitor://localhost",
        "chrome-extension://abcdefghijklmnop",
    )


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("https://*.example.com", "an origin is matched whole, with no wildcards"),
        ("chat.example.com", "give an origin such as https://app.example.com"),
        ("https://chat.example.com/app", "give an origin such as https://app.example.com"),
    ],
)
def test_a_malformed_origin_in_the_variable_is_refused_naming_it(value: str, said: str) -> None:
    with pytest.raises(ValueError, match=r"\$LLMROUTE_CORS_ORIGINS") as caught:
        ServeSettings.from_env({"LLMROUTE_CORS_ORIGINS": f"{APP},{value}"})
    assert f"{value!r}: {said}" in str(caught.value)
