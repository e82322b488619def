"""`telemetry.responses`: the answers in the decision log, through a real `llmroute
serve` (echo models: the answer is the request's text, so what is stored can be checked
word for word) and through the SDK; answers, streamed ones, cache hits; redacted and cut
as the registry says, and absent unless asked."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest
from fake_anthropic import fake_anthropic
from fake_upstream import fake_upstream
from gateway_proc import Served, serve_text, wait_for

from llmroute import Router
from llmroute.telemetry.judge import EXACT_MAX_CHARS
from llmroute.telemetry.record import LoggedDecision, ShadowRecord
from llmroute.telemetry.store import open_store

T = TypeVar("T", LoggedDecision, ShadowRecord)

REGISTRY = """
encoder: builtin:static
providers:
  echo: {kind: echo}
models:
  small: {provider: echo, model: echo-small}
routes:
  - {name: chat, examples: ["hello there"], target: small}
default: {target: small}
cache: {ttl_s: 60}
telemetry:
  url: "sqlite:///%(db)s"
  prompts: hash
  responses: %(mode)s   # unquoted off: YAML's false, read as "off"
  max_response_chars: 120
  flush_seconds: 0.05
"""
SECRET = "write to alice@example.com about the invoice"


TOOLS = """
encoder: builtin:static
providers:
  anth: {kind: anthropic, base_url: "%(url)s", timeout_s: 5}
models:
  claude: {provider: anth, model: claude-x}
  ref: {provider: anth, model: claude-ref}
routes:
  - {name: chat, examples: ["hello there"], target: claude}
default: {target: claude}
cache: {ttl_s: 60}
shadow: {rate: 1.0, reference: ref}
telemetry:
  url: "sqlite:///%(db)s"
  prompts: hash
  responses: full
  flush_seconds: 0.05
"""
SHADOWED = """
encoder: builtin:static
providers:
  echo: {kind: echo}
models:
  small: {provider: echo, model: echo-small}
  ref: {provider: echo, model: echo-ref}
routes:
  - {name: chat, examples: ["hello there"], target: small}
default: {target: small}
shadow: {rate: 1.0, reference: ref, judge: {kind: exact}}
telemetry:
  url: "sqlite:///%(db)s"
  prompts: hash
  responses: full
  max_response_chars: 120
  flush_seconds: 0.05
"""
SEARCH: list[openai.types.chat.ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {"name": "search", "parameters": {"type": "object", "properties": {}}},
    }
]


def _logged(db: Path, n: int, what: str, read: Callable[[Any], list[T]]) -> list[T]:
    """The log's first `n` (or more) of `what`, by time, once they are written."""
    found: list[T] = []

    def enough() -> bool:
        store = open_store(f"sqlite:///{db}")
        try:
            found[:] = read(store)
        except Exception:
            return False
        finally:
            store.close()
        return len(found) >= n

    wait_for(f"{n} {what} in the log", enough, 15)
    return sorted(found, key=lambda d: d.ts)


def _rows(db: Path, n: int) -> list[LoggedDecision]:
    return _logged(db, n, "decisions", lambda store: store.decisions(0.0))


def _shadows(db: Path, n: int) -> list[ShadowRecord]:
    return _logged(db, n, "shadows", lambda store: store.shadows(0.0))


@pytest.fixture
def redacted(tmp_path: Path) -> Iterator[tuple[Served, Path]]:
    db = tmp_path / "log.db"
    with serve_text(REGISTRY % {"db": db, "mode": "redacted"}, tmp_path, env={
        "LLMROUTE_TELEMETRY_URL": f"sqlite:///{db}"
    }) as served:  # fmt: skip
        yield served, db


