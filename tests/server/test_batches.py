"""OpenAI's Batch API end to end: `llmroute serve` with a ``batches`` section as a
subprocess, the official `openai` client's ``files`` and ``batches`` in front of it, the
fake OpenAI-protocol upstream behind it. A file of chat requests is uploaded, run as a
batch (each request routed as if sent alone), polled until completed and its answers
downloaded, the failed ones in the error file; completions and embeddings batches; a
file with bad lines fails the batch naming the lines; a batch is cancelled, keeping the
answers it made; each client key sees only its own; bad requests get OpenAI's errors.
Through Redis, a batch made on one gateway is read and cancelled on another, and one
whose gateway is killed is found failed with the answers it had made."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import BIN, Served, free_port, serve_text
from redis_service import REDIS_URL

TEAM_KEY = "sk-team-batches-0123"
OTHER_KEY = "sk-other-batches-4567"
THRIFTY_KEY = "sk-thrifty-batches-8910"
KEYS = {
    "LLMROUTE_TEST_TEAM_KEY": TEAM_KEY,
    "LLMROUTE_TEST_OTHER_KEY": OTHER_KEY,
    "LLMROUTE_TEST_THRIFTY_KEY": THRIFTY_KEY,
}
REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 30}
models:
  small: {provider: fake, model: up-small, price: {input: 1, output: 2}}
  large: {provider: fake, model: up-large, price: {input: 10, output: 30}}
  slow: {provider: fake, model: "slow?delay=0.4"}
  vectors: {provider: fake, model: up-embed, kind: embedding}
  slow-vectors: {provider: fake, model: "slow-emb?delay=0.4", kind: embedding, price: {input: 1}}
  coder: {provider: fake, model: up-coder, text_completions: true}
routes:
  - name: code
    examples: ["write a Python function to parse JSON", "debug this SQL query"]
    target: large
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
batches: %(batches)s
auth:
  public_metrics: true
  keys:
    - {name: team, key_env: LLMROUTE_TEST_TEAM_KEY}
    - {name: other, key_env: LLMROUTE_TEST_OTHER_KEY}
    - {name: thrifty, key_env: LLMROUTE_TEST_THRIFTY_KEY, budget: {usd: 0.000001, period: day}}
"""
ENV = {"LLMROUTE_TELEMETRY_URL": "off", **KEYS}
LOG_REQUESTS = ["--log-format", "json", "--log-requests", "--no-access-log"]
DECISION_ID = re.compile(r"[0-9a-f]{24}")  # the gateway's ids: ms, then random


def _registry(upstream: FakeUpstream, batches: str) -> str:
    return REGISTRY % {"url": upstream.url, "batches": batches}


