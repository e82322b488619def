"""The gateway end to end: `llmroute serve` as a subprocess, the official `openai` client
in front of it, and a fake OpenAI-compatible upstream (a real HTTP server) behind it."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from fake_anthropic import FakeAnthropic, fake_anthropic
from fake_upstream import FAIL_400, FAIL_500, FAIL_CLOSE, FAIL_MID, FakeUpstream, fake_upstream
from gateway_proc import serve

from llmroute.errors import ProviderError
from llmroute.providers import OpenAICompatProvider
from llmroute.providers.base import Timeouts
from llmroute.registry.schema import Provider

BIN = Path(sys.executable).parent
KEY_ENV = "LLMROUTE_TEST_UPSTREAM_KEY"
SECRET = "sk-test-SECRET-3f9a8b7c6d5e4f3a2b1c"
HEADERS = ("decision-id", "route", "model", "confidence", "layer", "deployment", "attempts")
UPSTREAM_NAMES = {"small": "up-small", "large": "up-large"}

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", api_key_env: %(key_env)s,
         headers: {x-extra: hello}, timeout_s: 5}
  anth: {kind: anthropic, base_url: "%(anthropic_url)s", api_key_env: %(key_env)s}
models:
  small: {provider: fake, model: up-small, price: {input: 1, output: 2}}
  large: {provider: fake, model: up-large}
  limited: {provider: fake, model: "rl?status=429&times=1&retry_after=0.2"}
  quiet: {provider: fake, model: "quiet?nousage=1", price: {input: 1, output: 2}}
  loose: {provider: fake, model: "loose?loose=1", price: {input: 1, output: 2}}
  broken: {provider: fake, model: %(fail_500)s}
  closer: {provider: fake, model: %(fail_close)s}
  picky: {provider: fake, model: %(fail_400)s}
  halfway: {provider: fake, model: %(fail_mid)s}
  endless: {provider: fake, model: "endless?huge=40"}  # an event past 32 MiB
  claude: {provider: anth, model: claude-x}
  filtered: {provider: fake, model: "azure?filter=1"}
  flagged: {provider: fake, model: "or?moderated=1"}  # OpenRouter's moderation: a 403
  leaky: {provider: anth, model: "c?echo_key=1"}  # its 400 error repeats the key
  relayed: {provider: fake, model: "or?inbody=502"}  # errors with a 200, as OpenRouter
  cutoff: {provider: fake, model: "or?inbody=502&late=1"}
  busy-claude: {provider: anth, model: "claude-x?early_error=1"}  # overloaded at once
  locked: {provider: fake, model: "locked?status=401"}  # the registry's key is wrong
  later: {provider: fake, model: "later?status=503&retry_after=90"}  # past max_retry_after_s
routes:
  - name: code
    examples: ["write a Python function to parse JSON", "debug this SQL query"]
    target: large
    policy: {fallback: [small]}
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
  - name: flaky
    examples: ["tell me about volcanoes", "how do glaciers form"]
    target: broken
    policy: {fallback: [small]}
  - name: rejected
    examples: ["translate this to French", "say hello in German"]
    target: picky
    policy: {fallback: [small]}
  - name: doomed
    examples: ["plan a trip to Rome", "book a hotel in Paris"]
    target: broken
    policy: {fallback: [closer]}
  - name: refused-late
    examples: ["compose a haiku about autumn leaves"]
    target: broken
    policy: {fallback: [picky]}
  - name: sensitive
    examples: ["summarise this court ruling", "describe the battle in detail"]
    target: filtered
    policy: {fallback: [small], content_fallback: claude}
  - name: relayed-route
    examples: ["write a limerick about cats", "compose a haiku about rain"]
    target: relayed
    policy: {fallback: [small]}
  - name: busy
    examples: ["recommend a sci-fi novel", "suggest a good fantasy book"]
    target: busy-claude
    policy: {fallback: [small]}
  - name: sensitive-strict
    examples: ["summarise this police report", "describe the crime scene"]
    target: filtered
    policy: {fallback: [small]}
default: {target: small}
dispatch:
  retries: {attempts: 1, backoff_s: 0.01, max_backoff_s: 0.02}
  breaker: {enabled: false}  # tests/dispatch covers breakers; here fallbacks stay visible
"""


