"""Shared registry texts and helpers for the registry tests."""

from __future__ import annotations

import textwrap

import pytest

from llmroute.errors import ConfigError
from llmroute.registry import ConfigErrors, parse_registry

# Line numbers matter: tests below point at lines of this text (line 1 is `version: 3`).
VALID = textwrap.dedent(
    """\
    version: 3
    encoder: builtin:static
    providers:
      local: {kind: openai, base_url: "http://127.0.0.1:8001/v1"}
      openai: {kind: openai, base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}
    models:
      small: {provider: local, model: qwen2.5-7b-instruct, price: {input: 0.1, output: 0.1}}
      large:
        provider: openai
        model: gpt-4.1
        price: {input: 2.0, output: 8.0}
        context_window: 1047576
        reasoning: {budget_tokens: 8000}
    intent:
      method: knn
      k: 3
      threshold: 0.4
    routes:
      - name: code
        description: programming help
        examples: ["write a Python function to parse JSON", "debug this SQL query"]
        target: small
        threshold: 0.55
        policy: {timeout_s: 30, fallback: [large], retries: 1}
      - name: chitchat
        examples: ["hi there!", "how are you today?"]
        target: small
    default: {target: small, description: everything else}
    rules:
      - name: pinned-tenant
        when: {header: {X-Tenant: acme}}
        target: large
      - name: traces
        when: {regex: 'Traceback \\(most recent', min_tokens: 3}
        route: code
    """
)


def errors_of(text: str, source: str = "reg.yaml") -> list[ConfigError]:
    """The errors parsing `text` raises (it must raise)."""
    with pytest.raises(ConfigError) as info:
        parse_registry(text, source=source)
    exc = info.value
    return list(exc.errors) if isinstance(exc, ConfigErrors) else [exc]


def one_error(text: str, source: str = "reg.yaml") -> ConfigError:
    errors = errors_of(text, source)
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]


def replace_line(text: str, number: int, new: str) -> str:
    """`text` with its 1-based line `number` replaced by `new` (same indentation kept)."""
    lines = text.splitlines()
    old = lines[number - 1]
    indent = old[: len(old) - len(old.lstrip())]
    lines[number - 1] = indent + new
    return "\n".join(lines) + "\n"


def assert_points_at(error: ConfigError, line: int, field: str, *words: str) -> None:
    assert error.file == "reg.yaml", error
    assert error.line == line, error
    assert error.field == field, error
    assert str(error).startswith(f"reg.yaml:{line}: {field}: "), error
    for word in words:
        assert word in error.message, error
