"""A large upstream request's body is written, and signed, without holding the event
loop: a ticker task beside the call counts the loop's turns (a count, not a time).
Against the fake upstreams, real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from fake_bedrock import ACCESS_KEY, REGION, SECRET, FakeBedrock, fake_bedrock
from fake_upstream import FakeUpstream, fake_upstream
from yarl import URL

from llmroute.providers import _transport
from llmroute.providers._transport import HttpTransport
from llmroute.providers.aws_sigv4 import AwsCredentials, sign
from llmroute.providers.base import Timeouts
from llmroute.providers.bedrock import BedrockProvider
from llmroute.registry.schema import Provider

TIMEOUTS = Timeouts(connect_s=2.0, total_s=10.0)
TOKEN_IDS = {"model": "m", "input": [[1234] * 500] * 1000}  # 2.5 MB: 36-110 ms in one dumps
PROMPT = {"model": "m", "messages": [{"role": "user", "content": "long text " * 400_000}]}
SMALL = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
CREDENTIALS = AwsCredentials(ACCESS_KEY, SECRET)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as served:
        yield served


@pytest.fixture(scope="module")
def bedrock() -> Iterator[FakeBedrock]:
    with fake_bedrock() as served:
        yield served


@dataclass
class Signing:
    """A signer (AWS's SigV4, or none) that notes, for each body it signs, the loop's
    turns before the request began and when it was called and done, and its thread."""

    aws: bool = False
    hashes: int = 1  # the body hashed this many times (its turns seen on a loaded machine)
    ticks: int = 0
    calls: list[tuple[int, int, bool, bytes]] = field(default_factory=list)
    loop_thread: threading.Thread | None = None

    def __call__(self, method: str, url: URL, body: bytes) -> Mapping[str, str]:
        called = self.ticks
        for _ in range(self.hashes):
            signed = sign(method, url, body, credentials=CREDENTIALS, region=REGION, service="x")
        on_loop = threading.current_thread() is self.loop_thread
        self.calls.append((called, self.ticks, on_loop, body))
        return signed if self.aws else {}

    async def post(self, url: str, payload: dict[str, Any]) -> int:
        """`payload` posted through a transport signing with this, a ticker beside it:
        the ticks before the call began."""
        self.loop_thread = threading.current_thread()
        transport = HttpTransport("up", url, {}, sign=self)

        async def tick() -> None:
            while True:
                self.ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        began = self.ticks
        try:
            await transport.post_json("/chat/completions", payload, TIMEOUTS)
        finally:
            ticker.cancel()
            await transport.aclose()
        return began


@pytest.mark.parametrize("payload", [TOKEN_IDS, PROMPT], ids=["token-ids", "long-prompt"])
def test_a_large_body_is_written_with_the_event_loop_running(
    upstream: FakeUpstream, payload: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signed on the loop (as a small body is), the signer is called as soon as the body
    is written: the ticker's turns up to then are the turns the writing gave it. In one
    ``json.dumps`` call it gave none (in a worker thread it holds the loop as long: the C
    encoder keeps the GIL, tests/core/test_verbatim_json.py)."""
    monkeypatch.setattr(_transport, "_SIGNED_OFF_LOOP_BYTES", 1 << 40, raising=False)
    signing = Signing()
    began = asyncio.run(signing.post(upstream.url, payload))
    [(called, _, on_loop, body)] = signing.calls
    assert body == json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    assert on_loop and called - began > 10  # a step each 128 K characters


def test_a_large_body_is_signed_in_a_worker_thread_with_the_loop_running(
    upstream: FakeUpstream,
) -> None:
    """SigV4 hashes the body (~0.8 ms a MiB, 3 ms for this one): past 256 KiB in a worker
    thread, where hashlib lets go of the GIL and the loop takes its turns meanwhile; a
    small body is signed on the loop (the hand-off would cost more)."""
    signing = Signing(hashes=5)
    asyncio.run(signing.post(upstream.url, PROMPT))
    asyncio.run(signing.post(upstream.url, SMALL))
    (called, done, on_loop, body), (_, _, small_on_loop, _) = signing.calls
    assert len(body) > 4_000_000
    assert not on_loop and done > called
    assert small_on_loop


def test_a_large_body_signed_in_a_worker_thread_is_signed_right(bedrock: FakeBedrock) -> None:
    """The fake Bedrock checks the signature (its own SigV4) against the body it got."""
    provider = BedrockProvider(
        "aws",
        Provider(kind="bedrock", base_url=bedrock.url, region=REGION),
        environ={"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET},
    )
    text = "long text " * 100_000

    async def run() -> dict[str, Any]:
        try:
            body = {"messages": [{"role": "user", "content": text}], "max_tokens": 8}
            return await provider.complete("anthropic.claude-x", body, timeouts=TIMEOUTS)
        finally:
            await provider.aclose()

    answer = asyncio.run(run())
    assert answer["choices"][0]["message"]["content"].startswith("echo: long text")
    assert bedrock.last.headers["authorization"].startswith("AWS4-HMAC-SHA256")