@dataclass
class Gateway:
    url: str
    upstream: FakeUpstream
    anthropic: FakeAnthropic
    log: Path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gateway")
    with fake_upstream() as upstream, fake_anthropic() as anthropic:
        registry = tmp / "registry.yaml"
        values = {"url": upstream.url, "anthropic_url": anthropic.url, "key_env": KEY_ENV}
        values |= {
            "fail_500": FAIL_500,
            "fail_close": FAIL_CLOSE,
            "fail_400": FAIL_400,
            "fail_mid": FAIL_MID,
        }
        registry.write_text(REGISTRY % values)
        log = tmp / "serve.log"
        args = ["--max-body-bytes", str(64 * 1024)]
        with serve(registry, log, args, env={KEY_ENV: SECRET}) as served:
            yield Gateway(served.url, upstream, anthropic, log)
        assert SECRET not in log.read_text()


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _post(gateway: Gateway, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{gateway.url}{path}", timeout=10, **kwargs)  # type: ignore[arg-type]


def test_auto_routes_then_serves_and_says_why(gateway: Gateway, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=_user("write a Python function that merges two sorted lists"),
        temperature=0.25,
    )
    for name in HEADERS:
        assert raw.headers.get(f"x-llmroute-{name}"), name
    completion = raw.parse()
    assert completion._request_id == raw.headers["x-llmroute-decision-id"]
    served = raw.headers["x-llmroute-model"]
    assert completion.model == UPSTREAM_NAMES[served]
    assert completion.choices[0].message.content == (
        "echo: write a Python function that merges two sorted lists"
    )
    sent = gateway.upstream.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert sent.headers["x-extra"] == "hello"
    assert sent.body["model"] == UPSTREAM_NAMES[served]
    assert sent.body["temperature"] == 0.25  # the rest of the body goes through untouched


def test_a_route_name_pins_the_route(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="chitchat", messages=_user("x"))
    assert raw.headers["x-llmroute-route"] == "chitchat"
    assert raw.headers["x-llmroute-layer"] == "pinned"
    assert raw.headers["x-llmroute-model"] == "small"
    assert raw.parse().model == "up-small"


def test_a_pool_model_name_pins_the_model(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="large", messages=_user("hi"))
    assert raw.headers["x-llmroute-layer"] == "pinned"
    assert raw.headers["x-llmroute-model"] == "large"
    assert raw.parse().model == "up-large"  # the upstream's name, as gateway.md says


def test_streaming_passes_the_upstream_events_through(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    chunks = client.chat.completions.create(
        model="small", messages=_user("one two three"), stream=True
    )
    with chunks:
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == ["echo:", "one", "two", "three"]
    body = {"model": "code", "messages": _user("hi"), "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-llmroute-route"] == "code"
        raw = r.read().decode()
    assert raw.rstrip().endswith("data: [DONE]")
    assert '"model": "up-large"' in raw


def test_async_client_streams(gateway: Gateway) -> None:
    async def run() -> str:
        async with openai.AsyncOpenAI(
            base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model="auto", messages=_user("how are you today?"), stream=True
            )
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            return "".join(parts)

    assert asyncio.run(asyncio.wait_for(run(), timeout=20)).split() == [
        "echo:",
        "how",
        "are",
        "you",
        "today?",
    ]


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-nope", messages=_user("hi"))
    assert caught.value.code == "model_not_found"
    assert "the model 'gpt-nope' does not exist" in caught.value.message


def test_a_long_model_name_is_cut_short_in_the_error(client: openai.OpenAI) -> None:
    """The error names what the client sent, not all 20,000 characters of it."""
    long = "x" * 20_000
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model=long, messages=_user("hi"))
    with pytest.raises(openai.NotFoundError) as retrieved:
        client.models.retrieve(long[:5000])
    for error in (caught.value, retrieved.value):
        assert error.code == "model_not_found" and "'xxxx" in error.message
        assert len(error.message) < 300, len(error.message)


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (json.dumps({"model": "auto"}).encode(), "messages"),
        (json.dumps({"model": "auto", "messages": []}).encode(), "messages"),
    ],
)
def test_bad_bodies_are_400_in_openai_format(
    gateway: Gateway, content: bytes, param: str | None
) -> None:
    response = _post(gateway, "/v1/chat/completions", content=content)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert set(error) >= {"message", "type", "param", "code"}


