"""What a reload costs the requests it runs beside: the new registry is built (its
intent head trained) with numpy's BLAS on one thread, so the event loop keeps a core,
while a first load (nothing served yet) keeps them all; and what a served process has
loaded stays out of the collector's generations while it serves."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from pathlib import Path

import pytest
from gateway_proc import ECHO_ONLY
from starlette.datastructures import State
from threadpoolctl import threadpool_info, threadpool_limits

from llmroute.decide import Router
from llmroute.encoders.base import Embeddings
from llmroute.encoders.fake import FakeEncoder
from llmroute.registry import load_registry
from llmroute.server.reload import build, reloading
from llmroute.server.settings import ServeSettings


def _blas_threads() -> int:
    """The threads numpy's BLAS would use now, as threadpoolctl reads them."""
    found = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    if not found:
        pytest.skip("numpy is linked to no BLAS that threadpoolctl knows")
    return min(found)


class _Watching(FakeEncoder):
    """Notes numpy's BLAS threads each time the load asks it for vectors."""

    def __init__(self) -> None:
        super().__init__()
        self.blas_threads: list[int] = []

    def encode(self, texts: Sequence[str]) -> Embeddings:
        self.blas_threads.append(_blas_threads())
        return super().encode(texts)


def test_a_reload_builds_with_one_blas_thread_and_a_first_load_with_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMROUTE_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "registry.yaml"
    path.write_text(ECHO_ONLY)
    watching = _Watching()
    with threadpool_limits(limits=2, user_api="blas"):  # as on a machine with 2 cores
        if _blas_threads() != 2:
            pytest.skip("this BLAS cannot be given 2 threads here")
        current = Router(load_registry(path), encoder=watching)
        assert watching.blas_threads == [2]
        path.write_text(ECHO_ONLY.replace("[hello there]", "[hello there, good morning]"))
        built = build(str(path), None, current)  # the same encoder: reused
        assert built is not None
        assert watching.blas_threads[1:] == [1]  # the new example, encoded for its head
        assert _blas_threads() == 2  # given back after the build
        assert build(str(path), None) is not None  # a first load: BLAS as it was
        assert _blas_threads() == 2


def test_a_served_process_keeps_what_it_loaded_out_of_the_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMROUTE_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "registry.yaml"
    path.write_text(ECHO_ONLY)

    async def frozen_while_serving() -> int:
        settings = ServeSettings(reload_interval_s=0)
        async with reloading(State(), str(path), settings):
            return gc.get_freeze_count()

    assert asyncio.run(frozen_while_serving()) > 0
    assert gc.get_freeze_count() == 0  # collectable again once it stopped serving
