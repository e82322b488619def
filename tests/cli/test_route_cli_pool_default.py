"""`llmroute route --key NAME --explain` shows the policy a request the key's pool sends
to the default is served under, as the gateway applies it: the default's safety profile
too (``open+strict``: the stricter of the route's and the default's), and the default's
reasoning tier."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_route_cli import llmroute

REGISTRY = """
encoder: builtin:static
intent: {method: knn, k: 1}
providers:
  p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  small: {provider: p, model: s}
  large: {provider: p, model: l}
  thinker: {provider: p, model: t}
routes:
  - name: code
    examples: [write a python function, debug this SQL query]
    target: large
    threshold: 0.25
    policy: {safety: open}
default: {target: small, reasoning_target: thinker, policy: {safety: strict}}
safety:
  injection: {enabled: false}
  profiles:
    open: {pii: allow}
    strict: {pii: {EMAIL: redact, US_SSN: block, "*": allow}}
  profile: open
reasoning: {scorer: null}
auth:
  keys:
    - {name: team, key_env: LLMROUTE_TEST_TEAM_KEY, pool: [small, thinker]}
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pool-default") / "registry.yaml"
    path.write_text(REGISTRY)
    return path


def _explained(registry: Path, text: str, *args: str) -> list[str]:
    result = llmroute("route", "-r", str(registry), "--explain", *args, text)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_explain_shows_the_defaults_safety_and_reasoning(registry: Path) -> None:
    ssn = "write a python function for ssn 536-22-1234"
    assert "safety: " not in "\n".join(_explained(registry, ssn))  # route code allows it
    lines = _explained(registry, ssn, "--key", "team")
    assert lines[0].endswith("BLOCKED by safety (profile open+strict: pii:US_SSN)")
    assert "safety: BLOCK (profile open+strict: pii:US_SSN)" in lines
    assert "fallbacks: none (blocked by safety: nothing is sent)" in lines

    lines = _explained(registry, "write a python function for bob@example.com", "--key", "team")
    assert lines[0].startswith("code -> small ")
    assert "safety: REDACT (profile open+strict: pii:EMAIL)" in lines

    lines = _explained(registry, "write a python function step by step", "--key", "team")
    assert lines[0].startswith("code -> thinker ")
    assert "reasoning: needed, served by thinker (trigger 'step by step')" in lines
    assert "fallbacks: small" in lines