def test_a_body_over_the_limit_is_413(gateway: Gateway) -> None:
    body = {"model": "auto", "messages": _user("x" * 100_000)}
    response = _post(gateway, "/v1/chat/completions", json=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_upstream_500_falls_back_down_the_route_policy(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    before = len(gateway.upstream.requests)
    raw = client.chat.completions.with_raw_response.create(model="flaky", messages=_user("hi"))
    assert raw.headers["x-llmroute-route"] == "flaky"
    assert raw.headers["x-llmroute-model"] == "small"
    assert raw.headers["x-llmroute-deployment"] == "fake"
    assert raw.headers["x-llmroute-attempts"] == "1"  # the model that failed, retry uncounted
    assert raw.parse().model == "up-small"
    # retried once (dispatch.retries.attempts), then the fallback
    assert gateway.upstream.models_called()[before:] == [FAIL_500, FAIL_500, "up-small"]


def test_a_stream_falls_back_before_its_first_byte(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="flaky", messages=_user("a b"), stream=True
    )
    assert raw.headers["x-llmroute-model"] == "small"
    assert raw.headers["x-llmroute-attempts"] == "1"
    with raw.parse() as stream:
        models = {c.model for c in stream}
    assert models == {"up-small"}


def test_every_model_failing_is_502_naming_the_attempts(gateway: Gateway) -> None:
    for stream in (False, True):
        body = {"model": "doomed", "messages": _user("hi"), "stream": stream}
        response = _post(gateway, "/v1/chat/completions", json=body)
        assert response.status_code == 502
        assert response.headers["x-llmroute-route"] == "doomed"
        assert response.headers["x-request-id"] == response.headers["x-llmroute-decision-id"]
        error = response.json()["error"]
        assert error["code"] == "upstream_error"
        assert [a.split()[0] for a in error["attempts"]] == ["broken", "closer"]
        assert "[upstream request req_fake" in error["attempts"][0]  # for its support
        assert "broken" in error["message"] and "closer" in error["message"]
        assert "fake" in error["message"]  # the provider is named


def test_every_model_failing_tells_openais_client_not_to_send_it_again(gateway: Gateway) -> None:
    """The gateway's 502 comes after its own retries and fallbacks: `x-should-retry:
    false` stops the official client (2 retries by default) sending the request twice
    more through the whole chain, to upstreams already failing."""
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=2) as c:
        before = len(gateway.upstream.models_called())
        with pytest.raises(openai.InternalServerError) as caught:
            c.chat.completions.create(model="doomed", messages=_user("hi"))
        one_pass = len(gateway.upstream.models_called()) - before
        assert caught.value.status_code == 502
        assert caught.value.response.headers["x-should-retry"] == "false"
        response = _post(
            gateway, "/v1/chat/completions", json={"model": "doomed", "messages": _user("hi")}
        )
    # the client's call cost what one request through the chain costs, no more
    assert one_pass == len(gateway.upstream.models_called()) - before - one_pass
    assert response.headers["x-should-retry"] == "false"


def test_an_upstream_4xx_goes_back_to_the_client_without_fallback(gateway: Gateway) -> None:
    for stream in (False, True):
        before = len(gateway.upstream.requests)
        body = {"model": "rejected", "messages": _user("hi"), "stream": stream}
        response = _post(gateway, "/v1/chat/completions", json=body)
        assert response.status_code == 400
        assert response.headers["x-llmroute-route"] == "rejected"
        error = response.json()["error"]
        assert error["code"] == "upstream_rejected"
        assert "picky" in error["message"] and "HTTP 400" in error["message"]
        # the fallback model (small) was never tried: a bad request stays bad
        assert gateway.upstream.models_called()[before:] == [FAIL_400]


def test_a_fallback_that_refuses_the_request_keeps_what_failed_before(gateway: Gateway) -> None:
    """The target down (5xx), its fallback refusing the request (400): the error named
    the target in x-llmroute-model and the decision log lost the 5xx (attempts [])."""
    body = {"model": "refused-late", "messages": _user("hi")}
    response = _post(gateway, "/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.headers["x-llmroute-model"] == "picky"
    error = response.json()["error"]
    assert error["code"] == "upstream_rejected" and "'picky'" in error["message"]
    broken, refused = error["attempts"]  # as every model that failed, the one that refused
    assert broken.startswith("broken via fake") and refused.startswith("picky via fake")


def test_a_content_filters_refusal_goes_to_the_routes_content_fallback(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    """Azure's content filter refused the prompt: the route's `content_fallback` (an
    Anthropic model) answers, through the official client; without one the client gets
    the filter's 400 and its code, and the route's plain fallback is not tried."""
    before = len(gateway.upstream.requests), len(gateway.anthropic.requests)
    raw = client.chat.completions.with_raw_response.create(
        model="sensitive", messages=_user("the ruling")
    )
    assert raw.headers["x-llmroute-model"] == "claude"
    assert raw.parse().choices[0].message.content == "echo: the ruling"
    assert gateway.upstream.models_called()[before[0] :] == ["azure?filter=1"]
    assert len(gateway.anthropic.requests) == before[1] + 1
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="sensitive-strict", messages=_user("the report"))
    assert caught.value.code == "content_filter"
    assert "content filter refused the request" in caught.value.message
    assert gateway.upstream.models_called()[-1] == "azure?filter=1"  # small never tried


def test_a_moderation_403_reaches_the_client_as_a_400(gateway: Gateway) -> None:
    """OpenRouter refuses a flagged prompt with a 403: the request's content, not the
    gateway's access, so the client gets a 400 with the filter's code, never a 403 it
    would take for its own key refused."""
    for stream in (False, True):
        body = {"model": "flagged", "messages": _user("the report"), "stream": stream}
        response = _post(gateway, "/v1/chat/completions", json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "content_filter" and "flagged" in error["message"]
    assert gateway.upstream.models_called()[-2:] == ["or?moderated=1"] * 2


def test_a_stream_that_breaks_midway_ends_with_an_error_event_and_done(gateway: Gateway) -> None:
    before = len(gateway.upstream.requests)
    body = {"model": "halfway", "messages": _user("hi"), "stream": True}
    response = _post(gateway, "/v1/chat/completions", json=body)
    assert response.status_code == 200  # the status line had gone out with the first byte
    events = [line for line in response.text.split("\n\n") if line.strip()]
    assert '"partial "' in events[1]
    assert '"code": "upstream_error"' in events[-2]
    assert events[-1] == "data: [DONE]"
    # no silent retry after the first byte
    assert gateway.upstream.models_called()[before:] == [FAIL_MID]


def test_an_upstream_event_that_grows_past_the_bound_breaks_the_stream(
    gateway: Gateway,
) -> None:
    body = {"model": "endless", "messages": _user("hi"), "stream": True}
    response = _post(gateway, "/v1/chat/completions", json=body)
    events = [line for line in response.text.split("\n\n") if line.strip()]
    assert '"partial "' in events[1]
    assert '"code": "upstream_error"' in events[-2] and events[-1] == "data: [DONE]"
    log = gateway.log.read_text()
    assert "an event larger than 32 MiB" in log and "Traceback" not in log


def test_an_error_inside_a_200_falls_back_or_breaks_the_stream(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    """An upstream that reports its failure inside a 200 (OpenRouter, vLLM and the OpenAI
    API in streams) is failing, not answering: the route's fallback answers, streamed
    or not; an error event after the first words ends the stream as a broken one, which
    the official client raises."""
    before = len(gateway.upstream.requests)
    raw = client.chat.completions.with_raw_response.create(
        model="relayed-route", messages=_user("hi")
    )
    assert raw.headers["x-llmroute-model"] == "small"
    assert raw.parse().choices[0].message.content == "echo: hi"
    with client.chat.completions.create(
        model="relayed-route", messages=_user("a b"), stream=True
    ) as stream:
        assert {c.model for c in stream} == {"up-small"}
    tried = ["or?inbody=502", "or?inbody=502", "up-small"]  # retried once, then the fallback
    assert gateway.upstream.models_called()[before:] == tried * 2
    texts: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(
            model="cutoff", messages=_user("hi"), stream=True
        ):
            texts.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(texts) == "partial " and "stream broke off" in caught.value.message


def test_anthropic_overloaded_before_its_first_words_falls_back(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    """Anthropic's ``overloaded_error`` event right after ``message_start`` (the stream
    had said nothing yet): the route's fallback answers the stream, through the
    official client, with one opening chunk and no error."""
    with client.chat.completions.create(model="busy", messages=_user("a b"), stream=True) as stream:
        chunks = list(stream)
    assert {c.model for c in chunks} == {"up-small"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: a b "
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.role) == 1


def test_an_upstream_refusing_the_gateways_key_is_a_502_not_the_clients_401(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    """The upstream's 401 is about the gateway's key: the official client must not take
    it for its own (AuthenticationError); it gets a 502 naming the model that refused."""
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="locked", messages=_user("hi"))
    assert caught.value.status_code == 502 and not isinstance(
        caught.value, openai.AuthenticationError
    )
    assert "refused the gateway's credentials" in caught.value.message
    assert SECRET not in caught.value.message


def test_an_upstream_503_asking_for_a_long_wait_is_the_clients_503_with_it(
    gateway: Gateway,
) -> None:
    """An upstream 503 with ``Retry-After: 90`` (past ``max_retry_after_s``: not waited
    out, not retried) is the client's 503 with that wait, which the official clients
    wait out before trying again; it was a 502 with ``x-should-retry: false``, the wait
    dropped and the client told not to try again at all."""
    before = len(gateway.upstream.models_called())
    body = {"model": "later", "messages": _user("hi")}
    for stream in (False, True):
        response = _post(gateway, "/v1/chat/completions", json={**body, "stream": stream})
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "90"
        assert "x-should-retry" not in response.headers
        error = response.json()["error"]
        assert error["code"] == "upstream_error" and "503" in error["attempts"][0]
    assert gateway.upstream.models_called()[before:] == ["later?status=503&retry_after=90"] * 2


def test_route_returns_the_decision_only(gateway: Gateway) -> None:
    before = len(gateway.upstream.requests)
    body = {"model": "auto", "messages": _user("debug this SQL query")}
    response = _post(gateway, "/v1/route", json=body)
    assert response.status_code == 200
    decision = response.json()
    assert {"id", "route", "model", "layer", "confidence", "margin"} <= set(decision)
    assert response.headers["x-llmroute-decision-id"] == decision["id"]
    assert len(gateway.upstream.requests) == before


def test_models_lists_auto_routes_and_pool(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "auto"
    assert {"code", "chitchat", "flaky", "doomed", "small", "large", "claude"} <= set(ids)


def test_key_info_without_client_keys_is_a_404(gateway: Gateway) -> None:
    reply = httpx.get(f"{gateway.url}/v1/key", timeout=10)
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "not_found"
    assert "no auth section" in reply.json()["error"]["message"]


def test_models_retrieve_answers_for_each_listed_model(client: openai.OpenAI) -> None:
    """``client.models.retrieve`` (GET /v1/models/{id}): what the list holds, in its
    shape; anything else is OpenAI's 404, which the client raises as NotFoundError."""
    listed = {m.id: m for m in client.models.list()}
    for name in ("auto", "code", "large"):
        got = client.models.retrieve(name)
        assert got == listed[name] and got.object == "model"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-9")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("vendor/with-a-slash")


def test_health_ready_and_unknown_paths(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/health", timeout=5).status_code == 200
    ready = httpx.get(f"{gateway.url}/ready", timeout=5)
    assert ready.status_code == 200
    missing = httpx.get(f"{gateway.url}/v1/nothing", timeout=5)
    assert missing.status_code == 404
    assert "message" in missing.json()["error"]


def test_no_error_body_carries_the_key(gateway: Gateway) -> None:
    bodies = [
        {"model": "doomed", "messages": _user("hi")},
        {"model": "leaky", "messages": _user("hi")},
        {"model": "nope", "messages": _user("hi")},
        {"model": "auto"},
    ]
    for body in bodies:
        response = _post(gateway, "/v1/chat/completions", json=body)
        assert response.status_code >= 400
        assert SECRET not in response.text
        assert SECRET not in str(response.headers)


def test_provider_errors_name_the_provider_but_no_key_or_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    spec = Provider(
        kind="openai",
        base_url=f"http://user:hunter2@127.0.0.1:{port}/v1",
        headers_env={"api-key": KEY_ENV},  # the key beside the URL's: not an Authorization
        timeout_s=2,
    )

    async def run() -> ProviderError:
        provider = OpenAICompatProvider("local", spec, environ={KEY_ENV: SECRET})
        try:
            await provider.complete("m", {"messages": _user("hi")}, timeouts=Timeouts(total_s=2))
        except ProviderError as exc:
            return exc
        finally:
            await provider.aclose()
        raise AssertionError("no ProviderError")

    error = asyncio.run(run())
    assert "'local'" in str(error)
    assert error.status is None
    for secret in (SECRET, "hunter2", str(port)):
        assert secret not in str(error)


def test_usage_carries_cost_and_whether_it_was_estimated(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="small", messages=_user("hi"))
    assert completion.usage is not None
    extra = completion.usage.model_extra or {}
    assert extra["cost_usd"] == pytest.approx((3 * 1 + 3 * 2) / 1e6)
    assert extra["estimated"] is False
    completion = client.chat.completions.create(model="quiet", messages=_user("hello there"))
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert (completion.usage.model_extra or {})["estimated"] is True


def test_stream_include_usage_gets_a_priced_usage_chunk(client: openai.OpenAI) -> None:
    for model in ("small", "quiet"):  # reported upstream; estimated by the gateway
        stream = client.chat.completions.create(
            model=model,
            messages=_user("a b c"),
            stream=True,
            stream_options={"include_usage": True},
        )
        with stream:
            chunks = list(stream)
        last = chunks[-1]
        assert last.choices == [] and last.usage is not None
        assert (last.usage.model_extra or {})["cost_usd"] > 0, model


def test_a_stream_in_looser_sse_is_read_whole_and_sent_on_plainly(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    """An upstream writing ``id:`` lines, comments, CRLF and JSON over several ``data:``
    lines without a space (valid server-sent events): its usage is read and priced, not
    estimated, and the client gets one plain ``data: {...}`` line an event."""
    stream = client.chat.completions.create(
        model="loose",
        messages=_user("a b c"),
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: a b c "
    assert chunks[-2].choices[0].finish_reason == "stop"
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == 3
    extra = usage.model_extra or {}
    assert extra["estimated"] is False
    assert extra["cost_usd"] == pytest.approx((3 * 1 + 3 * 2) / 1e6)
    body = {"model": "loose", "messages": _user("a b"), "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body) as response:
        raw = b"".join(response.iter_raw())
    events = [e for e in raw.split(b"\n\n") if e and not e.startswith(b":")]
    assert events[-1] == b"data: [DONE]"
    for event in events:
        assert event.startswith(b"data: ") and b"\n" not in event, event
        assert b"\r" not in event and b"id:" not in event
    reply = client.responses.create(model="loose", input="x y", stream=True)
    with reply:
        done = [e for e in reply if e.type == "response.completed"]
    assert done and done[0].response.output_text == "echo: x y "


def test_a_429_is_retried_after_its_retry_after(gateway: Gateway, client: openai.OpenAI) -> None:
    before = len(gateway.upstream.requests)
    completion = client.chat.completions.create(model="limited", messages=_user("hi"))
    assert completion.choices[0].message.content == "echo: hi"
    calls = gateway.upstream.requests[before:]
    assert [r.body["model"] for r in calls] == ["rl?status=429&times=1&retry_after=0.2"] * 2
    assert calls[1].at - calls[0].at >= 0.2  # Retry-After was honoured


def test_an_anthropic_model_answers_in_openai_format(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="claude",
        messages=[{"role": "system", "content": "be brief"}, *_user("hello")],
        max_tokens=50,
    )
    assert raw.headers["x-llmroute-model"] == "claude"
    completion = raw.parse()
    assert completion.model == "claude-x"
    assert completion.choices[0].message.content == "echo: hello"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    sent = gateway.anthropic.last
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == SECRET
    assert sent.body["system"] == "be brief" and sent.body["max_tokens"] == 50


def test_anthropic_tool_calls_and_streams_through_the_openai_client(
    client: openai.OpenAI,
) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": "search the web",
                "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
            },
        }
    ]
    completion = client.chat.completions.create(
        model="claude",
        messages=_user("find routers"),
        tools=tools,  # type: ignore[arg-type]
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "search"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"query": "find routers"}  # type: ignore[union-attr]
    stream = client.chat.completions.create(
        model="claude",
        messages=_user("one two"),
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_every_openai_parameter_reaches_the_upstream_untouched(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    client.chat.completions.create(
        model="small",
        messages=_user("hi"),
        tools=tools,  # type: ignore[arg-type]
        tool_choice="auto",
        response_format={"type": "json_object"},
        n=2,
        logprobs=True,
        top_logprobs=2,
        seed=7,
        user="u-1",
        stop=["\n\n"],
        max_tokens=12,
        extra_body={"top_k": 5, "repetition_penalty": 1.1},
    )
    sent = gateway.upstream.requests[-1].body
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"
    assert sent["response_format"] == {"type": "json_object"}
    assert (sent["n"], sent["logprobs"], sent["top_logprobs"], sent["seed"]) == (2, True, 2, 7)
    assert (sent["user"], sent["stop"], sent["max_tokens"]) == ("u-1", ["\n\n"], 12)
    assert (sent["top_k"], sent["repetition_penalty"]) == (5, 1.1)  # unknown keys too
