"""The answer limit a model is capped at, as its upstream's refusal says it: the router
sends a client's ``max_tokens``, chosen for the model the client thought it asked, to
the model it picked, whose cap may be lower (Claude Opus 4.1 answers at most 32,000
tokens, Sonnet 4.5 64,000; gpt-4o 16,384). Without the model's ``max_output_tokens`` in
the registry every such request failed; read from the refusal, the request is sent once
more within the cap, and so are the deployment's later ones."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["refused_cap"]

# Anthropic: "max_tokens: 64000 > 32000, which is the maximum allowed number of output
# tokens for claude-opus-4-1-20250805"; OpenAI: "max_tokens is too large: 32000. This
# model supports at most 16384 completion tokens, whereas you provided 32000."
_REFUSALS = (
    re.compile(r"max_tokens: (\d+) > (\d+), which is the maximum allowed number of output"),
    re.compile(
        r"max_(?:completion_)?tokens is too large: (\d+)\. This model supports at most (\d+) "
        r"completion tokens"
    ),
)
_LIMITS = ("max_tokens", "max_completion_tokens")


def refused_cap(message: str, sent: Mapping[str, Any]) -> int | None:
    """The cap an upstream's refusal of `sent` names, when it refused an answer limit
    above it that `sent` holds (so that lowering the limit may serve it); else None."""
    for refusal in _REFUSALS:
        found = refusal.search(message)
        if found is None:
            continue
        cap = int(found.group(2))
        limits = [sent.get(key) for key in _LIMITS]
        asked = [v for v in limits if isinstance(v, int) and not isinstance(v, bool)]
        return cap if cap >= 1 and any(value > cap for value in asked) else None
    return None