def test_answers_are_stored_redacted_streamed_or_not(redacted: tuple[Served, Path]) -> None:
    served, db = redacted
    long = "word " * 100
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0) as client:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": SECRET}])
        chunks = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hello there friend"}],
            stream=True,
        )  # fmt: skip
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": long}])
        client.chat.completions.create(  # the same request again: a cache hit
            model="auto", messages=[{"role": "user", "content": SECRET}]
        )
        again = client.chat.completions.create(  # the stream again: a cache hit too
            model="auto", messages=[{"role": "user", "content": "hello there friend"}],
            stream=True,
        )  # fmt: skip
        assert "".join(c.choices[0].delta.content or "" for c in again if c.choices)
        streamed = client.chat.completions.create(  # read up to the cut, no further
            model="auto", messages=[{"role": "user", "content": "streamed " + long}],
            stream=True,
        )  # fmt: skip
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    rows = _rows(db, 6)
    assert [r.response for r in rows[:2]] == [
        "write to <EMAIL_1> about the invoice",  # PII replaced before it is stored
        "hello there friend",
    ]
    assert rows[2].response == long.strip()[:120]  # cut at max_response_chars
    assert rows[3].cache_hit and rows[3].response == "write to <EMAIL_1> about the invoice"
    assert rows[4].cache_hit and rows[4].stream and rows[4].response == "hello there friend"
    assert rows[5].stream and rows[5].response == ("streamed " + long)[:120]
    assert all(r.prompt is None for r in rows)  # prompts: hash keeps no text


def test_a_shadowed_stream_is_judged_whole_and_stored_cut(tmp_path: Path) -> None:
    """The decision log keeps a stream's answer up to ``max_response_chars``; the shadow's
    judge reads further, as far as it reads a whole answer (the exact judge, its final
    answer at the end, past the log's cut, up to `EXACT_MAX_CHARS`)."""
    db = tmp_path / "log.db"
    env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{db}"}
    text = "word " * 40 + "so the answer is 7"
    with (
        serve_text(SHADOWED % {"db": db}, tmp_path, env=env) as served,
        openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0) as client,
    ):
        chunks = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": text}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    [row] = _rows(db, 1)
    assert row.stream and row.response == text[:120]
    [shadow] = _shadows(db, 1)
    assert shadow.routed_answer == text[:120]
    assert shadow.routed_ok and shadow.extra["routed_final"] == "7"


def test_a_shadowed_stream_is_read_as_far_as_its_judge_reads(tmp_path: Path) -> None:
    """A shadowed stream's answer was held whole for the judge, however long: it is read
    as far as the judge reads (the exact judge: `EXACT_MAX_CHARS`), one character past
    telling the judge it was cut, which then judges it as a whole answer that long."""
    db = tmp_path / "log.db"
    env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{db}"}
    text = "x" * EXACT_MAX_CHARS + " so the answer is 7"  # the echo streams a word an event
    with (
        serve_text(SHADOWED % {"db": db}, tmp_path, env=env) as served,
        openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0) as client,
    ):
        for stream in (True, False):
            answer = client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": text}], stream=stream
            )
            if stream:
                assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
    shadows = _shadows(db, 2)
    assert [s.routed_answer for s in shadows] == [text[:120]] * 2
    assert [(s.routed_ok, s.judge_error) for s in shadows] == [
        (None, "the routed answer is longer than 100,000 characters")
    ] * 2


def test_a_stream_of_several_choices_is_stored_as_choice_0s_text(tmp_path: Path) -> None:
    """A whole answer of several choices (``n``) is stored as choice 0's text; a stream
    of them, relayed or replayed from the cache, was stored as every choice's words
    interleaved ("two two words words")."""
    db = tmp_path / "log.db"
    env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{db}"}
    ask: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "two words"}
    ]
    with (
        serve_text(REGISTRY % {"db": db, "mode": "full"}, tmp_path, env=env) as served,
        openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0) as client,
    ):
        whole = client.chat.completions.create(model="auto", messages=ask, n=2)
        assert [c.message.content for c in whole.choices] == ["two words"] * 2
        for _ in range(2):  # relayed, then a cache hit
            chunks = client.chat.completions.create(model="auto", messages=ask, n=2, stream=True)
            assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}
    rows = _rows(db, 3)
    assert [r.response for r in rows] == ["two words"] * 3
    assert rows[2].cache_hit and rows[2].stream


