"""``x-request-id`` on every answer (`llmroute.server.request_ids`), errors before
routing included, as OpenAI sends it: the official clients expose it as
``err.request_id`` and ``completion._request_id``; and the request line
(``--log-requests``) of such an error names it, so an operator can find it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text, wait_for

from llmroute.server.errors import AnswerUnhandled
from llmroute.server.watched_send import StampRequestIds

KEY_ENV = "LLMROUTE_TEST_IDS_KEY"
KEY = "sk-ids-0123456789abcdef"
ONCE_ENV = "LLMROUTE_TEST_IDS_ONCE_KEY"
ONCE_KEY = "sk-ids-once-9876543210"
TIGHT_ENV = "LLMROUTE_TEST_IDS_TIGHT_KEY"
TIGHT_KEY = "sk-ids-tight-1357924680"
TIGHT_EMBED_ENV = "LLMROUTE_TEST_IDS_TIGHT_EMBED_KEY"
TIGHT_EMBED_KEY = "sk-ids-tight-embed-2468013579"
REGISTRY = f"""
encoder: builtin:static
providers:
  fake: {{kind: openai, base_url: "%(url)s", timeout_s: 5}}
models:
  small: {{provider: fake, model: small}}
  slow: {{provider: fake, model: "slow?delay=3"}}
  embed: {{provider: fake, model: up-embed, kind: embedding}}
  embed-picky: {{provider: fake, model: "emb-picky?status=400", kind: embedding}}
  embed-b: {{provider: fake, model: up-embed, kind: embedding}}
  embed-picky-b: {{provider: fake, model: "emb-picky?status=400", kind: embedding}}
  embed-slow: {{provider: fake, model: "slow?delay=3", kind: embedding}}
routes:
  - {{name: chat, examples: ["hello there", "how are you today"], target: small}}
default: {{target: small}}
auth:
  keys:
    - {{name: team, key_env: {KEY_ENV}}}
    - {{name: once, key_env: {ONCE_ENV}, rpm: 1}}
    - {{name: tight, key_env: {TIGHT_ENV}, tpm: 50}}
    - {{name: tight-embed, key_env: {TIGHT_EMBED_ENV}, tpm: 50}}
