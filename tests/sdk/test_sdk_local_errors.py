"""The SDK names a llamacpp model's missing GGUF at its line in the registry, as
`llmroute serve` and `llmroute route` do (it said ``models.gemma.model: ...`` with no
file or line). No llama-cpp-python needed: the file is checked first."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmroute import Router
from llmroute.errors import ConfigError

REGISTRY = """encoder: builtin:static
providers:
  local: {kind: llamacpp}
models:
  gemma:
    provider: local
    model: models/nope.gguf
routes:
  - {name: chat, examples: [hello there], target: gemma}
default: {target: gemma}
telemetry: {enabled: false}
"""


def test_a_missing_gguf_is_named_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY)
    with Router.from_yaml(path) as router, pytest.raises(ConfigError) as caught:
        router.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert (caught.value.file, caught.value.line) == (str(path), 7)
    assert str(caught.value).startswith(f"{path}:7: models.gemma.model: GGUF file not found: ")


def test_feedback_with_the_log_off_says_how_to_turn_it_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """examples/echo.yaml, the README's starter, turns the decision log off with
    ``telemetry: {enabled: false}``; feedback's error named only ``telemetry.url`` and
    the variable, neither of which is what turned it off."""
    monkeypatch.delenv("LLMROUTE_TELEMETRY_URL", raising=False)
    echo = Path(__file__).parents[2] / "examples" / "echo.yaml"
    with Router.from_yaml(echo) as router:
        reply = router.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}]
        )
        with pytest.raises(RuntimeError) as caught:
            router.chat.feedback(reply.llmroute["decision_id"], thumbs="up")
    message = str(caught.value)
    assert "telemetry.enabled is false" in message
    assert "telemetry: {enabled: true}" in message and "$LLMROUTE_TELEMETRY_URL=" in message


def test_feedback_with_a_log_that_could_not_open_says_so_not_that_it_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A decision log named but not opened (a URL of no store it knows) is not one
    turned off: feedback said ``telemetry.enabled is false, or $LLMROUTE_TELEMETRY_URL
    is off`` and how to turn it on, though the variable named a log. It says what could
    not be opened and why, the password masked."""
    monkeypatch.setenv("LLMROUTE_TELEMETRY_URL", "mysql://u:hunter2@127.0.0.1/db")
    echo = Path(__file__).parents[2] / "examples" / "echo.yaml"
    with Router.from_yaml(echo) as router:
        reply = router.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}]
        )
        with pytest.raises(RuntimeError) as caught:
            router.chat.feedback(reply.llmroute["decision_id"], thumbs="up")
    message = str(caught.value)
    assert "could not be opened" in message and "mysql://u:***@127.0.0.1/db" in message
    assert "unsupported telemetry URL" in message
    assert "is off" not in message and "hunter2" not in message
