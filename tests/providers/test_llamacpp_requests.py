"""What the llamacpp provider refuses before a generation starts, and how dispatch takes
it (no llama-cpp-python needed: nothing is loaded, since a refusal comes before a model
is asked). An image, audio or file part is beyond a text-only model, as tools are: the
chain's next model serves it (it was the client's 400, never handed over, unless the
model declared ``vision: false``); so are ``logprobs``, which llama.cpp gives none of
here."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from plans import plan_for

from llmroute.dispatch import Dispatcher
from llmroute.errors import BeyondModel, UpstreamRejected
from llmroute.providers.base import Timeouts
from llmroute.providers.echo import EchoProvider
from llmroute.providers.llamacpp import LlamaCppProvider, _arguments, _Key, _Pool
from llmroute.registry import parse_registry

REGISTRY = """
encoder: builtin:static
providers:
  local: {kind: llamacpp}
  echo: {kind: echo}
models:
  gemma: {provider: local, model: gemma.gguf}
  other: {provider: echo, model: echo-other}
routes:
  - {name: r, examples: [hello], target: gemma}
default: {target: gemma}
"""
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}


def _unloaded() -> LlamaCppProvider:
    """The provider with a pool that has loaded no context: a request it refuses never
    reaches one."""
    spec = parse_registry(REGISTRY).registry.providers["local"]
    key = _Key("gemma.gguf", spec.n_ctx, 1, None)
    return LlamaCppProvider("local", spec, {"gemma.gguf": _Pool(key)})


def _body(*parts: dict[str, Any]) -> dict[str, Any]:
    content = [{"type": "text", "text": "what is this?"}, *parts]
    return {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": content}]}


@pytest.mark.parametrize("part", [IMAGE, AUDIO, {"type": "file", "file": {"file_id": "f"}}])
def test_a_part_another_model_may_read_is_beyond_this_one(part: dict[str, Any]) -> None:
    provider = _unloaded()
    with pytest.raises(BeyondModel) as caught:
        asyncio.run(provider.complete("gemma.gguf", _body(part), timeouts=Timeouts()))
    assert caught.value.status == 400 and caught.value.param == "messages[1].content"
    assert repr(part["type"]) in caught.value.message


def test_logprobs_are_beyond_this_model() -> None:
    """llama.cpp gives none here: the answer came back with ``logprobs: null``, as if
    the client had not asked."""
    body = {"messages": [{"role": "user", "content": "hi"}], "logprobs": True}
    with pytest.raises(BeyondModel) as caught:
        asyncio.run(_unloaded().complete("gemma.gguf", body, timeouts=Timeouts()))
    assert caught.value.param == "logprobs"
    assert _dispatch(("gemma", "other"), body).model == "other"


def test_a_part_no_model_reads_is_the_clients_error() -> None:
    provider = _unloaded()
    with pytest.raises(UpstreamRejected) as caught:
        asyncio.run(provider.complete("gemma.gguf", _body({"type": "video"}), timeouts=Timeouts()))
    assert not isinstance(caught.value, BeyondModel)
    assert caught.value.param == "messages[1].content"


def _dispatch(chain: tuple[str, ...], body: dict[str, Any]) -> Any:
    registry = parse_registry(REGISTRY).registry

    async def main() -> Any:
        echo = EchoProvider("echo", registry.providers["echo"])
        dispatcher = Dispatcher(registry, {"local": _unloaded(), "echo": echo})
        try:
            return await dispatcher.complete(plan_for(*chain), body)
        finally:
            await dispatcher.aclose()

    return asyncio.run(main())


def test_an_image_goes_on_to_the_chains_next_model() -> None:
    served = _dispatch(("gemma", "other"), _body(IMAGE))
    assert served.model == "other"


def test_with_no_model_left_an_image_is_one_400() -> None:
    with pytest.raises(UpstreamRejected) as caught:
        _dispatch(("gemma",), _body(IMAGE))
    assert caught.value.status == 400 and caught.value.code == "unsupported_parameter"
    assert caught.value.param == "messages[1].content"
    assert "'image_url' is not supported by llamacpp" in caught.value.message


def test_llama_cpps_own_sampling_parameters_reach_it() -> None:
    """``params: {top_k: 20}`` on a llamacpp model (registry.md's example) was dropped
    without a word: only OpenAI's sampling keys were passed on."""
    spec = parse_registry(REGISTRY).registry.providers["local"]
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "top_k": 20,
        "min_p": 0.05,
        "typical_p": 0.9,
        "repeat_penalty": 1.1,
        "top_p": 0.8,
        "logit_bias": {"1": 5},  # no such key of llama.cpp's here: left out
    }
    arguments = _arguments(body, spec, "local")
    assert {k: arguments.get(k) for k in ("top_k", "min_p", "typical_p", "repeat_penalty")} == {
        "top_k": 20,
        "min_p": 0.05,
        "typical_p": 0.9,
        "repeat_penalty": 1.1,
    }
    assert arguments["top_p"] == 0.8 and "logit_bias" not in arguments


def test_integer_sampling_parameters_reach_llama_cpp_as_integers() -> None:
    """llama.cpp takes top_k and seed as C ints: 20.0 (a JSON client's number) was
    passed on as a float, and true as a number."""
    spec = parse_registry(REGISTRY).registry.providers["local"]
    body = {"messages": [{"role": "user", "content": "hi"}], "top_k": 20.0, "seed": 7.0}
    arguments = _arguments({**body, "min_p": True}, spec, "local")
    assert type(arguments["top_k"]) is int and arguments["top_k"] == 20
    assert type(arguments["seed"]) is int and "min_p" not in arguments
    with pytest.raises(UpstreamRejected) as caught:
        _arguments({**body, "top_k": 20.5}, spec, "local")
    assert caught.value.status == 400 and caught.value.param == "top_k"
