"""An SDK call cut by its own `timeout` after its prompt was sent is charged what it
cost, as one its caller cancels is (and as the gateway charges a client that hung up):
the prompt in flight, counted and estimated, on its decision log row and against its
model's budget. Against a fake upstream (real HTTP), the log in a SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_upstream import FakeUpstream, fake_upstream

from llmroute import Router
from llmroute.errors import AllFallbacksFailed, CallTimeout

TAG = uuid.uuid4().hex[:8]
PROMPT = [{"role": "user", "content": "summarise the quarterly report in three bullet points"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


@pytest.fixture(autouse=True)
def telemetry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{tmp_path / 'log.db'}")


def _registry(upstream: FakeUpstream, where: Path) -> Path:
    """A registry whose one model is slow and has a budget of its own: budgets in
    memory are the process's, by model name, so each registry names its model anew.
    One cut prompt (~12 tokens at $1,000 per million) passes the budget of $0.001."""
    path = where / f"registry-{uuid.uuid4().hex[:8]}.yaml"
    model = f"slow_{uuid.uuid4().hex[:8]}"
    path.write_text(f"""
encoder: builtin:static
providers:
  fake: {{kind: openai, base_url: "{upstream.url}", timeout_s: 10}}
models:
  {model}:
    provider: fake
    model: "{model}?delay=3&ttft=3"
    price: {{input: 1000, output: 1000}}
    budget: {{usd: 0.001, period: day}}
routes:
  - {{name: reports, examples: ["summarise the report"], target: {model}}}
default: {{target: {model}}}
dispatch:
  retries: {{attempts: 0}}
  breaker: {{enabled: false}}
""")
    return path


def _rows(db: Path) -> list[tuple[int, str, int | None, float | None, int]]:
    store = sqlite3.connect(db)
    try:
        query = (
            "SELECT status, error, tokens_in, cost_usd, usage_estimated FROM decisions ORDER BY ts"
        )
        return store.execute(query).fetchall()
    finally:
        store.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_cut_by_its_timeout_is_charged_its_prompt(
    upstream: FakeUpstream, tmp_path: Path, stream: bool
) -> None:
    """Cut by its `timeout`, then the same call cut by its caller (``wait_for``): both
    rows carry the prompt's estimated cost (the timeout's had none), and the budget it
    spent refuses the next call."""

    async def main() -> None:
        async with Router.from_yaml(_registry(upstream, tmp_path)) as router:
            with pytest.raises(CallTimeout):
                await router.chat.completions.acreate(messages=PROMPT, stream=stream, timeout=0.5)
            # the budget was spent by the cut prompt: the model is not called again
            with pytest.raises(AllFallbacksFailed, match="over its daily budget"):
                await router.chat.completions.acreate(messages=PROMPT, stream=stream)
        async with Router.from_yaml(_registry(upstream, tmp_path)) as router:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(
                    router.chat.completions.acreate(messages=PROMPT, stream=stream), 0.5
                )

    asyncio.run(main())
    timed_out, refused, cancelled = _rows(tmp_path / "log.db")
    assert timed_out[:2] == (504, "timeout") and cancelled[:2] == (499, "client_disconnected")
    assert refused[0] == 503
    # the same charge either way: the prompt, counted and marked estimated
    assert timed_out[2:] == cancelled[2:]
    tokens_in, cost, estimated = timed_out[2:]
    assert tokens_in and cost is not None and cost > 0.001 and estimated


def test_a_synchronous_call_cut_by_its_timeout_is_charged_its_prompt(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    with Router.from_yaml(_registry(upstream, tmp_path)) as router:
        with pytest.raises(CallTimeout):
            router.chat.completions.create(messages=PROMPT, timeout=0.5)
        with pytest.raises(AllFallbacksFailed, match="over its daily budget"):
            router.chat.completions.create(messages=PROMPT)
    (status, error, tokens_in, cost, estimated), _ = _rows(tmp_path / "log.db")
    assert (status, error) == (504, "timeout")
    assert tokens_in and cost is not None and cost > 0.001 and estimated
