"""Provider credentials from the environment: `api_key_env` and `headers_env` (a secret
header a proxy wants) reach a real upstream on 127.0.0.1 and nothing else; an unset one
is a warning when the gateway loads the registry, not a silent 401 later."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fake_upstream import FakeUpstream, fake_upstream

from llmroute.encoders import RemoteEncoder
from llmroute.errors import ConfigError
from llmroute.providers.base import Timeouts
from llmroute.providers.openai_compat import OpenAICompatProvider
from llmroute.registry import parse_registry
from llmroute.registry.schema import Provider
from llmroute.server.reload import warn_unset_credentials

TIMEOUTS = Timeouts(total_s=5.0, connect_s=2.0)
SECRET = "sub-key-0123456789abcdef"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


def _complete(provider: OpenAICompatProvider) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        try:
            body = {"messages": [{"role": "user", "content": "hi"}]}
            return await provider.complete("m", body, timeouts=TIMEOUTS)
        finally:
            await provider.aclose()

    return asyncio.run(run())


def test_headers_env_sends_the_variables_value(upstream: FakeUpstream) -> None:
    spec = Provider(
        kind="openai",
        base_url=upstream.url,
        api_key_env="UP_KEY",
        headers={"x-team": "search"},
        headers_env={"Ocp-Apim-Subscription-Key": "UP_SUBSCRIPTION", "x-unset": "UP_MISSING"},
    )
    environ = {"UP_KEY": "sk-up-0123456789", "UP_SUBSCRIPTION": SECRET}
    _complete(OpenAICompatProvider("up", spec, environ=environ))
    sent = upstream.requests[-1].headers
    assert sent["ocp-apim-subscription-key"] == SECRET
    assert sent["authorization"] == "Bearer sk-up-0123456789"
    assert sent["x-team"] == "search"
    assert "x-unset" not in sent  # an unset variable sends no header, not an empty one


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        (
            "{kind: openai, headers: {X-Key: a}, headers_env: {x-key: X_KEY}}",
            "providers.p.headers_env.x-key: header 'x-key' is also set in 'headers'",
        ),
        (
            "{kind: openai, headers_env: {X-Key: 'sk-live-abc'}}",
            "providers.p.headers_env.X-Key: must be the NAME of an environment variable",
        ),
        (
            "{kind: llamacpp, headers_env: {X-Key: X_KEY}}",
            "'headers_env' is not used by a llamacpp provider",
        ),
    ],
)
def test_bad_headers_env_is_refused(provider: str, message: str) -> None:
    text = (
        f"providers:\n  p: {provider}\nmodels:\n  m: {{provider: p, model: m}}\n"
        "routes:\n  - {name: r, examples: [hi], target: m}\ndefault: {target: m}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_registry(text, source="r.yaml")
    assert message in str(caught.value), str(caught.value)


def test_unset_credentials_are_one_warning_per_provider(caplog: pytest.LogCaptureFixture) -> None:
    text = """
providers:
  hosted: {kind: openai, api_key_env: HOSTED_KEY}
  proxy: {kind: anthropic, base_url: "http://127.0.0.1:9", headers_env: {x-proxy-key: PROXY_KEY}}
  local: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  a: {provider: hosted, model: a}
  b: {provider: proxy, model: b}
  c: {provider: local, model: c}
routes:
  - {name: r, examples: [hi], target: a}
default: {target: c}
"""
    registry = parse_registry(text).registry
    with caplog.at_level(logging.WARNING, logger="llmroute"):
        warn_unset_credentials(registry, {"HOSTED_KEY": "sk-0123456789abcdef"})
    assert [r.getMessage() for r in caplog.records] == [
        "provider 'proxy': environment variable PROXY_KEY is not set; its requests go without it"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llmroute"):
        warn_unset_credentials(registry, {"HOSTED_KEY": "", "PROXY_KEY": SECRET})
    assert len(caplog.records) == 1 and "HOSTED_KEY is not set" in caplog.records[0].getMessage()
    assert SECRET not in caplog.text


def test_an_embeddings_encoder_sends_its_header_and_needs_it(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmroute.assemble import build_encoder

    text = f"""
encoder:
  kind: openai
  base_url: "{upstream.url}"
  model: up-embed
  headers_env: {{x-embed-key: EMBED_KEY}}
providers:
  local: {{kind: openai, base_url: "{upstream.url}"}}
models:
  m: {{provider: local, model: m}}
routes:
  - {{name: r, examples: [hi], target: m}}
default: {{target: m}}
"""
    registry = parse_registry(text).registry
    monkeypatch.delenv("EMBED_KEY", raising=False)
    with pytest.raises(ConfigError, match="EMBED_KEY"):
        build_encoder(registry)
    monkeypatch.setenv("EMBED_KEY", SECRET)
    encoder = build_encoder(registry)
    assert isinstance(encoder, RemoteEncoder)
    try:
        encoder.encode(["hello"])
    finally:
        encoder.close()
    assert upstream.requests[-1].headers["x-embed-key"] == SECRET


def test_credentials_in_the_base_url_become_a_basic_auth_header(upstream: FakeUpstream) -> None:
    import base64

    base = upstream.url.replace("http://", "http://svc:p%40ss@")
    _complete(OpenAICompatProvider("p", Provider(kind="openai", base_url=base)))
    sent = upstream.requests[-1]
    assert sent.headers["authorization"] == "Basic " + base64.b64encode(b"svc:p@ss").decode()
    assert sent.path == "/v1/chat/completions"


def test_a_bedrock_provider_without_credentials_is_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Kind bedrock takes a Bedrock API key or a pair of AWS keys from variables of AWS's
    own names, neither of which the registry names: the warning says both."""
    text = """
providers:
  aws: {kind: bedrock, region: us-east-1}
  team: {kind: bedrock, region: us-east-1, api_key_env: TEAM_BEDROCK_KEY}
  signer: {kind: bedrock, region: us-east-1, base_url: "http://127.0.0.1:9"}
models:
  a: {provider: aws, model: a}
  b: {provider: team, model: b}
  c: {provider: signer, model: c}
routes:
  - {name: r, examples: [hi], target: a}
default: {target: c}
"""
    registry = parse_registry(text).registry
    with caplog.at_level(logging.WARNING, logger="llmroute"):
        warn_unset_credentials(registry, {})
    assert [r.getMessage() for r in caplog.records] == [
        "provider 'aws': environment variable AWS_BEARER_TOKEN_BEDROCK (or AWS_ACCESS_KEY_ID "
        "and AWS_SECRET_ACCESS_KEY) is not set; its requests go without it",
        "provider 'team': environment variable TEAM_BEDROCK_KEY (or AWS_ACCESS_KEY_ID "
        "and AWS_SECRET_ACCESS_KEY) is not set; its requests go without it",
    ]  # the proxy in front of `signer` may sign for it
    caplog.clear()
    keys = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET}
    with caplog.at_level(logging.WARNING, logger="llmroute"):
        warn_unset_credentials(registry, keys)
    assert caplog.records == []