"""
ID = re.compile(r"[0-9a-f]{24}")  # a decision id's format: ms, then random
Clients = Callable[..., openai.OpenAI]  # a key, or none for ours
ASK = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    args = ["--log-format", "json", "--log-requests", "--no-access-log", "--max-body-bytes", "4096"]
    env = {
        KEY_ENV: KEY,
        ONCE_ENV: ONCE_KEY,
        TIGHT_ENV: TIGHT_KEY,
        TIGHT_EMBED_ENV: TIGHT_EMBED_KEY,
        "LLMROUTE_TELEMETRY_URL": "off",
    }
    tmp = tmp_path_factory.mktemp("request_ids")
    with serve_text(REGISTRY % {"url": upstream.url}, tmp, args, env) as served:
        yield served


@pytest.fixture
def client(gateway: Served) -> Iterator[Clients]:
    """A client of the gateway with a key (ours by default); those made are closed when
    the test ends, not left to the collector (an unraisable ResourceWarning in a later
    test)."""
    with contextlib.ExitStack() as made:

        def of(key: str = KEY) -> openai.OpenAI:
            c = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
            return made.enter_context(c)

        yield of


def _lines(gateway: Served) -> list[dict[str, Any]]:
    lines = gateway.log_text().splitlines()
    return [r for r in map(json.loads, filter(None, lines)) if r["logger"] == "llmroute.requests"]


def _line_of(gateway: Served, request_id: str) -> dict[str, Any]:
    wait_for(
        f"the request line of {request_id}",
        lambda: any(r.get("request_id") == request_id for r in _lines(gateway)),
        10,
    )
    (line,) = [r for r in _lines(gateway) if r.get("request_id") == request_id]
    return line


def test_a_routed_answer_keeps_its_decision_id(gateway: Served, client: Clients) -> None:
    raw = client().chat.completions.with_raw_response.create(**ASK)
    assert raw.headers["x-request-id"] == raw.headers["x-llmroute-decision-id"]
    assert raw.parse()._request_id == raw.headers["x-llmroute-decision-id"]


def test_a_key_refused_has_a_request_id_the_log_names(gateway: Served, client: Clients) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        client("sk-not-a-key-at-all").chat.completions.create(**ASK)
    request_id = refused.value.request_id
    assert request_id is not None and ID.fullmatch(request_id)
    line = _line_of(gateway, request_id)
    assert (line["status"], line["method"], line["path"]) == (401, "POST", "/v1/chat/completions")
    assert line["error"] == "invalid_api_key" and line["message"]
    assert "sk-not-a-key-at-all" not in gateway.log_text()


def test_a_bad_body_has_a_request_id(gateway: Served, client: Clients) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client().chat.completions.create(model="auto", messages="hi")  # type: ignore[arg-type]
    assert bad.value.request_id and ID.fullmatch(bad.value.request_id)
    line = _line_of(gateway, bad.value.request_id)
    assert line["status"] == 400 and line["message"] == bad.value.body["message"]  # type: ignore[index]


def test_over_the_key_rpm_has_a_request_id(gateway: Served, client: Clients) -> None:
    once = client(ONCE_KEY)
    once.models.list()  # its one request this minute
    with pytest.raises(openai.RateLimitError) as limited:
        once.models.list()
    assert limited.value.request_id and ID.fullmatch(limited.value.request_id)
    assert _line_of(gateway, limited.value.request_id)["status"] == 429


@pytest.mark.parametrize(
    ("path", "content", "headers", "status"),
    [
        ("/v1/chat/completion", b"{}", {}, 404),
        ("/v1/chat/completions", b"{" + b" " * 5000 + b"}", {}, 413),
        ("/v1/chat/completions", b"\x1f\x8b", {"content-encoding": "gzip"}, 415),
        ("/v1/chat/completions", b"{not json", {}, 400),
    ],
)
def test_every_early_error_has_one(
    gateway: Served, path: str, content: bytes, headers: dict[str, str], status: int
) -> None:
    sent = {"authorization": f"Bearer {KEY}", "content-type": "application/json", **headers}
    answer = httpx.post(f"{gateway.url}{path}", content=content, headers=sent, timeout=10)
    assert answer.status_code == status
    assert ID.fullmatch(answer.headers["x-request-id"])
    assert len(answer.headers.get_list("x-request-id")) == 1


def test_other_answers_have_one_too(gateway: Served, client: Clients) -> None:
    listed = client().models.with_raw_response.list()
    assert ID.fullmatch(listed.headers["x-request-id"])
    assert ID.fullmatch(httpx.get(f"{gateway.url}/health", timeout=5).headers["x-request-id"])


def test_a_client_sent_request_id_is_not_echoed(gateway: Served, client: Clients) -> None:
    """The id names the gateway's answer (a decision's, what feedback takes): a client's
    own would collide with or pose as one."""
    raw = client().chat.completions.with_raw_response.create(
        **ASK, extra_headers={"x-request-id": "mine-1"}
    )
    assert raw.headers.get_list("x-request-id") == [raw.headers["x-llmroute-decision-id"]]
    with pytest.raises(openai.AuthenticationError) as refused:
        client("sk-wrong").chat.completions.create(**ASK, extra_headers={"x-request-id": "mine-2"})
    assert refused.value.request_id and ID.fullmatch(refused.value.request_id)


def test_an_anthropic_client_reads_it_as_request_id(gateway: Served) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key="sk-wrong", max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError) as refused:
            client.messages.create(
                model="auto", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
        request_id = refused.value.response.headers["x-request-id"]
        assert ID.fullmatch(request_id) and refused.value.request_id == request_id


def test_an_anthropic_client_reads_request_id_on_any_path(gateway: Served) -> None:
    """An answer whose handler set its ``x-request-id`` (an embeddings row's id, a
    decision's) carries it as ``request-id`` too for an Anthropic client, the embeddings
    path included (it had only ``x-request-id``, which Anthropic's clients do not read)."""
    with anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0) as client:
        embedded = client.post(
            "/v1/embeddings", body={"model": "embed-b", "input": "hi"}, cast_to=httpx2.Response
        )
        assert embedded.status_code == 200
        assert embedded.headers["request-id"] == embedded.headers["x-request-id"]
        with pytest.raises(anthropic.BadRequestError) as refused:
            client.post(
                "/v1/embeddings",
                body={"model": "embed-picky-b", "input": "hi"},
                cast_to=httpx2.Response,
            )
        request_id = refused.value.response.headers["x-request-id"]
        assert ID.fullmatch(request_id) and refused.value.request_id == request_id
        routed = client.post("/v1/chat/completions", body=ASK, cast_to=httpx2.Response)
        decided = routed.headers["x-llmroute-decision-id"]
        assert routed.headers.get_list("request-id") == [decided]
        counted = client.messages.with_raw_response.count_tokens(
            model="auto", messages=[{"role": "user", "content": "hi"}]
        )
        assert counted.request_id is not None and ID.fullmatch(counted.request_id)
        assert counted.headers["x-request-id"] == counted.request_id


def test_an_unhandled_error_logs_the_id_the_client_gets(caplog: pytest.LogCaptureFixture) -> None:
    """The 500's error line names the id its answer carries."""
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    app_state = SimpleNamespace(state=SimpleNamespace())  # no metrics
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "app": app_state}
    asyncio.run(StampRequestIds(AnswerUnhandled(app))(scope, receive, send))
    headers = dict(sent[0]["headers"])
    request_id = headers[b"x-request-id"].decode()
    assert sent[0]["status"] == 500 and ID.fullmatch(request_id)
    assert any(request_id in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


@pytest.mark.parametrize(("model", "status"), [("embed", 200), ("embed-picky", 400)])
def test_an_embeddings_answer_and_its_request_line_name_one_id(
    gateway: Served, model: str, status: int
) -> None:
    """An embeddings (or rerank) request is logged as a decision of its own: the id the
    client gets is that line's, and its error is one line, not a second one with
    another id."""
    sent = {"authorization": f"Bearer {KEY}"}
    answer = httpx.post(
        f"{gateway.url}/v1/embeddings",
        json={"model": model, "input": "hello there"},
        headers=sent,
        timeout=10,
    )
    assert answer.status_code == status
    request_id = answer.headers["x-request-id"]
    wait_for(
        f"the request line of {model}",
        lambda: any(r.get("model") == model for r in _lines(gateway)),
        10,
    )
    lines = [
        r for r in _lines(gateway) if r.get("model") == model or r.get("request_id") == request_id
    ]
    assert [r.get("decision_id", r.get("request_id")) for r in lines] == [request_id]


def test_a_request_its_client_hung_up_on_is_one_request_line(
    gateway: Served, client: Clients
) -> None:
    """A chat request whose client left while its model answered is logged once, as its
    decision (499 ``client_disconnected``): the 499 no one reads is no second line, with
    an id of its own."""
    sent = {"authorization": f"Bearer {KEY}"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={**ASK, "model": "slow"},
            headers=sent,
            timeout=0.5,
        )

    def gone() -> list[dict[str, Any]]:
        return [r for r in _lines(gateway) if r.get("status") == 499]

    wait_for("its line", lambda: any(r.get("model") == "slow" for r in gone()), 10)
    with pytest.raises(openai.AuthenticationError) as after:  # a line logged after its 499's
        client("sk-wrong").models.list()
    assert _line_of(gateway, str(after.value.request_id))
    assert [r.get("model") for r in gone()] == ["slow"]


def _lines_naming(gateway: Served, request_id: str) -> list[dict[str, Any]]:
    return [r for r in _lines(gateway) if request_id in (r.get("decision_id"), r.get("request_id"))]


def test_a_request_its_keys_tpm_refuses_after_routing_is_its_decision(
    gateway: Served, client: Clients
) -> None:
    """A key's ``tpm`` hold refuses the request once it is routed (its estimate, ~400
    tokens, would pass the 50 a minute; the window before it was under it, which the
    key's check before routing lets in): the 429 carries the decision's id and headers,
    and the request is one line, its decision's, not an unrouted line with an id of its
    own."""
    tight = client(TIGHT_KEY)
    tight.chat.completions.create(**ASK)  # a few tokens in the window: it is not empty
    refused = None
    for _ in range(3):  # (its tokens are counted as it ends: at once, or by the next)
        try:
            tight.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hello there " * 130}]
            )
        except openai.RateLimitError as exc:
            refused = exc
            break
    assert refused is not None
    headers = refused.response.headers
    request_id = str(refused.request_id)
    assert request_id == headers["x-llmroute-decision-id"] and headers["x-llmroute-route"]
    assert "tokens per minute" in refused.message
    wait_for(f"the line of {request_id}", lambda: _lines_naming(gateway, request_id), 10)
    with pytest.raises(openai.AuthenticationError) as after:  # a line logged after its
        client("sk-wrong").models.list()
    assert _line_of(gateway, str(after.value.request_id))
    (line,) = _lines_naming(gateway, request_id)
    assert line["decision_id"] == request_id and "request_id" not in line
    assert (line["status"], line["error"]) == (429, "rate_limit_exceeded")


