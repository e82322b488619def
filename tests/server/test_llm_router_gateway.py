"""The LLM router wired in: the gateway's step (`refine_plan` after `plan_request`, then
dispatch), the SDK and ``llmroute route``, against a scripted OpenAI-protocol server
(real HTTP on 127.0.0.1) whose router model answers ``{"route": ...}`` by the request's
text and whose other models answer ``served by <model>``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from fake_upstream import serve_in_thread

from llmroute.decide import Router
from llmroute.dispatch import Dispatcher, Served, plan_request
from llmroute.layers.llm_router import LlmRouter, refine_plan
from llmroute.providers import build_providers

LLMROUTE = str(Path(sys.executable).parent / "llmroute")
PICKER = "up-picker"

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s/v1", timeout_s: 10}
models:
  small: {provider: fake, model: up-small}
  large: {provider: fake, model: up-large}
  backup: {provider: fake, model: up-backup}
  picker: {provider: fake, model: up-picker}
intent:
  threshold: 0.05
routes:
  - name: code
    description: programming and debugging
    target: large
    policy: {fallback: [backup]}
    examples:
      - write a python function to parse json
      - fix this python bug in my function
      - refactor this javascript class
  - name: weather
    target: small
    examples:
      - what is the weather tomorrow
      - will it rain today in paris
      - weather forecast for the weekend
default: {target: small}
llm_fallback: {model: picker, margin: 1.0, timeout_s: 5}
"""

WEATHER = "what is the weather tomorrow"


