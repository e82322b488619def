"""``uvicorn --factory llmroute.server.app:app_from_env``, run by hand: no CLI checks
the environment it reads, so the factory says what is wrong in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmroute.server.settings import ServeSettings


def test_a_bad_variable_under_uvicorns_factory_is_one_line(tmp_path: Path) -> None:
    """``uvicorn --factory llmroute.server.app:app_from_env`` has no CLI to check the
    environment: a bad value stops it naming the variable, without a traceback."""
    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    base = {**os.environ, "LLMROUTE_REGISTRY": str(tmp_path / "registry.yaml")}
    for name, value in [
        ("LLMROUTE_CORS_ORIGINS", "https://*.example.com"),
        ("LLMROUTE_ROOT_PATH", "llm"),
        ("LLMROUTE_MAX_BODY_BYTES", "4mb"),
        ("LLMROUTE_LOG_REQUESTS", "sometimes"),
        ("LLMROUTE_LOG_FORMAT", "xml"),
        ("LLMROUTE_REGISTRY", ""),
    ]:
        done = subprocess.run(
            [uvicorn, "--factory", "llmroute.server.app:app_from_env", "--port", "0"],
            env={**base, name: value},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0
        assert "Traceback" not in done.stderr, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: ${name}"), done.stderr


def test_a_number_variable_is_named_when_it_is_not_one() -> None:
    with pytest.raises(ValueError, match=r"^\$LLMROUTE_SSE_KEEPALIVE 'soon': not a number"):
        ServeSettings.from_env({"LLMROUTE_SSE_KEEPALIVE": "soon"})
    assert ServeSettings.from_env({"LLMROUTE_WORKERS": "3"}).workers == 3


def test_a_registry_that_cannot_be_served_is_one_line_under_uvicorns_factory(
    tmp_path: Path,
) -> None:
    """The factory does the first load, as ``llmroute serve`` does before uvicorn starts:
    a bad file or a missing artifact stops it naming the file and line, where it was
    uvicorn's lifespan traceback ("Application startup failed") and exit status 3."""
    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    broken = tmp_path / "broken.yaml"
    broken.write_text("routes: [\n  bad")
    missing = tmp_path / "missing.yaml"
    for path, said in [
        (broken, f"error: {broken}:2: invalid YAML"),
        (missing, f"error: {missing}"),
    ]:
        done = subprocess.run(
            [uvicorn, "--factory", "llmroute.server.app:app_from_env", "--port", "0"],
            env={**os.environ, "LLMROUTE_REGISTRY": str(path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith(said), done.stderr


@pytest.mark.parametrize(
    ("name", "value", "least"),
    [
        ("LLMROUTE_MAX_BODY_BYTES", "-1", "1"),  # every request a 413 'larger than -1 bytes'
        ("LLMROUTE_ENCODER_THREADS", "0", "1"),
        ("LLMROUTE_WORKERS", "0", "1"),
        ("LLMROUTE_RELOAD_INTERVAL", "-1", "0"),
        ("LLMROUTE_GRACEFUL_TIMEOUT", "-5", "0"),
        ("LLMROUTE_SSE_KEEPALIVE", "-0.5", "0"),
    ],
)
def test_a_number_variable_out_of_range_is_refused_as_serve_refuses_it(
    name: str, value: str, least: str
) -> None:
    """``serve``'s options have their least values (``--max-body-bytes`` 1, ...); the
    variables the factory reads in their place are held to the same."""
    with pytest.raises(ValueError, match=rf"^\${name} '{value}': .*at least {least}"):
        ServeSettings.from_env({name: value})
    assert ServeSettings.from_env({name: least}) is not None
