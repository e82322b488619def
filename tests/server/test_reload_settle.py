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