def test_an_embeddings_request_its_keys_tpm_refuses_is_its_row(gateway: Served) -> None:
    """A key's ``tpm`` hold refuses an embeddings request once its model is known (its
    input, ~390 tokens, would pass the 50 a minute; the window before it was under it,
    which the key's check before lets in): the 429 carries the id of its row, which
    holds the model and 429 ``rate_limit_exceeded``, as a routed chat's refusal there is
    its decision's. It had no row: a request line with an id of its own, in
    ``api_errors_total``."""
    sent = {"authorization": f"Bearer {TIGHT_EMBED_KEY}"}
    url = f"{gateway.url}/v1/embeddings"
    first = httpx.post(url, json={"model": "embed", "input": "hi"}, headers=sent, timeout=10)
    assert first.status_code == 200  # a few tokens in the window: it is not empty
    body = {"model": "embed", "input": "hello there " * 130}
    for _ in range(3):  # (its tokens are counted as it ends: at once, or by the next)
        refused = httpx.post(url, json=body, headers=sent, timeout=10)
        if refused.status_code == 429:
            break
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "tokens per minute" in refused.json()["error"]["message"]
    request_id = refused.headers["x-request-id"]
    assert refused.headers["x-llmroute-model"] == "embed" and ID.fullmatch(request_id)
    wait_for(f"the line of {request_id}", lambda: _lines_naming(gateway, request_id), 10)
    (line,) = _lines_naming(gateway, request_id)
    assert line["decision_id"] == request_id and "request_id" not in line
    assert (line["model"], line["status"], line["error"]) == ("embed", 429, "rate_limit_exceeded")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {**ASK, "model": "slow"}),
        ("/v1/embeddings", {"model": "embed-slow", "input": "hello there"}),
    ],
)
def test_a_request_cut_by_the_shutdown_is_one_line_with_the_id_its_503_carries(
    upstream: FakeUpstream, tmp_path: Path, path: str, body: dict[str, Any]
) -> None:
    """A chat (or embeddings) request still waiting on its model when the graceful
    timeout ends gets 503 ``server_shutdown``: that answer carries its decision's (its
    row's) id, and the request is logged once, as its decision (it was also an unrouted
    503 line, with another id)."""
    args = ["--log-format", "json", "--log-requests", "--no-access-log"]
    args += ["--graceful-timeout", "1"]
    env = {
        KEY_ENV: KEY,
        ONCE_ENV: ONCE_KEY,
        TIGHT_ENV: TIGHT_KEY,
        TIGHT_EMBED_ENV: TIGHT_EMBED_KEY,
        "LLMROUTE_TELEMETRY_URL": "off",
    }
    hung = "hung?delay=60"
    text = REGISTRY.replace('"slow?delay=3"', f'"{hung}"') % {"url": upstream.url}
    answers: list[httpx.Response | httpx.HTTPError] = []
    with serve_text(text, tmp_path, args, env) as served:

        def ask() -> None:
            try:
                answers.append(
                    httpx.post(
                        f"{served.url}{path}",
                        json=body,
                        headers={"authorization": f"Bearer {KEY}"},
                        timeout=30,
                    )
                )
            except httpx.HTTPError as exc:  # shown below, with the gateway's log
                answers.append(exc)

        # both cases call the same hung model of this module's upstream: this one's
        # request is in flight once the count passes the calls made before it (waiting
        # for any call at all, the chat case's, sent SIGTERM before it had even connected)
        before = upstream.counts[hung]
        asker = threading.Thread(target=ask)
        asker.start()
        wait_for("the call upstream", lambda: upstream.counts[hung] > before, 20, served.log)
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(timeout=30)
        asker.join(timeout=30)
    (cut,) = answers
    assert isinstance(cut, httpx.Response), f"{cut!r}\n{served.log_text()}"
    assert cut.status_code == 503 and cut.json()["error"]["code"] == "server_shutdown"
    request_id = cut.headers["x-request-id"]
    assert ID.fullmatch(request_id)
    lines = _lines(served)
    assert [r.get("decision_id", r.get("request_id")) for r in lines] == [request_id]
    assert (lines[0]["status"], lines[0]["error"]) == (503, "server_shutdown")
