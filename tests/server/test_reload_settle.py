"""A registry file still being written is not loaded half-way: a change is loaded once
two checks in a row found the same content. (A non-atomic write that paused where its
first part was a valid registry, one without its last section `auth`, was applied: the
gateway served requests without a key until the rest came.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.datastructures import State

from llmroute.server.reload import Reloader, fingerprint
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
