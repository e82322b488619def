"""`Recorder`: turns one request's decision and outcome into a `DecisionRecord` and hands
it to the decision log's writer, to the metrics and to the request log line
(`llmroute.telemetry.request_log`, when it is on).

This runs on the request path, so it does as little as it can: it keeps references, reads
a few numbers and prepares the prompt only as far as the `prompts` setting asks; the
JSON and hashing happen in the writer's thread (`DecisionRecord.to_row`). A request
that safety redacted is logged (and hashed) redacted, whatever the mode; ``redacted``
has any other text passed through the PII detector in the writer's thread (its cost
grows with the text, so not here), so that a redacted log never holds a recognised
email, phone number, card or key, whatever the route's policy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, Protocol, TypedDict, TypeVar

from llmroute.decide import Router
from llmroute.decision import Decision, new_decision_id
from llmroute.dispatch.usage import Usage
from llmroute.safety.pii import PLACEHOLDER, PiiDetector, Redactor
from llmroute.telemetry.attribution import end_user_of
from llmroute.telemetry.record import (
    UNROUTED_LAYER,
    DecisionRecord,
    PromptMode,
    ResponseMode,
)
from llmroute.telemetry.request_log import log_request

__all__ = ["Observer", "Recorder", "Sink"]

log = logging.getLogger("llmroute.telemetry")
_T = TypeVar("_T")
_METRICS_FAILED = "metrics failed to observe decision %s"


class Sink(Protocol):
    """The decision log's writer: `offer` never blocks; False when the record was dropped."""

    def offer(self, record: DecisionRecord) -> bool: ...


class Observer(Protocol):
    """The metrics: one call per finished request, or per decision that dispatched
    nothing (``/v1/route``)."""

    def observe(self, record: DecisionRecord) -> None: ...

    def observe_decision(self, decision: Decision) -> None: ...


class _UsageColumns(TypedDict):
    tokens_in: int | None
    tokens_out: int | None
    cost_usd: float | None
    usage_estimated: bool


def _usage_columns(usage: Usage | None) -> _UsageColumns:
    """A record's usage columns: none known (and not estimated) without `usage`."""
    if usage is None:
        return {"tokens_in": None, "tokens_out": None, "cost_usd": None, "usage_estimated": False}
    return {
        "tokens_in": usage.prompt_tokens,
        "tokens_out": usage.completion_tokens,
        "cost_usd": usage.cost_usd,
        "usage_estimated": usage.estimated,
    }


def _safely(call: Callable[[_T], None], arg: _T, failed: str, decision: Decision) -> None:
    """`call(arg)`, its exception logged (`failed`, with the decision's id) and swallowed:
    accounting and metrics must never fail a request."""
    try:
        call(arg)
    except Exception:
        log.exception(failed, decision.id)


def _line(record: DecisionRecord) -> None:
    """The request line of `record`, whose row was offered already: a bug writing it is
    logged and swallowed, not the request's (its 500 would be a second row)."""
    try:
        log_request(record)
    except Exception:
        log.exception("the request line of decision %s failed", record.decision.id)


@cache
def _pii() -> PiiDetector:
    return PiiDetector()


def redact_text(text: str) -> str:
    """`text` with every PII span the default detector finds replaced by placeholders,
    numbered past those it holds already (safety's redaction, a pasted "<EMAIL_1>"), so
    that one placeholder never stands for two values."""
    spans = _pii().find(text)
    if not spans:
        return text
    return Redactor(PLACEHOLDER.findall(text) if "<" in text else ()).redact(text, spans)


