"""What bounds background responses, end to end (``stored_responses.max_background``,
``max_bytes``): `llmroute serve` as a subprocess, the fake OpenAI upstream behind, an
LLM router whose model answers after a second, so that a background request is planned
for a while before its run starts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_proc import Served, serve_text

KEY = "sk-team-background-limit-0123"
REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 10}
models:
  small: {provider: fake, model: "limited-small?delay=0.5"}
  picker: {provider: fake, model: "limited-picker?delay=1"}
routes:
  - name: code
    examples: ["write a Python function to parse JSON", "debug this SQL query"]
    target: small
  - name: chitchat
    examples: ["hi there!", "how are you today?"]
    target: small
default: {target: small}
llm_fallback: {model: picker, margin: 1.0, timeout_s: 5}
stored_responses: {ttl_s: 600, max_background: 1, max_bytes: 20000}
auth:
  keys:
    - {name: team, key_env: LLMROUTE_TEST_LIMIT_KEY}
"""
PICKER = "limited-picker"
PROMPT = "tell me a story " * 20  # no route's: the LLM router is asked


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("limit")
    env = {"LLMROUTE_TELEMETRY_URL": "off", "LLMROUTE_TEST_LIMIT_KEY": KEY}
    with serve_text(REGISTRY % {"url": upstream.url}, tmp, env=env) as served:
        yield served


def _picks(upstream: FakeUpstream) -> int:
    return sum(1 for r in upstream.requests if str(r.body.get("model")).startswith(PICKER))


def _settled(client: openai.OpenAI, response_id: str) -> str:
    """The response's status once its run has ended (bounded)."""
    deadline = time.monotonic() + 10
    while True:
        status = str(client.responses.retrieve(response_id).status)
        if status not in ("queued", "in_progress"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def test_requests_planned_together_start_no_more_runs_than_the_limit(
    gateway: Served, upstream: FakeUpstream
) -> None:
    """Three background requests at once, each planned for a second (the LLM router's
    call) before its run would start: the limit counts a request from the moment it is
    let in, so one is answered in_progress and the other two 429 at once, not routed."""
    answers: list[object] = []
    before = _picks(upstream)
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0) as client:

        def create() -> None:
            try:
                answers.append(client.responses.create(model="auto", input=PROMPT, background=True))
            except openai.APIStatusError as exc:
                answers.append(exc.status_code)

        threads = [threading.Thread(target=create) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        started = [a for a in answers if isinstance(a, openai.types.responses.Response)]
        assert sorted(a for a in answers if isinstance(a, int)) == [429, 429], answers
        assert len(started) == 1 and _picks(upstream) - before == 1
        assert _settled(client, started[0].id) == "completed"
        # its place given back: the next one starts
        again = client.responses.create(model="auto", input=PROMPT, background=True)
        assert _settled(client, again.id) == "completed"


def test_a_request_too_large_to_keep_is_refused_before_it_is_routed(
    gateway: Served, upstream: FakeUpstream
) -> None:
    """A background response must be kept to be polled: one larger than ``max_bytes`` is
    a 400 asked before routing, so it costs no LLM router call (charged to its key)."""
    before = _picks(upstream)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0)
    with client, pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="auto", input=PROMPT * 100, background=True)
    assert isinstance(refused.value.body, dict) and refused.value.body["param"] == "background"
    assert _picks(upstream) == before
