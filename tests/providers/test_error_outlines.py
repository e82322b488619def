"""Each provider adapter marks the words of its error messages that its upstream (or a
library's exception) wrote (`Quoted`), so that an attempt's outline, what the decision
log keeps unless ``telemetry.prompts: full``, holds none of them and every word of the
gateway's, after them too (the upstream's request id, what to check). Each adapter
against its fake upstream on 127.0.0.1 whose error message quotes the prompt."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fake_anthropic import fake_anthropic
from fake_bedrock import ACCESS_KEY, REGION, REQUEST_ID, SECRET, fake_bedrock
from fake_upstream import fake_upstream

from llmroute.errors import ProviderError, Quoted, RequestNote
from llmroute.providers import AnthropicProvider
from llmroute.providers.base import Timeouts
from llmroute.providers.bedrock import BedrockProvider, bedrock_error
from llmroute.providers.openai_compat import OpenAICompatProvider
from llmroute.registry.schema import Provider
from llmroute.sdk.convert import event_json

MARKER = "zq-marker-5512"
ASK = {"messages": [{"role": "user", "content": f"my code word is {MARKER}"}], "max_tokens": 9}
TIMEOUTS = Timeouts(connect_s=2.0, total_s=5.0)
_NOTE = re.compile(r" \[upstream request [^\]]+\]")


async def _failure(provider: Any, model: str, *, stream: bool = False) -> ProviderError:
    """The error `provider` raised for `model`, its connections closed after."""
    try:
        if stream:
            async for _ in provider.stream(model, ASK, timeouts=TIMEOUTS):
                pass
        else:
            await provider.complete(model, ASK, timeouts=TIMEOUTS)
    except ProviderError as exc:
        return exc
    finally:
        await provider.aclose()
    raise AssertionError("no error")


def _outlined(error: ProviderError, after: str = "") -> str:
    """`error`'s outline, checked: the message quotes the prompt, the outline does not,
    and keeps what the gateway said after the upstream's words (its request id and
    `after`), in the message's order."""
    assert MARKER in error.message and MARKER in str(error)  # the client's error keeps it
    outline = error.outline()
    assert MARKER not in outline.lower()  # nor capitalised (Bedrock's exception types)
    assert MARKER not in error.attempt("m").outline.lower()
    noted = _NOTE.search(error.message)
    tail = (noted.group(0) if noted else "") + after
    assert error.message.endswith(tail) and outline.endswith(tail)
    return outline


@pytest.fixture(scope="module")
def upstream() -> Iterator[Any]:
    with fake_upstream() as running:
        yield running


def test_openai_compatibles_error_status(upstream: Any) -> None:
    provider = OpenAICompatProvider("p", Provider(kind="openai", base_url=upstream.url))
    failed = asyncio.run(_failure(provider, "m?status=400&quote=1"))
    assert re.fullmatch(
        r"upstream returned HTTP 400 \[upstream request req_fake\d+\]", _outlined(failed)
    )


def test_openai_compatibles_error_inside_a_200(upstream: Any) -> None:
    """An error object in place of the answer, as OpenRouter sends once the model has
    started: the server's words, quoting the request, are marked too."""
    error = {"message": f"the model failed on {MARKER!r}", "code": 502}
    model = f"m?inbody=json:{quote(json.dumps(error))}"
    provider = OpenAICompatProvider("p", Provider(kind="openai", base_url=upstream.url))
    failed = asyncio.run(_failure(provider, model))
    assert MARKER in failed.message
    assert failed.outline() == "upstream answered with error 502"


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_anthropics_error_status(stream: bool) -> None:
    with fake_anthropic() as server:
        spec = Provider(kind="anthropic", base_url=server.url, api_key_env="K")
        provider = AnthropicProvider("anth", spec, environ={"K": "sk-ant-fake-0000000000"})
        failed = asyncio.run(_failure(provider, "claude?status=400&quote=1", stream=stream))
    assert _outlined(failed) == "upstream returned HTTP 400, code invalid_request_error" + (
        " [upstream request req_fake]"
    )


_V, _M = "ValidationException", "ModelErrorException"


@pytest.fixture(scope="module")
def bedrock() -> Iterator[Any]:
    with fake_bedrock() as server:
        yield server


def _bedrock(server: Any) -> BedrockProvider:
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    spec = Provider(kind="bedrock", base_url=server.url, region=REGION)
    return BedrockProvider("aws", spec, environ=env)


@pytest.mark.parametrize(
    ("faults", "stream", "said"),
    [
        ("quote=1", False,
         f"upstream returned HTTP 400, code {_V} [upstream request {REQUEST_ID}]"),
        ("model_error=1&quote=1", False,
         f"upstream returned HTTP 424 ({_M}), code {_M} [upstream request {REQUEST_ID}]"),
        ("stream_fail=validationException&quote=1", True,
         f"upstream sent {_V} in its stream, code {_V}"),  # no request id in a stream's
    ],
    ids=["status", "model-error", "in-stream"],
)  # fmt: skip
def test_bedrocks_errors(bedrock: Any, faults: str, stream: bool, said: str) -> None:
    provider = _bedrock(bedrock)
    model = f"anthropic.claude-x-v1:0?{faults}"
    failed = asyncio.run(_failure(provider, model, stream=stream))
    assert _outlined(failed) == said


