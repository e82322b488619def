"""The load's warnings are worked out off the event loop: the lint reads every example of
the registry (60-400 ms at 300 routes and 15k examples), and run on the loop at each
reload it stalled every request the gateway was serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest
from starlette.datastructures import State

from llmroute.registry.lint import lint
from llmroute.server import reload
from llmroute.server.settings import ServeSettings

REGISTRY = """\
encoder: builtin:static
providers:
  echo: {kind: echo}
models:
  small: {provider: echo, model: echo-small}
routes:
  - {name: chat, examples: ["hello there", "how are you"], target: small}
  - {name: code, examples: [%s], target: small}
default: {target: small}
telemetry: {enabled: false}
"""


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_the_warnings_of_a_start_and_a_reload_are_worked_out_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY % '"write a function"')
    monkeypatch.setenv("LLMROUTE_CACHE_DIR", str(tmp_path / "cache"))
    on_loop: list[bool] = []

    def linted(registry: object) -> object:
        on_loop.append(_on_event_loop())
        return lint(registry)  # type: ignore[arg-type]

    monkeypatch.setattr(reload, "lint", linted)

    async def start_and_reload() -> None:
        state = State()
        reloader = reload.Reloader(state, str(path), ServeSettings(reload_interval_s=0))
        await reloader.load_first()
        try:
            path.write_text(REGISTRY % '"write a function", "debug this query"')
            async with anyio.create_task_group() as tasks:
                await reloader.reload("test", tasks)
        finally:
            await reloader.aclose()

    asyncio.run(start_and_reload())
    assert on_loop == [False, False]
