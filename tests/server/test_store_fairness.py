"""Client keys sharing the gateway's stores, end to end: `llmroute serve` with two client
keys, an offline echo model, and small ``stored_responses`` / ``batches`` stores. In
memory, one key filling a store evicts its own oldest records, never those of a key that
holds less; a key past ``batches.max_key_files`` / ``max_key_bytes`` has its upload
refused with OpenAI's error (memory and Redis) while the other key's still goes in, and
a key with ``batches.max_key_batches`` batches running has its next one refused;
past ``stored_responses.max_key_responses`` a key loses its own oldest responses, in
Redis too, whichever worker keeps them."""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_proc import Served, serve_text
from redis_service import REDIS_URL, delete_namespace

ALICE_KEY = "sk-alice-fairness-0123"
BOB_KEY = "sk-bob-fairness-4567"
REGISTRY = """
encoder: builtin:static
providers:
  echo: {kind: echo}
  slow: {kind: echo, delay_s: 60}
models:
  small: {provider: echo, model: echo-small}
  slow: {provider: slow, model: echo-slow}
routes:
  - {name: chat, examples: [hello there], target: small}
default: {target: small}
telemetry: {enabled: false}
stored_responses: %(responses)s
batches: %(batches)s
auth:
  keys:
    - {name: alice, key_env: LLMROUTE_TEST_ALICE_KEY}
    - {name: bob, key_env: LLMROUTE_TEST_BOB_KEY}
"""
ENV = {
    "LLMROUTE_TELEMETRY_URL": "off",
    "LLMROUTE_TEST_ALICE_KEY": ALICE_KEY,
    "LLMROUTE_TEST_BOB_KEY": BOB_KEY,
}


@contextmanager
def _gateway(
    tmp_path: Path, responses: str = "{}", batches: str = "{}", args: tuple[str, ...] = ()
) -> Iterator[Served]:
    text = REGISTRY % {"responses": responses, "batches": batches}
    with serve_text(text, tmp_path, args, env=ENV) as served:
        yield served


