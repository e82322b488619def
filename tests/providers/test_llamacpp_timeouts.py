"""A llamacpp model's time limits from the registry: `first_token_timeout_s`,
`stream_timeout_s` and `timeout_s` each end the wait on the event loop when they run
out (the generation runs in a thread of its own; only its chunks cross to the loop), the
request goes on to the route's next model, and the generation stops before its next
token, freeing the context for the next request. The prompt's evaluation (one call into
llama.cpp) is not cut: the context stays busy until it ends, then stops at once.

No llama-cpp-python needed: a stand-in for a loaded ``Llama`` evaluates its prompt for
`first_s` seconds (a sleep its thread cannot be woken from, as llama.cpp's), then
streams its words `gap_s` apart, as ``create_chat_completion(stream=True)`` does."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import types
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from plans import plan_for

from llmroute.dispatch import Dispatcher
from llmroute.errors import ProviderTimeout
from llmroute.providers.base import ChatProvider
from llmroute.providers.echo import EchoProvider
from llmroute.providers.llamacpp import LlamaCppProvider, _Key, _Pool
from llmroute.registry import parse_registry
from llmroute.registry.schema import Registry

T = TypeVar("T")

GGUF = "models/gemma-3-270m-it-Q4_K_M.gguf"
REGISTRY = f"""
encoder: builtin:static
providers:
  local: {{kind: llamacpp}}
  box: {{kind: echo, reply: from the fallback}}
models:
  gemma: {{provider: local, model: {GGUF}, %s}}
  parrot: {{provider: box, model: parrot}}
routes:
  - {{name: r, examples: [hello], target: gemma, policy: {{fallback: [parrot]}}}}
default: {{target: gemma}}
"""
WORDS = tuple(f" w{n}" for n in range(40))


class _Scripted:
    """A loaded model whose generation takes `first_s` before its first chunk and
    `gap_s` between the next ones; `stopped` is set once its generator is closed, and
    `sent` counts the chunks its reader took."""

    def __init__(self, first_s: float = 0.0, gap_s: float = 0.0) -> None:
        self.first_s = first_s
        self.gap_s = gap_s
        self.sent = 0
        self.stopped = threading.Event()

    def create_chat_completion(self, **arguments: Any) -> Iterator[dict[str, Any]]:
        processors = arguments["logits_processor"]
        self.stopped.clear()

        def chunks() -> Iterator[dict[str, Any]]:
            try:
                time.sleep(self.first_s)  # the prompt's evaluation: nothing wakes it
                for n, piece in enumerate((*WORDS, None)):
                    if n:
                        time.sleep(self.gap_s)
                    for processor in processors:
                        processor([0] * (3 + n), None)
                    delta = {"content": piece} if piece is not None else {}
                    finish = None if piece else "stop"
                    yield {
                        "id": "chatcmpl-1",
                        "created": 1,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    }
                    self.sent += 1
            finally:
                self.stopped.set()

        return chunks()


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> _Scripted:
    fake = types.ModuleType("llama_cpp")
    fake.LogitsProcessorList = list  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", fake)
    return _Scripted()


def _run(
    model: _Scripted, limits: str, job: Callable[[Dispatcher], Awaitable[T]]
) -> tuple[T, Registry]:
    registry = parse_registry(REGISTRY % limits).registry
    spec = registry.providers["local"]
    pool = _Pool(_Key(str(Path("/srv") / GGUF), spec.n_ctx, 1, None))
    pool.release(model)
    providers: dict[str, ChatProvider] = {
        "local": LlamaCppProvider("local", spec, {GGUF: pool}),
        "box": EchoProvider("box", registry.providers["box"]),
    }

    async def main() -> T:
        dispatcher = Dispatcher(registry, providers)
        try:
            return await job(dispatcher)
        finally:
            await dispatcher.aclose()

    return asyncio.run(main()), registry


def _body(stream: bool = False) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hello"}], "stream": stream}


def _text(events: list[bytes]) -> str:
    chunks = [json.loads(e[6:]) for e in events if e.startswith(b"data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_the_first_token_limit_goes_to_the_next_model_and_frees_the_context(
    model: _Scripted,
) -> None:
    """The prompt's evaluation outlasts the limit: the fallback answers at the limit, not
    after the evaluation; the generation stops at its first token, and the context
    serves the next request."""
    model.first_s = 1.0

    async def job(d: Dispatcher) -> tuple[Any, list[bytes], int, list[bytes]]:
        opened = await d.open_stream(plan_for("gemma", "parrot"), _body(stream=True))
        events = [e async for e in opened.events]
        assert await asyncio.to_thread(model.stopped.wait, 10)
        sent = model.sent
        model.first_s = 0.0
        again = await d.open_stream(plan_for("gemma"), _body(stream=True))
        return opened, events, sent, [e async for e in again.events]

    (opened, events, sent, again), _ = _run(model, "first_token_timeout_s: 0.2", job)
    assert opened.model == "parrot" and _text(events) == "from the fallback"
    assert opened.attempts == ("gemma via local (no first token within 0.2s)",)
    assert sent == 0  # stopped before taking a token past the first
    assert _text(again) == "".join(WORDS)


def test_the_stream_limit_ends_a_stream_after_its_words_and_stops_the_generation(
    model: _Scripted,
) -> None:
    model.gap_s = 0.05

    async def job(d: Dispatcher) -> tuple[list[bytes], BaseException]:
        opened = await d.open_stream(plan_for("gemma", "parrot"), _body(stream=True))
        got: list[bytes] = []
        with pytest.raises(ProviderTimeout) as caught:
            async for event in opened.events:
                got.append(event)
        assert await asyncio.to_thread(model.stopped.wait, 10)
        return got, caught.value

    (got, error), _ = _run(model, "stream_timeout_s: 0.5", job)
    assert "the stream ran past 0.5s" in str(error)
    said = _text(got)
    assert said.startswith(" w0") and said != "".join(WORDS)  # words, then the end
    assert model.sent < len(WORDS)  # stopped, not generated to its end


def test_the_whole_answer_limit_goes_to_the_next_model(model: _Scripted) -> None:
    model.first_s = 1.0

    async def job(d: Dispatcher) -> Any:
        served = await d.complete(plan_for("gemma", "parrot"), _body())
        assert await asyncio.to_thread(model.stopped.wait, 10)
        return served

    served, _ = _run(model, "timeout_s: 0.2", job)
    assert served.model == "parrot"
    assert served.data["choices"][0]["message"]["content"] == "from the fallback"
    assert served.attempts == ("gemma via local (no answer within 0.2s)",)
    assert model.sent == 0
