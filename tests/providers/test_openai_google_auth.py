"""``auth: google`` on an OpenAI-compatible provider (Vertex AI's OpenAI-compatible
endpoint, for Gemini and Model Garden models): each request carries an OAuth2 token from
Google's Application Default Credentials (a service account whose token endpoint is a
fake on 127.0.0.1, real HTTP), renewed once on a 401; the registry refuses it where it
cannot apply."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("google.auth")

from fake_upstream import FakeUpstream, fake_upstream
from fake_vertex import FakeVertex, fake_vertex, without_metadata_server

from llmroute.errors import ProviderMisconfigured
from llmroute.providers.base import Timeouts
from llmroute.providers.build import build_http
from llmroute.registry.schema import Provider

TIMEOUTS = Timeouts(connect_s=2.0, total_s=10.0)
CHAT = {"messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module", autouse=True)
def _no_metadata_server() -> Iterator[None]:
    with without_metadata_server():
        yield


@pytest.fixture
def servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FakeVertex, FakeUpstream]]:
    with fake_vertex() as google, fake_upstream() as upstream:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(google.credentials_file(tmp_path)))
        monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
        yield google, upstream


def _run(spec: Provider, calls: Any) -> Any:
    async def go() -> Any:
        provider = build_http("gemini", spec, {})
        try:
            return await calls(provider)
        finally:
            await provider.aclose()

    return asyncio.run(go())


def _bearers(upstream: FakeUpstream) -> list[str | None]:
    return [r.headers.get("authorization") for r in upstream.requests]


def test_each_request_carries_a_google_token(servers: tuple[FakeVertex, FakeUpstream]) -> None:
    google, upstream = servers
    spec = Provider(kind="openai", base_url=upstream.url, auth="google")

    async def calls(provider: Any) -> None:
        await provider.complete("google/gemini-2.5-flash", CHAT, timeouts=TIMEOUTS)
        events = provider.stream(
            "google/gemini-2.5-flash", {**CHAT, "stream": True}, timeouts=TIMEOUTS
        )
        assert [e async for e in events][-1] == b"data: [DONE]\n\n"
        await provider.embed("text-embedding-005", {"input": ["a"]}, timeouts=TIMEOUTS)

    _run(spec, calls)
    assert google.issued == ["ya29.fake-1"]  # one token, reused
    assert _bearers(upstream) == ["Bearer ya29.fake-1"] * 3


@pytest.mark.parametrize("stream", [False, True])
def test_a_401_renews_the_token_and_sends_once_more(
    servers: tuple[FakeVertex, FakeUpstream], stream: bool
) -> None:
    google, upstream = servers
    spec = Provider(kind="openai", base_url=upstream.url, auth="google")
    google.revoked.add("ya29.fake-1")  # the fake upstream does not read tokens: say it

    async def calls(provider: Any) -> None:
        model = "up-g?status=401&times=1"
        if stream:
            events = provider.stream(model, {**CHAT, "stream": True}, timeouts=TIMEOUTS)
            assert [e async for e in events][-1] == b"data: [DONE]\n\n"
        else:
            await provider.complete(model, CHAT, timeouts=TIMEOUTS)

    _run(spec, calls)
    assert _bearers(upstream) == ["Bearer ya29.fake-1", "Bearer ya29.fake-2"]


def test_a_second_401_is_the_gateways_credentials_refused(
    servers: tuple[FakeVertex, FakeUpstream],
) -> None:
    _, upstream = servers
    spec = Provider(kind="openai", base_url=upstream.url, auth="google")

    async def calls(provider: Any) -> None:
        await provider.complete("up-g?status=401", CHAT, timeouts=TIMEOUTS)

    with pytest.raises(ProviderMisconfigured):
        _run(spec, calls)
    assert len(upstream.requests) == 2


def test_a_google_token_no_header_carries_is_the_credentials_misconfiguration(
    servers: tuple[FakeVertex, FakeUpstream],
) -> None:
    """``auth: google``'s token with a line break (a broken token server's): each
    request raised aiohttp's ValueError as it was sent; now the provider's credentials
    are misconfigured, said without the token, and nothing is sent."""
    google, upstream = servers
    google.token_tail = "\n"
    spec = Provider(kind="openai", base_url=upstream.url, auth="google")

    async def calls(provider: Any) -> None:
        await provider.complete("google/gemini-2.5-flash", CHAT, timeouts=TIMEOUTS)

    with pytest.raises(ProviderMisconfigured, match="holds a control character") as caught:
        _run(spec, calls)
    assert "ya29" not in str(caught.value) and upstream.requests == []


def test_the_registry_refuses_it_where_it_cannot_apply() -> None:
    with pytest.raises(ValueError, match="for openai providers"):
        Provider(kind="anthropic", auth="google")
    with pytest.raises(ValueError, match="api_key_env is not used"):
        Provider(kind="openai", auth="google", api_key_env="GEMINI_KEY")


def test_missing_credentials_say_what_to_set_and_not_api_key_env(
    servers: tuple[FakeVertex, FakeUpstream], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``auth: google`` refuses api_key_env: its missing-credentials error does not
    suggest it (a vertex provider's does)."""
    _, upstream = servers
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    spec = Provider(kind="openai", base_url=upstream.url, auth="google")

    async def calls(provider: Any) -> None:
        await provider.complete("google/gemini-2.5-flash", CHAT, timeouts=TIMEOUTS)

    with pytest.raises(ProviderMisconfigured) as caught:
        _run(spec, calls)
    said = str(caught.value)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in said and "api_key_env" not in said
    assert upstream.requests == []
