"""The reasoning gate: does this request need extended thinking?

It runs on every request after routing and safety (``always_runs``) and never decides a
route. Four signals, any of which makes the request ``needed``:

- a trigger: one case-insensitive alternation of regexes (`DEFAULT_TRIGGERS`, or the
  registry's ``reasoning.triggers``), e.g. "prove that", "step by step", "debug";
- a multi-part question: at least ``min_parts`` numbered / bulleted lines or question
  marks;
- a long request: at least ``long_tokens`` estimated tokens (`llmroute.token_estimate`:
  four characters a token of English, a token a Chinese character);
- the learned scorer: ``σ(w·x + b)`` over the shared request embedding, at ``threshold``.

When needed, the outcome's ``tier`` is the route's ``reasoning_target`` (the default's when
no route decided), and `run_pipeline` serves the request with it; a request that pinned a
pool model, or a rule that named a model, keeps its model. Either way the outcome goes to
dispatch, which sets the model's thinking parameters (llmroute.dispatch.reasoning_params).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import islice
from pathlib import Path
from typing import Any

from llmroute.decision import ReasoningOutcome
from llmroute.encoders.base import Encoder
from llmroute.encoders.scripts import ScriptCheck
from llmroute.errors import ConfigError
from llmroute.layers.base import DecisionContext, LayerResult
from llmroute.layers.difficulty import DIFFICULTY_ROUTE
from llmroute.layers.intent import unread_scripts
from llmroute.layers.pin import PIN_LAYER
from llmroute.reasoning.artifact import ReasoningScorer, builtin_scorer_dir, load_scorer
from llmroute.registry import Registry
from llmroute.token_estimate import CHARS_PER_TOKEN

__all__ = ["DEFAULT_TRIGGERS", "REASONING_LAYER", "ReasoningLayer", "build_reasoning_layer"]

REASONING_LAYER = "reasoning"

DEFAULT_TRIGGERS: tuple[str, ...] = (
    r"\bprove\s+(?:that|it|this|the)\b",
    r"\b(?:a|the|formal|rigorous)\s+proof\b",
    r"\bderive\b",
    r"\bderivation\b",
    r"\bstep[\s-]+by[\s-]+step\b",
    r"\bdebug(?:ging)?\b",
    r"\bwhy\s+(?:is|does|do|did|are)\s+(?:this|that|my|it|the)\b[^.?!\n]{0,60}?"
    r"\b(?:wrong|fail|failing|break|broken|crash|incorrect|not\s+work)",
    r"\bwhat(?:'s|\s+is)\s+wrong\s+with\b",
    r"\bshow\s+(?:your|the|all)\s+(?:work|working|reasoning|steps)\b",
    r"\bexplain\s+why\b",
    r"\b(?:time|space|computational)\s+complexity\b",
    r"\bcomplexity\s+analysis\b",
    r"\bbig[\s-]?o\b",
    r"\basymptotic",
    r"\bby\s+induction\b",
    r"\bcounter-?example\b",
    r"\bthink\s+(?:it\s+)?(?:through|carefully|step)\b",
    r"\breason\s+(?:about|through)\b",
    r"\bsolve\s+(?:for|the\s+(?:equation|system|inequality|recurrence))\b",
)
"""Phrases that ask for a chain of reasoning: proofs, derivations, step-by-step work,
debugging and "why is this wrong", explanations of why, complexity analysis."""

_PARTS = re.compile(r"^[ \t]*(?:\d{1,2}[.)]|\(\d{1,2}\)|\(?[a-h]\)|[-*•])[ \t]+\S", re.MULTILINE)
"""A numbered (``1.``, ``2)``, ``(3)``), lettered (``a)``, ``(b)``; lower case only, so
multiple-choice options ``A.`` are not parts) or bulleted line."""
_QUESTION = re.compile(r"\?(?=\s|$)")
_SHOWN_MATCH = 40


class ReasoningLayer:
    """The gate; see the module docstring. `tiers` maps route names to their reasoning
    tier; `default_tier` serves requests no route decided."""

    name = REASONING_LAYER
    always_runs = True

    def __init__(
        self,
        *,
        triggers: tuple[str, ...] = DEFAULT_TRIGGERS,
        min_parts: int = 3,
        long_tokens: int = 1500,
        scorer: ReasoningScorer | None = None,
        threshold: float | None = None,
        tiers: Mapping[str, str | None] | None = None,
        default_tier: str | None = None,
        scripts: ScriptCheck | None = None,
    ) -> None:
        # The built-in triggers are lower case: matching them against the lower-cased text
        # without IGNORECASE is three times faster. Custom ones may use any case.
        self._fold = triggers == DEFAULT_TRIGGERS
        alternation = "|".join(f"(?:{t})" for t in triggers)
        self._triggers = (
            re.compile(alternation, 0 if self._fold else re.IGNORECASE) if triggers else None
        )
        self._min_parts = min_parts
        self._long_tokens = long_tokens
        # longer texts are needed anyway: scan the head (an ASCII text's estimate is its
        # length in quarters; other scripts reach it sooner)
        self._scan_chars = long_tokens * CHARS_PER_TOKEN
        self.scorer = scorer
        self.threshold = (
            threshold if threshold is not None else (scorer.threshold if scorer else 1.0)
        )
        self._tiers = {k: v for k, v in (tiers or {}).items() if v is not None}
        self._default_tier = default_tier
        self._scripts = scripts

    def evaluate(self, ctx: DecisionContext) -> LayerResult:
        if ctx.safety is not None and ctx.safety.blocked:
            return LayerResult(detail={"skipped": "blocked by safety"})
        text = ctx.request.text
        fired: list[str] = []
        detail: dict[str, Any] = {}
        if self._triggers is not None and (found := self._trigger(text)):
            fired.append(f"trigger {_shown(found.group(0))!r}")
            detail["trigger"] = _shown(found.group(0))
        parts = self._parts(text)
        if parts >= self._min_parts:
            fired.append(f"{parts} parts")
        detail["parts"] = parts
        quarters = ctx.request.estimated_quarters  # counted once a request, rules too
        tokens = -(-quarters // CHARS_PER_TOKEN)
        if quarters >= self._long_tokens * CHARS_PER_TOKEN:
            fired.append(f"{tokens} tokens ≥ {self._long_tokens}")
        detail["tokens"] = tokens
        score: float | None = None
        unread = unread_scripts(ctx, self._scripts, text) if self.scorer is not None else None
        if unread is not None:
            detail["scorer_skipped"] = unread
        elif self.scorer is not None and text:
            score = self.scorer.score(ctx.embedding)
            detail["score"] = round(score, 4)
            detail["threshold"] = round(self.threshold, 4)
            if score >= self.threshold:
                fired.append(f"scorer {score:.2f} ≥ {self.threshold:.2f}")
        needed = bool(fired)
        tier = self._tier(ctx) if needed else None
        reason = ", ".join(fired) if needed else _not_needed(score, self.threshold, unread)
        ctx.reasoning = ReasoningOutcome(needed, reason, score, tier)
        detail["needed"] = needed
        detail["summary"] = reason
        if tier is not None:
            detail["tier"] = tier
        return LayerResult(detail=detail, annotated=True)

    def _trigger(self, text: str) -> re.Match[str] | None:
        assert self._triggers is not None
        if self._fold:
            return self._triggers.search(text[: self._scan_chars].lower())
        return self._triggers.search(text, 0, self._scan_chars)

    def _parts(self, text: str) -> int:
        """Numbered/bulleted lines or question marks, whichever is more; counting stops at
        `min_parts` (enough to decide), and the regexes only run when a cheap count of
        newlines or question marks says they could get there."""
        end = min(len(text), self._scan_chars)
        limit = self._min_parts
        lines = 0
        if text.count("\n", 0, end) + 1 >= limit:
            lines = sum(1 for _ in islice(_PARTS.finditer(text, 0, end), limit))
            if lines >= limit:
                return lines
        marks = text.count("?", 0, end)
        if marks >= limit:
            marks = sum(1 for _ in islice(_QUESTION.finditer(text, 0, end), limit))
        return max(lines, marks)

    def _tier(self, ctx: DecisionContext) -> str | None:
        """The reasoning tier for the routing verdict, or None to keep its model."""
        verdict = ctx.verdict
        if verdict is None or verdict.route == DIFFICULTY_ROUTE:
            tier = self._default_tier
        elif verdict.route == PIN_LAYER:
            return None  # the client asked for this pool model: keep it
        else:
            tier = self._tiers.get(verdict.route)  # a rule naming a model has no route
        if verdict is not None and tier == verdict.model:
            return None
        return tier


def _shown(match: str) -> str:
    return " ".join(match.lower().split())[:_SHOWN_MATCH]


def _not_needed(score: float | None, threshold: float, unread: str | None = None) -> str:
    if unread is not None:
        return f"no trigger, few parts, short; no scorer: text mostly in {unread}"
    if score is None:
        return "no trigger, few parts, short"
    return f"no trigger, few parts, short; scorer {score:.2f} < {threshold:.2f}"


def build_reasoning_layer(registry: Registry, encoder: Encoder, base_dir: Path) -> ReasoningLayer:
    """The gate for `registry.reasoning`: its triggers (or the built-in list), its scorer
    (``builtin``: the one shipped for the registry's encoder; a directory, relative to the
    registry file; or none) refused when trained with another encoder."""
    from llmroute.assemble import script_check  # it builds this layer: imported here

    settings = registry.reasoning
    assert settings is not None
    scorer: ReasoningScorer | None = None
    if settings.scorer == "builtin":
        directory, expected = builtin_scorer_dir(encoder.identity)
        scorer = load_scorer(directory, encoder_identity=expected, dim=encoder.dim)
    elif settings.scorer is not None:
        scorer = load_scorer(
            base_dir / settings.scorer, encoder_identity=encoder.identity, dim=encoder.dim
        )
    scripts = None if scorer is None else script_check(registry, encoder)
    try:
        return _layer(registry, settings.triggers, scorer, scripts)
    except re.error as exc:  # each compiles alone (the schema checks); together they may not
        raise ConfigError(
            f"the triggers do not combine into one expression: {exc}", field="reasoning.triggers"
        ) from exc


def _layer(
    registry: Registry,
    triggers: tuple[str, ...] | None,
    scorer: ReasoningScorer | None,
    scripts: ScriptCheck | None = None,
) -> ReasoningLayer:
    settings = registry.reasoning
    assert settings is not None
    return ReasoningLayer(
        triggers=DEFAULT_TRIGGERS if triggers is None else triggers,
        min_parts=settings.min_parts,
        long_tokens=settings.long_tokens,
        scorer=scorer,
        threshold=settings.threshold,
        tiers={r.name: r.reasoning_target for r in registry.routes},
        default_tier=registry.default.reasoning_target,
        scripts=scripts,
    )
