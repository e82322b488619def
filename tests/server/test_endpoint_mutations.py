"""A valid request to each JSON endpoint of `llmroute serve`, with every JSON path in
turn put to a value of another type (null, a boolean, a negative number, an integer past
a double, a long string, an array, an object) or left out, and the whole body sent
empty, truncated, gzip-encoded, as text/plain, or with another method: each is answered
with a success or a 4xx in its API's error shape (Anthropic's under ``/v1/messages``,
OpenAI's elsewhere), a stream that starts ends as its API ends one, and neither answers
nor the log hold a traceback or a key. The mutations are exhaustive, not drawn, so a
failure names the path and value that caused it.

A real gateway on 127.0.0.1 with a client key, echo models, and models behind the fake
Anthropic upstream (whose conversion reads a request's numbers as floats), one of them
with a hard budget (whose worst case multiplies ``n`` and ``max_tokens`` by prices).
``benchmarks/fuzz_gateway.py`` runs the larger, seeded version of this (Redis,
PostgreSQL, files, batches, stored responses, query strings, headers)."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fake_anthropic import FakeAnthropic
from gateway_proc import Served, serve_text

KEY = "sk-mutations-0123456789abcdef"
PROVIDER_KEY = "sk-upstream-mutations-fedcba9876543210"
REGISTRY = """
encoder: builtin:static
providers:
  echo: {kind: echo}
  claude: {kind: anthropic, base_url: "%(anthropic)s", api_key_env: MUTATIONS_KEY, timeout_s: 5}
models:
  small: {provider: echo, model: echo-small, price: {input: 0.1, output: 0.1}}
  sonnet: {provider: claude, model: claude-x, reasoning: {effort: low}}
  capped:
    provider: claude
    model: claude-y
    price: {input: 3, output: 15}
    budget: {usd: 1000, hard: true}
  embed: {provider: echo, model: echo-embed, kind: embedding}
  rerank: {provider: echo, model: echo-rerank, kind: rerank}
  coder: {provider: echo, model: echo-coder, text_completions: true}
routes:
  - {name: chitchat, examples: ["hi there", "how are you?"], target: small}
default: {target: small}
safety: {}
stored_responses: {}
auth:
  keys:
    - {name: mutations, sha256: "%(sha)s", budget: {usd: 1000, period: day}}