def test_bedrocks_exception_type_is_named_only_when_it_is_a_name(bedrock: Any) -> None:
    """An exception type is named among the gateway's words: one that is no name (here
    quoting the prompt) is not repeated."""
    model = f"anthropic.claude-x-v1:0?stream_fail={quote(f'{MARKER} said')}"
    failed = asyncio.run(_failure(_bedrock(bedrock), model, stream=True))
    assert _outlined(failed) == "upstream sent an exception in its stream"


def test_a_424_of_an_exception_type_that_is_no_name_has_no_empty_parentheses() -> None:
    """Its type left out, its 424 read ``returned HTTP 424 ()``."""
    headers = {"x-amzn-errortype": f"{MARKER} said", "x-amzn-requestid": REQUEST_ID}
    failed = bedrock_error("aws", 424, headers, json.dumps({"message": MARKER}).encode())
    assert failed.message == f"upstream returned HTTP 424: {MARKER} [upstream request {REQUEST_ID}]"
    assert failed.outline() == f"upstream returned HTTP 424 [upstream request {REQUEST_ID}]"


def test_bedrocks_broken_stream_is_the_gateways_words_throughout(bedrock: Any) -> None:
    """The event-stream decoder's own words after ``": "``: all kept."""
    provider = _bedrock(bedrock)
    failed = asyncio.run(_failure(provider, "anthropic.claude-x-v1:0?bad_crc=1", stream=True))
    assert failed.message.startswith("upstream sent a broken event stream: event-stream")
    assert failed.outline() == failed.message


@pytest.fixture
def vertex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    pytest.importorskip("google.auth")
    from fake_vertex import fake_vertex, without_metadata_server

    with without_metadata_server(), fake_vertex() as server:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(server.credentials_file(tmp_path)))
        monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
        yield server


def _vertex(server: Any) -> Any:
    from llmroute.providers.google_auth import AdcTokens
    from llmroute.providers.vertex import VertexProvider

    spec = Provider(kind="vertex", base_url=server.base_url)
    return VertexProvider("vertex", spec, environ={}, tokens=AdcTokens("vertex"))


@pytest.mark.parametrize(
    ("status", "after"),
    [(400, ""), (404, "check the model id with its @version")],
)
def test_vertexs_errors_keep_the_hint_after_googles_words(
    vertex: Any, status: int, after: str
) -> None:
    failed = asyncio.run(_failure(_vertex(vertex), f"claude-x?gstatus={status}&quote=1"))
    hint = failed.message[failed.message.index("[upstream request req_fake]") + 27 :]
    assert after in hint
    _outlined(failed, hint)


def test_googles_refused_token_is_the_gateways_words_throughout(vertex: Any) -> None:
    vertex.refuse_tokens = True
    failed = asyncio.run(_failure(_vertex(vertex), "claude-x"))
    assert "(invalid_grant): check the credentials' account and key" in failed.message
    assert failed.outline() == f"{failed.message}, code google_credentials"


def test_llama_cpps_exception_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """llama-cpp-python's exception, whose text may quote the prompt (a fake module)."""
    from llmroute.providers.llamacpp import LlamaCppProvider, _Key, _Pool
    from llmroute.registry import parse_registry

    class _Llama:
        def create_chat_completion(self, **arguments: Any) -> Any:
            raise RuntimeError(f"could not tokenize {arguments['messages'][-1]['content']!r}")

    fake = types.ModuleType("llama_cpp")
    fake.LogitsProcessorList = list  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", fake)
    registry = parse_registry(
        "encoder: builtin:static\nproviders: {local: {kind: llamacpp}}\n"
        "models: {m: {provider: local, model: m.gguf}}\n"
        "routes: [{name: r, examples: [hello], target: m}]\ndefault: {target: m}\n"
    ).registry
    spec = registry.providers["local"]
    pool = _Pool(_Key("m.gguf", spec.n_ctx, 1, None))
    pool.release(_Llama())
    provider = LlamaCppProvider("local", spec, {"m.gguf": pool})
    failed = asyncio.run(_failure(provider, "m.gguf"))
    assert MARKER in failed.message
    assert failed.outline() == "llama.cpp failed (RuntimeError)"


def test_a_relayed_streams_error_event() -> None:
    """The SDK reading a stream whose error event quotes the prompt."""
    event = json.dumps({"error": {"message": f"refused {MARKER}", "code": "bad"}})
    with pytest.raises(ProviderError) as caught:
        event_json(f"data: {event}\n\n".encode(), "p")
    assert MARKER in caught.value.message
    assert caught.value.outline() == "the stream ended with an error, code bad"


def test_parts_are_kept_by_a_copy_and_a_whole_message_is_read_as_before() -> None:
    """A message in parts is read by its marks; one given whole, as nobody marked it:
    its words after its first ``": "`` left out."""
    parts = ("said", Quoted(f": {MARKER}: more"), RequestNote(" [upstream request r1]"))
    failed = ProviderError("p", parts, code="c")
    again = ProviderError("p", failed.parts, code="c")
    assert again.message == failed.message == f"said: {MARKER}: more [upstream request r1]"
    assert again.outline() == failed.outline() == "said, code c [upstream request r1]"
    assert ProviderError("p", f"said: {MARKER}").outline() == "said"
    assert ProviderError("p", ("a: b",)).outline() == "a: b"
    assert ProviderError("llmroute", "every model: refused").outline() == "every model: refused"
