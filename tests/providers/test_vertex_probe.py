"""`llmroute registry probe` of a ``kind: vertex`` provider: Vertex lists no Claude
models, so a probe without `chat` checks that Google issues a token (and says it
listed nothing), `chat` asks the model, and a credentials problem is one clear line."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("google.auth")

from fake_vertex import NO_GCE, FakeVertex, fake_vertex

from llmroute.providers.probe import Probe, probe_pool
from llmroute.registry import parse_registry
from llmroute.registry.schema import Registry


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeVertex]:
    for name, value in NO_GCE.items():
        monkeypatch.setenv(name, value)
    with fake_vertex() as server:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(server.credentials_file(tmp_path)))
        monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
        yield server


def _registry(fake: FakeVertex) -> Registry:
    text = f"""
encoder: builtin:static
providers:
  vertex: {{kind: vertex, base_url: "{fake.base_url}"}}
  sidecar: {{kind: vertex, base_url: "{fake.base_url}", api_key_env: PROBE_VERTEX_TOKEN}}
models:
  sonnet: {{provider: vertex, model: "claude-sonnet-4-5@20250929"}}
  tokened: {{provider: sidecar, model: "claude-sonnet-4-5@20250929"}}
routes:
  - {{name: r, examples: [hi], target: sonnet}}
default: {{target: sonnet}}
"""
    return parse_registry(text, source="probe.yaml").registry


def _probe(fake: FakeVertex, **kwargs: object) -> dict[str, Probe]:
    results = asyncio.run(
        probe_pool(_registry(fake), environ={}, base_dir=Path.cwd(), timeout_s=5.0, **kwargs)  # type: ignore[arg-type]
    )
    return {r.model: r for r in results}


def test_without_chat_a_token_is_got_and_nothing_is_asked(fake: FakeVertex) -> None:
    got = _probe(fake, models=["sonnet"])["sonnet"]
    assert (got.status, got.listed) == ("warn", None)
    assert got.detail == (
        "a Google access token was issued; Vertex AI lists no Claude models (--chat asks)"
    )
    assert fake.issued == ["ya29.fake-1"] and fake.predicted == []
    assert got.where == fake.base_url


def test_chat_asks_the_model_one_short_question(fake: FakeVertex) -> None:
    got = _probe(fake, models=["sonnet"], chat=True)["sonnet"]
    assert got.status == "ok" and got.detail.startswith("answered (7 tokens) in ")
    assert [p.method for p in fake.predicted] == ["rawPredict"]
    assert fake.predicted[0].body["max_tokens"] == 16


def test_credentials_google_refuses_are_one_clear_failure(fake: FakeVertex) -> None:
    fake.refuse_tokens = True
    got = _probe(fake, models=["sonnet"], chat=True)["sonnet"]
    assert got.status == "fail"
    assert got.detail.startswith("Google refused to issue an access token (invalid_grant)")
    assert fake.predicted == []


def test_a_google_token_no_header_carries_fails_its_rows(fake: FakeVertex) -> None:
    """A token Google's credentials gave with a line break: the probe said a token was
    issued, and every request then failed as it was sent. Now the row fails, saying so,
    never showing it, and the other providers' rows are probed."""
    fake.token_tail = "\n"
    fake.static_tokens.add("sidecar-token")
    results = asyncio.run(
        probe_pool(
            _registry(fake),
            environ={"PROBE_VERTEX_TOKEN": "sidecar-token"},
            base_dir=Path.cwd(),
            timeout_s=5.0,
            chat=True,
        )
    )
    got = {r.model: r for r in results}
    assert got["sonnet"].status == "fail"
    assert got["sonnet"].detail.startswith(
        "Google's credentials gave an Authorization that holds a control character ('\\n')"
    )
    assert "ya29" not in got["sonnet"].detail
    assert got["tokened"].status == "ok"
    assert [p.token for p in fake.predicted] == ["sidecar-token"]


def test_an_unset_token_variable_sends_nothing(fake: FakeVertex) -> None:
    got = _probe(fake, models=["tokened"], chat=True)["tokened"]
    assert (got.status, got.detail) == (
        "fail",
        "PROBE_VERTEX_TOKEN is not set; nothing was sent",
    )
    assert fake.predicted == [] and fake.issued == []


def test_an_openai_provider_with_google_auth_says_googles_refusal(fake: FakeVertex) -> None:
    """``auth: google`` on an OpenAI-compatible provider: a token Google refuses is
    Google's words, as for ``kind: vertex``, not a key variable the registry never set."""
    fake.refuse_tokens = True
    text = f"""
encoder: builtin:static
providers:
  gemini: {{kind: openai, base_url: "{fake.base_url}/endpoints/openapi", auth: google}}
models:
  flash: {{provider: gemini, model: "google/gemini-2.5-flash"}}
routes:
  - {{name: r, examples: [hi], target: flash}}
default: {{target: flash}}
"""
    registry = parse_registry(text, source="probe.yaml").registry
    got = asyncio.run(probe_pool(registry, environ={}, base_dir=Path.cwd(), timeout_s=5.0))[0]
    assert got.status == "fail"
    assert got.detail.startswith("Google refused to issue an access token (invalid_grant)")
    assert fake.predicted == []
