"""`BedrockProvider` against a fake Bedrock runtime on 127.0.0.1 (a real HTTP server that
checks SigV4 signatures and bearer keys, and streams AWS's event-stream framing)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fake_anthropic import MESSAGE_ID, THOUGHT, TOOL_ID, sign
from fake_bedrock import ACCESS_KEY, REGION, REQUEST_ID, SECRET, FakeBedrock, fake_bedrock

from llmroute import sse
from llmroute.errors import (
    ConfigError,
    ContextWindowExceeded,
    ProviderError,
    ProviderMisconfigured,
    RateLimited,
    UpstreamRejected,
)
from llmroute.providers import build_providers
from llmroute.providers.base import Timeouts
from llmroute.providers.bedrock import BedrockProvider
from llmroute.registry import parse_registry
from llmroute.registry.schema import Provider, Registry
from llmroute.sse import chunk_of
from llmroute.untrusted_json import loads

TIMEOUTS = Timeouts(connect_s=2.0, total_s=5.0)
SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
TOKEN = "IQoJb3JpZ2luX2VjEFAKESESSIONTOKEN0123456789"
API_KEY = "ABSKQmVkcm9ja0FQSUtleS1GAKE0123456789abcdef"
SIGV4_ENV = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
ASK = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 64}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeBedrock]:
    with fake_bedrock() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def keyed() -> Iterator[FakeBedrock]:
    with fake_bedrock(key=API_KEY) as upstream:
        yield upstream


def make(server: FakeBedrock, env: dict[str, str] | None = None, **spec: Any) -> BedrockProvider:
    fields: dict[str, Any] = {"kind": "bedrock", "base_url": server.url, "region": REGION}
    return BedrockProvider("aws", Provider(**{**fields, **spec}), environ=env or SIGV4_ENV)


def complete(provider: BedrockProvider, model: str, body: dict[str, Any]) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        try:
            return await provider.complete(model, body, timeouts=TIMEOUTS)
        finally:
            await provider.aclose()

    return asyncio.run(run())


def stream(provider: BedrockProvider, model: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    async def run() -> list[bytes]:
        try:
            return [c async for c in provider.stream(model, body, timeouts=TIMEOUTS)]
        finally:
            await provider.aclose()

    chunks = asyncio.run(run())
    assert chunks[-1] == b"data: [DONE]\n\n"
    return [json.loads(c[len(b"data: ") :]) for c in chunks[:-1]]


def failure(call: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        call()
    return caught.value


def test_complete_is_a_signed_invoke_with_claudes_bedrock_body(server: FakeBedrock) -> None:
    provider = make(server, headers={"anthropic-beta": "context-1m-2025-08-07, beta-b"})
    answer = complete(provider, SONNET, {**ASK, "temperature": 0.3})
    assert answer["id"] == f"chatcmpl-{MESSAGE_ID}"
    assert answer["choices"][0]["message"]["content"] == "echo: hello there"
    sent = server.last
    assert sent.path == f"/model/{SONNET}/invoke" and sent.model == SONNET
    assert sent.body["anthropic_version"] == "bedrock-2023-05-31"
    assert sent.body["anthropic_beta"] == ["context-1m-2025-08-07", "beta-b"]
    assert "model" not in sent.body and "stream" not in sent.body
    assert sent.body["temperature"] == 0.3 and sent.body["max_tokens"] == 64
    assert "anthropic-beta" not in sent.headers  # a header Bedrock does not read
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert "x-amz-security-token" not in sent.headers


def test_a_chat_clients_inference_geo_is_not_sent_to_bedrock(server: FakeBedrock) -> None:
    """Anthropic's data residency is its own API's field: Bedrock refuses fields it does
    not know (the region is where the model runs)."""
    complete(make(server), SONNET, {**ASK, "inference_geo": "us", "top_k": 5})
    assert "inference_geo" not in server.last.body and server.last.body["top_k"] == 5
    stream(make(server), SONNET, {**ASK, "inference_geo": "us"})
    assert "inference_geo" not in server.last.body


def test_a_session_token_is_signed_and_sent(server: FakeBedrock) -> None:
    complete(make(server, {**SIGV4_ENV, "AWS_SESSION_TOKEN": TOKEN}), SONNET, ASK)
    assert server.last.headers["x-amz-security-token"] == TOKEN
    assert "x-amz-security-token" in server.last.headers["authorization"]


def test_an_arn_or_a_profile_is_one_path_segment_and_still_signs(server: FakeBedrock) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-x"
    for model in (arn, "global.anthropic.claude-sonnet-4-5-20250929-v1:0"):
        complete(make(server), model, ASK)  # the fake refuses a signature that does not match
        assert server.last.model == model
    assert server.requests[-2].path == f"/model/{arn.replace('/', '%2F')}/invoke"


def test_a_wrong_secret_is_bedrocks_403_misconfigured_and_not_shown(server: FakeBedrock) -> None:
    """A 403 moves on to the next deployment (`ProviderMisconfigured`), never retried on
    this one; its message, which could echo key material, is not repeated."""
    wrong = {**SIGV4_ENV, "AWS_SECRET_ACCESS_KEY": "not-the-secret-at-all-0123456789"}
    error = failure(lambda: complete(make(server, wrong), SONNET, ASK))
    assert isinstance(error, ProviderMisconfigured) and error.status == 403
    assert error.code == "InvalidSignatureException" and "signature" not in error.message
    assert "not-the-secret" not in str(error) and SECRET not in str(error)
    assert f"[upstream request {REQUEST_ID}]" in error.message


def test_a_signing_secret_holding_a_control_character_stops_the_build() -> None:
    """The secret signs (it goes in no header): one with a line break made a signature
    AWS refuses on every request. It stops the build at the provider, named, never
    shown, as the key id beside it would; unused beside a bearer token, it is left
    alone."""
    from llmroute.providers.build import build_http
    from llmroute.registry.schema import Provider, UnsendableCredential

    spec = Provider(kind="bedrock", region="us-east-1", base_url="http://127.0.0.1:9")
    broken = {**SIGV4_ENV, "AWS_SECRET_ACCESS_KEY": f"{SECRET}\r\n"}
    with pytest.raises(UnsendableCredential) as caught:
        build_http("aws", spec, broken)
    assert caught.value.field == "providers.aws"
    assert "AWS_SECRET_ACCESS_KEY holds a control character ('\\r')" in caught.value.message
    assert SECRET not in str(caught.value)
    build_http("aws", spec, {**broken, "AWS_BEARER_TOKEN_BEDROCK": API_KEY})


def test_a_bedrock_api_key_is_a_bearer_token(keyed: FakeBedrock) -> None:
    env = {**SIGV4_ENV, "AWS_BEARER_TOKEN_BEDROCK": API_KEY}  # the key wins over the pair
    complete(make(keyed, env), SONNET, ASK)
    assert keyed.last.headers["authorization"] == f"Bearer {API_KEY}"
    assert "x-amz-date" not in keyed.last.headers
    complete(
        make(keyed, {"TEAM_BEDROCK_KEY": API_KEY}, api_key_env="TEAM_BEDROCK_KEY"), SONNET, ASK
    )
    assert keyed.last.headers["authorization"] == f"Bearer {API_KEY}"
    error = failure(
        lambda: complete(make(keyed, {"AWS_BEARER_TOKEN_BEDROCK": "wrong-key"}), SONNET, ASK)
    )
    assert isinstance(error, ProviderMisconfigured) and "wrong-key" not in str(error)


def test_a_tool_call_and_thinking_come_back_as_for_anthropic(server: FakeBedrock) -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    body = {**ASK, "tools": TOOLS, "thinking": thinking, "max_tokens": 2048}
    message = complete(make(server), SONNET, body)["choices"][0]["message"]
    assert message["tool_calls"][0]["id"] == TOOL_ID
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"query": "hello there"}
    assert message["reasoning_content"] == THOUGHT
    assert server.last.body["tools"][0]["name"] == "search"


def test_another_models_thinking_signature_is_sent_again_without_it(server: FakeBedrock) -> None:
    """Bedrock says Claude's signature refusal as a ValidationException: the turn is
    asked again without the thinking blocks, as on Anthropic's API."""
    foreign = {"type": "thinking", "thinking": THOUGHT, "signature": sign(THOUGHT, "other")}
    turns = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "thinking_blocks": [foreign]},
        {"role": "user", "content": "again"},
    ]
    answer = complete(make(server), SONNET, {"messages": turns, "max_tokens": 64})
    assert answer["choices"][0]["message"]["content"] == "echo: again"
    assert "thinking" not in json.dumps(server.last.body["messages"])
    assert "thinking" in json.dumps(server.requests[-2].body["messages"])


