"""``POST /v1/completions`` end to end: `llmroute serve` as a subprocess, the official
`openai` client's ``client.completions`` in front of it, the fake OpenAI-protocol
upstream behind it: the prompt routed and sent as one user message, the answer and its
stream in ``text_completion`` shape, usage only when asked for in a stream, what a chat
model cannot do refused with a 400 naming the parameter, and a stream that breaks
ending with an error event. Models declared ``text_completions: true`` get the request
raw on the upstream's ``/v1/completions``: fill in the middle, echo and logprobs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: up-small, price: {input: 1, output: 2}}
  large: {provider: fake, model: up-large, price: {input: 10, output: 30}}
  many: {provider: fake, model: "up-many?multi=1&vary=1"}
  broken: {provider: fake, model: "up-broken?mid=1"}
  capped: {provider: fake, model: "up-capped?finish=length"}
  coder: {provider: fake, model: up-coder, text_completions: true, price: {input: 1, output: 1}}
  coder-broken: {provider: fake, model: "up-coder?mid=1", text_completions: true}
  coder-gives-up: {provider: fake, model: "up-coder?pause=0.4&early=1", text_completions: true}
  coder-fim:
    provider: fake
    model: up-fim
    text_completions: true
    fim_template: "<PRE> {prefix} <SUF>{suffix} <MID>"
routes:
  - name: guarded-fim
    examples: ["finish the private snippet"]
    target: coder
    policy: {safety: guarded}
  - name: tiered
    examples: ["tiered answers for code"]
    target: coder
    cascade: [coder, large]
  - name: tiered-chat-first
    examples: ["tiered answers starting small"]
    target: small
    cascade: [small, coder]
  - name: tiered-chat
    examples: ["tiered chat answers only"]
    target: small
    cascade: [small, large]
  - name: gives-up
    examples: ["a model that thinks then gives up"]
    target: coder-gives-up
    policy: {fallback: [small]}
  - name: autocomplete
    examples: ["complete this fragment of source code"]
    target: small
    policy: {fallback: [coder]}
  - name: code
    examples: ["write a Python function to parse JSON", "debug this SQL query"]
    target: large
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
shadow: {rate: 1.0, reference: large, routes: [autocomplete]}
dispatch: {stream_hold_s: 0.1}
safety:
  injection: {enabled: false}
  profiles:
    standard: {pii: allow}
    guarded: {pii: redact, answer_pii: redact}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("completions")
    text = REGISTRY % {"url": upstream.url}
    with serve_text(text, tmp, env={"LLMROUTE_TELEMETRY_URL": "off"}) as served:
        yield served


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_a_prompt_is_routed_and_answered_as_a_text_completion(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    raw = client.completions.with_raw_response.create(
        model="auto", prompt="write a Python function to parse YAML", temperature=0.2, seed=7
    )
    assert raw.headers["x-llmroute-route"] == "code"
    assert raw.headers["x-llmroute-model"] == "large"
    completion = raw.parse()
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.model == "large"
    (choice,) = completion.choices
    assert choice.text == "echo: write a Python function to parse YAML"
    assert choice.index == 0 and choice.finish_reason == "stop" and choice.logprobs is None
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    sent = upstream.requests[-1].body
    assert sent["model"] == "up-large"
    prompt = "write a Python function to parse YAML"
    assert sent["messages"] == [{"role": "user", "content": prompt}]
    assert sent["max_tokens"] == 16  # the API's default
    assert sent["temperature"] == 0.2 and sent["seed"] == 7
    assert "prompt" not in sent


def test_several_choices_and_a_length_finish(client: openai.OpenAI) -> None:
    many = client.completions.create(model="many", prompt=["hi there!"], n=2, max_tokens=40)
    assert [c.index for c in many.choices] == [0, 1]
    assert [c.text for c in many.choices] == ["echo: hi there! #1", "echo: hi there! #2"]
    capped = client.completions.create(model="capped", prompt="hi", max_tokens=1)
    assert capped.choices[0].finish_reason == "length"


def test_a_completion_streams_with_usage_only_when_asked(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model="small", prompt="how are you?", stream=True))
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices).strip() == "echo: how are you?"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)
    asked = list(
        client.completions.create(
            model="small",
            prompt="how are you?",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = asked[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens > 0
    assert len({c.id for c in asked}) == 1 and asked[0].id.startswith("cmpl-")


def test_what_a_chat_model_cannot_do_is_refused_naming_the_parameter(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    before = len(upstream.requests)
    refusals: list[tuple[dict[str, object], str]] = [
        ({"suffix": "return x"}, "suffix"),
        ({"echo": True}, "echo"),
        ({"logprobs": 2}, "logprobs"),
        ({"best_of": 3}, "best_of"),
        ({"prompt": ["one", "two"]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": "2"}, "n"),
        ({"model": ""}, "model"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"stream_options": {"include_usage": True}, "stream": False}, "stream_options"),
        ({"stream_options": "yes", "stream": True}, "stream_options"),
    ]
    for extra, param in refusals:
        body = {"model": "auto", "prompt": "hi", **extra}
        with pytest.raises(openai.BadRequestError) as caught:
            client.post("/completions", cast_to=object, body=body)
        error = caught.value.body
        assert isinstance(error, dict) and error["param"] == param, extra
        assert caught.value.status_code == 400
        if extra.get("prompt") == []:  # nothing to complete, not token ids
            assert "is required" in error["message"], error
        if "stream" not in extra and "stream_options" in extra:  # chat's own 400
            assert "only allowed when 'stream' is true" in error["message"], error
    assert len(upstream.requests) == before  # nothing went upstream
    fine = client.completions.create(model="small", prompt="hi", echo=False, suffix="", n=1)
    assert fine.choices[0].text == "echo: hi"


def test_a_stream_that_breaks_ends_with_an_error_event(gateway: Served) -> None:
    body = {"model": "broken", "prompt": "hello", "stream": True, "max_tokens": 50}
    with httpx.stream("POST", f"{gateway.url}/v1/completions", json=body, timeout=10) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2].removeprefix("data: "))
    assert error["error"]["code"] == "upstream_error"
    assert "Traceback" not in gateway.log_text()


def test_a_malformed_body_gets_openai_error_json(gateway: Served) -> None:
    reply = httpx.post(
        f"{gateway.url}/v1/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"


def _last_to(upstream: FakeUpstream, model: str) -> tuple[str, dict[str, object]]:
    last = [r for r in upstream.requests if r.body.get("model") == model][-1]
    return last.path, last.body


def test_a_raw_text_model_gets_the_prompt_as_its_client_wrote_it(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    raw = client.completions.with_raw_response.create(
        model="coder", prompt="def add(a, b):", temperature=0, stop=["\n\n"]
    )
    assert raw.headers["x-llmroute-model"] == "coder"
    completion = raw.parse()
    assert completion.object == "text_completion" and completion.id == "cmpl-fake"
    assert completion.model == "coder"
    (choice,) = completion.choices
    assert choice.text == "raw: def add(a, b): " and choice.finish_reason == "stop"
    assert choice.logprobs is None
    assert completion.usage is not None and completion.usage.total_tokens == 6
    path, sent = _last_to(upstream, "up-coder")
    assert path == "/v1/completions"  # not wrapped in a chat template
    assert sent == {
        "model": "up-coder",
        "prompt": "def add(a, b):",
        "max_tokens": 16,
        "temperature": 0,
        "stop": ["\n\n"],
    }


def test_fill_in_the_middle_echo_and_logprobs_reach_a_raw_text_model(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    completion = client.completions.create(
        model="coder",
        prompt="def add(a, b):",
        suffix="    return c",
        echo=True,
        logprobs=2,
        max_tokens=64,
    )
    (choice,) = completion.choices
    assert choice.text == "def add(a, b):raw: def add(a, b):[FIM]    return c "
    assert choice.logprobs is not None and choice.logprobs.tokens is not None
    assert "".join(choice.logprobs.tokens) == choice.text
    assert choice.logprobs.token_logprobs == [-0.5] * len(choice.logprobs.tokens)
    _, sent = _last_to(upstream, "up-coder")
    assert sent["suffix"] == "    return c" and sent["echo"] is True and sent["logprobs"] == 2
    assert sent["max_tokens"] == 64 and "messages" not in sent


def test_a_raw_text_stream_carries_its_logprobs_and_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model="coder",
            prompt="x = 1",
            suffix="print(x)",
            logprobs=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "text_completion" for c in chunks)
    words = [c.choices[0] for c in chunks if c.choices and c.choices[0].text]
    assert "".join(w.text for w in words) == "raw: x = 1[FIM]print(x) "
    assert all(w.logprobs is not None and w.logprobs.tokens == [w.text] for w in words)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 6
    assert {c.id for c in chunks} == {"cmpl-fake"}


def test_a_field_only_raw_models_serve_skips_the_chains_chat_models(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    before = len(upstream.requests)
    raw = client.completions.with_raw_response.create(
        model="autocomplete", prompt="for i in range(", suffix="):"
    )
    assert raw.headers["x-llmroute-model"] == "coder"
    assert raw.parse().choices[0].text == "raw: for i in range([FIM]): "
    assert [r.body["model"] for r in upstream.requests[before:]] == ["up-coder"]
    # without such a field the route's chat model answers, as a chat model does
    plain = client.completions.with_raw_response.create(model="autocomplete", prompt="for i in")
    assert plain.headers["x-llmroute-model"] == "small"
    assert plain.parse().choices[0].text == "echo: for i in"
    path, _ = _last_to(upstream, "up-small")
    assert path == "/v1/chat/completions"


def test_a_raw_field_no_model_of_the_chain_serves_is_a_400_naming_it(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    before = len(upstream.requests)
    for extra, param in (({"suffix": "}"}, "suffix"), ({"echo": True}, "echo")):
        body = {"model": "large", "prompt": "{", **extra}
        with pytest.raises(openai.BadRequestError) as caught:
            client.post("/completions", cast_to=object, body=body)
        error = caught.value.body
        assert isinstance(error, dict)
        assert error["param"] == param and error["code"] == "unsupported_parameter"
        assert "text_completions: true" in error["message"] and "large" in error["message"]
    malformed = (
        ({"suffix": 3}, "suffix"),
        ({"echo": "yes"}, "echo"),
        ({"logprobs": -1}, "logprobs"),
    )
    for extra, param in malformed:
        body = {"model": "coder", "prompt": "{", **extra}
        with pytest.raises(openai.BadRequestError) as caught:
            client.post("/completions", cast_to=object, body=body)
        error = caught.value.body
        assert isinstance(error, dict) and error["param"] == param
    assert len(upstream.requests) == before  # nothing went upstream


def test_a_raw_text_stream_that_breaks_ends_with_an_error_event(gateway: Served) -> None:
    body = {"model": "coder-broken", "prompt": "hello there", "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/completions", json=body, timeout=10) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert json.loads(lines[0].removeprefix("data: "))["choices"][0]["text"] == "raw: "
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2].removeprefix("data: "))["error"]["code"] == "upstream_error"
    assert "Traceback" not in gateway.log_text()


def test_a_chat_request_never_reaches_the_completions_endpoint(
    gateway: Served, upstream: FakeUpstream
) -> None:
    body = {"model": "coder", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    reply = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=10)
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "echo: hi"
    path, _ = _last_to(upstream, "up-coder")
    assert path == "/v1/chat/completions"


def test_a_completion_a_raw_text_model_may_answer_is_not_shadowed(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    """The route is shadowed on ``large``: its chat requests are, its completions (which
    ``coder`` may answer raw, and a chat model's answer would not compare with) not."""
    before = len(upstream.calls_to("up-large"))
    client.completions.create(model="autocomplete", prompt="while True:")
    client.completions.create(model="autocomplete", prompt="while True:", suffix="break")
    client.chat.completions.create(
        model="autocomplete", messages=[{"role": "user", "content": "hi"}], max_tokens=5
    )
    for _ in range(100):  # the shadow runs in the background
        if len(upstream.calls_to("up-large")) > before:
            break
        time.sleep(0.05)
    time.sleep(0.2)
    shadowed = upstream.calls_to("up-large")[before:]
    assert [r.body["messages"][0]["content"] for r in shadowed] == ["hi"]


def test_a_fim_template_writes_the_suffix_into_the_prompt(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    """For servers that refuse ``suffix`` (vLLM, SGLang, llama.cpp server) the model's
    ``fim_template`` writes it in the prompt with the model's own tokens."""
    completion = client.completions.create(
        model="coder-fim", prompt="def f(x):", suffix="    return y", max_tokens=8
    )
    templated = "<PRE> def f(x): <SUF>    return y <MID>"
    assert completion.choices[0].text == f"raw: {templated} "
    _, sent = _last_to(upstream, "up-fim")
    assert sent["prompt"] == templated and "suffix" not in sent
    client.completions.create(model="coder-fim", prompt="x = 1")  # no suffix: no template
    assert _last_to(upstream, "up-fim")[1]["prompt"] == "x = 1"


def test_safety_redacts_the_suffix_and_keeps_logprobs_from_unmasked_answers(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    """The suffix is scanned and redacted with the prompt; with the answer's PII masked,
    no logprobs are asked for (their tokens would carry what the mask hides)."""
    completion = client.completions.create(
        model="guarded-fim",
        prompt="# mail bob@example.com",
        suffix="# or alice@example.com",
        logprobs=1,
    )
    _, sent = _last_to(upstream, "up-coder")
    assert "@example.com" not in json.dumps(sent)
    assert sent["prompt"].startswith("# mail <EMAIL") and sent["suffix"].startswith("# or <EMAIL")
    assert "logprobs" not in sent
    (choice,) = completion.choices
    assert "@example.com" not in choice.text and choice.logprobs is None


def test_a_completion_a_raw_model_may_answer_runs_no_cascade(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    """The cascade's first tier continues raw text, and its gates judge chat answers:
    the completion goes down the chain instead, raw to ``coder``."""
    before = len(upstream.calls_to("up-large"))
    raw = client.completions.with_raw_response.create(model="tiered", prompt="import os")
    assert raw.headers["x-llmroute-model"] == "coder"
    assert "x-llmroute-cascade" not in raw.headers
    assert raw.parse().choices[0].text == "raw: import os "
    assert _last_to(upstream, "up-coder")[0] == "/v1/completions"
    assert len(upstream.calls_to("up-large")) == before
    # a raw tier later in the cascade is reached: the tiers are tried as a chain
    fim = client.completions.with_raw_response.create(
        model="tiered-chat-first", prompt="import", suffix="sys"
    )
    assert fim.headers["x-llmroute-model"] == "coder"
    assert fim.parse().choices[0].text == "raw: import[FIM]sys "
    # a suffix no tier can take is refused, and no chat tier ever sees it
    calls = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiered-chat", prompt="import", suffix="sys")
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "suffix"
    assert len(upstream.requests) == calls


def test_a_raw_stream_that_gives_up_late_names_its_failure_not_the_skipped_models(
    gateway: Served,
) -> None:
    """The stream went out (held past ``stream_hold_s``), then the model gave up before
    its first words; the fallback is a chat model, which cannot take the suffix: the
    stream ends with an error event, and the log (and decision log) name the upstream's
    failure, not the skipped model."""
    body = {"model": "gives-up", "prompt": "a", "suffix": "b", "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/completions", json=body, timeout=10) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2].removeprefix("data: "))["error"]["code"] == "upstream_error"
    broke = [line for line in gateway.log_text().splitlines() if "broke off" in line][-1]
    assert "error 502" in broke and "suffix" not in broke, broke
