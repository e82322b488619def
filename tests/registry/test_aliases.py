"""``aliases``: the model names clients hard-code (``gpt-4o``, ``claude-*``) mapped to
``auto``, a route or a pool model; checked like every other reference."""

from __future__ import annotations

import pytest
from registry_helpers import VALID, assert_points_at, one_error

from llmroute.registry import parse_registry

ALIASES = """aliases:
  gpt-4o: auto
  gpt-4o-mini: chitchat
  "claude-*": code
  "o[34]*": large
  "*": auto
"""


def test_exact_then_names_then_globs_in_file_order() -> None:
    registry = parse_registry(VALID + ALIASES).registry
    resolve = registry.resolve_alias
    assert resolve("gpt-4o") == "auto" and resolve("gpt-4o-mini") == "chitchat"
    assert resolve("claude-sonnet-4-5-20250929") == "code"
    assert resolve("o3-mini") == "large" and resolve("o4") == "large"
    assert resolve("anything-else") == "auto"  # the catch-all, last
    for name in ("auto", "code", "small", "large", "router-mlp-0.5"):
        assert resolve(name) == name  # what exists is never redirected by a glob
    assert registry.exact_aliases() == {"gpt-4o": "auto", "gpt-4o-mini": "chitchat"}


def test_without_aliases_every_name_is_itself() -> None:
    registry = parse_registry(VALID).registry
    assert registry.resolve_alias("gpt-4o") == "gpt-4o"


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("code: small", "would hide the route or model of that name"),
        ("small: auto", "would hide the route or model of that name"),
        ("gpt-4o: gpt-4o-mini", "is itself an alias"),
        ("gpt-4: lage", "unknown target 'lage' (did you mean 'large'?)"),
        ('"x": ""', "must be non-empty"),
        # no default.difficulty: every request for it was a 404 (it loaded)
        ("gpt-4: router-mf-0.5", "names a difficulty router, and this registry declares none"),
    ],
)
def test_a_bad_alias_names_its_line(entry: str, words: str) -> None:
    text = VALID + f"aliases:\n  gpt-4o-mini: auto\n  {entry}\n"
    error = one_error(text)
    alias = entry.split(":")[0].strip('"')
    assert_points_at(error, VALID.count("\n") + 3, f"aliases.{alias}", words)


def test_a_key_allowed_a_difficulty_router_the_registry_lacks_names_its_line() -> None:
    """Like an unknown model name: every request for it was a 404."""
    text = VALID + (
        f"auth:\n  keys:\n    - {{name: a, sha256: '{'1' * 64}', models: [auto, router-mf-0.3]}}\n"
    )
    error = one_error(text)
    assert_points_at(
        error, VALID.count("\n") + 3, "auth.keys[0].models[1]", "declares none (default.difficulty)"
    )


def test_a_pool_model_named_router_something_may_be_aliased_and_allowed() -> None:
    """A pool model is served by its name before a `router-` name is read as a
    difficulty router (`plan.model_layers`): an alias or a key naming one is no 404."""
    small = "  small: {provider:"
    pool = VALID.replace(small, "  router-lite: {provider: local, model: m}\n" + small)
    assert pool != VALID
    text = pool + (
        "aliases:\n  gpt-4o-mini: router-lite\n"
        f"auth:\n  keys:\n    - {{name: a, sha256: '{'1' * 64}', models: [router-lite]}}\n"
    )
    registry = parse_registry(text).registry
    assert registry.resolve_alias("gpt-4o-mini") == "router-lite"