def test_a_streams_tool_calls_are_stored_as_a_whole_answers_are(tmp_path: Path) -> None:
    """A whole answer's tool calls are kept with its text (in the decision log and as
    the shadow's routed answer); a stream's, relayed or replayed from the cache, were
    dropped: only its text deltas were read."""
    db = tmp_path / "log.db"
    env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{db}"}
    ask: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "find routers"}
    ]
    with (
        fake_anthropic() as upstream,
        serve_text(TOOLS % {"db": db, "url": upstream.url}, tmp_path, env=env) as served,
        openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0) as client,
    ):
        whole = client.chat.completions.create(model="auto", messages=ask, tools=SEARCH)
        assert whole.choices[0].message.tool_calls
        for _ in range(2):  # relayed, then a cache hit
            chunks = client.chat.completions.create(
                model="auto", messages=ask, tools=SEARCH, stream=True
            )
            assert any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    rows = _rows(db, 3)
    stored = rows[0].response
    assert stored is not None and '"name": "search"' in stored
    assert [r.response for r in rows] == [stored] * 3
    assert rows[1].stream and rows[2].stream and rows[2].cache_hit
    assert [s.routed_answer for s in _shadows(db, 2)] == [stored] * 2


CALLS = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 5}
  echo: {kind: echo}
models:
  calls: {provider: up, model: "up-calls?choices=1&tools=1&calls=2&callindex=%(index)s"}
  ref: {provider: echo, model: echo-ref}
routes:
  - {name: chat, examples: ["hello there"], target: calls}
default: {target: calls}
shadow: {rate: 1.0, reference: ref}
telemetry:
  url: "sqlite:///%(db)s"
  prompts: hash
  responses: full
  flush_seconds: 0.05