"""

_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
_CHAT = {
    "model": "capped",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ],
    "max_tokens": 20,
    "n": 1,
    "temperature": 0.5,
    "stop": ["zz"],
    "tools": [_TOOL],
    "tool_choice": "auto",
}
_MESSAGES = {
    "model": "sonnet",
    "max_tokens": 2000,  # above the thinking budget, as Anthropic wants it
    "stream": True,
    "system": [{"type": "text", "text": "brief", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
    ],
    "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "temperature": 1,
}
_RESPONSES = {
    "model": "sonnet",
    "instructions": "brief",
    "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "ok"},
    ],
    "max_output_tokens": 50,
    "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
    "reasoning": {"effort": "low"},
    "stream": True,
}
SEEDS: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": _CHAT,
    "/v1/messages": _MESSAGES,
    "/v1/messages/count_tokens": {**_MESSAGES, "stream": False},
    "/v1/responses": _RESPONSES,
    "/v1/responses/input_tokens": {**_RESPONSES, "stream": False},
    "/v1/completions": {"model": "coder", "prompt": ["def f("], "suffix": "x", "logprobs": 1},
    "/v1/embeddings": {"model": "embed", "input": ["a", "b"], "dimensions": 8},
    "/v1/rerank": {"model": "rerank", "query": "q", "documents": ["a", {"text": "b"}], "top_n": 1},
    "/v1/conversations": {"items": [{"type": "message", "role": "user", "content": "hi"}]},
    "/v1/route": {"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
}
MUTANTS: list[Any] = [None, True, -1, 10**320, "x" * 3000, [[]], {"": 0}]
_ENDS = {
    "/v1/chat/completions": "data: [DONE]",
    "/v1/messages": "event: message_stop",
    "/v1/responses": "event: response.completed",
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, inner in items:
        yield (*prefix, key)
        yield from _paths(inner, (*prefix, key))


def _with(body: dict[str, Any], path: tuple[Any, ...], value: Any, *, drop: bool = False) -> Any:
    out = copy.deepcopy(body)
    node = out
    for step in path[:-1]:
        node = node[step]
    if drop:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def _mutations(seed: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(what was done, the request's httpx arguments) for each mutation of `seed`."""
    valid = json.dumps(seed).encode()
    for path in _paths(seed):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        for value in MUTANTS:
            text = json.dumps(_with(seed, path, value))
            yield f"{where} = {repr(value)[:20]}", {"content": text}
        yield f"{where} left out", {"content": json.dumps(_with(seed, path, None, drop=True))}
    yield "empty body", {"content": b""}
    yield "truncated", {"content": valid[: len(valid) // 2]}
    yield "not an object", {"content": b"[]"}
    yield "gzip", {"content": gzip.compress(valid), "headers": {"content-encoding": "gzip"}}
    yield "text/plain", {"content": valid, "headers": {"content-type": "text/plain"}}
    for method in ("GET", "PUT", "DELETE"):
        yield method, {"method": method}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, claude: FakeAnthropic) -> Iterator[Served]:
    sha = hashlib.sha256(KEY.encode()).hexdigest()
    text = REGISTRY % {"anthropic": claude.url, "sha": sha}
    env = {"MUTATIONS_KEY": PROVIDER_KEY, "LLMROUTE_TELEMETRY_URL": "off"}
    with serve_text(text, tmp_path_factory.mktemp("mutations"), env=env) as served:
        yield served


def _faults(path: str, response: httpx.Response) -> list[str]:
    """What is wrong with `response`, the answer to a mutation sent to `path`."""
    text = response.text
    faults = []
    if response.status_code >= 500:
        faults.append(f"status {response.status_code}")
    if "Traceback" in text or KEY in text or PROVIDER_KEY in text:
        faults.append("a traceback or a key in the body")
    if response.status_code >= 400:
        body = response.json()  # not JSON: the test fails here
        if path.startswith("/v1/messages"):
            ok = body["type"] == "error" and body["error"]["type"] and body["error"]["message"]
        else:
            ok = body["error"].keys() >= {"message", "type", "param", "code"}
        if not ok:
            faults.append(f"not the API's error shape: {text[:200]}")
    elif "text/event-stream" in response.headers.get("content-type", "") and (
        _ENDS[path] not in text or '"type": "error"' in text
    ):
        faults.append(f"a stream that broke: {text[-300:]}")
    return faults


@pytest.mark.parametrize("path", SEEDS)
def test_every_mutation_of_a_valid_request_is_answered_in_shape(gateway: Served, path: str) -> None:
    seed = SEEDS[path]
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    cases = list(_mutations(seed))

    def send(case: tuple[str, dict[str, Any]]) -> tuple[str, list[str]]:
        what, args = case
        sent = {**headers, **args.pop("headers", {})}
        method = args.pop("method", "POST")
        response = http.request(method, path, headers=sent, **args)
        return what, _faults(path, response)

    with httpx.Client(base_url=gateway.url, timeout=20) as http, ThreadPoolExecutor(4) as pool:
        broken = [(what, faults) for what, faults in pool.map(send, cases) if faults]
    assert len(cases) > 20
    assert not broken, broken[:5]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "/v1/chat/completions",
            {**_CHAT, "model": "sonnet", "temperature": 10**320},
            "temperature",
        ),
        ("/v1/chat/completions", {**_CHAT, "n": 10**320}, "n"),
        (
            "/v1/chat/completions",
            {**_CHAT, "messages": [{"role": "user", "x": [-(10**320)]}]},
            "messages[0].x[0]",
        ),
        ("/v1/messages", {**_MESSAGES, "temperature": -(10**320)}, None),
        ("/v1/messages", {**_MESSAGES, "model": "capped", "max_tokens": 10**320}, None),
    ],
)
def test_an_integer_past_a_double_is_the_clients_400(
    gateway: Served, path: str, body: dict[str, Any], param: str | None
) -> None:
    """JSON lets it through and Python keeps it exact; the first float it met (the
    Anthropic conversion's temperature, a hard budget's worst case) was a 500. OpenAI's
    error names where it is."""
    response = httpx.post(
        f"{gateway.url}{path}",
        content=json.dumps(body),
        headers={"authorization": f"Bearer {KEY}"},
        timeout=20,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "too large for a number" in error["message"]
    if param is not None:  # Anthropic's errors have none
        assert error["param"] == param


# each converted front's top-level fields and the types it takes for them
_TYPED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "/v1/messages": {
        "model": str,
        "max_tokens": int,
        "stream": bool,
        "system": (str, list),
        "messages": list,
        "tools": list,
        "thinking": dict,
        "temperature": (int, float),
    },
    "/v1/responses": {
        "model": str,
        "instructions": str,
        "input": (str, list),
        "max_output_tokens": int,
        "tools": list,
        "reasoning": dict,
        "stream": bool,
    },
    "/v1/completions": {
        "model": str,
        "prompt": (str, list),
        "suffix": str,
        "logprobs": int,
        "temperature": (int, float),
        "stream": bool,
        "user": str,
    },
}


def _wrong(value: Any, kind: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return kind is not bool
    return value is not None and not isinstance(value, kind)


@pytest.mark.parametrize("path", _TYPED)
def test_no_wrongly_typed_field_reaches_the_upstream(
    gateway: Served, claude: FakeAnthropic, path: str
) -> None:
    """Each top-level field set to a value of another type is the client's 400, and the
    upstream hears of none of them (``"stream": -1`` was answered whole, ``"temperature":
    "hot"`` sent on)."""
    headers = {"authorization": f"Bearer {KEY}"}
    before = len(claude.requests)
    answered = []
    with httpx.Client(base_url=gateway.url, timeout=20) as http:
        for field, kind in _TYPED[path].items():
            for value in (v for v in MUTANTS if _wrong(v, kind)):
                body = {**SEEDS[path], field: value}
                status = http.post(path, content=json.dumps(body), headers=headers).status_code
                if status != 400:
                    answered.append((field, repr(value)[:20], status))
    assert not answered
    assert len(claude.requests) == before


def test_the_log_holds_no_traceback_and_no_key(gateway: Served) -> None:
    """Runs after the mutations (same module)."""
    log = gateway.log_text()
    assert "Traceback" not in log
    assert KEY not in log and PROVIDER_KEY not in log
