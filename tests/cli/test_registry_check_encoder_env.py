"""`llmroute registry check` on a registry whose embeddings endpoint names credentials in
variables that are unset: `route` and `serve` stop on them, so the check warns of them at
the field's line (it passed them silently); a warning, as a missing GGUF file is, so CI
without the secrets passes, and ``--strict`` fails it."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmroute.cli._app import run

REGISTRY = """\
encoder:
  kind: openai
  base_url: http://127.0.0.1:19501/v1
  model: text-embedding-3-small
  api_key_env: H15_EMBED_KEY
  headers_env: {x-proxy-key: H15_EMBED_PROXY}
providers:
  echo: {kind: echo}
models:
  small: {provider: echo, model: echo-small}
routes:
  - {name: chat, target: small, examples: [hello there]}
  - {name: code, target: small, examples: [write a function]}
default: {target: small}
"""


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.delenv("H15_EMBED_KEY", raising=False)
    monkeypatch.delenv("H15_EMBED_PROXY", raising=False)
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY, encoding="utf-8")
    return path


def test_an_unset_encoder_header_variable_is_a_warning_at_its_line(
    registry: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("H15_EMBED_KEY", "sk-test")
    code = run(["registry", "check", str(registry)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.splitlines()[-1] == "ok (1 warning)"
    assert (
        f"warning: {registry}:6: encoder.headers_env.x-proxy-key: environment variable "
        "H15_EMBED_PROXY (the encoder's x-proxy-key header) is not set; `llmroute serve` "
        "and `route` stop on it"
    ) in err
    assert run(["registry", "check", "--strict", str(registry)]) == 1
    # `route` says it the same way, where it said neither the file nor the line
    code = run(["route", "--registry", str(registry), "hello"])
    assert code == 2 and f"{registry}:6: encoder.headers_env.x-proxy-key" in capsys.readouterr().err


def test_an_unset_encoder_key_variable_is_a_warning_and_set_ones_pass(
    registry: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(["registry", "check", str(registry)])
    err = capsys.readouterr().err
    assert code == 0 and f"warning: {registry}:5: encoder.api_key_env: environment variable" in err
    monkeypatch.setenv("H15_EMBED_KEY", "sk-test")
    monkeypatch.setenv("H15_EMBED_PROXY", "proxy-secret")
    code = run(["registry", "check", str(registry)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.splitlines()[-1] == "ok" and "sk-test" not in out + err
