"""Routing cases files: validated against their schema and the registry's names, with
every problem naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from registry_helpers import VALID

from llmroute.errors import ConfigError
from llmroute.registry import parse_registry
from llmroute.registry.cases import load_cases, parse_cases

REGISTRY = parse_registry(VALID).registry


def test_cases_load_with_their_lines_and_labels() -> None:
    text = """cases:
  - name: greeting
    prompt: hello there
    expect: {route: chitchat, model: [small, large]}
  - request: {model: large, messages: [{role: user, content: hi}]}
    headers: {X-Tenant: acme}
    expect: {layer: pinned, safety: allow, reasoning: false, min_confidence: 0.5}
"""
    loaded = parse_cases(text, REGISTRY, source="cases.yaml")
    assert loaded.lines == (2, 5)
    assert [loaded.label(0), loaded.label(1)] == ["greeting", "cases.yaml:5"]
    first, second = loaded.cases
    assert first.expect.model == ("small", "large") and second.headers == {"X-Tenant": "acme"}


@pytest.mark.parametrize(
    ("case", "line", "message"),
    [
        (
            "{prompt: hi, expect: {route: chitchatt}}",
            2,
            "cases[0].expect.route: unknown route 'chitchatt' (did you mean 'chitchat'?)",
        ),
        (
            "{prompt: hi, expect: {model: [small, huge]}}",
            2,
            "cases[0].expect.model[1]: unknown model 'huge'",
        ),
        ("{prompt: hi, expect: {rule: nope}}", 2, "cases[0].expect.rule: unknown rule 'nope'"),
        (
            "{prompt: hi, expect: {chain: [small, larg]}}",
            2,
            "cases[0].expect.chain[1]: unknown model 'larg' (did you mean 'large'?)",
        ),
        (
            "{prompt: hi, expect: {modle: small}}",
            2,
            "cases[0].expect.modle: unknown key 'modle' (did you mean 'model'?)",
        ),
        ("{prompt: hi, expect: {}}", 2, "cases[0].expect: expect needs at least one key"),
        (
            "{prompt: hi, expect: {layer: intnet}}",
            2,
            "cases[0].expect.layer: unknown layer 'intnet' (did you mean 'intent'?)",
        ),
        ("{prompt: hi, expect: {safety: maybe}}", 2, "cases[0].expect.safety"),
        ("{prompt: hi, expect: {safety: block}}", 2, "the registry has no safety section"),
        ("{prompt: hi, expect: {reasoning: true}}", 2, "the registry has no reasoning section"),
        (
            "{prompt: hi, request: {messages: []}, expect: {route: chitchat}}",
            2,
            "cases[0]: give exactly one of 'prompt' or 'request'",
        ),
        ("{expect: {route: chitchat}}", 2, "give exactly one of 'prompt' or 'request'"),
        ("{prompt: hi}", 2, "cases[0].expect: missing required key 'expect'"),
    ],
)
def test_a_bad_case_names_file_line_and_field(case: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_cases(f"cases:\n  - {case}\n", REGISTRY, source="c.yaml")
    assert caught.value.line == line
    assert message in str(caught.value), str(caught.value)
    assert str(caught.value).startswith(f"c.yaml:{line}: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the cases file is empty"),
        ("- {prompt: hi}\n", "the top level must be a mapping with 'cases', not a list"),
        ("cases: []\n", "cases: must not be empty"),
        ("cases: [\n", "invalid YAML"),
        ("cases:\n  - {prompt: hi, expect: {route: chitchat}, prompt: ho}\n", "duplicate key"),
    ],
)
def test_a_bad_file_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_cases(text, REGISTRY, source="c.yaml")


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the cases file"):
        load_cases(tmp_path / "missing.yaml", REGISTRY)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"cases:\n  - {prompt: caf\xe9, expect: {route: chitchat}}\n")
    with pytest.raises(ConfigError, match=r"latin1\.yaml:2: the file is not valid UTF-8"):
        load_cases(bad, REGISTRY)


def test_aliases_past_the_cap_are_one_error_naming_the_cases_file() -> None:
    """The registry's cap on what aliases add (100,000 values) holds for a cases file
    too, said at the cases file (not "the registry"), at the alias that passed it."""
    case = "  - &c {prompt: hi, expect: {route: [" + ", ".join(["code"] * 400) + "]}}\n"
    with pytest.raises(ConfigError) as caught:
        parse_cases("cases:\n" + case + "  - *c\n" * 399, REGISTRY, source="c.yaml")
    assert str(caught.value) == (
        "c.yaml:1: cases[248]: aliases expand the document by more than 100,000 values"
    )
