"""An SDK call cut while on its fallback, by its own `timeout` (504 ``timeout``) or by
its caller's cancel (499 ``client_disconnected``), or ended there by a bug (500),
keeps its attempt path in its decision log row as the gateway's 499 does: the failed
model, then the fallback it was cut on, so that the report counts it as a fallback.
Against a fake upstream (real HTTP), the log in a SQLite file."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_upstream import FakeUpstream, fake_upstream

from llmroute import Router
from llmroute.dispatch import dispatcher as dispatcher_module
from llmroute.errors import CallTimeout

HELLO = [{"role": "user", "content": "plan a trip to Rome"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


@pytest.fixture
def registry(upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", f"sqlite:///{tmp_path / 'log.db'}")
    path = tmp_path / "registry.yaml"
    path.write_text(f"""
encoder: builtin:static
providers:
  fake: {{kind: openai, base_url: "{upstream.url}", timeout_s: 10}}
models:
  broken: {{provider: fake, model: "broken?status=500"}}
  slow: {{provider: fake, model: "slow-{tmp_path.name}?delay=3"}}
routes:
  - {{name: falling, examples: ["plan a trip"], target: broken, policy: {{fallback: [slow]}}}}
default: {{target: broken}}
dispatch:
  retries: {{attempts: 0}}
  breaker: {{enabled: false}}
""")
    return path


def _attempts(db: Path) -> list[tuple[int, str, list[str]]]:
    store = sqlite3.connect(db)
    try:
        rows = store.execute("SELECT status, error, attempts FROM decisions ORDER BY ts").fetchall()
    finally:
        store.close()
    return [(status, error, json.loads(attempts)) for status, error, attempts in rows]


def test_a_call_cut_on_its_fallback_keeps_its_attempt_path(registry: Path) -> None:
    async def main() -> None:
        async with Router.from_yaml(registry) as router:
            with pytest.raises(CallTimeout):
                await router.chat.completions.acreate(model="falling", messages=HELLO, timeout=0.5)
            call = asyncio.ensure_future(
                router.chat.completions.acreate(model="falling", messages=HELLO)
            )
            await asyncio.sleep(0.5)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call

    asyncio.run(main())
    rows = _attempts(registry.parent / "log.db")
    assert [(status, error) for status, error, _ in rows] == [
        (504, "timeout"),
        (499, "client_disconnected"),
    ]
    for _, _, (failed, cut) in rows:
        assert failed.startswith("broken via fake (") and "500" in failed
        assert cut == "slow via fake (cancelled)"


def test_a_bug_on_its_fallback_keeps_its_attempt_path(
    registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug on the fallback's answer (our content-filter check, made to raise): the
    500 row lists the failed model, then the fallback as ``(internal_error)``; it
    listed nothing."""

    def bug(data: object) -> bool:
        raise RuntimeError("a bug on the fallback")

    monkeypatch.setattr(dispatcher_module, "_filtered", bug)
    registry.write_text(registry.read_text().replace("?delay=3", ""))

    async def main() -> None:
        async with Router.from_yaml(registry) as router:
            with pytest.raises(RuntimeError):
                await router.chat.completions.acreate(model="falling", messages=HELLO)

    asyncio.run(main())
    ((status, error, (failed, ended)),) = _attempts(registry.parent / "log.db")
    assert (status, error) == (500, "RuntimeError")
    assert failed.startswith("broken via fake (") and "500" in failed
    assert ended == "slow via fake (internal_error)"
