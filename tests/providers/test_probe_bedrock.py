"""`probe_pool` on providers of kind ``bedrock`` (a fake Bedrock runtime on 127.0.0.1):
its runtime endpoint lists no models, so a probe says so and asks nothing until
``--chat``, which asks the one short question, signed; with no credentials nothing is
sent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_bedrock import ACCESS_KEY, SECRET, FakeBedrock, fake_bedrock

from llmroute.providers.probe import PROBE_PROMPT, Probe, probe_pool
from llmroute.registry import parse_registry
from llmroute.registry.schema import Registry

SIGV4_ENV = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


@pytest.fixture
def bedrock() -> Iterator[FakeBedrock]:
    with fake_bedrock() as server:
        yield server


def _registry(bedrock: FakeBedrock) -> Registry:
    text = f"""
encoder: builtin:static
providers:
  aws: {{kind: bedrock, region: us-east-1, base_url: "{bedrock.url}"}}
  aws_real: {{kind: bedrock, region: us-west-2}}
models:
  sonnet: {{provider: aws, model: "{SONNET}"}}
  west: {{provider: aws_real, model: "{SONNET}"}}
routes:
  - {{name: r, examples: [hi], target: sonnet}}
default: {{target: sonnet}}
"""
    return parse_registry(text, source="probe.yaml").registry


def _probe(registry: Registry, env: dict[str, str], **kwargs: object) -> dict[str, Probe]:
    results = asyncio.run(
        probe_pool(registry, environ=env, base_dir=Path.cwd(), timeout_s=5.0, **kwargs)  # type: ignore[arg-type]
    )
    return {r.model: r for r in results}


def test_without_chat_nothing_is_sent_and_the_probe_says_why(bedrock: FakeBedrock) -> None:
    got = _probe(_registry(bedrock), SIGV4_ENV, models=["sonnet"])
    assert got["sonnet"].status == "warn" and got["sonnet"].listed is None
    assert "lists no models" in got["sonnet"].detail
    assert got["sonnet"].where == bedrock.url
    assert bedrock.requests == []


def test_chat_asks_the_model_once_signed(bedrock: FakeBedrock) -> None:
    got = _probe(_registry(bedrock), SIGV4_ENV, models=["sonnet"], chat=True)
    assert got["sonnet"].status == "ok", got["sonnet"].detail
    assert got["sonnet"].detail.startswith("answered")
    (sent,) = bedrock.requests
    assert sent.path == f"/model/{SONNET}/invoke"
    assert sent.body["messages"][0]["content"][0]["text"] == PROBE_PROMPT
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")


def test_no_credentials_for_aws_itself_sends_nothing(bedrock: FakeBedrock) -> None:
    got = _probe(_registry(bedrock), {}, models=["west"], chat=True)
    assert got["west"].status == "fail"
    assert got["west"].detail == (
        "AWS_BEARER_TOKEN_BEDROCK (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) "
        "is not set; nothing was sent"
    )
    assert got["west"].where == "https://bedrock-runtime.us-west-2.amazonaws.com"


@pytest.mark.parametrize("tail", ["\n", "\x01"], ids=["line-break", "control"])
def test_a_signing_secret_holding_a_control_character_fails_its_rows(
    bedrock: FakeBedrock, tail: str
) -> None:
    """AWS_SECRET_ACCESS_KEY read from a file with its line break: it goes in no header,
    so nothing checked it, and every request was signed with it and refused (AWS's 403);
    a probe without ``--chat`` said only that Bedrock lists no models. It fails the
    provider's rows, naming the variable, never its value, nothing sent."""
    env = {**SIGV4_ENV, "AWS_SECRET_ACCESS_KEY": f"{SECRET}{tail}"}
    got = _probe(_registry(bedrock), env, models=["sonnet"], chat=True)["sonnet"]
    assert got.status == "fail"
    assert got.detail.startswith(
        f"environment variable AWS_SECRET_ACCESS_KEY holds a control character ({tail!r})"
    )
    assert SECRET not in got.detail and bedrock.requests == []
