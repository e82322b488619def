"""The registry the dashboard tests serve: three routes, one of whose model always
answers 503 (its breaker opens after two failures and the route falls back), and two
model budgets (one hard)."""

from __future__ import annotations

DASHBOARD_REGISTRY = """
encoder: builtin:static
providers:
  fake: {kind: openai, base_url: "%(url)s", timeout_s: 5}
models:
  small: {provider: fake, model: small, price: {input: 1, output: 2}, budget: {usd: 100}}
  large:
    provider: fake
    model: large
    price: {input: 10, output: 20}
    max_output_tokens: 4096
    budget: {usd: 5, period: month, hard: true}
  broken: {provider: fake, model: 'broken?status=503', price: {input: 1, output: 1}}
routes:
  - {name: code, examples: ["write a python function", "fix the bug in my code"], target: large}
  - {name: chat, examples: ["hello there", "how are you today"], target: small}
  - name: ops
    examples: ["restart the database server", "page the on-call engineer"]
    target: broken
    policy: {fallback: [small]}
default: {target: small}
dispatch:
  retries: {attempts: 0}
  breaker: {failures: 2, cooldown_s: 600}
"""