def test_a_stream_is_decoded_from_the_event_stream(server: FakeBedrock) -> None:
    body = {**ASK, "tools": TOOLS, "stream_options": {"include_usage": True}}
    chunks = stream(make(server), SONNET, body)
    assert server.last.path == f"/model/{SONNET}/invoke-with-response-stream"
    assert "stream" not in server.last.body
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: hello there"
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    arguments = "".join(c["function"].get("arguments", "") for c in calls)
    assert json.loads(arguments) == {"query": "hello there"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 7


def test_each_chunk_is_handed_to_the_meter_not_parsed_again(
    server: FakeBedrock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Anthropic's: the stream's meter (`chunk_of`) takes the object each translated
    chunk was written from, and parses none of them back."""
    parses: list[bytes] = []
    monkeypatch.setattr(sse, "loads", lambda text, **kw: parses.append(text) or loads(text, **kw))
    body = {**ASK, "tools": TOOLS, "stream_options": {"include_usage": True}}
    provider = make(server)

    async def run() -> list[tuple[bytes, dict[str, Any] | None]]:
        try:
            chunks = provider.stream(SONNET, body, timeouts=TIMEOUTS)
            return [(c, chunk_of(c)) async for c in chunks]
        finally:
            await provider.aclose()

    read = asyncio.run(run())
    assert parses == [] and len(read) > 5
    assert [chunk for _, chunk in read[:-1]] == [json.loads(c[6:]) for c, _ in read[:-1]]


def test_throttling_is_rate_limited_also_inside_a_stream(server: FakeBedrock) -> None:
    error = failure(lambda: complete(make(server), f"{SONNET}?throttle=1", ASK))
    assert isinstance(error, RateLimited) and error.code == "ThrottlingException"
    error = failure(lambda: stream(make(server), f"{SONNET}?stream_throttle=1", ASK))
    assert isinstance(error, RateLimited) and error.code == "ThrottlingException"


def test_a_retry_after_is_read_whatever_the_case_of_its_name(server: FakeBedrock) -> None:
    """HTTP header names are case-insensitive: ``Retry-After`` as sent is read."""
    error = failure(lambda: complete(make(server), f"{SONNET}?throttle=1&retry_after=3", ASK))
    assert isinstance(error, RateLimited) and error.retry_after_s == 3.0


@pytest.mark.parametrize(
    ("fault", "kind", "status", "retryable"),
    [
        ("too_long", ContextWindowExceeded, 400, False),
        ("denied", ProviderMisconfigured, 403, True),  # to the next deployment
        ("model_error", ProviderError, 502, True),
    ],
)
def test_bedrocks_errors_map_to_the_projects(
    server: FakeBedrock, fault: str, kind: type[ProviderError], status: int, retryable: bool
) -> None:
    error = failure(lambda: complete(make(server), f"{SONNET}?{fault}=1", ASK))
    assert type(error) is kind and error.status == status and error.retryable is retryable


@pytest.mark.parametrize(
    ("fail", "kind", "status", "said"),
    [
        ("ThrottlingException", RateLimited, 429, "Too many requests"),
        ("ServiceQuotaExceededException", RateLimited, 429, "service quota"),  # sent as 400
        ("AccessDeniedException", ProviderMisconfigured, 403, "refused the gateway access"),
        ("NoPayment", ProviderMisconfigured, 403, "cannot be billed"),
        # an imported model being brought up: a 429 as AWS sends it, waited out
        ("ModelNotReadyException", RateLimited, 429, "not ready for inference"),
        ("ServiceUnavailableException", ProviderError, 503, "HTTP 503"),
    ],
)
def test_bedrocks_limits_and_refusals_of_the_account_map_to_the_projects(
    server: FakeBedrock, fail: str, kind: type[ProviderError], status: int, said: str
) -> None:
    """Each retryable: retried or, for the gateway's account refused, on to the next
    deployment or model at once."""
    error = failure(lambda: complete(make(server), f"{SONNET}?fail={fail}", ASK))
    assert type(error) is kind and error.status == status and error.retryable
    assert said in error.message and "INVALID_PAYMENT" not in error.message


@pytest.mark.parametrize(
    ("exception", "kind", "status"),
    [
        ("throttlingException", RateLimited, 429),
        ("serviceUnavailableException", ProviderError, 503),
        ("internalServerException", ProviderError, 500),
        ("modelStreamErrorException", ProviderError, 502),
        ("modelTimeoutException", ProviderError, 408),
        ("validationException", UpstreamRejected, 400),
    ],
)
def test_an_exception_message_opening_the_stream_is_read_as_its_status(
    server: FakeBedrock, exception: str, kind: type[ProviderError], status: int
) -> None:
    """The exceptions InvokeModelWithResponseStream sends inside its event stream, as
    its first message (before any words: what the fallback still answers for). No HTTP
    status came (the stream's was 200): the message names the exception and keeps what
    Bedrock said, where it read ``returned HTTP 503`` (or ``HTTP 424``) and dropped it."""
    error = failure(lambda: stream(make(server), f"{SONNET}?stream_fail={exception}", ASK))
    assert type(error) is kind and error.status == status
    named = exception[:1].upper() + exception[1:]
    assert error.code == named
    assert f"{named} in its stream" in error.message, error.message
    assert f"{exception} said" in error.message and "HTTP" not in error.message


def test_a_broken_crc_fails_the_stream_at_once(server: FakeBedrock) -> None:
    error = failure(lambda: stream(make(server), f"{SONNET}?bad_crc=1", ASK))
    assert type(error) is ProviderError and "CRC" in error.message


def test_a_validation_error_is_the_requests_fault() -> None:
    from llmroute.providers.bedrock import bedrock_error

    said = b'{"message": "messages.0.content: Field required"}'
    error = bedrock_error("aws", 400, {"x-amzn-errortype": "ValidationException:http://x"}, said)
    assert isinstance(error, UpstreamRejected) and "Field required" in error.message


def test_keys_without_a_region_to_sign_for_are_a_config_error(server: FakeBedrock) -> None:
    with pytest.raises(ConfigError, match="region"):
        BedrockProvider("aws", Provider(kind="bedrock", base_url=server.url), environ=SIGV4_ENV)
    vpce = "https://vpce-0a1b-x.bedrock-runtime.eu-west-3.vpce.amazonaws.com"
    BedrockProvider("aws", Provider(kind="bedrock", base_url=vpce), environ=SIGV4_ENV)


def test_a_base_url_password_beside_aws_credentials_is_a_config_error(
    server: FakeBedrock,
) -> None:
    """AWS's credentials from the environment (a Bedrock API key, or keys that sign) are
    the request's Authorization, so a base URL's ``user:password@`` (sent as Basic only
    where none is set) went unused without a word; without them (a proxy that signs for
    the provider) it is sent."""
    url = server.url.replace("http://", "http://svc:s3cret-pw@")
    for env in (SIGV4_ENV, {"AWS_BEARER_TOKEN_BEDROCK": API_KEY}):
        with pytest.raises(ConfigError) as caught:
            make(server, env, base_url=url)
        assert caught.value.field == "providers.aws.base_url"
        assert "user:password@" in caught.value.message and "s3cret" not in str(caught.value)
    BedrockProvider("aws", Provider(kind="bedrock", base_url=url, region=REGION), environ={})


PROXY_AUTH = "Bearer proxy-token-0123456789"
HEADERS_ENV_REGISTRY = f"""providers:
  aws:
    kind: bedrock
    region: eu-central-1
    headers_env:
      Authorization: LLMROUTE_TEST_PROXY_AUTH
models:
  claude: {{provider: aws, model: {SONNET}}}
routes:
  - {{name: r, examples: [x], target: claude}}
default: {{target: claude}}
"""


def test_a_headers_env_authorization_beside_aws_credentials_is_refused_at_its_line() -> None:
    """AWS's credentials from the environment are the request's Authorization: a
    ``headers_env`` Authorization was replaced by them without a word. Refused at start
    naming the file, its line and field, never its value; without AWS's credentials (a
    proxy that signs for the provider) it is sent."""
    loaded = parse_registry(HEADERS_ENV_REGISTRY, source="registry.yaml")
    proxy = {"LLMROUTE_TEST_PROXY_AUTH": PROXY_AUTH}
    for aws in (SIGV4_ENV, {"AWS_BEARER_TOKEN_BEDROCK": API_KEY}):
        with pytest.raises(ConfigError) as caught:
            build_providers(loaded.registry, environ={**proxy, **aws})
        error = loaded.at(caught.value)
        assert (error.file, error.line) == ("registry.yaml", 6)
        assert error.field == "providers.aws.headers_env.Authorization"
        assert "LLMROUTE_TEST_PROXY_AUTH" in str(error)
        assert "proxy-token" not in str(error) and SECRET not in str(error)
    assert isinstance(build_providers(loaded.registry, environ=proxy)["aws"], BedrockProvider)


def test_build_providers_builds_a_bedrock_client(server: FakeBedrock) -> None:
    registry = Registry.model_validate(
        {
            "providers": {"aws": {"kind": "bedrock", "region": "eu-central-1"}},
            "models": {"claude": {"provider": "aws", "model": SONNET}},
            "routes": [{"name": "r", "examples": ["x"], "target": "claude"}],
            "default": {"target": "claude"},
        }
    )
    built = build_providers(registry, environ=SIGV4_ENV)["aws"]
    assert isinstance(built, BedrockProvider)
    assert (
        registry.providers["aws"].base_url == "https://bedrock-runtime.eu-central-1.amazonaws.com"
    )


def test_a_refused_signature_in_a_stream_is_sent_again_before_anything_went_out(
    server: FakeBedrock,
) -> None:
    foreign = {"type": "thinking", "thinking": THOUGHT, "signature": sign(THOUGHT, "other")}
    turns = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "thinking_blocks": [foreign]},
        {"role": "user", "content": "streamed again"},
    ]
    chunks = stream(make(server), SONNET, {"messages": turns, "max_tokens": 64})
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: streamed again"
    assert "thinking" not in json.dumps(server.last.body["messages"])
    assert server.last.path.endswith("/invoke-with-response-stream")
