"""Encoder test fixtures: one ONNX export cache shared by every run of the suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmroute.encoders import Encoder, load_builtin
from llmroute.encoders.paths import minilm_model_dir
from llmroute.errors import EncoderUnavailable

ROOT = Path(__file__).resolve().parents[2]
EXPORT_CACHE = ROOT / ".pytest_cache" / "llmroute"


@pytest.fixture(scope="session", autouse=True)
def llmroute_cache_dir() -> Iterator[Path]:
    """Point LLMROUTE_CACHE_DIR at .pytest_cache/llmroute so the export is reused."""
    previous = os.environ.get("LLMROUTE_CACHE_DIR")
    EXPORT_CACHE.mkdir(parents=True, exist_ok=True)
    os.environ["LLMROUTE_CACHE_DIR"] = str(EXPORT_CACHE)
    yield EXPORT_CACHE
    if previous is None:
        os.environ.pop("LLMROUTE_CACHE_DIR", None)
    else:
        os.environ["LLMROUTE_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    try:
        return minilm_model_dir()
    except EncoderUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def minilm(minilm_dir: Path, llmroute_cache_dir: Path) -> Encoder:
    return load_builtin("minilm", cache_dir=llmroute_cache_dir)


@pytest.fixture(scope="session")
def static() -> Encoder:
    return load_builtin("static")