def _as(served: Served, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{served.url}/v1", headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def _respond(client: httpx.Client, text: str) -> str:
    answer = client.post("/responses", json={"model": "auto", "input": text})
    assert answer.status_code == 200, answer.text
    assert answer.json()["store"] is True
    response_id: str = answer.json()["id"]
    return response_id


def _upload(client: httpx.Client, size: int) -> httpx.Response:
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
    content = (line * (size // len(line) + 1))[:size]
    return client.post(
        "/files", files={"file": ("batch.jsonl", content)}, data={"purpose": "batch"}
    )


def test_a_key_filling_the_responses_store_evicts_its_own_oldest(tmp_path: Path) -> None:
    """Five of alice's responses in a store of four: bob's one is kept (it was evicted
    on the old code, the least recently used of all), alice's oldest go."""
    with (
        _gateway(tmp_path, responses="{max_entries: 4}") as served,
        _as(served, ALICE_KEY) as alice,
        _as(served, BOB_KEY) as bob,
    ):
        bobs = _respond(bob, "hello there, I am bob")
        alices = [_respond(alice, f"hello there {i}") for i in range(5)]
        assert bob.get(f"/responses/{bobs}").status_code == 200
        kept = [alice.get(f"/responses/{i}").status_code for i in alices]
        assert kept == [404, 404, 200, 200, 200]
        # bob, holding less, still gets his next one kept: alice's oldest goes for it
        assert bob.get(f"/responses/{_respond(bob, 'hello again')}").status_code == 200
        assert alice.get(f"/responses/{alices[2]}").status_code == 404
        assert bob.get(f"/responses/{bobs}").status_code == 200


@pytest.fixture(scope="module")
def two_workers(
    tmp_path_factory: pytest.TempPathFactory, _redis_available: None
) -> Iterator[Served]:
    """One gateway over two worker processes for this file's Redis tests that need two
    (starting them is most of such a test's time): in a namespace of its own, alice's
    responses bounded by ``max_key_responses: 3``, her files by ``max_key_files: 4``."""
    namespace = f"llmroute-test-{uuid.uuid4().hex[:12]}"
    store = f'url: "{REDIS_URL}", namespace: {namespace}'
    try:
        with _gateway(
            tmp_path_factory.mktemp("two-workers"),
            responses=f"{{{store}, max_key_responses: 3}}",
            batches=f"{{{store}, max_key_files: 4}}",
            args=("--workers", "2"),
        ) as served:
            yield served
    finally:
        delete_namespace(namespace)


def test_a_key_past_its_responses_bound_in_redis_loses_its_own_oldest(
    two_workers: Served,
) -> None:
    """Redis, two worker processes, ``max_key_responses: 3``: alice's six responses (each
    on a new connection, whichever worker takes it) leave her last three and bob's one
    (on the old code the setting did not exist, and nothing bounded a key in Redis)."""
    served = two_workers
    with _as(served, BOB_KEY) as bob:
        bobs = _respond(bob, "hello there, I am bob")
        alices = []
        for i in range(6):
            with _as(served, ALICE_KEY) as alice:  # a new connection each
                alices.append(_respond(alice, f"hello there {i}"))
        with _as(served, ALICE_KEY) as alice:
            kept = [alice.get(f"/responses/{i}").status_code for i in alices]
        assert kept == [404, 404, 404, 200, 200, 200]
        assert bob.get(f"/responses/{bobs}").status_code == 200
        log = served.log_text()
    assert "Traceback" not in log and ALICE_KEY not in log


def test_a_key_filling_the_batches_store_does_not_evict_anothers_files(
    tmp_path: Path,
) -> None:
    """Alice's uploads, many times the memory store, leave bob's file readable."""
    batches = "{max_bytes: 8192, max_file_bytes: 2048}"
    with (
        _gateway(tmp_path, batches=batches) as served,
        _as(served, ALICE_KEY) as alice,
        _as(served, BOB_KEY) as bob,
    ):
        bobs = _upload(bob, 1500).json()["id"]
        alices = [_upload(alice, 2000).json()["id"] for _ in range(8)]
        assert bob.get(f"/files/{bobs}/content").status_code == 200
        assert alice.get(f"/files/{alices[-1]}/content").status_code == 200
        assert alice.get(f"/files/{alices[0]}/content").status_code == 404


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_an_upload_past_a_keys_quota_is_refused(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """``max_key_files`` and ``max_key_bytes`` bound each key: past them its upload is a
    429 ``file_quota_exceeded`` naming the setting; the other key still uploads, and a
    deleted file makes room."""
    settings = "max_key_files: 3, max_key_bytes: 5000, max_file_bytes: 2048"
    if store == "redis":
        namespace = request.getfixturevalue("redis_namespace")
        settings += f', url: "{REDIS_URL}", namespace: {namespace}'
    with (
        _gateway(tmp_path, batches=f"{{{settings}}}") as served,
        _as(served, ALICE_KEY) as alice,
        _as(served, BOB_KEY) as bob,
    ):
        first = _upload(alice, 2000).json()["id"]
        assert _upload(alice, 2000).status_code == 200
        refused = _upload(alice, 1500)  # 5500 bytes > 5000
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["code"] == "file_quota_exceeded" and error["param"] == "file"
        assert "batches.max_key_bytes (5000)" in error["message"]
        assert "'alice'" in error["message"]
        assert refused.headers["x-should-retry"] == "false"
        assert _upload(alice, 500).status_code == 200  # 4500 bytes, three files
        refused = _upload(alice, 100)
        assert refused.status_code == 429
        assert "batches.max_key_files (3)" in refused.json()["error"]["message"]
        assert _upload(bob, 2000).status_code == 200
        assert alice.delete(f"/files/{first}").status_code == 200
        assert _upload(alice, 100).status_code == 200
        assert len(alice.get("/files").json()["data"]) == 3
        log = served.log_text()
    assert "Traceback" not in log and ALICE_KEY not in log


def _slow_batch(client: httpx.Client, file_id: str) -> httpx.Response:
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
    return client.post("/batches", json={**body, "completion_window": "24h"})


def _cancelled(client: httpx.Client, batch_id: str) -> None:
    assert client.post(f"/batches/{batch_id}/cancel").status_code == 200
    for _ in range(100):  # bounded: the run takes a cancel up within a second
        if client.get(f"/batches/{batch_id}").json()["status"] == "cancelled":
            return
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} was not cancelled")


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_batch_past_a_keys_running_quota_is_refused(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """``max_key_batches: 2``: alice's third batch while two run (their one request on a
    model that answers in a minute) is a 429 ``batch_quota_exceeded`` naming the setting;
    bob still starts one, and once alice cancels one of hers she may start another."""
    settings = "max_key_batches: 2"
    if store == "redis":
        namespace = request.getfixturevalue("redis_namespace")
        settings += f', url: "{REDIS_URL}", namespace: {namespace}'
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", '
    line += b'"body": {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}}\n'
    with (
        _gateway(tmp_path, batches=f"{{{settings}}}") as served,
        _as(served, ALICE_KEY) as alice,
        _as(served, BOB_KEY) as bob,
    ):
        upload = {"file": ("batch.jsonl", line)}
        alices = alice.post("/files", files=upload, data={"purpose": "batch"}).json()["id"]
        bobs = bob.post("/files", files=upload, data={"purpose": "batch"}).json()["id"]
        running = [_slow_batch(alice, alices).json()["id"] for _ in range(2)]
        refused = _slow_batch(alice, alices)
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["code"] == "batch_quota_exceeded"
        assert "batches.max_key_batches (2)" in error["message"]
        assert "'alice'" in error["message"]
        assert refused.headers["x-should-retry"] == "false"
        assert _slow_batch(bob, bobs).status_code == 200
        _cancelled(alice, running[0])
        assert _slow_batch(alice, alices).status_code == 200
        assert _slow_batch(alice, alices).status_code == 429
        log = served.log_text()
    assert "Traceback" not in log and ALICE_KEY not in log


def test_simultaneous_uploads_stay_within_the_keys_quota(two_workers: Served) -> None:
    """Redis, two worker processes: twenty uploads at once with ``max_key_files: 4``
    keep four files, the others refused with the quota's 429. The quota was read, then
    the file kept: several read it before any was kept, and each passed it (eight to
    ten kept on the old code). (Batches made at once: tests/state/test_batch_store.py.)"""
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'

    def upload(served: Served) -> int:
        with _as(served, ALICE_KEY) as client:  # a connection each: either worker
            upload = {"file": ("batch.jsonl", line)}
            return client.post("/files", files=upload, data={"purpose": "batch"}).status_code

    served = two_workers
    with _as(served, ALICE_KEY) as alice, ThreadPoolExecutor(20) as pool:
        uploads = list(pool.map(upload, [served] * 20))
        files = alice.get("/files").json()["data"]
        log = served.log_text()
    assert (sorted(uploads), len(files)) == ([200] * 4 + [429] * 16, 4)
    assert "Traceback" not in log


def test_a_batch_whose_answers_the_memory_store_cannot_keep_fails_saying_so(
    tmp_path: Path,
) -> None:
    """Answers past what the memory store holds are not kept: the batch ends ``failed``
    with ``output_evicted`` naming the setting (on the old code it was ``completed``,
    its output file unreadable)."""
    text = "hello there " + "x" * 200
    body = {"model": "small", "messages": [{"role": "user", "content": text}]}
    line = json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": body})
    content = "".join(
        line.replace('"method"', f'"custom_id": "r{i}", "method"', 1) + "\n" for i in range(8)
    )
    with (
        _gateway(tmp_path, batches="{max_bytes: 4096, max_file_bytes: 4096}") as served,
        _as(served, ALICE_KEY) as alice,
    ):
        upload = {"file": ("batch.jsonl", content.encode())}
        file_id = alice.post("/files", files=upload, data={"purpose": "batch"}).json()["id"]
        batch = _slow_batch(alice, file_id).json()
        for _ in range(100):  # bounded: eight echo answers
            batch = alice.get(f"/batches/{batch['id']}").json()
            if batch["status"] not in ("validating", "in_progress", "finalizing"):
                break
            time.sleep(0.1)
        assert batch["status"] == "failed", batch
        error = batch["errors"]["data"][0]
        assert error["code"] == "output_evicted" and "batches.max_bytes" in error["message"]
        assert batch["request_counts"]["completed"] == 8


def _partial_upload(url: str, key: str, framing: str) -> tuple[int, dict[str, Any]]:
    """An upload whose body says (Content-Length) or has sent (chunked) 230,000 bytes and
    then waits, never ended: its status and error as soon as the gateway answers."""
    host, port = url.removeprefix("http://").split(":")
    part = b"--x\r\ncontent-disposition: form-data; name=file; filename=a.jsonl\r\n\r\n"
    part += b"{}\n" * 1000
    head = (
        f"POST /v1/files HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {key}\r\n"
        "content-type: multipart/form-data; boundary=x\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        if framing == "content-length":
            sock.sendall(head + b"content-length: 230000\r\n\r\n" + part)
        else:
            sock.sendall(head + b"transfer-encoding: chunked\r\n\r\n")
            chunk = b"{}\n" * 10_000
            for _ in range(8):  # 240,000 bytes, and no last chunk
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(65536) or b"\r\n\r\n"
        headers, _, body = reply.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", headers)[1])  # type: ignore[index]
        while len(body) < length:
            body += sock.recv(65536)
    return int(headers.split()[1]), json.loads(body)["error"]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_upload_past_a_keys_room_is_refused_before_it_is_read_whole(
    tmp_path: Path, framing: str
) -> None:
    """An upload that cannot fit the key's ``max_key_bytes`` (its Content-Length, or what
    came so far, past the room its files leave) is the same 429 at once, not once the
    client has sent all of it (the old code read a 95 MB body to refuse it; this client
    sends part of one and waits). Nothing is kept of it; the key's files and another's
    are as they were, and each still uploads what fits."""
    settings = "{max_key_bytes: 300000, max_file_bytes: 200000}"
    with (
        _gateway(tmp_path, batches=settings) as served,
        _as(served, ALICE_KEY) as alice,
        _as(served, BOB_KEY) as bob,
    ):
        kept = _upload(alice, 150_000).json()["id"]  # room: 150,000 bytes (with 64 kB)
        bobs = _upload(bob, 150_000).json()["id"]
        status, error = _partial_upload(served.url, ALICE_KEY, framing)
        assert status == 429 and error["code"] == "file_quota_exceeded"
        assert "holds 150000 bytes of files, and this one's more than 150000" in error["message"]
        assert "batches.max_key_bytes (300000)" in error["message"]
        assert [f["id"] for f in alice.get("/files").json()["data"]] == [kept]
        assert bob.get(f"/files/{bobs}/content").status_code == 200
        assert _upload(alice, 100_000).status_code == 200
        assert _upload(bob, 100_000).status_code == 200
        log = served.log_text()
    assert "Traceback" not in log and ALICE_KEY not in log


def test_a_key_its_batches_answers_put_past_its_bytes_is_told_what_it_holds(
    tmp_path: Path,
) -> None:
    """A batch's output file counts toward ``max_key_bytes`` but is never refused for it,
    so a key can hold more than the bound: its next upload is refused before its body is
    read, saying what the key holds (the early check said "this one's 0 would pass", a
    size no upload had: it was the check's own placeholder)."""
    line = {
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "small", "messages": [{"role": "user", "content": "hello " * 40}]},
    }
    content = b"".join(
        json.dumps({"custom_id": f"c{i}", **line}).encode() + b"\n" for i in range(8)
    )
    with (
        _gateway(tmp_path, batches="{max_key_bytes: 4000, max_file_bytes: 4000}") as served,
        _as(served, ALICE_KEY) as alice,
    ):
        file_id = alice.post(
            "/files", files={"file": ("b.jsonl", content)}, data={"purpose": "batch"}
        ).json()["id"]
        batch = alice.post(
            "/batches",
            json={
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        ).json()
        for _ in range(100):  # bounded: eight answers of an echo model
            batch = alice.get(f"/batches/{batch['id']}").json()
            if batch["status"] == "completed":
                break
            time.sleep(0.1)
        held = sum(f["bytes"] for f in alice.get("/files").json()["data"])
        assert batch["status"] == "completed" and held > 4000
        refused = _upload(alice, 100)
        assert refused.status_code == 429, refused.text
        message = refused.json()["error"]["message"]
        assert f"holds {held} bytes of files" in message
        assert "batches.max_key_bytes (4000)" in message and "this one's 0" not in message