@dataclass
class Script:
    replies: dict[str, str] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, body: dict[str, Any]) -> str:
        if body.get("model") != PICKER:
            return f"served by {body.get('model')}"
        text = str(body["messages"][-1]["content"])
        return next((r for key, r in self.replies.items() if key in text), '{"route": "none"}')

    def picker_calls(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("model") == PICKER]


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
            with script.lock:
                script.requests.append(body)
            message = {"role": "assistant", "content": script.reply(body)}
            raw = json.dumps(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 1,
                    "model": body.get("model"),
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    return Handler


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def registry(script: Script, tmp_path: Path) -> Iterator[Path]:
    with serve_in_thread(_handler(script)) as url:
        path = tmp_path / "registry.yaml"
        path.write_text(REGISTRY % {"url": url})
        yield path


def _body(text: str) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


def test_gateway_step_serves_the_chosen_route(registry: Path, script: Script) -> None:
    """What server/chat.py does: plan, refine the plan, dispatch it."""
    router = Router.from_yaml(registry)
    script.replies[WEATHER] = '{"route": "code"}'
    body = _body(WEATHER)

    async def main() -> tuple[Any, Served]:
        loaded = router.loaded.registry
        assert loaded.llm_fallback is not None
        dispatcher = Dispatcher(loaded, build_providers(loaded))
        try:
            llm = LlmRouter(loaded.llm_fallback, loaded, dispatcher)
            plan = plan_request(router, body, {})
            assert (plan.decision.route, plan.decision.layer) == ("weather", "intent")
            plan = await refine_plan(llm, router, plan, body, {})
            return plan, await dispatcher.complete(plan, body)
        finally:
            await dispatcher.aclose()

    plan, served = asyncio.run(main())
    assert (plan.decision.route, plan.decision.layer) == ("code", "llm_router")
    assert plan.chain == ("large", "backup")
    assert served.model == "large"
    assert served.data["choices"][0]["message"]["content"] == "served by up-large"
    assert [r["model"] for r in script.requests] == [PICKER, "up-large"]
    picker = script.requests[0]
    assert picker["response_format"]["json_schema"]["schema"]["properties"]["route"]["enum"] == [
        "code",
        "weather",
        "none",
    ]


def test_sdk_applies_the_llm_router(registry: Path, script: Script) -> None:
    script.replies[WEATHER] = '{"route": "code"}'
    with Router.from_yaml(registry) as router:
        reply = router.chat.completions.create(messages=_body(WEATHER)["messages"])
        info = reply["llmroute"] if isinstance(reply, dict) else reply.llmroute
        assert (info["route"], info["layer"], info["model"]) == ("code", "llm_router", "large")

        async def acreate() -> Any:
            try:
                return await router.chat.completions.acreate(messages=_body(WEATHER)["messages"])
            finally:
                await router.aclose()

        reply = asyncio.run(acreate())
        info = reply["llmroute"] if isinstance(reply, dict) else reply.llmroute
        assert info["route"] == "code"
    assert len(script.picker_calls()) == 2


def _llmroute(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LLMROUTE, *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_cli_route_explain_shows_the_llm_router(registry: Path, script: Script) -> None:
    script.replies[WEATHER] = '{"route": "code"}'
    out = _llmroute("route", "--registry", str(registry), "--explain", WEATHER)
    assert out.returncode == 0, out.stderr
    assert "code -> large  (llm_router, confidence 1.00)" in out.stdout
    assert "llm router (picker): chosen, answered 'code'" in out.stdout
    assert len(script.picker_calls()) == 1

    out = _llmroute("route", "--registry", str(registry), "--json", WEATHER)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert (data["route"], data["layer"]) == ("code", "llm_router")
    assert data["layers"][-1]["layer"] == "llm_router"
    assert data["layers"][-1]["detail"] == {"answer": "code", "outcome": "chosen"}

    out = _llmroute("route", "--registry", str(registry), "--explain", "--no-llm", WEATHER)
    assert out.returncode == 0, out.stderr
    assert "weather -> small  (intent" in out.stdout and "llm router" not in out.stdout
    assert len(script.picker_calls()) == 2


def test_cli_route_explain_on_stdin_prints_the_llm_router_share(
    registry: Path, script: Script
) -> None:
    script.replies[WEATHER] = '{"route": "code"}'
    out = subprocess.run(
        [LLMROUTE, "route", "--registry", str(registry), "--explain"],
        input=f"{WEATHER}\n\n{WEATHER}\n",
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stderr
    # the empty prompt is served by the default without asking the model
    # the repeat is decided from the memo: one call for two requests
    assert "llm router (picker) asked for 2 of 3 requests (66.7%): chosen 1, memo 1" in out.stdout
    assert len(script.picker_calls()) == 1


def test_gateway_over_http_serves_the_chosen_route_and_counts_it(
    registry: Path, script: Script, tmp_path: Path
) -> None:
    """`llmroute serve` as a subprocess, the official client in front of it."""
    import httpx
    import openai
    from gateway_proc import serve

    script.replies[WEATHER] = '{"route": "code"}'
    with serve(registry, tmp_path / "serve.log") as served:
        with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as c:
            raw = c.chat.completions.with_raw_response.create(
                model="auto", messages=_body(WEATHER)["messages"]
            )
        assert raw.headers["x-llmroute-route"] == "code"
        assert raw.headers["x-llmroute-layer"] == "llm_router"
        assert raw.headers["x-llmroute-model"] == "large"
        assert raw.parse().choices[0].message.content == "served by up-large"

        # The router model's own failure keeps the intent decision.
        rain = "will it rain today in paris or not"
        script.replies[rain] = "I think it is about the weather"
        decision = httpx.post(f"{served.url}/v1/route", json=_body(rain), timeout=10).json()
        assert (decision["route"], decision["layer"]) == ("weather", "intent")
        assert decision["layers"][-1]["detail"]["outcome"] == "kept"

        # The first request again: decided from the memo, no call to the router model.
        decision = httpx.post(f"{served.url}/v1/route", json=_body(WEATHER), timeout=10).json()
        assert (decision["route"], decision["layer"]) == ("code", "llm_router")
        assert decision["layers"][-1]["detail"]["outcome"] == "memo"

        metrics = httpx.get(f"{served.url}/metrics", timeout=10).text
    assert 'llmroute_llm_router_total{outcome="chosen"} 1.0' in metrics
    assert 'llmroute_llm_router_total{outcome="kept"} 1.0' in metrics
    assert 'llmroute_llm_router_total{outcome="memo"} 1.0' in metrics
    assert [r["model"] for r in script.requests] == [PICKER, "up-large", PICKER]


HUNG_PICKER_REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 10}
models:
  small: {provider: fake, model: up-small}
  picker: {provider: fake, model: "picker?delay=4"}
routes:
  - name: code
    target: small
    examples: ["write a python function to parse json", "fix this python bug"]
  - name: weather
    target: small
    examples: ["what is the weather tomorrow", "will it rain today in paris"]
default: {target: small}
llm_fallback: {model: picker, margin: 1.0, timeout_s: 8}
"""


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/route"])
def test_a_client_that_hangs_up_while_the_llm_router_thinks_stops_it(
    tmp_path: Path, path: str
) -> None:
    """The LLM router's own call is cancelled when the client leaves during it (here a
    client timeout of 0.5 s against a router model that answers after 4 s): the router
    model's connection is closed, no model is asked for the answer, and the request is
    counted under status 499."""
    import httpx
    from fake_upstream import fake_upstream
    from gateway_proc import serve_text, wait_for

    with (
        fake_upstream() as upstream,
        serve_text(HUNG_PICKER_REGISTRY % {"url": upstream.url}, tmp_path) as served,
    ):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{served.url}{path}", json=_body(WEATHER), timeout=0.5)
        wait_for("the router model's call closed", lambda: bool(upstream.cut), 10)
        metrics = httpx.get(f"{served.url}/metrics", timeout=10).text
    assert upstream.cut == [("picker?delay=4", 0)]
    assert upstream.models_called() == ["picker?delay=4"]
    if path == "/v1/chat/completions":
        assert 'status="499"' in metrics


def test_the_router_models_call_is_charged_to_the_client_key(
    script: Script, tmp_path: Path
) -> None:
    """The LLM router's call is made for the client's request, so its cost counts
    against the client key's budget: here the routed models are free and only the
    router model is priced ($2 a call), so one routed request spends a $1 budget."""
    import httpx
    from gateway_proc import serve

    script.replies[WEATHER] = '{"route": "code"}'
    priced = REGISTRY.replace(
        "picker: {provider: fake, model: up-picker}",
        "picker: {provider: fake, model: up-picker, price: {input: 1000000, output: 1000000}}",
    )
    auth = "auth:\n  keys:\n    - {name: app, key_env: LLMROUTE_TEST_APP_KEY, budget: {usd: 1}}\n"
    with serve_in_thread(_handler(script)) as url:
        path = tmp_path / "registry.yaml"
        path.write_text(priced % {"url": url} + auth)
        env = {"LLMROUTE_TEST_APP_KEY": "sk-app-0123456789", "LLMROUTE_TELEMETRY_URL": "off"}
        with serve(path, tmp_path / "serve.log", env=env) as served:
            headers = {"Authorization": "Bearer sk-app-0123456789"}
            url_chat = f"{served.url}/v1/chat/completions"
            first = httpx.post(url_chat, json=_body(WEATHER), headers=headers, timeout=10)
            assert first.status_code == 200, first.text
            assert first.headers["x-llmroute-layer"] == "llm_router"
            assert "cost_usd" in first.json()["usage"]
            assert first.json()["usage"]["cost_usd"] == 0  # the routed answer is free

            def over_budget() -> bool:
                again = httpx.post(url_chat, json=_body("hello"), headers=headers, timeout=10)
                return again.status_code == 429

            from gateway_proc import wait_for

            wait_for("the key over its budget", over_budget, 10)
    assert len(script.picker_calls()) >= 1


def test_a_request_the_encoder_cannot_read_is_asked_of_the_router_model(
    script: Script, tmp_path: Path
) -> None:
    """`llmroute serve` on the built-in (English) encoder with an LLM router that is never
    asked about English requests (margin 0): a Chinese one is not scored by the intent
    layer, so the router model picks its route from every route."""
    import httpx
    import openai
    from gateway_proc import serve

    rain = "明天巴黎会下雨吗"  # will it rain in Paris tomorrow
    script.replies[rain] = '{"route": "weather"}'
    script.replies[WEATHER] = '{"route": "code"}'  # never asked: intent decides
    with serve_in_thread(_handler(script)) as url:
        registry = tmp_path / "registry.yaml"
        text = REGISTRY % {"url": url}
        registry.write_text(text.replace("margin: 1.0", "margin: 0.0"))
        with serve(registry, tmp_path / "serve.log") as served:
            with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as c:
                raw = c.chat.completions.with_raw_response.create(
                    model="auto", messages=_body(rain)["messages"]
                )
                english = c.chat.completions.with_raw_response.create(
                    model="auto", messages=_body(WEATHER)["messages"]
                )
            decision = httpx.post(f"{served.url}/v1/route", json=_body(rain), timeout=10).json()
    assert raw.headers["x-llmroute-route"] == "weather"
    assert raw.headers["x-llmroute-layer"] == "llm_router"
    assert raw.parse().choices[0].message.content == "served by up-small"
    assert english.headers["x-llmroute-layer"] == "intent"
    assert english.headers["x-llmroute-route"] == "weather"
    # /v1/route: the intent layer's pass says why; then the memo (no second call)
    intent = next(s for s in decision["layers"] if s["layer"] == "intent")
    assert intent["detail"] == {
        "reason": "text mostly in a script the encoder does not read (Han 100% of the letters)",
        "unread_scripts": "Han 100%",
    }
    assert (decision["route"], decision["layer"]) == ("weather", "llm_router")
    (asked,) = script.picker_calls()
    assert asked["messages"][-1]["content"] == rain
    enum = asked["response_format"]["json_schema"]["schema"]["properties"]["route"]["enum"]
    assert enum == ["code", "weather", "none"]
    assert [r["model"] for r in script.requests] == [PICKER, "up-small", "up-small"]


def test_the_router_models_call_cut_by_its_timeout_is_charged(tmp_path: Path) -> None:
    """The LLM router's call its own ``timeout_s`` cuts (a router model answering after
    4 s, a limit of 0.3 s) had sent its prompt: charged then, estimated, to the client
    key's budget and to the router model's own, while the request is served on the
    intent layer's decision. Here only the router model is priced, and one prompt
    spends both budgets: the key is refused next, and another key's request does not
    ask the router model again."""
    import httpx
    from fake_upstream import fake_upstream
    from gateway_proc import serve_text, wait_for

    text = HUNG_PICKER_REGISTRY.replace(
        'picker: {provider: fake, model: "picker?delay=4"}',
        'picker: {provider: fake, model: "picker?delay=4", '
        "price: {input: 1000000, output: 1000000}, budget: {usd: 1, period: day}}",
    ).replace("timeout_s: 8}", "timeout_s: 0.3}")
    text += (
        "auth:\n  keys:\n"
        "    - {name: app, key_env: LLMROUTE_TEST_APP_KEY, budget: {usd: 1}}\n"
        "    - {name: other, key_env: LLMROUTE_TEST_OTHER_KEY}\n"
    )
    env = {
        "LLMROUTE_TEST_APP_KEY": "sk-app-0123456789",
        "LLMROUTE_TEST_OTHER_KEY": "sk-other-0123456789",
        "LLMROUTE_TELEMETRY_URL": "off",
    }
    app = {"Authorization": "Bearer sk-app-0123456789"}
    other = {"Authorization": "Bearer sk-other-0123456789"}
    with (
        fake_upstream() as upstream,
        serve_text(text % {"url": upstream.url}, tmp_path, env=env) as served,
    ):
        chat = f"{served.url}/v1/chat/completions"
        first = httpx.post(chat, json=_body(WEATHER), headers=app, timeout=10)
        assert first.status_code == 200, first.text
        assert first.headers["x-llmroute-layer"] == "intent"  # the router gave up

        def over_budget() -> bool:
            again = httpx.post(chat, json=_body(WEATHER), headers=app, timeout=10)
            return again.status_code == 429

        wait_for("the key over its budget", over_budget, 10)
        later = httpx.post(chat, json=_body(WEATHER), headers=other, timeout=10)
        assert later.status_code == 200, later.text
    assert upstream.models_called().count("picker?delay=4") == 1
