"""What a reload's log line says it changed: routes, models and providers by name, then
the other sections (an operator could not tell what a reload did, nor that a half-written
file had dropped `auth`)."""

from __future__ import annotations

from llmroute.registry import parse_registry
from llmroute.server.reload import changes

BASE = """
encoder: builtin:static
providers:
  up: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  small: {provider: up, model: s}
  large: {provider: up, model: l}
routes:
  - {name: chat, examples: [hello there], target: small}
  - {name: code, examples: [write a function], target: large}
default: {target: small}
auth: {keys: [{name: team, sha256: "%s"}]}
""" % ("0" * 64)


def test_a_reload_says_what_it_changed() -> None:
    old = parse_registry(BASE).registry
    edited = (
        BASE.replace("  - {name: code, examples: [write a function], target: large}\n", "")
        .replace("  large: {provider: up, model: l}", "  large: {provider: up, model: l2}")
        .replace("routes:\n", "routes:\n  - {name: maths, examples: [solve x], target: large}\n")
        .replace('auth: {keys: [{name: team, sha256: "' + "0" * 64 + '"}]}\n', "")
    )
    new = parse_registry(edited + "dispatch: {retries: {attempts: 0}}\n").registry
    assert changes(old, new) == "routes +maths -code; models ~large; dispatch; auth"
    assert changes(old, old) == "no setting"
