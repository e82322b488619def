"""`probe_pool`: each pool model asked of its real server (fake OpenAI and Anthropic
upstreams on 127.0.0.1): reachable, credentials accepted, model listed, and with `chat`
answering; what it says for each way that goes wrong, and that nothing is sent where a
credential is missing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic, fake_anthropic
from fake_upstream import FakeUpstream, fake_upstream

from llmroute.providers import _transport
from llmroute.providers.probe import (
    ENCODER_ROW,
    PROBE_MAX_TOKENS,
    PROBE_PREFIX,
    PROBE_PROMPT,
    PROBE_SUFFIX,
    Probe,
    _answered,
    probe_pool,
)
from llmroute.registry import parse_registry
from llmroute.registry.schema import Model, Registry

KEY = "sk-probe-0123456789abcdef"


@pytest.fixture
def openai_up() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        server.listed = ["qwen2.5-7b-instruct", "bge-small", "models/gemini-2.0-flash"]
        yield server


@pytest.fixture
def anthropic_up() -> Iterator[FakeAnthropic]:
    with fake_anthropic() as server:
        server.listed = ("claude-sonnet-4-6", "claude-haiku-4-5")
        yield server


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _registry(openai_up: FakeUpstream, anthropic_up: FakeAnthropic, extra: str = "") -> Registry:
    text = f"""
encoder: builtin:static
providers:
  local: {{kind: openai, base_url: "{openai_up.url}", api_key_env: PROBE_LOCAL_KEY}}
  claude: {{kind: anthropic, base_url: "{anthropic_up.url}", api_key_env: PROBE_CLAUDE_KEY}}
  gone: {{kind: openai, base_url: "http://127.0.0.1:{_closed_port()}/v1"}}
  hosted: {{kind: openai, base_url: "{openai_up.url}", api_key_env: PROBE_UNSET_KEY}}
models:
  small:
    provider: local
    model: qwen2.5-7b-instruct
    params: {{temperature: 0.2}}
  typo: {{provider: local, model: qwen2.5-7b-instructt}}
  gemini: {{provider: local, model: gemini-2.0-flash}}
  embed: {{provider: local, model: bge-small, kind: embedding}}
  rerank: {{provider: local, model: bge-reranker, kind: rerank}}
  sonnet: {{provider: claude, model: claude-sonnet-4-6}}
  offline: {{provider: gone, model: m}}
  nokey: {{provider: hosted, model: qwen2.5-7b-instruct}}
{extra}routes:
  - {{name: r, examples: [hi], target: small}}
