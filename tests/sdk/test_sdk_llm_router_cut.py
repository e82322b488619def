"""An SDK call's `timeout` bounds the whole call, the LLM router's call included (it
waited for the router's own ``llm_fallback.timeout_s``, then went on), and a call cut
while the LLM router is asked (by its `timeout` or its caller) charges that call's prompt
to the router model's budget, as the gateway does for a client that hangs up then; so
does the router's call its own ``timeout_s`` cut, the call going on with the intent
layer's decision.
Against a fake upstream (real HTTP), the log in a SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_upstream import FakeUpstream, fake_upstream

from llmroute import Router
from llmroute.errors import CallTimeout

HELLO = [{"role": "user", "content": "what is the weather tomorrow"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


@pytest.fixture(autouse=True)
def telemetry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{tmp_path / 'log.db'}")


def _registry(upstream: FakeUpstream, where: Path, timeout_s: float = 3) -> tuple[Path, str]:
    """A registry whose LLM router (asked of every request: margin 1) is slower than the
    calls' timeouts and has a budget one prompt spends; its model's upstream name too.
    Budgets in memory are the process's, by model name: each registry names it anew."""
    judge = f"judge_{uuid.uuid4().hex[:8]}"
    path = where / f"{judge}.yaml"
    path.write_text(f"""
encoder: builtin:static
providers:
  fake: {{kind: openai, base_url: "{upstream.url}", timeout_s: 10}}
models:
  small: {{provider: fake, model: up-small}}
  {judge}:
    provider: fake
    model: "{judge}?delay=5"
    price: {{input: 1000, output: 1000}}
    budget: {{usd: 0.001, period: day}}
routes:
  - {{name: weather, examples: ["what is the weather tomorrow"], target: small}}
  - {{name: news, examples: ["latest news headlines"], target: small}}
default: {{target: small}}
llm_fallback: {{model: {judge}, margin: 1.0, timeout_s: {timeout_s}}}
dispatch:
  retries: {{attempts: 0}}
  breaker: {{enabled: false}}
""")
    return path, f"{judge}?delay=5"


def _statuses(db: Path) -> list[tuple[int, str | None]]:
    store = sqlite3.connect(db)
    try:
        return store.execute("SELECT status, error FROM decisions ORDER BY ts").fetchall()
    finally:
        store.close()


def test_the_timeout_bounds_the_llm_routers_call_and_charges_it(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    path, judge = _registry(upstream, tmp_path)

    async def main() -> None:
        async with Router.from_yaml(path) as router:
            with pytest.raises(CallTimeout):
                await router.chat.completions.acreate(messages=HELLO, timeout=0.5)
            # its prompt spent the judge's budget: not asked again, the intent stands
            reply = await router.chat.completions.acreate(messages=HELLO)
            assert reply.llmroute["route"] == "weather"

    asyncio.run(main())
    assert upstream.models_called().count(judge) == 1
    assert _statuses(tmp_path / "log.db") == [(504, "timeout"), (200, None)]


def test_a_call_its_caller_cancels_while_the_llm_router_thinks_charges_it(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    path, judge = _registry(upstream, tmp_path)

    async def main() -> None:
        async with Router.from_yaml(path) as router:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(router.chat.completions.acreate(messages=HELLO), 0.5)
            await router.chat.completions.acreate(messages=HELLO)

    asyncio.run(main())
    assert upstream.models_called().count(judge) == 1
    assert _statuses(tmp_path / "log.db") == [(499, "client_disconnected"), (200, None)]


def test_the_llm_routers_call_cut_by_its_own_timeout_is_charged(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    path, judge = _registry(upstream, tmp_path, timeout_s=0.3)

    async def main() -> None:
        async with Router.from_yaml(path) as router:
            for _ in range(2):
                # the router's answer is not waited for: the intent layer's route serves
                reply = await router.chat.completions.acreate(messages=HELLO)
                assert reply.llmroute["route"] == "weather"

    asyncio.run(main())
    # the first call's prompt spent the judge's budget: the second did not ask it
    assert upstream.models_called().count(judge) == 1
    assert _statuses(tmp_path / "log.db") == [(200, None), (200, None)]
