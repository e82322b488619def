"""A registry file still being written is not loaded half-way: a change is loaded once
two checks in a row found the same content. (A non-atomic write that paused where its
first part was a valid registry, one without its last section `auth`, was applied: the
gateway served requests without a key until the rest came.)"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import anyio
import pytest
from gateway_proc import ECHO_ONLY
from starlette.datastructures import State

from llmroute.server.reload import ChangedWhileRead, Fingerprint, Reloader, build, fingerprint
from llmroute.server.settings import ServeSettings


def test_a_change_is_loaded_once_two_checks_agree_on_it(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text("first: whole\n")

    async def checks() -> list[bool]:
        reloader = Reloader(State(), str(path), ServeSettings(reload_interval_s=0.1))
        reloader._seen = fingerprint(str(path))  # as loaded at start
        said = [await reloader._changed()]  # unchanged
        path.write_text("second: half")  # a writer's first part
        said.append(await reloader._changed())  # seen once: not yet
        path.write_text("second: half\nauth: the rest\n")
        said.append(await reloader._changed())  # moved again: not yet
        said.append(await reloader._changed())  # the same twice: load it
        reloader._seen = reloader._looked  # what `watch` does as it loads
        said.append(await reloader._changed())  # loaded: nothing more
        return said

    assert asyncio.run(checks()) == [False, False, False, True, False]


def test_a_file_that_changed_again_as_it_was_read_is_not_loaded(tmp_path: Path) -> None:
    """The checks agreed on one content; a writer started again before the load read the
    file: what the load read is not applied, and the file is checked again."""
    path = tmp_path / "registry.yaml"
    path.write_text(ECHO_ONLY)
    settled = fingerprint(str(path))
    assert settled is not None
    path.write_text(ECHO_ONLY.split("routes:")[0])  # the writer's first part
    with pytest.raises(ChangedWhileRead):
        build(str(path), None, settled=settled.digest)
    path.write_text(ECHO_ONLY)
    assert build(str(path), None, settled=settled.digest) is not None


def test_the_watcher_checks_again_after_a_file_changed_as_it_was_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llmroute.server")
    path = tmp_path / "registry.yaml"
    path.write_text("first: whole\n")

    async def watched() -> tuple[Fingerprint | None, Fingerprint | None, list[str | None]]:
        reloader = Reloader(State(), str(path), ServeSettings(reload_interval_s=0.01))
        reloader._seen = start = fingerprint(str(path))
        asked: list[str | None] = []

        async def reload(reason: str, tasks: object, settled: str | None = None) -> None:
            asked.append(settled)
            raise ChangedWhileRead

        reloader.reload = reload  # type: ignore[method-assign]
        path.write_text("second: whole\n")
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(reloader.watch, tasks)
            with anyio.fail_after(10):
                while len(asked) < 2:
                    await anyio.sleep(0.01)
            tasks.cancel_scope.cancel()
        return start, reloader._seen, asked

    start, seen, asked = asyncio.run(watched())
    second = fingerprint(str(path))
    assert second is not None
    assert seen == start  # still the content it serves: the change is loaded when it can be
    assert asked[:2] == [second.digest, second.digest]
    assert "registry file changed while it was read" in caplog.text


LIMITED = """
encoder: builtin:static
providers:
  echo: {kind: echo}
models:
  small: {provider: echo, model: echo-small, max_in_flight: %(most)d}
routes:
  - {name: chat, examples: [hello there], target: small}
default: {target: small}
telemetry: {enabled: false, prompts: %(prompts)s}
dispatch:
  limits: {url: "%(url)s", namespace: "%(ns)s"}
"""


def test_a_reload_cut_by_the_shutdown_closes_the_gateway_it_opened(
    tmp_path: Path, redis_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shutdown that comes while a reload builds (in a thread, shielded) cut it at the
    next await once the new gateway was open (the decision log's, when its settings
    changed): never swapped in nor closed, that gateway's limits stayed among the
    process's open ones, the heir of the retiring version's give-backs at the
    shutdown's close (nothing made them), and its clients were left open."""
    import gc
    import threading

    from redis_service import REDIS_URL

    from llmroute.registry.schema import TelemetrySettings
    from llmroute.server import reload as reload_module
    from llmroute.server.metrics import GatewayMetrics
    from llmroute.state import limits as limits_module
    from llmroute.telemetry.service import Telemetry

    values = {"url": REDIS_URL, "ns": redis_namespace}
    path = tmp_path / "registry.yaml"
    path.write_text(LIMITED % {**values, "most": 3, "prompts": "hash"})
    building, cut = threading.Event(), threading.Event()
    cut.set()  # the first load goes straight through
    real_build = reload_module.build

    def build(*args: object) -> object:  # the shutdown comes as it builds
        building.set()
        cut.wait(10)
        return real_build(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(reload_module, "build", build)

    async def go() -> tuple[int, int]:
        state = State()
        state.metrics = GatewayMetrics()
        state.telemetry = Telemetry(TelemetrySettings(enabled=False), state.metrics)
        reloader = Reloader(state, str(path), ServeSettings(reload_interval_s=0))
        await reloader.load_first()
        path.write_text(LIMITED % {**values, "most": 4, "prompts": "full"})
        building.clear()
        cut.clear()
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(reloader.reload, "SIGHUP", tasks)
                await anyio.to_thread.run_sync(building.wait, 10)
                tasks.cancel_scope.cancel()  # the shutdown
                cut.set()
            opened = len(limits_module._OPEN[(REDIS_URL, redis_namespace)])
            return opened, reloader.current.dispatcher.registry.models["small"].max_in_flight
        finally:
            await reloader.aclose()

    collecting = gc.isenabled()
    gc.disable()  # the unclosed gateway is not collected meanwhile by chance
    try:
        assert asyncio.run(go()) == (1, 3)  # the first version's limits alone
    finally:
        if collecting:
            gc.enable()
