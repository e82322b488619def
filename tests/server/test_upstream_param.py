"""An upstream's 400 names the field at fault (``param``, as OpenAI's do): the chat
front passes it on, named as the client sent it (a field ``rename_params`` renamed is
named back); the converted fronts, whose client sent another body, name their own
field for the messages and leave any other null."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text

from llmroute.providers._http import error_from_response
from llmroute.registry.schema import Model

REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  picky: {provider: fake, model: "picky?unsupported=temperature&strict=1"}
  renamed:
    provider: fake
    model: "renamed?unsupported=max_completion_tokens"
    rename_params: {max_tokens: max_completion_tokens}
  filtered: {provider: fake, model: "filtered?filter=1"}
  base:
    provider: fake
    model: "base?unsupported=suffix,max_length"
    text_completions: true
    rename_params: {max_tokens: max_length}
routes:
  - {name: chat, examples: ["hello there", "how are you today"], target: picky}
default: {target: picky}
"""
HI = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("upstream_param")
    env = {"LLMROUTE_TELEMETRY_URL": "off"}
    with serve_text(REGISTRY % {"url": upstream.url}, tmp, env=env) as served:
        yield served


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0) as c:
        yield c


@pytest.mark.parametrize("stream", [False, True])
def test_the_chat_front_passes_the_upstream_param_on(client: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="picky", messages=HI, temperature=0.5, stream=stream)
    assert refused.value.param == "temperature"
    assert refused.value.code == "unsupported_parameter"


def test_a_renamed_field_is_named_as_the_client_sent_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="renamed", messages=HI, max_tokens=50)
    assert refused.value.param == "max_tokens"  # the model was sent max_completion_tokens
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="renamed", messages=HI, max_completion_tokens=50)
    assert refused.value.param == "max_completion_tokens"


def test_the_responses_front_leaves_a_chat_field_null(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="picky", input="hello there", temperature=0.5)
    assert refused.value.param is None and refused.value.code == "unsupported_parameter"


def test_the_completions_front_names_a_field_its_client_sent(client: openai.OpenAI) -> None:
    """A completions body names its fields as a chat body does (``temperature``, ``n``,
    ``max_tokens``), and a text model is sent it as it came: an upstream's param that
    names a field the client sent is the client's (it was null)."""
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="picky", prompt="hello there", temperature=0.5)
    assert refused.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as refused:  # Azure's filter names the prompt
        client.completions.create(model="filtered", prompt="hello there")
    assert refused.value.param == "prompt"
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="renamed", prompt="hello there", max_tokens=5)
    assert refused.value.param == "max_tokens"  # renamed max_completion_tokens, named back


@pytest.mark.parametrize("stream", [False, True])
def test_a_completion_sent_raw_keeps_the_upstream_param(
    client: openai.OpenAI, stream: bool
) -> None:
    """A model continuing raw text is sent the client's completions body: its upstream's
    ``param`` names a field the client sent (it was left null, as a chat body's)."""
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="base", prompt="def f(", suffix="return 1", stream=stream)
    assert refused.value.param == "suffix" and refused.value.code == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="base", prompt="def f(", max_tokens=20, stream=stream)
    assert refused.value.param == "max_tokens"  # renamed to max_length: named back


def test_a_converted_front_names_its_own_messages_field() -> None:
    """An upstream's ``messages[0]...`` is the front's ``input`` (``prompt``), without
    the index: the chat body's messages are not the input's items one for one."""
    from llmroute.server.errors import GatewayError
    from llmroute.server.fronts import _front_param

    def front(param: str, path: str = "/v1/responses", upstream: bool = True) -> str | None:
        error = GatewayError(400, "x", param=param, upstream_param=upstream)
        return _front_param(error, path, {"input": "hi", "prompt": "hi"})

    assert front("messages[0].content") == "input"
    assert front("messages", "/v1/completions") == "prompt"
    assert front("messages.0") == "input" and front("temperature") is None
    assert front("messagesx") is None
    assert front("messages", upstream=False) == "input"  # the gateway's own check
    sent = {"prompt": "hi", "stop": ["a", "b"], "n": 2}
    completions = GatewayError(400, "x", param="stop[1]", upstream_param=True)
    assert _front_param(completions, "/v1/completions", sent) == "stop[1]"
    assert _front_param(completions, "/v1/responses", {"stop": []}) is None
    unsent = GatewayError(400, "x", param="top_p", upstream_param=True)
    assert _front_param(unsent, "/v1/completions", sent) is None
    assert front("tools", upstream=False) == "tools"
    raw = GatewayError(400, "x", param="suffix", upstream_param=True)
    raw.upstream_raw = True  # a completion sent as it came
    assert _front_param(raw, "/v1/completions", {"prompt": "def f("}) == "suffix"


def test_error_from_response_keeps_param_within_bounds() -> None:
    def param_of(param: object) -> str | None:
        body = {"error": {"message": "no", "type": "invalid_request_error", "param": param}}
        error = error_from_response("p", 400, {}, httpx.Response(200, json=body).content)
        return error.param

    assert param_of("messages[1].content") == "messages[1].content"
    assert param_of(None) is None and param_of(3) is None and param_of(" ") is None
    assert param_of("x" * 500) is None and param_of("a\nb") is None
    assert param_of("sk-abcdefghijklmnop") is None  # looks like a credential: dropped


def test_param_as_asked_maps_only_a_renamed_field() -> None:
    from llmroute.dispatch.model_params import param_as_asked

    model = Model(provider="p", model="m", rename_params={"max_tokens": "max_completion_tokens"})
    assert param_as_asked("max_completion_tokens", {"max_tokens": 5}, model) == "max_tokens"
    assert param_as_asked("max_completion_tokens[0]", {"max_tokens": 5}, model) == "max_tokens[0]"
    both = {"max_tokens": 5, "max_completion_tokens": 6}
    assert param_as_asked("max_completion_tokens", both, model) == "max_completion_tokens"
    assert param_as_asked("temperature", {"max_tokens": 5}, model) == "temperature"


def test_a_param_holding_a_credential_the_gateway_sends_is_dropped() -> None:
    """A self-hosted server's key (a vLLM ``--api-key``) or a ``headers_env`` value
    looks like no credential to the pattern; the message cuts it as a secret the
    gateway sends, and a ``param`` echoing it is dropped as well."""
    from llmroute.providers._http import withhold

    class Holder:
        """The transport that sends the key, for as long as the test runs."""

    holder = Holder()
    withhold("hunt3r-v11m", "Bearer pr0xy-tok", owner=holder)
    for param in ("hunt3r-v11m", "headers[hunt3r-v11m]", "pr0xy-tok"):
        body = {"error": {"message": f"bad {param}", "param": param}}
        error = error_from_response("p", 400, {}, httpx.Response(200, json=body).content)
        assert error.param is None and "hunt3r" not in str(error) and "pr0xy" not in str(error)
    del holder