class Recorder:
    """Builds the record of each finished request and passes it on (to the writer when
    the log is on, to the metrics always)."""

    __slots__ = (
        "_apis",
        "api",
        "client",
        "embeddings_text",
        "max_prompt_chars",
        "max_response_chars",
        "metrics",
        "on_record",
        "prompts",
        "responses",
        "sink",
        "tags",
    )

    def __init__(
        self,
        sink: Sink | None,
        metrics: Observer | None,
        prompts: PromptMode,
        client: str | None = None,
        on_record: Callable[[DecisionRecord], None] | None = None,
        tags: tuple[str, ...] = (),
        *,
        responses: ResponseMode = "off",
        max_response_chars: int = 32_000,
        api: str | None = None,
        max_prompt_chars: int = 32_000,
        embeddings_text: bool = False,
    ) -> None:
        self.sink = sink
        self.metrics = metrics
        self.prompts: PromptMode = prompts
        self.client = client
        self.on_record = on_record
        self.tags = tags
        self.responses: ResponseMode = responses
        self.max_response_chars = max_response_chars
        self.api = api
        self.max_prompt_chars = max_prompt_chars
        self.embeddings_text = embeddings_text
        self._apis: dict[str | None, Recorder] = {}  # `by_api`'s, made once each

    @property
    def wants_answers(self) -> bool:
        """Whether the decision log keeps answers: a stream's text is then collected."""
        return self.responses != "off" and self.sink is not None

    def _copy(
        self,
        client: str | None,
        on_record: Callable[[DecisionRecord], None] | None,
        tags: tuple[str, ...],
        api: str | None = None,
    ) -> Recorder:
        return Recorder(
            self.sink,
            self.metrics,
            self.prompts,
            client,
            on_record,
            tags,
            responses=self.responses,
            max_response_chars=self.max_response_chars,
            api=api,
            max_prompt_chars=self.max_prompt_chars,
            embeddings_text=self.embeddings_text,
        )

    def for_client(
        self,
        client: str,
        on_record: Callable[[DecisionRecord], None] | None = None,
        tags: tuple[str, ...] = (),
    ) -> Recorder:
        """This recorder for the requests of a gateway client key: its records name the
        key and carry its `tags`, and `on_record` sees each (to charge the key's budget)."""
        return self._copy(client, on_record, tags)

    def with_tags(self, tags: tuple[str, ...]) -> Recorder:
        """This recorder for one request that came with `tags` (``x-llmroute-tags``),
        after any the recorder has (its key's)."""
        if not tags:
            return self
        tagged = tuple(dict.fromkeys((*self.tags, *tags)))
        return self._copy(self.client, self.on_record, tagged, self.api)

    def by_api(self, api: str | None) -> Recorder:
        """This recorder for one request that came by `api` (``chat``, ``messages``,
        ``responses``, ``completions``)."""
        if api == self.api:
            return self
        made = self._apis.get(api)
        if made is None:
            made = self._apis[api] = self._copy(self.client, self.on_record, self.tags, api)
        return made

    def finished(
        self,
        router: Router,
        decision: Decision,
        body: Mapping[str, Any],
        *,
        ts: float,
        started_ns: int,
        status: int,
        served_model: str | None = None,
        deployment: str | None = None,
        error: str | None = None,
        usage: Usage | None = None,
        attempts: tuple[str, ...] = (),
        stream: bool = False,
        ttft_ms: float | None = None,
        shadow: bool = False,
        cache_hit: bool = False,
        answer: str | None = None,
        by_model: tuple[tuple[str, Usage], ...] = (),
    ) -> DecisionRecord:
        """Record one request; `ts` is its arrival (Unix seconds), `started_ns` the
        ``perf_counter_ns`` then; `answer` its text (kept when `responses` asks);
        `by_model` its `usage` split by the model that spent it (`paid_by_model`)."""
        latency_ms = (time.perf_counter_ns() - started_ns) / 1e6
        mode, prompt, redacted = self._prompt(router, decision, body)
        record = DecisionRecord(
            decision=decision.kept(),
            ts=ts,
            status=status,
            latency_ms=latency_ms,
            served_model=served_model,
            deployment=deployment,
            error=error,
            ttft_ms=ttft_ms,
            **_usage_columns(usage),
            attempts=attempts,
            stream=stream,
            shadow=shadow,
            cache_hit=cache_hit,
            prompt_mode=mode,
            prompt=prompt,
            redacted_prompt=redacted,
            client=self.client,
            end_user=end_user_of(_as_sent(decision, body)),
            tags=self.tags,
            response=answer[: self.max_response_chars] if answer and self.wants_answers else None,
            response_mode=self.responses,
            api=self.api,
            max_prompt_chars=self.max_prompt_chars,
            usage_by_model=by_model,
        )
        if self.sink is not None:
            self.sink.offer(record)
        if self.on_record is not None:
            _safely(self.on_record, record, "charging decision %s failed", decision)
        if self.metrics is not None:
            _safely(self.metrics.observe, record, _METRICS_FAILED, decision)
        _line(record)
        return record

    def decided(
        self,
        router: Router,
        decision: Decision,
        body: Mapping[str, Any],
        *,
        ts: float,
        started_ns: int,
    ) -> DecisionRecord:
        """Record a decision that dispatched nothing (``/v1/route``): logged like a
        request, so feedback can name it and reports and drift see it, but it has no
        served model, tokens or cost, nothing to charge, and the metrics count it as a
        decision, not a request."""
        mode, prompt, redacted = self._prompt(router, decision, body)
        record = DecisionRecord(
            decision=decision.kept(),
            ts=ts,
            status=200,
            latency_ms=(time.perf_counter_ns() - started_ns) / 1e6,
            prompt_mode=mode,
            prompt=prompt,
            redacted_prompt=redacted,
            client=self.client,
            route_only=True,
            end_user=end_user_of(_as_sent(decision, body)),
            tags=self.tags,
            max_prompt_chars=self.max_prompt_chars,
        )
        if self.sink is not None:
            self.sink.offer(record)
        if self.metrics is not None:
            _safely(self.metrics.observe_decision, decision, _METRICS_FAILED, decision)
        _line(record)
        return record

    def unrouted(
        self,
        route: str,
        model: str,
        registry_version: str,
        body: Mapping[str, Any],
        text_of: Callable[[Mapping[str, Any]], str | None],
        *,
        ts: float,
        started_ns: int,
        status: int,
        error: str | None = None,
        usage: Usage | None = None,
        attempts: tuple[str, ...] = (),
        deployment: str | None = None,
        decision_id: str | None = None,
    ) -> DecisionRecord:
        """Record a request answered without routing (this recorder's `api` is
        ``embeddings`` or ``rerank``): its row names `route` (the metrics' label), the
        pool `model` it asked and the `deployment` that answered, with no layer, margin
        or signals; its id is `decision_id` (the answer's ``x-request-id``), else new.
        It goes to the log and the request log line only: the caller has charged the key
        and counted the metrics (`GatewayMetrics.observe_unrouted`). Its text (`text_of`
        the body) is kept as ``telemetry.prompts`` keeps a chat's: nothing with ``off``,
        its hash with ``hash``; ``redacted`` runs the PII detector in the writer's
        thread."""
        decision = Decision(
            id=decision_id or new_decision_id(),
            route=route,
            model=model,
            layer=UNROUTED_LAYER,
            confidence=1.0,  # the request named its model, as a pinned one does
            margin=None,
            reason="not routed: the request named its model",
            registry_version=registry_version,
            signals=(),
            encode_us=0.0,
            total_us=0.0,
        )
        mode = self.prompts
        if mode != "off" and not self.embeddings_text:
            mode = "hash"
        text = None
        if mode != "off" and self.sink is not None:
            try:
                text = text_of(body)
            except Exception:  # the body was checked already; be safe anyway
                text = None
        record = DecisionRecord(
            decision=decision,
            ts=ts,
            status=status,
            latency_ms=(time.perf_counter_ns() - started_ns) / 1e6,
            served_model=model if status < 400 else None,
            deployment=deployment,
            error=error,
            **_usage_columns(usage),
            attempts=attempts,
            prompt_mode=mode,
            prompt=text,
            client=self.client,
            end_user=end_user_of(body),
            tags=self.tags,
            api=self.api,
            max_prompt_chars=self.max_prompt_chars,
        )
        if self.sink is not None:
            self.sink.offer(record)
        _line(record)
        return record

    def _prompt(
        self, router: Router, decision: Decision, body: Mapping[str, Any]
    ) -> tuple[PromptMode, str | None, str | None]:
        """(mode, prompt, redacted prompt) as the setting needs them: nothing for ``off``
        (or when the log is off), else the router's text. When safety redacted the
        request, that redaction is what every mode stores (and hashes): the log never
        holds text the policy kept from the model. ``redacted`` has the PII detector
        run over the text, safety's redaction included (a profile may let a type through
        to the model), in the writer's thread (not here: its cost grows with the text). A
        blocked request is stored as its hash alone (the mode says ``hash``) unless the
        operator opted in with ``safety.log_blocked_text``: its text is what safety
        refused to pass on, such as a secret key."""
        mode = self.prompts
        if mode == "off" or self.sink is None:
            return mode, None, None
        if mode != "hash" and decision.blocked and not _log_blocked_text(router):
            mode = "hash"
        safety = decision.safety
        try:
            if safety is not None and safety.redacted_body is not None:
                text = router.request(safety.redacted_body).text
                return mode, text, text
            routed = decision.routed
            if routed is not None and routed[0] == id(body):  # not parsed a second time
                text = routed[1]
            else:
                text = router.request(body).text
        except Exception:  # the body was routed already; be safe anyway
            return mode, None, None
        return mode, text, None


def _as_sent(decision: Decision, body: Mapping[str, Any]) -> Mapping[str, Any]:
    """`body` with the fields safety rewrote (an end-user id holding an e-mail address
    is logged as the pseudonym the provider got)."""
    safety = decision.safety
    if safety is None or not safety.fields:
        return body
    return {**body, **safety.fields}


def _log_blocked_text(router: Router) -> bool:
    settings = router.loaded.registry.safety
    return settings is not None and settings.log_blocked_text
