"""What the key-pool and fallback-chain tests build their registries from: the
registry whose chains `llmroute route` and ``POST /v1/route`` are both checked against
(each adds its own keys, and the CLI a rule), and a difficulty router trained for a
default's ``difficulty`` section."""

from __future__ import annotations

import json
from pathlib import Path

# A route with a chain (code), one without (chat), the default's chain, and PII sent to
# a guarded model (which serves alone); the models are never called. Ends before
# ``auth:``, which each test file writes with its own keys.
FALLBACKS = """
encoder: builtin:static
intent: {method: knn, k: 1}
providers:
  p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  small: {provider: p, model: s}
  large: {provider: p, model: l}
  spare: {provider: p, model: x}
  guarded: {provider: p, model: g}
routes:
  - name: code
    examples: [debug this SQL query, write a python function]
    target: large
    policy: {fallback: [small, spare]}
  - name: chat
    examples: [hi there, how are you]
    target: small
default: {target: small, policy: {fallback: [spare, large]}}
safety:
  injection: {enabled: false}
  profiles: {standard: {pii: {route: guarded}}}
"""


def random_difficulty_router(folder: Path) -> Path:
    """``folder/router``: a difficulty router (``--router random``) trained by ``llmroute
    train difficulty`` on 60 labelled prompts, the weak model right on every third."""
    from llmroute.cli._app import run

    data = folder / "labels.jsonl"
    rows = (
        {"prompt": f"q {i}", "weak_correct": i % 3 == 0, "strong_correct": True} for i in range(60)
    )
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    trained = ["train", "difficulty", "--data", str(data), "--router", "random"]
    assert run([*trained, "-o", str(folder / "router")]) == 0
    return folder / "router"
