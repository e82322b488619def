"""A registry whose encoder is a remote embeddings endpoint, served: each request is
decided in a worker thread (the endpoint's round trip would otherwise hold up the
worker's event loop), and a client that hangs up while its request is decided is logged
499 and charged nothing, since nothing was sent."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
from fake_upstream import fake_upstream
from gateway_proc import serve_text, wait_for

from llmroute.telemetry.store import open_store

REGISTRY = """
encoder: {kind: openai, base_url: "%(url)s", model: "emb?delay=%(delay)s"}
providers:
  up: {kind: openai, base_url: "%(url)s", timeout_s: 10}
models:
  small: {provider: up, model: up-small, price: {input: 1, output: 2}}
routes:
  - {name: chat, examples: [hello there], target: small}
default: {target: small}
"""


def test_a_slow_remote_encoder_holds_up_nothing_and_a_client_gone_meanwhile_costs_nothing(
    tmp_path: Path,
) -> None:
    store_url = f"sqlite:///{tmp_path / 'log.db'}"
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello there, how are you"}]}
    with fake_upstream() as upstream:
        # every embedding call waits 2 s (the route examples' at load too)
        text = REGISTRY % {"url": upstream.url, "delay": 2}
        env = {"LLMROUTE_TELEMETRY_URL": store_url}
        with serve_text(text, tmp_path, [], env) as served:
            url = f"{served.url}/v1/chat/completions"
            outcome: list[object] = []

            def leave_early() -> None:
                try:
                    httpx.post(url, json=body, timeout=0.5)
                except httpx.TimeoutException:
                    outcome.append("gave up")

            client = threading.Thread(target=leave_early)
            client.start()
            wait_for(
                "the prompt's embedding asked",
                lambda: upstream.counts["emb?delay=2"] >= 2,
                10,
            )
            asked = time.monotonic()
            health = httpx.get(f"{served.url}/health", timeout=5)  # while it is decided
            waited_s = time.monotonic() - asked
            client.join(timeout=10)
            # answered at once, not after the 2 s round trip the event loop would wait on
            assert health.status_code == 200 and waited_s < 1.0, waited_s
            assert outcome == ["gave up"]
            time.sleep(2.5)  # the decision finishes; the gateway finds the client gone
            assert upstream.counts["up-small"] == 0  # nothing sent upstream

            def logged() -> bool:
                store = open_store(store_url)
                try:
                    return bool(store.decisions(0))
                finally:
                    store.close()

            wait_for("the decision logged", logged, 10)
    store = open_store(store_url)
    try:
        (row,) = store.decisions(0)
    finally:
        store.close()
    assert (row.status, row.error) == (499, "client_disconnected")
    assert row.tokens_in is None and row.cost_usd is None and row.served_model is None
