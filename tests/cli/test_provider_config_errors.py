"""A provider whose client this environment cannot build (bedrock signing with AWS keys
and no region to sign for) is one line at the provider's line, as `llmroute serve` says
it, from `registry probe` and from `llmroute route` with an LLM router on it (both said
``error: providers.aws.region: ...``, with no file and line)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LLMROUTE = str(Path(sys.executable).parent / "llmroute")
REGISTRY = """encoder: builtin:static
providers:
  aws: {kind: bedrock, base_url: "http://127.0.0.1:9"}
models:
  sonnet: {provider: aws, model: "anthropic.claude-sonnet-4-5-20250929-v1:0"}
routes:
  - {name: a, examples: ["hello"], target: sonnet}
  - {name: b, examples: ["goodbye"], target: sonnet}
default: {target: sonnet}
"""
SAID = (
    "registry.yaml:3: providers.aws.region: provider 'aws' signs with AWS keys and needs "
    "the region they sign for; set region (its base_url does not say it)"
)
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY-h7"


@pytest.mark.parametrize(
    ("extra", "args"),
    [
        ("", ["registry", "probe"]),
        ("llm_fallback: {model: sonnet, margin: 1.0}\n", ["route", "hello there"]),
    ],
)
def test_a_provider_that_cannot_be_built_is_one_line_at_its_line(
    tmp_path: Path, extra: str, args: list[str]
) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY + extra)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "COLUMNS": "400",
    }
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        env.pop(name, None)
    done = subprocess.run(
        [LLMROUTE, *args, "--registry", str(registry)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stderr.strip()
    assert "Traceback" not in said and len(said.splitlines()) == 1, said
    assert said.endswith(SAID), said
    assert SECRET not in done.stdout + done.stderr
