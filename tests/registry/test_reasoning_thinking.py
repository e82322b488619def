"""A model's ``reasoning.thinking`` (how an Anthropic model turns thinking on) and the
efforts ``xhigh`` and ``max``: loaded, and refused with the file, line and field where
they cannot apply."""

from __future__ import annotations

import pytest
from registry_helpers import VALID, assert_points_at, one_error, replace_line

from llmroute.registry import parse_registry


def test_thinking_and_the_new_efforts_load() -> None:
    # `large` is on an OpenAI provider: `thinking` applies where it sends Anthropic's
    text = replace_line(
        VALID, 13, "reasoning: {effort: xhigh, thinking: adaptive, param: thinking}"
    )
    reasoning = parse_registry(text).registry.model("large").reasoning
    assert reasoning is not None and reasoning is not False
    assert (reasoning.effort, reasoning.thinking) == ("xhigh", "adaptive")
    text = replace_line(VALID, 13, "reasoning: {effort: max, param: thinking}")
    assert parse_registry(text).registry.model("large").reasoning


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        (
            "reasoning: {param: reasoning_effort, thinking: adaptive}",
            "models.large.reasoning.thinking",
            ("Anthropic's thinking",),
        ),
        (  # param auto on an OpenAI provider is reasoning_effort: it loaded, did nothing
            "reasoning: {thinking: adaptive}",
            "models.large.reasoning.thinking",
            ("Anthropic's thinking", "openai providers", "param auto is reasoning_effort"),
        ),
        (
            "reasoning: {thinking: budget, effort: high}",
            "models.large.reasoning.thinking",
            ("set param: thinking",),
        ),
        (
            "reasoning: {param: enable_thinking, effort: max}",
            "models.large.reasoning.effort",
            ("'max' is Anthropic's", "'xhigh'"),
        ),
        (
            "reasoning: {thinking: sometimes}",
            "models.large.reasoning.thinking",
            ("'auto', 'adaptive' or 'budget'",),
        ),
    ],
)
def test_thinking_where_it_cannot_apply_points_at_the_line(
    line: str, field: str, words: tuple[str, ...]
) -> None:
    error = one_error(replace_line(VALID, 13, line))
    assert_points_at(error, 13, field, *words)


def test_thinking_with_param_auto_loads_where_an_anthropic_provider_serves() -> None:
    """Param auto is ``thinking`` on Anthropic providers: one deployment there is enough."""
    text = VALID.replace(
        "  openai: {kind: openai,",
        "  claude: {kind: anthropic, api_key_env: ANTHROPIC_API_KEY}\n  openai: {kind: openai,",
    )
    text = text.replace(
        "    provider: openai\n    model: gpt-4.1\n",
        "    deployments: [{provider: openai}, {provider: claude, model: claude-opus-4-7}]\n"
        "    model: gpt-4.1\n",
    )
    text = text.replace("reasoning: {budget_tokens: 8000}", "reasoning: {thinking: adaptive}")
    reasoning = parse_registry(text).registry.model("large").reasoning
    assert reasoning and reasoning.thinking == "adaptive"
