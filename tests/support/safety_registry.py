"""The registry the safety decision tests build a `Router` from: one route on a local
model that is never called, and a profile that blocks injections (the encoder is the
test's)."""

from __future__ import annotations

BLOCKING_REGISTRY = """
encoder: %(encoder)s
providers:
  local: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  small: {provider: local, model: s}
routes:
  - name: chat
    target: small
    examples: [hello there, how are you today, tell me a joke]
default: {target: small}
safety:
  profiles:
    standard: {injection: block, pii: allow}
  profile: standard
"""