"""


def _streamed(client: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        return [
            json.loads(line[5:])
            for line in response.iter_lines()
            if line.startswith("data:") and line != "data: [DONE]"
        ]


@pytest.mark.parametrize("index", ["0,-1", '0,"1"'], ids=["negative", "string"])
def test_a_streams_calls_are_stored_as_the_client_was_sent_them(tmp_path: Path, index: str) -> None:
    """Two calls streamed interleaved, the second with an index that is no index: the
    Messages and Responses fronts merged a negative one into call 0 (one call, its
    arguments ``{"q": {"q": ...``), where the decision log and the shadow's routed answer
    kept it apart, before call 0. Now each is the call its id names, everywhere."""
    db = tmp_path / "log.db"
    env = {"LLMROUTE_TELEMETRY_URL": f"sqlite:///{db}"}
    with fake_upstream() as upstream:
        quoted = index.replace('"', '\\"')  # in the model's YAML string
        registry = CALLS % {"db": db, "url": upstream.url, "index": quoted}
        with (
            serve_text(registry, tmp_path, env=env) as served,
            httpx.Client(base_url=served.url, timeout=10) as client,
        ):
            ask = [{"role": "user", "content": "hi"}]
            chat = _streamed(client, "/v1/chat/completions", {"model": "calls", "messages": ask})
            message = _streamed(
                client, "/v1/messages", {"model": "calls", "max_tokens": 50, "messages": ask}
            )
            response = _streamed(client, "/v1/responses", {"model": "calls", "input": "hi"})
    assert any(c["choices"][0]["delta"].get("tool_calls") for c in chat)
    blocks: dict[int, list[str]] = {}
    for event in message:
        if event["type"] == "content_block_start":
            blocks[event["index"]] = [event["content_block"]["name"], ""]
        elif event["type"] == "content_block_delta":
            blocks[event["index"]][1] += event["delta"]["partial_json"]
    items = response[-1]["response"]["output"]
    sent = [{"name": "lookup", "arguments": json.dumps({"q": "echo: hi", "n": n})} for n in (0, 1)]
    assert [{"name": n, "arguments": a} for n, a in blocks.values()] == sent
    assert [{"name": i["name"], "arguments": i["arguments"]} for i in items] == sent
    logged = [json.loads(r.response or "") for r in _rows(db, 3)]
    assert logged == [sent] * 3
    shadowed = [json.loads(s.routed_answer or "") for s in _shadows(db, 3)]
    assert shadowed == [sent] * 3


def test_the_sdk_stores_a_streams_tool_calls_as_a_whole_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "log.db"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{db}")
    registry = tmp_path / "r.yaml"
    ask = [{"role": "user", "content": "find routers"}]
    with fake_anthropic() as upstream:
        registry.write_text(TOOLS % {"db": db, "url": upstream.url})
        with Router.from_yaml(registry) as router:
            router.chat.completions.create(messages=ask, tools=SEARCH)
            with router.chat.completions.create(messages=ask, tools=SEARCH, stream=True) as stream:
                assert list(stream)
    rows = _rows(db, 2)
    assert rows[0].response is not None and '"name": "search"' in rows[0].response
    assert rows[1].stream and rows[1].response == rows[0].response


def test_answers_are_not_stored_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "log.db"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{db}")  # it wins over the file
    registry = tmp_path / "r.yaml"
    registry.write_text(REGISTRY % {"db": db, "mode": "off"})
    with Router.from_yaml(registry) as router:
        router.chat.completions.create(messages=[{"role": "user", "content": SECRET}])
    assert _rows(db, 1)[0].response is None


def test_the_sdk_stores_answers_and_streams_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "log.db"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{db}")
    registry = tmp_path / "r.yaml"
    registry.write_text(REGISTRY % {"db": db, "mode": "full"})
    with Router.from_yaml(registry) as router:
        router.chat.completions.create(messages=[{"role": "user", "content": SECRET}])
        with router.chat.completions.create(
            messages=[{"role": "user", "content": "stream me back"}], stream=True
        ) as stream:
            assert list(stream)
        with router.chat.completions.create(  # several choices: choice 0's text is kept
            messages=[{"role": "user", "content": "two words"}], n=2, stream=True
        ) as stream:
            assert {c.choices[0].index for c in stream if c.choices} == {0, 1}
        with router.chat.completions.create(  # read up to the cut, no further
            messages=[{"role": "user", "content": "word " * 100}], stream=True
        ) as stream:
            assert list(stream)
    rows = _rows(db, 4)
    assert [r.response for r in rows[:3]] == [SECRET, "stream me back", "two words"]
    assert rows[3].response == ("word " * 100)[:120]


def test_the_sdk_reads_a_stream_no_further_than_its_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream that goes on after its ``[DONE]`` (a content chunk, a second
    ``[DONE]``): the caller's chunks end at the first, and the stored answer is what they
    said, as the gateway relays and stores that stream. Both held the late chunk."""
    db = tmp_path / "log.db"
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{db}")
    registry = tmp_path / "r.yaml"
    with fake_upstream() as upstream:
        registry.write_text(
            (REGISTRY % {"db": db, "mode": "full"})
            .replace("  echo: {kind: echo}", f'  up: {{kind: openai, base_url: "{upstream.url}"}}')
            .replace(
                "{provider: echo, model: echo-small}", '{provider: up, model: "w?after=chunk"}'
            )
        )
        with (
            Router.from_yaml(registry) as router,
            router.chat.completions.create(
                messages=[{"role": "user", "content": "say it"}], stream=True
            ) as stream,
        ):
            said = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert said.strip() == "echo: say it"
    [row] = _rows(db, 1)
    assert row.stream and row.response == said
