"""`llmroute serve` behind a reverse proxy: every event stream tells a buffering proxy
not to hold it (``X-Accel-Buffering: no``, which nginx honours; nginx buffers a proxied
answer by default, and would hold a stream's events until it ended) and no cache to
keep it (``Cache-Control: no-cache``). On a real gateway, through each API that streams:
chat (answered upstream and from the cache), legacy completions, Messages, Responses, and a
background response's stream, as it is made and as it is read again.

The client address the access log shows: ``X-Forwarded-For`` is believed from the proxies
``--forwarded-allow-ips`` (``$FORWARDED_ALLOW_IPS``) names, by default this machine's own
(uvicorn's 127.0.0.1 and ::1), and from no one else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_refused, serve_text, wait_for

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small}
routes:
  - {name: chat, examples: ["hello there", "how are you today"], target: small}
default: {target: small}
cache: {ttl_s: 300}
stored_responses: {ttl_s: 600}
telemetry: {enabled: false}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Served]:
    """A gateway with the defaults of a proxy's options, its log in JSON lines (for
    `test_forwarded_for_is_believed_from_this_machine_by_default`)."""
    tmp = tmp_path_factory.mktemp("proxied")
    with serve_text(REGISTRY % {"url": upstream.url}, tmp, ["--log-format", "json"]) as served:
        yield served


def _streamed(url: str, body: dict[str, Any] | None = None) -> tuple[httpx.Headers, str]:
    """The headers and whole text of a stream (POST `body`, or GET without one)."""
    method = "GET" if body is None else "POST"
    with httpx.stream(method, url, json=body, timeout=10) as response:
        text = response.read().decode()
        assert response.status_code == 200, text
        return response.headers, text


def _proxy_safe(headers: httpx.Headers) -> None:
    assert headers["content-type"].startswith("text/event-stream")
    assert headers.get("x-accel-buffering") == "no", headers
    assert headers.get("cache-control") == "no-cache", headers


def test_every_stream_tells_a_buffering_proxy_to_pass_it_on(gateway: Served) -> None:
    v1 = f"{gateway.url}/v1"
    chat = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hello there, proxy"}],
        "stream": True,
    }
    first, _ = _streamed(f"{v1}/chat/completions", chat)
    again, _ = _streamed(f"{v1}/chat/completions", chat)
    assert (first["x-llmroute-cache"], again["x-llmroute-cache"]) == ("miss", "hit")
    legacy, _ = _streamed(
        f"{v1}/completions", {"model": "small", "prompt": "hello", "stream": True}
    )
    messages, _ = _streamed(
        f"{v1}/messages",
        {
            "model": "small",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "how are you today"}],
            "stream": True,
        },
    )
    responses, _ = _streamed(f"{v1}/responses", {"model": "small", "input": "hi", "stream": True})
    made, text = _streamed(
        f"{v1}/responses",
        {"model": "small", "input": "one two", "background": True, "stream": True},
    )
    created = json.loads(text.split("data: ", 1)[1].split("\n", 1)[0])
    response_id = created["response"]["id"]
    read_again, _ = _streamed(f"{v1}/responses/{response_id}?stream=true")
    for headers in (first, again, legacy, messages, responses, made, read_again):
        _proxy_safe(headers)


def test_an_answer_that_is_not_a_stream_is_left_to_the_proxy(gateway: Served) -> None:
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "hello, no stream"}]},
        timeout=10,
    )
    assert answer.status_code == 200
    assert "x-accel-buffering" not in answer.headers


CLIENT = "203.0.113.7"  # what the proxy says the client was (TEST-NET-3)
NOT_US = "192.0.2.1"  # a proxy that is not the test's own address (TEST-NET-1)


def _access_clients(served: Served) -> list[str]:
    """The client address of each access line for GET /v1/models (port dropped)."""
    wait_for("the access lines", lambda: "/v1/models" in served.log_text(), 10)
    lines = [json.loads(line) for line in served.log_text().splitlines() if line.strip()]
    return [
        str(r["client"]).rsplit(":", 1)[0]
        for r in lines
        if r["logger"] == "uvicorn.access" and r["path"] == "/v1/models"
    ]


def _forwarded(served: Served, times: int = 1) -> list[str]:
    """GET /v1/models `times` times, each saying it came from `CLIENT`: the client
    addresses the access log shows for it."""
    for _ in range(times):
        reply = httpx.get(
            f"{served.url}/v1/models", headers={"X-Forwarded-For": CLIENT}, timeout=10
        )
        assert reply.status_code == 200, reply.text
    return _access_clients(served)


def test_forwarded_for_is_believed_from_this_machine_by_default(gateway: Served) -> None:
    """127.0.0.1: a proxy on this machine, trusted by default (the module's gateway: no
    other test of it asks for /v1/models)."""
    clients = _forwarded(gateway)
    assert clients and set(clients) == {CLIENT}, clients


@pytest.mark.parametrize(
    ("args", "env", "believed"),
    [
        (["--forwarded-allow-ips", NOT_US], {}, False),
        (["--forwarded-allow-ips", f"{NOT_US}, 10.0.0.0/8", "--workers", "2"], {}, False),
        ([], {"FORWARDED_ALLOW_IPS": NOT_US}, False),
        (["--forwarded-allow-ips", "127.0.0.0/8"], {"FORWARDED_ALLOW_IPS": NOT_US}, True),
    ],
    ids=["option", "option-workers", "environment", "option-over-environment"],
)
def test_forwarded_for_is_believed_only_from_the_trusted_proxies(
    upstream: FakeUpstream,
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    believed: bool,
) -> None:
    text = REGISTRY % {"url": upstream.url}
    with serve_text(text, tmp_path, ["--log-format", "json", *args], env) as served:
        # whichever worker answers
        clients = _forwarded(served, 2 if "--workers" in args else 1)
    assert clients and set(clients) == {CLIENT if believed else "127.0.0.1"}, clients


@pytest.mark.parametrize("value", ["proxy.internal", "10.0.0.0/33", " , "])
def test_a_malformed_forwarded_allow_ips_stops_the_start_with_one_line(
    value: str, tmp_path: Path
) -> None:
    registry = REGISTRY % {"url": "http://127.0.0.1:9/v1"}
    done = serve_refused(registry, tmp_path, ["--forwarded-allow-ips", value])
    assert done.returncode == 2, done.stderr
    assert "error: --forwarded-allow-ips" in done.stderr and "give an address" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_malformed_forwarded_allow_ips_variable_is_named_as_the_variable(
    tmp_path: Path,
) -> None:
    """No --forwarded-allow-ips was given: the line names $FORWARDED_ALLOW_IPS."""
    registry = REGISTRY % {"url": "http://127.0.0.1:9/v1"}
    env = {"FORWARDED_ALLOW_IPS": "proxy.internal"}
    done = serve_refused(registry, tmp_path, [], env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "error: $FORWARDED_ALLOW_IPS 'proxy.internal': give an address (10.0.0.5), a "
        "network (10.0.0.0/8) or '*', comma-separated"
    )
    env = {"FORWARDED_ALLOW_IPS": "127.0.0.1/8"}
    done = serve_refused(registry, tmp_path, ["--forwarded-allow-ips", "proxy.internal"], env)
    assert done.stderr.strip().startswith("error: --forwarded-allow-ips 'proxy.internal': ")


def test_an_address_with_a_prefix_length_stops_the_start_naming_the_network(
    tmp_path: Path,
) -> None:
    """``127.0.0.1/8`` (as ``ip addr`` shows an address) was taken; uvicorn, parsing
    networks strictly, kept it as text that no peer's address is, so no proxy's
    ``X-Forwarded-For`` was believed and the log showed the proxy for every client."""
    registry = REGISTRY % {"url": "http://127.0.0.1:9/v1"}
    done = serve_refused(registry, tmp_path, ["--forwarded-allow-ips", "::1, 127.0.0.1/8"])
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "error: --forwarded-allow-ips '127.0.0.1/8': not a network (its host bits are not "
        "zero), so it would match no proxy; give the network 127.0.0.0/8 or the address "
        "127.0.0.1"
    )