default: {{target: small}}
"""
    return parse_registry(text, source="probe.yaml").registry


ENV = {"PROBE_LOCAL_KEY": KEY, "PROBE_CLAUDE_KEY": KEY}


def _probe(registry: Registry, **kwargs: object) -> dict[str, Probe]:
    results = asyncio.run(
        probe_pool(registry, environ=ENV, base_dir=Path.cwd(), **kwargs)  # type: ignore[arg-type]
    )
    return {r.model: r for r in results}


def test_a_listing_checks_reach_keys_and_names_without_spending_tokens(
    openai_up: FakeUpstream, anthropic_up: FakeAnthropic
) -> None:
    got = _probe(_registry(openai_up, anthropic_up), timeout_s=5.0)
    assert list(got) == [
        "small", "typo", "gemini", "embed", "rerank", "sonnet", "offline", "nokey"
    ]  # fmt: skip
    status = {name: probe.status for name, probe in got.items()}
    assert status == {
        "small": "ok",
        "typo": "warn",
        "gemini": "ok",  # Gemini lists "models/gemini-2.0-flash"
        "embed": "ok",
        "rerank": "warn",  # not listed by this server
        "sonnet": "ok",
        "offline": "fail",
        "nokey": "fail",
    }
    assert got["small"].listed is True and got["small"].detail == "listed by the server"
    assert got["typo"].listed is False
    assert got["typo"].detail == (
        "not among the 3 models the server lists; closest: qwen2.5-7b-instruct"
    )
    assert got["offline"].detail.startswith("upstream request failed: connection refused")
    assert got["nokey"].detail == "PROBE_UNSET_KEY is not set; nothing was sent"
    assert got["sonnet"].where == anthropic_up.url
    # one listing per provider, with the key; no completion was asked for
    assert [(r.path, r.headers.get("authorization")) for r in openai_up.requests] == [
        ("/v1/models", f"Bearer {KEY}")
    ]
    assert [(r.path, r.headers.get("x-api-key")) for r in anthropic_up.requests] == [
        ("/v1/models?limit=1000", KEY)
    ]


def test_chat_asks_each_model_once_with_its_params(
    openai_up: FakeUpstream, anthropic_up: FakeAnthropic
) -> None:
    registry = _registry(openai_up, anthropic_up)
    asked = ["small", "typo", "embed", "rerank", "sonnet"]
    got = _probe(registry, models=asked, chat=True, timeout_s=5.0)
    assert {name: probe.status for name, probe in got.items()} == dict.fromkeys(asked, "ok")
    # the server answers a name it does not list: the answer settles it
    assert got["typo"].listed is False and got["typo"].detail.startswith("answered")
    assert got["small"].detail.startswith("answered (")
    assert got["embed"].detail.startswith("embedded (")
    assert got["rerank"].detail.startswith("reranked (2 results)")
    assert got["sonnet"].latency_ms is not None
    sent = openai_up.calls_to("qwen2.5-7b-instruct")[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"] == [{"role": "user", "content": PROBE_PROMPT}]
    assert sent.body["max_tokens"] == PROBE_MAX_TOKENS
    assert sent.body["temperature"] == 0.2  # the model's params, as the gateway sends them
    assert openai_up.calls_to("bge-small")[0].path == "/v1/embeddings"
    assert openai_up.calls_to("bge-reranker")[0].path == "/v1/rerank"
    assert anthropic_up.requests[-1].path == "/v1/messages"
    assert anthropic_up.requests[-1].body["max_tokens"] == PROBE_MAX_TOKENS


def test_chat_fits_its_question_to_a_reasoning_model(
    openai_up: FakeUpstream, anthropic_up: FakeAnthropic
) -> None:
    """A model that refuses ``max_tokens`` (OpenAI's reasoning models) is asked as the
    gateway would ask it, with its `rename_params`; without them it fails."""
    upstream = "o4-mini?unsupported=max_tokens,temperature"
    openai_up.listed = [upstream]
    thinker = f"  thinker: {{provider: local, model: '{upstream}'"
    renames = ", rename_params: {max_tokens: max_completion_tokens}"
    registry = _registry(openai_up, anthropic_up, extra=f"{thinker}{renames}}}\n")
    got = _probe(registry, models=["thinker"], chat=True, timeout_s=5.0)["thinker"]
    assert got.status == "ok", got.detail
    sent = openai_up.calls_to(upstream)[0].body
    assert sent["max_completion_tokens"] == PROBE_MAX_TOKENS and "max_tokens" not in sent

    bare = _registry(openai_up, anthropic_up, extra=f"{thinker}}}\n")
    refused = _probe(bare, models=["thinker"], chat=True, timeout_s=5.0)["thinker"]
    assert refused.status == "fail"
    assert "Unsupported parameter: 'max_tokens'" in refused.detail
    assert "(the model's rename_params / drop_params fit what it is sent)" in refused.detail


def test_a_refused_key_is_named_and_never_shown(
    openai_up: FakeUpstream, anthropic_up: FakeAnthropic
) -> None:
    openai_up.key = "sk-the-right-one-0123456789"
    got = _probe(_registry(openai_up, anthropic_up), models=["small"], chat=True, timeout_s=5.0)
    probe = got["small"]
    assert probe.status == "fail"
    assert probe.detail == "credentials refused (HTTP 401); the key comes from PROBE_LOCAL_KEY"
    assert KEY not in repr(probe)
    # the refused listing settles it: no completion is sent
    assert [r.path for r in openai_up.requests] == ["/v1/models"]


def test_a_server_that_lists_nothing_is_a_warning_until_a_chat_answers(
    openai_up: FakeUpstream, anthropic_up: FakeAnthropic
) -> None:
    openai_up.listed = None  # GET /models answers 404
    registry = _registry(openai_up, anthropic_up)
    listed = _probe(registry, models=["small"], timeout_s=5.0)["small"]
    assert (listed.status, listed.listed) == ("warn", None)
    assert listed.detail == "reachable; the server does not list its models (HTTP 404)"
    asked = _probe(registry, models=["small"], chat=True, timeout_s=5.0)["small"]
    assert asked.status == "ok"
    assert asked.detail.endswith("; reachable; the server does not list its models (HTTP 404)")


def test_a_server_that_does_not_implement_its_listing_is_one_that_lists_nothing(
    openai_up: FakeUpstream, anthropic_up: FakeAnthropic
) -> None:
    """501 Not Implemented says what a 404 says: the server is up and lists nothing."""
    openai_up.listing_status = 501
    registry = _registry(openai_up, anthropic_up)
    listed = _probe(registry, models=["small"], timeout_s=5.0)["small"]
    assert (listed.status, listed.listed) == ("warn", None)
    assert listed.detail == "reachable; the server does not list its models (HTTP 501)"
    asked = _probe(registry, models=["small"], chat=True, timeout_s=5.0)["small"]
    assert asked.status == "ok", asked.detail
    assert asked.detail.endswith("; reachable; the server does not list its models (HTTP 501)")


def test_a_failing_listing_fails_the_row_unless_the_chat_answers(
    openai_up: FakeUpstream, anthropic_up: FakeAnthropic
) -> None:
    """Without --chat the listing is all there is to go on: its 5xx fails the row. With
    --chat the answer settles it: the failed listing is a warning beside it, and a model
    whose chat fails too fails, both said."""
    openai_up.listing_status = 503
    extra = '  broken: {provider: local, model: "broken?status=500"}\n'
    registry = _registry(openai_up, anthropic_up, extra)
    listed = _probe(registry, models=["small"], timeout_s=5.0)["small"]
    assert listed.status == "fail"
    assert listed.detail.startswith("listing its models failed: upstream returned HTTP 503")
    assert listed.detail.endswith("(--chat asks the model itself)")
    got = _probe(registry, models=["small", "broken"], chat=True, timeout_s=5.0)
    assert (got["small"].status, got["small"].listed) == ("warn", None)
    assert got["small"].detail.startswith("answered (")
    assert "; listing its models failed: upstream returned HTTP 503" in got["small"].detail
    assert got["broken"].status == "fail"
    assert got["broken"].detail.startswith("upstream returned HTTP 500")
    assert "; listing its models failed: upstream returned HTTP 503" in got["broken"].detail


_PAGE = b"<!DOCTYPE html><html><body>" + b"<p>Welcome to our site</p>" * 8000 + b"</body></html>"


@pytest.mark.parametrize(
    ("content_type", "body", "said"),
    [
        ("text/html", _PAGE, "upstream returned a body that is not JSON"),
        (
            "application/json",
            b'["qwen2.5-7b-instruct"]',
            "upstream returned JSON that is no model list: it holds 1 entry, none with a "
            "string 'id'",
        ),
        ("application/json", b'"ok"', "upstream returned JSON that is not an object"),
        (
            "application/json",
            b'{"status": "ok"}',
            "upstream returned JSON that is no model list: an object without 'data' "
            "(its keys: 'status')",
        ),
        (
            "application/json",
            b'{"models": [{"name": "qwen2.5-7b-instruct"}], "a": 1, "b": 2, "'
            + b"k" * 9000
            + b'": 3}',
            "upstream returned JSON that is no model list: an object without 'data' "
            "(its keys: 'models', 'a', 'b' and 1 more)",
        ),
        (
            "application/json",
            b'{"' + b"k" * 9000 + b'": 3}',
            "upstream returned JSON that is no model list: an object without 'data' "
            f"(its keys: '{'k' * 38}…)",
        ),
        (
            "application/json",
            b'{"object": "list", "data": null}',
            "upstream returned JSON that is no model list: its 'data' is null, not a list",
        ),
        (
            "application/json",
            b'{"data": [{"name": "qwen2.5-7b-instruct"}, {"id": 7}]}',
            "upstream returned JSON that is no model list: its 'data' holds 2 entries, none "
            "with a string 'id'",
        ),
        (
            "application/json",
            b"{}",
            "upstream returned JSON that is no model list: an empty object",
        ),
    ],
    ids=[
        "html-page",
        "json-list",
        "json-string",
        "status-ok",
        "many-keys",
        "long-key",
        "data-null",
        "no-ids",
        "empty",
    ],
)
def test_a_listing_reached_but_unreadable_fails_as_a_5xx_does(
    openai_up: FakeUpstream,
    anthropic_up: FakeAnthropic,
    content_type: str,
    body: bytes,
    said: str,
) -> None:
    """A server that answers ``GET /models`` 200 with what is no model list (a catch-all
    HTML page) was reached: as a failing listing, the row fails without --chat, saying
    what came back (never the page), and with --chat the answer settles it. It was taken
    for a server not reached: a failure with no chat sent."""
    openai_up.listing_body = (content_type, body)
    registry = _registry(openai_up, anthropic_up)
    listed = _probe(registry, models=["small"], timeout_s=5.0)["small"]
    assert listed.status == "fail"
    assert listed.detail == f"listing its models failed: {said} (--chat asks the model itself)"
    asked = _probe(registry, models=["small"], chat=True, timeout_s=5.0)["small"]
    assert (asked.status, asked.listed) == ("warn", None), asked.detail
    assert asked.detail.startswith("answered (")
    assert asked.detail.endswith(f"; listing its models failed: {said}")
    assert [r.path for r in openai_up.requests][-1] == "/v1/chat/completions"


def test_a_listing_too_large_to_read_fails_as_a_5xx_does(
    openai_up: FakeUpstream, anthropic_up: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe tells a listing that came back unreadable by the transport's words: this
    pins the last of them (an answer past the body limit, made 1 MiB here), so that a
    change of wording fails here instead of passing for a server not reached."""
    monkeypatch.setattr(_transport, "MAX_BODY_BYTES", 1 << 20)
    openai_up.listing_body = ("application/json", b'{"data": "' + b"x" * (1 << 20) + b'"}')
    said = "upstream answered with more than 1 MiB"
    listed = _probe(_registry(openai_up, anthropic_up), models=["small"], timeout_s=5.0)["small"]
    assert listed.status == "fail"
    assert listed.detail == f"listing its models failed: {said} (--chat asks the model itself)"


@pytest.mark.parametrize(
    ("kind", "answer", "said"),
    [
        ("chat", {"usage": {"completion_tokens": 1}}, "answered (1 token)"),
        ("chat", {"usage": {"completion_tokens": 2}}, "answered (2 tokens)"),
        ("embedding", {"data": [{"embedding": [0.5]}]}, "embedded (1 dimension)"),
        ("rerank", {"results": [{"index": 0}]}, "reranked (1 result)"),
    ],
)
def test_what_came_back_is_counted_in_words(
    kind: str, answer: dict[str, object], said: str
) -> None:
    assert _answered(Model(provider="p", model="m", kind=kind), answer) == said


def test_a_bare_array_of_models_is_a_model_list(
    openai_up: FakeUpstream, anthropic_up: FakeAnthropic
) -> None:
    """Some OpenAI-compatible servers (Together's) answer ``GET /models`` with the
    entries bare, not under ``data``: that is their model list (it failed the listing)."""
    openai_up.listing_body = (
        "application/json",
        b'[{"id": "qwen2.5-7b-instruct", "object": "model"}, {"id": "other", "object": "model"}]',
    )
    got = _probe(_registry(openai_up, anthropic_up), models=["small", "typo"], timeout_s=5.0)
    assert (got["small"].status, got["small"].listed) == ("ok", True), got["small"].detail
    assert got["small"].detail == "listed by the server"
    assert got["typo"].status == "warn" and got["typo"].listed is False, got["typo"].detail


def test_a_listing_of_no_models_is_not_one_of_another_shape(
    openai_up: FakeUpstream, anthropic_up: FakeAnthropic
) -> None:
    """``{"data": []}`` is a server that lists no models (a warning); an object without
    a model list is the listing failing (above). Both read as the first."""
    openai_up.listing_body = ("application/json", b'{"object": "list", "data": []}')
    registry = _registry(openai_up, anthropic_up)
    listed = _probe(registry, models=["small"], timeout_s=5.0)["small"]
    assert (listed.status, listed.listed) == ("warn", None)
    assert listed.detail == "reachable; the server listed no models"


def test_a_key_holding_a_line_break_fails_its_rows_naming_the_variable(
    openai_up: FakeUpstream, anthropic_up: FakeAnthropic
) -> None:
    """A key read with a file's last line break: every request raised aiohttp's
    ValueError, and the probe stopped on it. Its rows fail, nothing sent, the key not
    shown; the other providers are probed."""
    registry = _registry(openai_up, anthropic_up)
    environ = {**ENV, "PROBE_LOCAL_KEY": KEY + "\n"}
    results = asyncio.run(
        probe_pool(registry, models=["small", "sonnet"], environ=environ, base_dir=Path.cwd())
    )
    got = {r.model: r for r in results}
    assert got["small"].status == "fail"
    assert got["small"].detail == (
        "environment variable PROBE_LOCAL_KEY holds a control character ('\\n'), which no "
        "HTTP header carries (a line break read from a file with it?); its value is not "
        "shown; nothing was sent"
    )
    assert KEY not in got["small"].detail
    assert got["sonnet"].status == "ok"
    assert openai_up.requests == []


def test_a_server_listing_one_other_model_names_it(
    openai_up: FakeUpstream, anthropic_up: FakeAnthropic
) -> None:
    openai_up.listed = ["qwen2.5-7b-instruct"]
    got = _probe(_registry(openai_up, anthropic_up), models=["typo"], timeout_s=5.0)["typo"]
    assert (got.status, got.listed) == ("warn", False)
    assert got.detail == "not the one model the server lists, qwen2.5-7b-instruct"


def test_a_model_that_fails_or_hangs_fails_its_probe_in_bounded_time(
    openai_up: FakeUpstream, anthropic_up: FakeAnthropic
) -> None:
    openai_up.listed = ["broken?status=500", "slow?delay=10"]
    extra = """  broken: {provider: local, model: "broken?status=500"}
  slow: {provider: local, model: "slow?delay=10"}
"""
    registry = _registry(openai_up, anthropic_up, extra)
    got, seconds = asyncio.run(_timed(registry))
    assert got["broken"].status == "fail"
    assert got["broken"].detail.startswith("upstream returned HTTP 500")
    assert got["slow"].status == "fail"
    assert got["slow"].detail == "no answer within 0.5s; listed by the server"
    assert seconds < 5  # the hanging model did not hold the probe for its 10 s


async def _timed(registry: Registry) -> tuple[dict[str, Probe], float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await probe_pool(
        registry,
        models=["broken", "slow"],
        chat=True,
        timeout_s=0.5,
        environ=ENV,
        base_dir=Path.cwd(),
    )
    return {r.model: r for r in results}, loop.time() - started


def test_a_remote_routing_encoder_is_probed_too(openai_up: FakeUpstream) -> None:
    text = f"""
encoder: {{kind: openai, base_url: "{openai_up.url}", model: bge-small}}
providers:
  local: {{kind: openai, base_url: "{openai_up.url}"}}
models:
  small: {{provider: local, model: qwen2.5-7b-instruct}}
routes:
  - {{name: r, examples: [hi], target: small}}
default: {{target: small}}
"""
    registry = parse_registry(text, source="probe.yaml").registry
    results = asyncio.run(probe_pool(registry, environ={}, base_dir=Path.cwd(), timeout_s=5.0))
    encoder = results[-1]
    assert (encoder.model, encoder.upstream, encoder.status) == (ENCODER_ROW, "bge-small", "ok")
    assert encoder.detail.startswith("embedded (")
    # asked for named models only, the encoder is left out
    named = asyncio.run(
        probe_pool(registry, models=["small"], environ={}, base_dir=Path.cwd(), timeout_s=5.0)
    )
    assert [r.model for r in named] == ["small"]


def test_a_missing_gguf_file_fails_without_loading_anything(tmp_path: Path) -> None:
    text = """
encoder: builtin:static
providers:
  inproc: {kind: llamacpp}
models:
  tiny: {provider: inproc, model: models/missing.gguf}
routes:
  - {name: r, examples: [hi], target: tiny}
default: {target: tiny}
"""
    registry = parse_registry(text, source="probe.yaml", base_dir=tmp_path).registry
    [probe] = asyncio.run(probe_pool(registry, environ={}, base_dir=tmp_path, timeout_s=5.0))
    assert probe.status == "fail"
    assert probe.where == str(tmp_path / "models" / "missing.gguf")
    # without the local extra the message names it; with it, the missing file
    assert "llama-cpp-python" in probe.detail or "GGUF file not found" in probe.detail


def test_each_deployment_of_a_model_gets_its_own_row(
    openai_up: FakeUpstream, anthropic_up: FakeAnthropic
) -> None:
    """A model balanced over two servers: the one down is named, the other passes."""
    extra = """  balanced:
    model: qwen2.5-7b-instruct
    deployments: [{provider: local}, {provider: gone}]
"""
    registry = _registry(openai_up, anthropic_up, extra)
    rows = asyncio.run(
        probe_pool(registry, models=["balanced"], environ=ENV, base_dir=Path.cwd(), timeout_s=5)
    )
    assert [(r.model, r.provider, r.status) for r in rows] == [
        ("balanced", "local", "ok"),
        ("balanced", "gone", "fail"),
    ]
    assert rows[1].detail.startswith("upstream request failed: connection refused")


def test_a_refusal_without_any_credential_configured_says_so(
    openai_up: FakeUpstream, anthropic_up: FakeAnthropic
) -> None:
    openai_up.key = "sk-the-right-one-0123456789"
    text = f"""
encoder: builtin:static
providers:
  open: {{kind: openai, base_url: "{openai_up.url}"}}
models:
  m: {{provider: open, model: qwen2.5-7b-instruct}}
routes:
  - {{name: r, examples: [hi], target: m}}
default: {{target: m}}
"""
    registry = parse_registry(text, source="probe.yaml").registry
    [probe] = asyncio.run(probe_pool(registry, environ={}, base_dir=Path.cwd(), timeout_s=5.0))
    assert probe.detail == (
        "credentials refused (HTTP 401); "
        "the registry gives this provider no api_key_env or headers_env"
    )


def test_a_raw_text_model_is_probed_with_a_fill_in_the_middle_completion(
    openai_up: FakeUpstream, anthropic_up: FakeAnthropic
) -> None:
    """With `chat`, a model declared ``text_completions`` also gets the completion the
    gateway would send it: a server refusing the ``suffix`` field fails the row and says
    what to set; a ``fim_template`` writes the suffix in; a base model refusing chat
    only warns."""
    extra = """\
  coder: {provider: local, model: "code?nochat=1", text_completions: true, params: {top_p: 0.5}}
  vllm: {provider: local, model: "code?nosuffix=1", text_completions: true}
  templated:
    provider: local
    model: "code?nosuffix=1&x=2"
    text_completions: true
    fim_template: "<PRE> {prefix} <SUF>{suffix} <MID>"
"""
    registry = _registry(openai_up, anthropic_up, extra)
    got = _probe(registry, models=["coder", "vllm", "templated", "small"], chat=True, timeout_s=5)
    assert {name: p.status for name, p in got.items()} == {
        "coder": "warn",
        "vllm": "fail",
        "templated": "ok",
        "small": "ok",
    }
    assert got["coder"].detail.startswith("completed with a suffix (3 tokens) in ")
    assert "chat refused: " in got["coder"].detail and "no chat template" in got["coder"].detail
    assert got["vllm"].detail.startswith("completion with a suffix: ")
    assert "give the model a fim_template" in got["vllm"].detail
    assert got["templated"].detail.startswith("completed with a fim_template")
    (raw,) = [r for r in openai_up.calls_to("code?nochat=1") if r.path == "/v1/completions"]
    assert raw.body["prompt"] == PROBE_PREFIX and raw.body["suffix"] == PROBE_SUFFIX
    assert raw.body["top_p"] == 0.5 and raw.body["max_tokens"] == PROBE_MAX_TOKENS
    (templated,) = [
        r for r in openai_up.calls_to("code?nosuffix=1&x=2") if r.path.endswith("/v1/completions")
    ]
    assert templated.body["prompt"] == f"<PRE> {PROBE_PREFIX} <SUF>{PROBE_SUFFIX} <MID>"
    assert "suffix" not in templated.body
    assert all(r.path != "/v1/completions" for r in openai_up.calls_to("qwen2.5-7b-instruct"))
