"""What the decision log stores: one `DecisionRecord` per request, `FeedbackRecord` and
`ShadowRecord` beside it, and `LoggedDecision`, a stored decision read back.

A `DecisionRecord` is built on the request path, so it only holds references (the
`Decision`, the prompt text) and plain numbers; turning it into a row (JSON of the
signals, hashing or redacting the prompt) is `to_row`'s job, which the batching writer
runs off the request path.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llmroute.decision import Decision
from llmroute.errors import outline_of
from llmroute.log_every import LogEvery

if TYPE_CHECKING:
    from llmroute.dispatch.usage import Usage

log = logging.getLogger("llmroute.telemetry")
_ROW_FAILED = LogEvery(60.0)  # a row that cannot be built: the first said, then one a minute
_REDACTION_FAILED = LogEvery(60.0)  # the same for a text the PII detector failed on

__all__ = [
    "CLIENT_CLOSED",
    "CLIENT_DISCONNECTED",
    "DECISION_COLUMNS",
    "ESCALATED",
    "SERVER_SHUTDOWN",
    "UNROUTED_APIS",
    "UNROUTED_LAYER",
    "DecisionRecord",
    "FeedbackRecord",
    "LoggedDecision",
    "PromptMode",
    "ResponseMode",
    "ShadowRecord",
    "cut_text",
    "decision_rows",
    "escalations",
    "prompt_hash",
]

PromptMode = Literal["off", "hash", "redacted", "full"]
ResponseMode = Literal["off", "redacted", "full"]

CLIENT_CLOSED = 499
"""The status a request is logged with when its client hung up (or its caller cancelled
it) before the answer (nginx's "client closed request"); nobody receives it."""

CLIENT_DISCONNECTED = "client_disconnected"
"""The `error` of a request whose client hung up (status 499, or a stream it stopped
reading): logged, but no failure of the gateway or its models."""

SERVER_SHUTDOWN = "server_shutdown"
"""The `error` of a request the gateway cut because it was stopping (SIGTERM, after the
graceful timeout): status 503, or the 200 of a stream it cut; a failure, unlike
`CLIENT_DISCONNECTED`."""

UNROUTED_APIS = frozenset({"embeddings", "rerank"})
"""The `api` of the requests the gateway answers without routing them (``/v1/embeddings``,
``/v1/rerank``): logged for their traffic and cost, left out of routing's statistics
(layers, margins, confidence, the default rate, drift, savings, refresh)."""

UNROUTED_LAYER = "(unrouted)"
"""The `layer` of an unrouted request's row (no layer decided it); its `route` is the
metrics' label, ``(embeddings)`` or ``(rerank)``, and its `model` the pool model asked."""

# The columns of the `decisions` table, in order; `to_row` returns them and
# `LoggedDecision` has one field per column.
DECISION_COLUMNS: tuple[str, ...] = (
    "id",
    "ts",
    "registry_version",
    "route",
    "model",
    "served_model",
    "deployment",
    "layer",
    "confidence",
    "margin",
    "signals",  # JSON: the Decision's layers, candidates, timing, safety, reasoning
    "status",
    "error",
    "latency_ms",
    "ttft_ms",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "usage_estimated",
    "attempts",  # JSON list of strings: failures/escalations before the answer
    "cache_hit",
    "stream",
    "shadow",
    "prompt_mode",
    "prompt_hash",
    "prompt",
    "client",  # the gateway client key's name (migration 0002); None without auth
    "route_only",  # a ``/v1/route`` decision: nothing was dispatched (migration 0003)
    "end_user",  # the request's own user id (``safety_identifier`` / ``user``; migration 0004)
    "tags",  # JSON list of the request's ``x-llmroute-tags``, NULL without (migration 0004)
    "response",  # the answer's text as `telemetry.responses` says, else NULL (migration 0005)
    "api",  # the API the request came by: chat, messages, responses, completions,
    # embeddings, rerank (migration 0006)
)


ESCALATED = "escalated"  # a tier passed over: ``small escalated: GATE (REASON)``


def escalations(attempts: Iterable[str]) -> int:
    """How many of a request's `attempts` are cascade tiers it escalated from (each
    paid for, its answer passed over), not failures: those whose first clause ends in
    ``escalated`` (`TierStep.describe`), not any that mention it (a failure of a model
    or provider named ``cascade-...``, an upstream message saying "escalated")."""
    return sum(a.partition(": ")[0].rpartition(" ")[2] == ESCALATED for a in attempts)


def prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def cut_text(text: str, most: int) -> str:
    """`text` cut to its first `most` characters, less a word cut in two at the end (so
    that the PII detector does not meet half a phone number or key it cannot
    recognise)."""
    if len(text) <= most:
        return text
    kept = text[:most]
    if not text[most].isspace():
        space = max(kept.rfind(" "), kept.rfind("\n"), kept.rfind("\t"))
        if space >= most - 128:
            kept = kept[:space]
    return kept


# `llmroute.layers.llm_router`'s layer, whose detail's ``answer`` is its model's reply
# itself when it could not be read (outcome ``kept``): not imported, the layer brings in
# dispatch
_LLM_ROUTER_LAYER = "llm_router"


def _without_reply(layer: dict[str, Any]) -> dict[str, Any]:
    """`layer` (a signal's `to_dict`), the LLM router's unread reply left out."""
    detail = layer.get("detail")
    if layer.get("layer") != _LLM_ROUTER_LAYER or not isinstance(detail, dict):
        return layer
    if detail.get("outcome") != "kept" or detail.get("answer") is None:
        return layer
    return {**layer, "detail": {**detail, "answer": None}}


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One request: its decision and its outcome.

    `status` is the HTTP status the client got (200, or the error's status); `error` the
    error code when it failed (``content_policy_violation``, ``upstream_error``, ...).
    `ts` is the request's arrival (Unix seconds); `latency_ms` runs from arrival to the
    last byte; `ttft_ms` to the first streamed event. `prompt` is the request text the
    router saw (safety's redaction when it redacted the request) and `redacted_prompt`
    the same with PII replaced (None when not computed); which of them is stored, if
    any, is `prompt_mode`'s call. `client` is the name of the gateway client key the
    request came with (None without ``auth``). `route_only` marks a ``/v1/route``
    decision: nothing was dispatched, so no served model, tokens or cost, and
    `latency_ms` is the decision's own time. `end_user` is the end user the request
    named (its ``safety_identifier`` or ``user``), `tags` what its ``x-llmroute-tags``
    header said: who and what a request's cost is attributed to. `api` is the API it came
    by (``chat``, ``messages``, ``responses``, ``completions``; ``embeddings`` and
    ``rerank`` for the requests answered without routing, `UNROUTED_APIS`, whose
    `decision` only names their route label and model; None for the SDK's calls and
    ``/v1/route``). `usage_by_model` splits the usage by the model that spent it when
    more than the served one did (a cascade's tiers passed over, its gates' calls: the
    metrics count each under its own model); empty when the served model spent it all.
    The log's row holds the request's total, as before.
    """

    decision: Decision
    ts: float
    status: int
    latency_ms: float
    served_model: str | None = None
    deployment: str | None = None
    error: str | None = None
    ttft_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    usage_estimated: bool = False
    attempts: tuple[str, ...] = ()
    cache_hit: bool = False
    stream: bool = False
    shadow: bool = False
    prompt_mode: PromptMode = "hash"
    prompt: str | None = None
    redacted_prompt: str | None = None
    client: str | None = None
    route_only: bool = False
    end_user: str | None = None
    tags: tuple[str, ...] = ()
    response: str | None = None  # the answer's text, already cut; None when not kept
    response_mode: ResponseMode = "off"
    api: str | None = None
    max_prompt_chars: int | None = None  # the stored text is cut to this (the hash is whole)
    usage_by_model: tuple[tuple[str, Usage], ...] = ()

    @property
    def id(self) -> str:
        return self.decision.id

    @property
    def unrouted(self) -> bool:
        """An embeddings or rerank request: answered by the model it named, not routed."""
        return self.api in UNROUTED_APIS

    def stored_prompt(self) -> tuple[str | None, str | None]:
        """(prompt_hash, prompt) as `prompt_mode` stores them: the hash of the whole
        text, the text cut to `max_prompt_chars` before anything else. ``redacted``
        runs the cut text through the PII detector here, in the writer's thread, the
        redaction safety made too (a profile may let a type through to the model, a card
        to a guarded one: the log keeps none); if that fails, the hash alone (one
        record's text must not cost the batch it is written in)."""
        text = self.prompt
        if text is None or self.prompt_mode == "off":
            return None, None
        digest = prompt_hash(text)
        if self.prompt_mode == "hash":
            return digest, None
        most = self.max_prompt_chars
        if self.prompt_mode == "redacted":
            if self.redacted_prompt is not None:
                text = self.redacted_prompt
            return digest, _redacted(text if most is None else cut_text(text, most), self.id)
        return digest, text if most is None else cut_text(text, most)

    def stored_attempts(self) -> list[str]:
        """`attempts` as `prompt_mode` stores them: as said with ``full``; else without
        the words an upstream wrote (`outline_of`), since an upstream's error message
        may quote the request: its status, code and the gateway's own words stay.
        ``redacted`` drops them too: the row's `prompt` holds the redacted text already,
        and the PII detector run over a whole attempt could rewrite the model and
        provider names the reports read."""
        if self.prompt_mode == "full":
            return list(self.attempts)
        return [outline_of(a) for a in self.attempts]

    def stored_layers(self, layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The decision's layer signals as `prompt_mode` stores them: as said with
        ``full``; else without the LLM router's reply it could not read (its model's
        words, which may quote the request; the live decision and ``--explain`` keep
        them). A route it chose is a route's name, kept."""
        if self.prompt_mode == "full":
            return layers
        return [_without_reply(layer) for layer in layers]

    def to_row(self) -> tuple[Any, ...]:
        """The `DECISION_COLUMNS` values; JSON columns as text, booleans as bool."""
        d = self.decision
        detail = d.to_dict()
        signals = {
            "layers": self.stored_layers(detail["layers"]),
            "candidates": detail["candidates"],
            "timing_us": detail["timing_us"],
            "reason": detail["reason"],
            "safety": detail["safety"],
            "reasoning": detail["reasoning"],
        }
        digest, prompt = self.stored_prompt()
        return (
            d.id,
            self.ts,
            d.registry_version,
            d.route,
            d.model,
            self.served_model,
            self.deployment,
            d.layer,
            d.confidence,
            d.margin,
            json.dumps(signals, separators=(",", ":")),
            self.status,
            self.error,
            self.latency_ms,
            self.ttft_ms,
            self.tokens_in,
            self.tokens_out,
            self.cost_usd,
            self.usage_estimated,
            json.dumps(self.stored_attempts()),
            self.cache_hit,
            self.stream,
            self.shadow,
            self.prompt_mode,
            digest,
            prompt,
            self.client,
            self.route_only,
            self.end_user,
            json.dumps(list(self.tags)) if self.tags else None,
            self.stored_response(),
            self.api,
        )

    def stored_response(self) -> str | None:
        """The answer as `response_mode` stores it; ``redacted`` runs the PII detector
        here, in the writer's thread, not on the request path."""
        if self.response is None or self.response_mode == "off":
            return None
        if self.response_mode == "redacted":
            return _redacted(self.response, self.id)
        return self.response


def decision_rows(records: Iterable[DecisionRecord]) -> list[tuple[Any, ...]]:
    """The rows of `records` (`to_row`); a record whose row cannot be built is left out,
    so that it does not cost the others in its batch (the writer counts it dropped,
    ``row_error``), with a warning that names it (its type of error only: the text may
    be secret): the first at once, then at most one a minute saying how many more."""
    rows = []
    for record in records:
        try:
            rows.append(record.to_row())
        except Exception as exc:
            held = _ROW_FAILED.due("row")
            if held is not None:
                log.warning(
                    "decision %s not logged: its row could not be built (%s)%s",
                    record.id,
                    type(exc).__name__,
                    LogEvery.since(held),
                )
    return rows


def _redacted(text: str, decision_id: str) -> str | None:
    """`text` through the PII detector; None if the detector fails on it, with a
    warning naming the decision, not the text: the first at once, then at most one a
    minute saying how many more (a detector that fails on every text would otherwise
    write a line per request)."""
    from llmroute.telemetry.recorder import redact_text

    try:
        return redact_text(text)
    except Exception as exc:
        held = _REDACTION_FAILED.due("redaction")
        if held is not None:
            log.warning(
                "decision %s: PII redaction failed (%s): its text is not stored%s",
                decision_id,
                type(exc).__name__,
                LogEvery.since(held),
            )
        return None


@dataclass(frozen=True, slots=True)
class LoggedDecision:
    """A `decisions` row read back from the store (one field per `DECISION_COLUMNS`
    entry; `signals` parsed, `attempts` a tuple)."""

    id: str
    ts: float
    registry_version: str
    route: str
    model: str
    served_model: str | None
    deployment: str | None
    layer: str
    confidence: float
    margin: float | None
    signals: Mapping[str, Any]
    status: int
    error: str | None
    latency_ms: float
    ttft_ms: float | None
    tokens_in: int | None
    tokens_out: int | None
    cost_usd: float | None
    usage_estimated: bool
    attempts: tuple[str, ...]
    cache_hit: bool
    stream: bool
    shadow: bool
    prompt_mode: str
    prompt_hash: str | None
    prompt: str | None
    client: str | None = None
    route_only: bool = False
    end_user: str | None = None
    tags: tuple[str, ...] = ()
    response: str | None = None
    api: str | None = None

    @property
    def unrouted(self) -> bool:
        """An embeddings or rerank request (`UNROUTED_APIS`): counted in traffic and
        spend, not in routing's statistics."""
        return self.api in UNROUTED_APIS

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> LoggedDecision:
        values = dict(zip(DECISION_COLUMNS, row, strict=True))
        signals = values["signals"]
        values["signals"] = json.loads(signals) if isinstance(signals, str) else signals or {}
        attempts = values["attempts"]
        if isinstance(attempts, str):  # most rows hold "[]": skip the parser for them
            attempts = json.loads(attempts) if attempts != "[]" else ()
        values["attempts"] = tuple(attempts or ())
        tags = values["tags"]
        values["tags"] = tuple(json.loads(tags) if isinstance(tags, str) else tags or ())
        for flag in ("usage_estimated", "cache_hit", "stream", "shadow", "route_only"):
            values[flag] = bool(values[flag])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """User feedback on a decision: a `score` in [0, 1] and/or thumbs (``up``/``down``),
    with an optional comment."""

    decision_id: str
    ts: float
    score: float | None = None
    thumbs: Literal["up", "down"] | None = None
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class ShadowRecord:
    """A shadowed request: the routed answer beside the reference model's, and the
    judge's verdict. `routed_ok` is True when the routed answer was judged at least as
    good as the reference, None when no judge ran or it failed (`judge_error`)."""

    decision_id: str
    ts: float
    route: str
    routed_model: str
    reference_model: str
    routed_answer: str | None
    reference_answer: str | None
    judge: str | None = None
    routed_ok: bool | None = None
    judge_score: float | None = None
    judge_error: str | None = None
    reference_latency_ms: float | None = None
    reference_cost_usd: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