def _client(served: Served, key: str = TEAM_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def decisions(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('log') / 'decisions.db'}"


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream, decisions: str
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("batches")
    text = _registry(upstream, "{concurrency: 3}")
    env = {**ENV, "LLMROUTE_TELEMETRY_URL": decisions}
    with serve_text(text, tmp, LOG_REQUESTS, env) as served:
        yield served


def _request_line(served: Served, request_id: str) -> dict[str, Any]:
    """The gateway's request line (``--log-requests``) naming `request_id`, once written."""

    def lines() -> list[dict[str, Any]]:
        logged = map(json.loads, filter(None, served.log_text().splitlines()))
        return [
            r
            for r in logged
            if r["logger"] == "llmroute.requests" and r.get("request_id") == request_id
        ]

    _until(lambda: bool(lines()))
    (line,) = lines()
    return line


def _logged(decisions: str, tag: str, api: str | None = None) -> list[dict[str, Any]]:
    """The decision log's requests with `tag` (that came by `api`: embeddings are only
    exported when asked for), as `llmroute export` writes them."""
    asked = ["--api", api] if api is not None else []
    done = subprocess.run(
        [str(BIN / "llmroute"), "export", "--url", decisions, "--tag", tag, *asked],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture(scope="module")
def client(gateway: Served) -> Iterator[openai.OpenAI]:
    with _client(gateway) as c:
        yield c


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _chat(custom_id: str, content: str, model: str = "auto") -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": content}]},
    }


def _until(check: Callable[[], bool], within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)


def _settled(client: openai.OpenAI, batch_id: str, within_s: float = 20.0) -> Any:
    """The batch once it has ended (bounded)."""
    found: list[Any] = []

    def ended() -> bool:
        found[:] = [client.batches.retrieve(batch_id)]
        return found[0].status in ("completed", "failed", "cancelled", "expired")

    _until(ended, within_s)
    return found[0]


def _answers(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    text = client.files.content(file_id).text
    lines = [json.loads(line) for line in text.splitlines()]
    return {line["custom_id"]: line for line in lines}


def test_a_chat_batch_is_routed_answered_and_downloaded(
    client: openai.OpenAI, upstream: FakeUpstream, decisions: str, gateway: Served
) -> None:
    requests = [
        _chat("code-1", "write a Python function to parse YAML"),
        _chat("chat-1", "hi there, how are you?"),
        _chat("pinned", "say something", model="large"),
        _chat("nowhere", "this model is not in the pool", model="gpt-nowhere"),
        *[_chat(f"more-{i}", f"tell me about the number {i}") for i in range(6)],
    ]
    upload = client.files.create(file=("requests.jsonl", _jsonl(requests)), purpose="batch")
    assert upload.id.startswith("file-") and upload.purpose == "batch"
    assert upload.bytes == len(_jsonl(requests)) and upload.filename == "requests.jsonl"
    made = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert made.id.startswith("batch_") and made.status == "validating"
    assert made.metadata == {"job": "nightly"} and made.input_file_id == upload.id

    done = _settled(client, made.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (10, 9)
    assert done.request_counts.failed == 1
    assert done.completed_at and done.in_progress_at and done.finalizing_at
    assert done.usage is not None and done.model is None  # routed request by request
    answers = _answers(client, done.output_file_id)
    assert set(answers) == {r["custom_id"] for r in requests} - {"nowhere"}
    code = answers["code-1"]
    assert code["id"].startswith("batch_req_") and code["error"] is None
    assert code["response"]["status_code"] == 200
    assert code["response"]["request_id"]  # the decision's id
    body = code["response"]["body"]
    assert body["model"] == "up-large" and body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "echo: write a Python function to parse YAML"
    assert answers["chat-1"]["response"]["body"]["model"] == "up-small"
    assert answers["pinned"]["response"]["body"]["model"] == "up-large"
    failed = _answers(client, done.error_file_id)
    assert set(failed) == {"nowhere"}
    assert failed["nowhere"]["response"]["status_code"] == 404
    assert failed["nowhere"]["response"]["body"]["error"]["code"] == "model_not_found"
    # refused before routing: an id as the gateway's, which its request line names
    refused_id = failed["nowhere"]["response"]["request_id"]
    assert DECISION_ID.fullmatch(refused_id), refused_id
    line = _request_line(gateway, refused_id)
    assert (line["status"], line["error"], line["path"]) == (
        404, "model_not_found", "/v1/chat/completions"
    )  # fmt: skip
    usages = [a["response"]["body"]["usage"] for a in answers.values()]
    assert done.usage.input_tokens == sum(u["prompt_tokens"] for u in usages) > 0
    assert done.usage.output_tokens == sum(u["completion_tokens"] for u in usages) > 0
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens

    output = client.files.retrieve(done.output_file_id)
    assert output.purpose == "batch_output" and output.bytes == len(
        client.files.content(done.output_file_id).content
    )
    sent = {r.body["messages"][0]["content"] for r in upstream.requests}
    assert "tell me about the number 5" in sent
    assert made.id in {b.id for b in client.batches.list()}
    assert {upload.id, done.output_file_id} <= {f.id for f in client.files.list()}
    assert upload.id in {f.id for f in client.files.list(purpose="batch")}
    assert done.output_file_id not in {f.id for f in client.files.list(purpose="batch")}

    # each request is in the decision log as a live one would be, tagged with its batch
    logged: list[dict[str, Any]] = []

    def all_logged() -> bool:
        logged[:] = _logged(decisions, f"batch={made.id}")
        return len(logged) == 9  # the request for an unknown model was never routed

    _until(all_logged)
    assert {entry["client"] for entry in logged} == {"team"}
    ids = {entry["id"] for entry in logged}
    assert all(f"batch={made.id}" in entry["tags"] for entry in logged)
    assert {a["response"]["request_id"] for a in answers.values()} == ids


def _run_batch(
    client: openai.OpenAI, endpoint: str, bodies: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """`bodies` (by custom_id) run as a batch on `endpoint`, which must complete with no
    failed request; the answers' bodies by custom_id."""
    lines = [
        {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body}
        for custom_id, body in bodies.items()
    ]
    upload = client.files.create(file=("b.jsonl", _jsonl(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )
    done = _settled(client, batch.id)
    assert done.status == "completed" and done.error_file_id is None
    answers = _answers(client, done.output_file_id)
    assert set(answers) == set(bodies)
    # each line its own request id (an embeddings line's is its decision log row's)
    assert len({a["response"]["request_id"] for a in answers.values()}) == len(bodies)
    return {custom_id: a["response"]["body"] for custom_id, a in answers.items()}


def test_completions_responses_and_embeddings_batches(client: openai.OpenAI) -> None:
    prompts = {
        f"c{i}": {"model": "small", "prompt": f"count to {i}", "max_tokens": 5} for i in range(3)
    }
    prompts["fim"] = {"model": "coder", "prompt": "def f(", "suffix": "):", "max_tokens": 5}
    made = _run_batch(client, "/v1/completions", prompts)
    assert made["c2"]["object"] == "text_completion"
    assert made["c2"]["choices"][0]["text"] == "echo: count to 2"
    assert made["fim"]["choices"][0]["text"] == "raw: def f([FIM]): "  # sent raw

    turns = {
        f"r{i}": {"model": "auto", "input": f"write a Python function number {i}"} for i in range(2)
    }
    made = _run_batch(client, "/v1/responses", turns)["r1"]
    assert made["object"] == "response" and made["status"] == "completed"
    assert made["model"] == "large"  # routed: the code route
    assert made["output"][0]["content"][0]["text"] == "echo: write a Python function number 1"

    texts = {f"e{i}": {"model": "vectors", "input": f"text {i}"} for i in range(3)}
    made = _run_batch(client, "/v1/embeddings", texts)["e0"]
    assert made["data"][0]["object"] == "embedding"


def test_files_are_kept_no_longer_than_their_client_asked(client: openai.OpenAI) -> None:
    """expires_after and output_expires_after were accepted and ignored: files holding
    prompts and answers word for word, asked to be kept an hour, were kept a week."""
    hour = {"anchor": "created_at", "seconds": 3600}
    lines = [_chat("a", "hi there!")]
    upload = client.files.create(
        file=("b.jsonl", _jsonl(lines)),
        purpose="batch",
        expires_after=hour,  # type: ignore[arg-type]
    )
    assert upload.expires_at is not None and upload.expires_at - upload.created_at == 3600
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        output_expires_after=hour,  # type: ignore[arg-type]
    )
    done = _settled(client, batch.id)
    assert done.output_file_id is not None
    output = client.files.retrieve(done.output_file_id)
    assert output.expires_at is not None and output.expires_at - output.created_at == 3600
    for bad in ({"anchor": "created_at", "seconds": 5}, {"anchor": "last_used", "seconds": 3600}):
        with pytest.raises(openai.BadRequestError) as caught:
            client.files.create(
                file=("b.jsonl", _jsonl(lines)),
                purpose="batch",
                expires_after=bad,  # type: ignore[arg-type]
            )
        assert caught.value.body["param"] == "expires_after"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            output_expires_after={"anchor": "created_at", "seconds": 10**9},  # type: ignore[arg-type]
        )
    assert refused.value.body["param"] == "output_expires_after"  # type: ignore[index]


def test_a_file_with_bad_lines_fails_its_batch_naming_them(client: openai.OpenAI) -> None:
    good = _chat("ok", "hello")
    lines = [
        json.dumps(good).encode(),
        b"{not json",
        json.dumps({**good, "custom_id": "ok"}).encode(),  # a duplicate
        json.dumps({**_chat("x", "hi"), "url": "/v1/embeddings"}).encode(),
        json.dumps({**_chat("y", "hi"), "body": {"messages": []}}).encode(),
        json.dumps({**_chat("z", "hi"), "body": {"model": "auto", "stream": True}}).encode(),
        json.dumps({**_chat("w", "hi"), "body": {"model": "auto", "background": True}}).encode(),
    ]
    upload = client.files.create(file=("bad.jsonl", b"\n".join(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = _settled(client, batch.id)
    assert done.status == "failed" and done.failed_at and done.output_file_id is None
    assert done.errors is not None and done.errors.data is not None
    found = {(e.line, e.code, e.param) for e in done.errors.data}
    assert found == {
        (2, "invalid_json_line", None),
        (3, "duplicate_custom_id", "custom_id"),
        (4, "invalid_url", "url"),
        (5, "missing_required_parameter", "body.model"),
        (6, "invalid_request", "body.stream"),
        (7, "invalid_request", "body.background"),
    }


@pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/v1/embeddings"])
def test_a_batch_is_cancelled_keeping_the_answers_it_made(
    client: openai.OpenAI, upstream: FakeUpstream, decisions: str, endpoint: str
) -> None:
    requests = [_chat(f"s{i}", f"slowly {i}", model="slow") for i in range(30)]
    api = None
    if endpoint == "/v1/embeddings":  # an embeddings call cut is logged and charged too
        api = "embeddings"
        requests = [
            {
                "custom_id": f"s{i}",
                "method": "POST",
                "url": endpoint,
                "body": {"model": "slow-vectors", "input": f"slowly {i}"},
            }
            for i in range(30)
        ]
    upload = client.files.create(file=("slow.jsonl", _jsonl(requests)), purpose="batch")
    began = time.monotonic()

    def sent() -> int:
        return sum(1 for r in upstream.requests if r.at > began and "slow" in r.body["model"])

    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )
    _until(lambda: (client.batches.retrieve(batch.id).request_counts or _Zero()).completed >= 3)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    done = _settled(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    assert done.request_counts is not None
    made = done.request_counts.completed
    assert 3 <= made < 30 and done.request_counts.failed == 0
    assert len(_answers(client, done.output_file_id)) == made
    asked = sent()
    assert asked > made  # some were in flight when it was cancelled
    time.sleep(1.0)  # no request is sent after the cancel
    assert sent() == asked
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)
    # the requests the cancel cut had reached the model: logged like a client that hung
    # up, charged their prompts, as a live request would be
    logged: list[dict[str, Any]] = []

    def all_logged() -> bool:
        logged[:] = _logged(decisions, f"batch={batch.id}", api)
        return len(logged) >= asked

    _until(all_logged)
    cut = [row for row in logged if row["status"] != 200]
    assert len(logged) == asked and len(cut) == asked - made >= 1
    assert {(row["status"], row["error"]) for row in cut} == {(499, "client_disconnected")}
    assert all(row["tokens_in"] and row["cost_usd"] is not None for row in cut)


class _Zero:
    completed = 0


def test_each_key_sees_only_its_own(gateway: Served, client: openai.OpenAI) -> None:
    upload = client.files.create(file=("mine.jsonl", _jsonl([_chat("a", "hi")])), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    with _client(gateway, OTHER_KEY) as other:
        with pytest.raises(openai.NotFoundError):
            other.files.retrieve(upload.id)
        with pytest.raises(openai.NotFoundError):
            other.files.content(upload.id)
        with pytest.raises(openai.NotFoundError):
            other.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            other.batches.create(
                input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        assert upload.id not in {f.id for f in other.files.list()}
        assert batch.id not in {b.id for b in other.batches.list()}
    _settled(client, batch.id)
    deleted = client.files.delete(upload.id)
    assert deleted.deleted is True and deleted.id == upload.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(upload.id)
    assert upload.id not in {f.id for f in client.files.list()}


def test_a_batch_spends_its_keys_budget_like_live_requests(gateway: Served) -> None:
    requests = [_chat(f"b{i}", f"an expensive question {i}", model="large") for i in range(8)]
    with _client(gateway, THRIFTY_KEY) as thrifty:
        upload = thrifty.files.create(file=("b.jsonl", _jsonl(requests)), purpose="batch")
        batch = thrifty.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = _settled(thrifty, batch.id)
        assert done.status == "completed" and done.request_counts is not None
        # the first requests (three in flight at a time) spend the budget; the rest are refused
        assert done.request_counts.completed >= 1 and done.request_counts.failed >= 1
        refused = _answers(thrifty, done.error_file_id).values()
        assert {r["response"]["status_code"] for r in refused} == {429}
        assert {r["response"]["body"]["error"]["code"] for r in refused} == {"insufficient_quota"}
        with pytest.raises(openai.RateLimitError):  # and so is a live request
            thrifty.chat.completions.create(
                model="large", messages=[{"role": "user", "content": "one more"}]
            )


def test_bad_requests_get_openai_errors(gateway: Served, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("x.jsonl", b'{"a": 1}\n'), purpose="fine-tune")
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "purpose"
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", b"   \n"), purpose="batch")
    headers = {"authorization": f"Bearer {TEAM_KEY}"}
    raw = httpx.post(f"{gateway.url}/v1/files", json={"purpose": "batch"}, headers=headers)
    assert raw.status_code == 400 and "multipart/form-data" in raw.json()["error"]["message"]
    garbled = {**headers, "content-type": "multipart/form-data; boundary=xx"}
    raw = httpx.post(f"{gateway.url}/v1/files", content=b"garbage", headers=garbled)
    assert raw.status_code == 400
    assert "multipart body could not be read" in raw.json()["error"]["message"]
    upload = client.files.create(file=("ok.jsonl", _jsonl([_chat("a", "hi")])), purpose="batch")
    for change, param in (
        ({"endpoint": "/v1/images"}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"input_file_id": ""}, "input_file_id"),
    ):
        body = {
            "input_file_id": upload.id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            **change,
        }
        answer = httpx.post(f"{gateway.url}/v1/batches", json=body, headers=headers)
        assert answer.status_code == 400, change
        assert answer.json()["error"]["param"] == param
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nowhere")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-nowhere", endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert TEAM_KEY not in gateway.log_text() and "Traceback" not in gateway.log_text()


def test_a_file_over_the_limit_is_refused(tmp_path: Path, upstream: FakeUpstream) -> None:
    text = _registry(upstream, "{max_file_bytes: 2048, max_requests: 2}")
    with serve_text(text, tmp_path, env=ENV) as served, _client(served) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.files.create(file=("big.jsonl", b"x" * 100_000), purpose="batch")
        assert caught.value.status_code == 413
        upload = client.files.create(
            file=("three.jsonl", _jsonl([_chat(f"n{i}", "hi") for i in range(3)])),
            purpose="batch",
        )
        batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = _settled(client, batch.id)
        assert done.status == "failed" and done.errors is not None and done.errors.data
        assert done.errors.data[0].code == "too_many_requests"


def test_without_a_batches_section_the_endpoints_are_404(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    text = _registry(upstream, "null")
    with serve_text(text, tmp_path, env=ENV) as served, _client(served) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            client.batches.list()
        assert "batches" in str(caught.value)
        with pytest.raises(openai.NotFoundError):
            client.files.create(file=("a.jsonl", b"{}\n"), purpose="batch")


def _whole(client: openai.OpenAI, batch: Any, n: int) -> None:
    """`batch` completed with one answer for each of its `n` requests."""
    assert batch.status == "completed", batch
    assert batch.request_counts is not None and batch.request_counts.completed == n
    text = client.files.content(batch.output_file_id).text
    ids = [json.loads(line)["custom_id"] for line in text.splitlines()]
    assert sorted(ids) == sorted(f"s{i}" for i in range(n))  # each once


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_running_batch_goes_on_under_a_reloaded_registry(
    tmp_path: Path, upstream: FakeUpstream, store: str, request: pytest.FixtureRequest
) -> None:
    """A reload does not leave a batch of hours on the old registry: the requests in
    flight finish there, the rest are sent as the new registry says, none twice, and the
    old registry version retires while the batch still runs."""
    settings = "{concurrency: 4}"
    if store == "redis":
        namespace = request.getfixturevalue("redis_namespace")
        settings = f'{{url: "{REDIS_URL}", namespace: {namespace}, concurrency: 4}}'
    registry = tmp_path / "registry.yaml"
    text = _registry(upstream, settings)
    with serve_text(text, tmp_path, env=ENV) as served, _client(served) as client:
        lines = [_chat(f"s{i}", f"slowly {i}", model="slow") for i in range(40)]
        upload = client.files.create(file=("slow.jsonl", _jsonl(lines)), purpose="batch")
        created_at = time.monotonic()
        batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        _until(lambda: (client.batches.retrieve(batch.id).request_counts or _Zero()).completed >= 4)
        registry.write_text(text.replace("slow?delay=0.4", "slow?delay=0.4&v=2"))
        served.proc.send_signal(signal.SIGHUP)
        _until(lambda: "retired: its last request finished" in served.log_text(), 20)
        assert client.batches.retrieve(batch.id).status == "in_progress"  # old one retired
        _whole(client, _settled(client, batch.id, within_s=30), 40)
        log = served.log_text()
    sent = [r for r in upstream.requests if r.at > created_at and "slow" in r.body["model"]]
    assert len(sent) == 40  # none twice
    after = [r for r in sent if r.body["model"] == "slow?delay=0.4&v=2"]
    assert 0 < len(after) < 40
    assert "goes on under registry version" in log and "Traceback" not in log


def test_a_reload_that_removes_a_batchs_key_stops_the_batch(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Revoking a key (a reload without it) stops its running batch: the requests in
    flight finish, no other is sent, and the batch ends failed, code key_removed, its
    answers so far in its output file. It went on to its last request on the old
    registry, spending for hours on a key its operator had taken away."""
    registry = tmp_path / "registry.yaml"
    text = _registry(upstream, "{concurrency: 2}")
    team = "    - {name: team, key_env: LLMROUTE_TEST_TEAM_KEY}\n"
    assert team in text
    with serve_text(text, tmp_path, env=ENV) as served, _client(served) as client:
        lines = [_chat(f"r{i}", f"slowly {i}", model="slow") for i in range(40)]
        upload = client.files.create(file=("slow.jsonl", _jsonl(lines)), purpose="batch")
        created_at = time.monotonic()
        batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        _until(lambda: (client.batches.retrieve(batch.id).request_counts or _Zero()).completed >= 2)
        registry.write_text(text.replace(team, ""))
        served.proc.send_signal(signal.SIGHUP)
        _until(lambda: "is no longer in the registry" in served.log_text())
        with pytest.raises(openai.AuthenticationError):
            client.batches.retrieve(batch.id)
        _until(lambda: "retired: its last request finished" in served.log_text())
        sent = [
            r
            for r in upstream.requests
            if r.at > created_at and r.body["model"] == "slow?delay=0.4"
        ]
        registry.write_text(text)  # the key back, to read what became of its batch
        served.proc.send_signal(signal.SIGHUP)
        _until(lambda: served.log_text().count("registry reloaded") >= 2)
        done = _settled(client, batch.id)
        answered = client.files.content(done.output_file_id).text.splitlines()
        log = served.log_text()
    assert done.status == "failed", done
    assert done.errors is not None and done.errors.data is not None
    assert [e.code for e in done.errors.data] == ["key_removed"]
    assert 2 <= len(sent) < 40  # none sent once the key was gone
    assert done.request_counts is not None and done.request_counts.completed == len(sent)
    assert len(answered) == len(sent)  # the answers made before it stopped are kept
    assert "Traceback" not in log


def test_revoking_a_key_stops_its_batch_left_on_an_earlier_registry(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """A batch left on its first registry (the next kept batches elsewhere: other memory
    sizes) is stopped too when a third revokes its key: only the runs on the registry
    just replaced were looked at, so it went on to its last request on the revoked key,
    ``in_progress`` and counted against ``max_key_batches`` meanwhile."""
    registry = tmp_path / "registry.yaml"
    text = _registry(upstream, "{concurrency: 2}")
    elsewhere = text.replace("{concurrency: 2}", "{concurrency: 2, max_entries: 10001}")
    team = "    - {name: team, key_env: LLMROUTE_TEST_TEAM_KEY}\n"
    assert team in elsewhere and elsewhere != text
    with serve_text(text, tmp_path, env=ENV) as served, _client(served) as client:
        lines = [_chat(f"e{i}", f"slowly {i}", model="slow") for i in range(40)]
        upload = client.files.create(file=("slow.jsonl", _jsonl(lines)), purpose="batch")
        created_at = time.monotonic()
        batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        _until(lambda: (client.batches.retrieve(batch.id).request_counts or _Zero()).completed >= 2)
        for version, changed in enumerate((elsewhere, elsewhere.replace(team, "")), 1):
            registry.write_text(changed)
            served.proc.send_signal(signal.SIGHUP)
            _until(lambda n=version: served.log_text().count("registry reloaded") >= n)
        _until(lambda: "is no longer in the registry" in served.log_text())
        time.sleep(1.0)  # the requests in flight answered (0.4 s each)
        sent = [
            r
            for r in upstream.requests
            if r.at > created_at and r.body["model"] == "slow?delay=0.4"
        ]
        registry.write_text(text)  # the key back, on the first store, to read the batch
        served.proc.send_signal(signal.SIGHUP)
        _until(lambda: served.log_text().count("registry reloaded") >= 3)
        done = _settled(client, batch.id)
        log = served.log_text()
    assert done.status == "failed", done
    assert done.errors is not None and done.errors.data is not None
    assert [e.code for e in done.errors.data] == ["key_removed"]
    assert 2 <= len(sent) < 40  # none sent once the key was gone
    assert done.request_counts is not None and done.request_counts.completed == len(sent)
    assert "Traceback" not in log


def test_revoking_a_key_ends_its_queued_batch_at_once(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """``max_running: 1``, another key's batch running: the revoked key's batch, queued
    behind it, ends ``failed``, ``key_removed``, at the reload. It waited for the slot
    (hours, behind a long batch) before it noticed, ``validating`` and counted against
    ``max_key_batches`` meanwhile."""
    registry = tmp_path / "registry.yaml"
    text = _registry(upstream, "{concurrency: 2, max_running: 1}")
    team = "    - {name: team, key_env: LLMROUTE_TEST_TEAM_KEY}\n"
    assert team in text
    with (
        serve_text(text, tmp_path, env=ENV) as served,
        _client(served) as client,
        _client(served, OTHER_KEY) as other,
    ):
        lines = _jsonl([_chat(f"q{i}", f"slowly {i}", model="slow") for i in range(100)])
        running = other.batches.create(
            input_file_id=other.files.create(file=("a.jsonl", lines), purpose="batch").id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        _until(lambda: other.batches.retrieve(running.id).status == "in_progress")
        queued = client.batches.create(
            input_file_id=client.files.create(file=("b.jsonl", lines), purpose="batch").id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        registry.write_text(text.replace(team, ""))
        served.proc.send_signal(signal.SIGHUP)
        _until(lambda: "is no longer in the registry" in served.log_text())
        registry.write_text(text)  # the key back, to read what became of its batch
        served.proc.send_signal(signal.SIGHUP)
        _until(lambda: served.log_text().count("registry reloaded") >= 2)
        done = client.batches.retrieve(queued.id)
        still = other.batches.retrieve(running.id).status
        other.batches.cancel(running.id)
        log = served.log_text()
    assert still == "in_progress"  # the slot still taken
    assert done.status == "failed", done
    assert done.errors is not None and done.errors.data is not None
    assert [e.code for e in done.errors.data] == ["key_removed"]
    assert "Traceback" not in log


def test_a_batch_yields_to_live_requests_for_at_most_yield_s(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Live traffic first: while a live request is in flight on the process, each batch
    request waits up to ``yield_s`` before it is sent — no longer, so a process that is
    never idle still gets its batches done."""
    text = _registry(upstream, "{concurrency: 1, yield_s: 1}").replace(
        "slow?delay=0.4", "slow?delay=4"
    )
    with serve_text(text, tmp_path, env=ENV) as served, _client(served) as client:
        live = threading.Thread(
            target=lambda: client.chat.completions.create(
                model="slow", messages=[{"role": "user", "content": "take your time"}]
            )
        )
        live.start()
        try:
            _until(lambda: bool(upstream.calls_to("slow?delay=4")))
            live_at = upstream.calls_to("slow?delay=4")[-1].at
            lines = [_chat(f"q{i}", "hi there!", model="small") for i in range(2)]
            upload = client.files.create(file=("q.jsonl", _jsonl(lines)), purpose="batch")
            created_at = time.monotonic()
            batch = client.batches.create(
                input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            running = _metric(served, "llmroute_batches_running")  # waiting: still running
            done = _settled(client, batch.id)
        finally:
            live.join(timeout=30)
        assert done.status == "completed" and done.request_counts.completed == 2
        assert running == 1 and _metric(served, "llmroute_batches_running") == 0
        assert _metric(served, 'llmroute_batches_total{outcome="created"}') == 1
        assert _metric(served, 'llmroute_batches_total{outcome="completed"}') == 1
        assert _metric(served, 'llmroute_batch_requests_total{outcome="completed"}') == 2
        sent = [r.at for r in upstream.calls_to("up-small") if r.at > created_at]
        assert len(sent) == 2
        # each waited its second for the live request (one at a time: 1 s, then 2 s) ...
        assert sent[0] >= created_at + 1.0 and sent[1] >= sent[0] + 1.0, (created_at, sent)
        # ... and no longer: both were sent while the live request (4 s) was in flight
        assert sent[1] < live_at + 4.0, (live_at, sent)


def _metric(served: Served, name: str) -> float:
    """One sample of the gateway's /metrics (0 when absent)."""
    text = httpx.get(f"{served.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@dataclass
class _Gateway:
    served: Served
    client: openai.OpenAI

    def log_text(self) -> str:
        return self.served.log_text()


@contextmanager
def _two_gateways(
    tmp_path: Path, upstream: FakeUpstream, namespace: str
) -> Iterator[tuple[_Gateway, _Gateway]]:
    """Two gateways sharing batches in Redis with a one-second lease, each with a client."""
    settings = f'{{url: "{REDIS_URL}", namespace: {namespace}, lease_s: 1}}'
    text = _registry(upstream, settings)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        serve_text(text, tmp_path / "a", env=ENV) as first,
        serve_text(text, tmp_path / "b", env=ENV) as second,
        _client(first) as on_first,
        _client(second) as on_second,
    ):
        yield _Gateway(first, on_first), _Gateway(second, on_second)


def test_gateways_sharing_redis_read_cancel_and_take_over_each_others_batches(
    tmp_path: Path, upstream: FakeUpstream, redis_namespace: str
) -> None:
    with _two_gateways(tmp_path, upstream, redis_namespace) as (first, second):
        on_first, on_second = first.client, second.client
        slow = [_chat(f"s{i}", f"slowly {i}", model="slow") for i in range(40)]
        upload = on_first.files.create(file=("slow.jsonl", _jsonl(slow)), purpose="batch")
        assert on_second.files.retrieve(upload.id).bytes == upload.bytes
        cancelled = on_second.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        _until(lambda: on_first.batches.retrieve(cancelled.id).status == "in_progress")
        on_first.batches.cancel(cancelled.id)  # the run is the other gateway's
        done = _settled(on_second, cancelled.id)
        assert done.status == "cancelled"

        orphan = on_first.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        _until(
            lambda: (on_second.batches.retrieve(orphan.id).request_counts or _Zero()).completed >= 3
        )
        os.kill(first.served.proc.pid, signal.SIGKILL)  # no chance to hand the batch over
        first.served.proc.wait(timeout=10)
        killed_at = time.monotonic()
        # the first read after its lease lapsed takes it over; the rest is answered here
        _whole(on_second, _settled(on_second, orphan.id, within_s=30), 40)
        assert time.monotonic() - killed_at > 0.5  # not before the lease lapsed
        log = second.log_text()
        assert "taken over from a process that stopped" in log and "Traceback" not in log


def test_a_killed_gateways_batch_is_taken_over_though_nobody_reads_it(
    tmp_path: Path, upstream: FakeUpstream, redis_namespace: str
) -> None:
    """The other gateway's sweep finds the batch whose lease lapsed and finishes it with
    no client reading it (a client that polls once a day would otherwise find it
    expired); the batch leaves the running set once it ends."""
    import redis

    with _two_gateways(tmp_path, upstream, redis_namespace) as (first, second):
        slow = [_chat(f"s{i}", f"slowly {i}", model="slow") for i in range(40)]
        upload = first.client.files.create(file=("slow.jsonl", _jsonl(slow)), purpose="batch")
        orphan = first.client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        _until(
            lambda: (
                (first.client.batches.retrieve(orphan.id).request_counts or _Zero()).completed >= 3
            )
        )
        running = f"{redis_namespace}:batches:running"
        store = redis.Redis.from_url(REDIS_URL)
        try:
            assert len(store.smembers(running)) == 1
            # a batch of a key the registry no longer has stays (to expire); one noted
            # running long past its expiry goes
            unknown = f"{'f' * 16} batch_other {int(time.time()) + 3600}".encode()
            store.sadd(running, unknown, f"{'0' * 16} batch_old 1000")
            os.kill(first.served.proc.pid, signal.SIGKILL)
            first.served.proc.wait(timeout=10)
            _until(lambda: "taken over from a process that stopped" in second.log_text(), 30)
            # ended, without a read
            _until(lambda: store.smembers(running) == {unknown}, 30)
            assert "/v1/batches" not in second.log_text()  # nobody asked the second gateway
            _whole(second.client, second.client.batches.retrieve(orphan.id), 40)
        finally:
            store.close()
        assert "Traceback" not in second.log_text()


def test_a_stalled_gateway_that_lost_its_batch_stops_writing_it(
    tmp_path: Path, upstream: FakeUpstream, redis_namespace: str
) -> None:
    with _two_gateways(tmp_path, upstream, redis_namespace) as (first, second):
        on_first, on_second = first.client, second.client
        slow = [_chat(f"s{i}", f"slowly {i}", model="slow") for i in range(40)]
        upload = on_first.files.create(file=("slow.jsonl", _jsonl(slow)), purpose="batch")
        batch = on_first.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        _until(
            lambda: (on_second.batches.retrieve(batch.id).request_counts or _Zero()).completed >= 3
        )
        first.served.proc.send_signal(signal.SIGSTOP)  # a stall longer than the lease
        try:
            time.sleep(1.5)
            assert on_second.batches.retrieve(batch.id).status == "in_progress"  # taken over
            time.sleep(0.5)
        finally:
            first.served.proc.send_signal(signal.SIGCONT)
        _whole(on_second, _settled(on_second, batch.id, within_s=30), 40)
        _until(lambda: "another process took it over" in first.log_text(), 10)
        assert "taken over from a process that stopped" in second.log_text()
        assert "Traceback" not in first.log_text() + second.log_text()


def test_a_batch_left_by_a_stopping_gateway_is_taken_over_by_the_next(
    tmp_path: Path, upstream: FakeUpstream, redis_namespace: str
) -> None:
    # two at a time: the batch outlasts the gateway's grace for background work (2.5 s);
    # the next gateway finishes it eight at a time (the default; the rest of it at two
    # took ~6 s)
    shared = f'url: "{REDIS_URL}", namespace: {redis_namespace}'
    text = _registry(upstream, f"{{{shared}, concurrency: 2}}")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with serve_text(text, tmp_path / "a", env=ENV) as first, _client(first) as client:
        slow = [_chat(f"s{i}", f"slowly {i}", model="slow") for i in range(40)]
        upload = client.files.create(file=("slow.jsonl", _jsonl(slow)), purpose="batch")
        batch, dropped = (
            client.batches.create(
                input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            for _ in range(2)
        )
        _until(lambda: (client.batches.retrieve(batch.id).request_counts or _Zero()).completed >= 1)
        first.proc.send_signal(signal.SIGTERM)
        first.proc.wait(timeout=30)
        left = (tmp_path / "a" / "serve.log").read_text()
        assert "left running for the next gateway" in left and "Traceback" not in left
    text = _registry(upstream, f"{{{shared}}}")
    with serve_text(text, tmp_path / "b", env=ENV) as second, _client(second) as client:
        # nobody runs it: a cancel ends it at once, keeping what the first gateway made
        stopped = client.batches.cancel(dropped.id)
        assert stopped.status == "cancelled" and stopped.cancelled_at and stopped.cancelling_at
        assert stopped.request_counts is not None and stopped.request_counts.completed < 40
        assert len(_answers(client, stopped.output_file_id)) == stopped.request_counts.completed
        found = client.batches.retrieve(batch.id)  # in progress still: this read takes it
        assert found.status == "in_progress"
        assert found.request_counts is not None and 1 <= found.request_counts.completed < 40
        _whole(client, _settled(client, batch.id, within_s=30), 40)


def _forget(registry: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "llmroute"), "batches", "forget", "-r", str(registry), *args]
    env = {**os.environ, **KEYS, "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def test_forget_erases_one_keys_files_and_batches(
    tmp_path: Path, upstream: FakeUpstream, redis_namespace: str
) -> None:
    settings = f'{{url: "{REDIS_URL}", namespace: {redis_namespace}}}'
    text = _registry(upstream, settings)
    with (
        serve_text(text, tmp_path, env=ENV) as served,
        _client(served) as team,
        _client(served, OTHER_KEY) as other,
    ):
        content = _jsonl([_chat("a", "hi")])
        mine = team.files.create(file=("a.jsonl", content), purpose="batch")
        batch = team.batches.create(
            input_file_id=mine.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = _settled(team, batch.id)
        theirs = other.files.create(file=("b.jsonl", content), purpose="batch")
        erased = _forget(tmp_path / "registry.yaml", "--client", "team")
        assert erased.returncode == 0, erased.stderr
        assert "of client 'team' erased" in erased.stdout and TEAM_KEY not in erased.stdout
        for gone in (
            lambda: team.files.retrieve(mine.id),
            lambda: team.files.content(done.output_file_id or ""),
            lambda: team.batches.retrieve(batch.id),
        ):
            with pytest.raises(openai.NotFoundError):
                gone()
        assert team.batches.list().data == [] and team.files.list().data == []
        assert other.files.retrieve(theirs.id).id == theirs.id
    in_memory = tmp_path / "memory.yaml"
    in_memory.write_text(_registry(upstream, "{}"))
    refused = _forget(in_memory, "--all")
    assert refused.returncode == 2 and "only that process can forget them" in refused.stderr
    unknown = _forget(tmp_path / "registry.yaml", "--client", "nobody")
    assert unknown.returncode == 2 and "no client key 'nobody'" in unknown.stderr


def test_a_batch_goes_on_under_a_changed_registry_and_logs_each_version(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """The registry file changes while a batch runs: its later requests are routed and
    sent as the new registry says, and the decision log names the version of each."""
    decisions = f"sqlite:///{tmp_path / 'decisions.db'}"
    text = _registry(upstream, "{concurrency: 2}")
    env = {**ENV, "LLMROUTE_TELEMETRY_URL": decisions}
    with (
        serve_text(text, tmp_path, ["--reload-interval", "0.2"], env=env) as served,
        _client(served) as client,
    ):
        before = served.version()
        after: list[str] = []
        slow = [_chat(f"s{i}", f"slowly {i}", model="slow") for i in range(16)]
        upload = client.files.create(file=("slow.jsonl", _jsonl(slow)), purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        _until(lambda: client.batches.retrieve(batch.id).status == "in_progress")
        # the slow model now answers at once, and chitchat goes to the large model
        changed = text.replace("slow?delay=0.4", "slow-now").replace(
            "target: small\ndefault", "target: large\ndefault"
        )
        assert changed != text
        (tmp_path / "registry.yaml").write_text(changed)
        _until(lambda: served.version() != before)
        after.append(served.version())
        live = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hi there!"}]
        )
        assert live.headers["x-llmroute-model"] == "large"  # the new registry serves
        done = _settled(client, batch.id)
        assert done.status == "completed" and done.request_counts is not None
        assert done.request_counts.completed == 16
        answers = _answers(client, done.output_file_id).values()
        assert {a["response"]["body"]["model"] for a in answers} == {"slow?delay=0.4", "slow-now"}
        logged: list[dict[str, Any]] = []

        def all_logged() -> bool:
            logged[:] = _logged(decisions, f"batch={batch.id}")
            return len(logged) == 16

        _until(all_logged)
        assert {entry["registry_version"] for entry in logged} == {before, *after}


def test_a_batch_store_that_does_not_answer_is_a_503_without_its_password(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    down = json.dumps({"url": f"redis://:hunter2@127.0.0.1:{free_port()}/0", "timeout_s": 0.2})
    with serve_text(_registry(upstream, down), tmp_path, env=ENV) as served, _client(served) as c:
        for call in (
            lambda: c.files.create(file=("a.jsonl", _jsonl([_chat("a", "hi")])), purpose="batch"),
            lambda: c.files.list(),
            lambda: c.batches.list(),
            lambda: c.batches.retrieve("batch_x"),
        ):
            with pytest.raises(openai.InternalServerError) as caught:
                call()
            assert caught.value.status_code == 503
            assert caught.value.body["code"] == "store_unavailable"  # type: ignore[index]
            assert caught.value.body["message"].startswith("the batch store did not answer")  # type: ignore[index]
        answer = c.chat.completions.create(
            model="small", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == "echo: hi"  # live traffic unaffected
        log = served.log_text()
    assert "hunter2" not in log and "Traceback" not in log


def test_a_compressed_upload_is_a_415(gateway: Served) -> None:
    """A body sent with ``Content-Encoding: gzip`` is not decoded: 415
    ``unsupported_content_encoding``, as the JSON endpoints answer, not a file stored
    compressed (or a 400 about what the compressed bytes are not)."""
    headers = {"authorization": f"Bearer {TEAM_KEY}"}
    lines = _jsonl([_chat("a", "hi")])
    built = httpx.Request(
        "POST",
        f"{gateway.url}/v1/files",
        files={"file": ("in.jsonl", lines)},
        data={"purpose": "batch"},
        headers=headers,
    )
    body = built.read()
    for sent in (gzip.compress(body), body):  # compressed, and only said to be
        squeezed = {**dict(built.headers), "content-encoding": "gzip"}
        squeezed.pop("content-length", None)
        raw = httpx.post(f"{gateway.url}/v1/files", content=sent, headers=squeezed)
        assert raw.status_code == 415, raw.text
        error = raw.json()["error"]
        assert error["code"] == "unsupported_content_encoding" and error["type"]
        assert raw.headers["accept-encoding"] == "identity"
    # the file itself compressed (a .jsonl.gz), the body not: the file is what is wrong
    raw = httpx.post(
        f"{gateway.url}/v1/files",
        files={"file": ("in.jsonl.gz", gzip.compress(lines))},
        data={"purpose": "batch"},
        headers=headers,
    )
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "file"
    assert "the file is gzip-compressed" in raw.json()["error"]["message"]


def test_a_large_upload_is_checked_a_slice_at_a_time_with_the_same_answers(
    gateway: Served,
) -> None:
    """A file past the 1 MB slices the upload is parsed and checked in (a 95 MB one,
    parsed and decoded whole, held every other request 0.17-0.26 s): a character cut by
    a slice's end is read whole, a byte that is not UTF-8 past the first slice or a
    character cut at the file's end is still the same 400, and the file kept is the
    bytes sent."""
    headers = {"authorization": f"Bearer {TEAM_KEY}"}
    line = json.dumps(_chat("é", "héllo wörld " * 40), ensure_ascii=False).encode() + b"\n"
    body = line * (3 * (1 << 20) // len(line) + 1)  # over 3 MB: every slice boundary
    assert body.count("é".encode()) > 1000  # some fall across a slice's end

    def upload(content: bytes) -> httpx.Response:
        files = {"file": ("in.jsonl", content)}
        return httpx.post(
            f"{gateway.url}/v1/files",
            files=files,
            data={"purpose": "batch"},
            headers=headers,
            timeout=30,
        )

    kept = upload(body)
    assert kept.status_code == 200, kept.text
    content = httpx.get(
        f"{gateway.url}/v1/files/{kept.json()['id']}/content", headers=headers, timeout=30
    )
    assert content.content == body
    for bad in (body[: 2 * (1 << 20)] + b"\xff" + body, body + "é".encode()[:1]):
        refused = upload(bad)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "file" and "the file is not UTF-8 text" in error["message"]
    blank = upload(b" \n" * (1 << 20))
    assert blank.status_code == 400 and "the file is empty" in blank.json()["error"]["message"]
