"""Conversation affinity: a conversation's later turns go to the model its earlier turns
went to (registry ``affinity``; docs/dispatch.md).

Routing looks at each request's own text, so a conversation that opened with a hard
question and goes on with "thanks, and in Python?" would move to a cheap model midway:
another voice, and the provider's prompt cache of the conversation so far lost (the
large hosted APIs bill cached input at a tenth to a half of the fresh price). Affinity
remembers, per conversation, the model it was sent to and applies it to the plan after
routing.

A conversation is named by the ``x-llmroute-session`` header when the client sends
one, else by what every later turn repeats: its opening (the system prompt and the first
user message) and, from the second turn on, the first answer, which tells apart two
conversations that opened alike (a suggested prompt, a canned greeting), so that one of
them moving up does not move the others. A second turn not yet remembered under its
full name takes the model its first turn was remembered with under the opening alone
(the same text, routed the same way, whoever sent it). Each name is hashed together
with the client key and end user, so nobody else's conversation shares it and no text
is stored. Only requests that carry an earlier answer (an assistant turn) look the
conversation up, or any request that names its session; every routed request records
its model, but a decision nothing is sent for (``POST /v1/route``), which only reads it.

Requests pinned by the client (a model or route name), blocked by safety or rerouted by
it to a guarded model are left alone. The store is a `KeyValueStore`: memory (this
process, shared by every registry it loads) or Redis (every gateway); one that does not
answer leaves the plan as routed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from llmroute.dispatch.plan import PINNED, Plan
from llmroute.registry.schema import AffinitySettings, Registry
from llmroute.state.answering import note_failure
from llmroute.state.redis_conn import Outage
from llmroute.state.stores import (
    KeyValueStore,
    StoreUnavailable,
    state_store,
)
from llmroute.telemetry.attribution import end_user_of

__all__ = [
    "AFFINITY_LAYER",
    "SESSION_HEADER",
    "Affinity",
    "ConversationKey",
    "conversation_key",
    "prefix_key",
]

log = logging.getLogger("llmroute.affinity")

SESSION_HEADER = "x-llmroute-session"
AFFINITY_LAYER = "affinity"
_MAX_SESSION = 256  # characters of a session header that count
_LONG = 4096  # characters of a string in the opening hashed in full
_MEMORY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Where a conversation's model is remembered (`name`, a hash), whether this turn
    looks it up (`look_up`: it names a session, or carries an earlier answer), and
    where its first turn's model was remembered (`opening`: a later turn's opening
    alone, looked up when `name` is not known yet; None when `name` is that)."""

    name: str
    look_up: bool
    opening: str | None = None


def conversation_key(
    body: Mapping[str, Any], headers: Mapping[str, str], client: str | None
) -> ConversationKey | None:
    """The conversation's `ConversationKey`; None for a request with no user message."""
    session = _header(headers, SESSION_HEADER)
    opened = _opening(body)
    if opened is None:
        return None
    opening, answer = opened
    who = [client, end_user_of(body)]
    if session is not None:
        return ConversationKey(_digest([*who, {"session": session[:_MAX_SESSION]}]), True)
    if not opening:
        return None
    first = _digest([*who, opening])
    if answer is None:
        return ConversationKey(first, False)
    return ConversationKey(_digest([*who, opening, answer]), True, first)


def prefix_key(body: Mapping[str, Any]) -> str | None:
    """The name of the request's prompt prefix, its opening (system prompt and first
    user message), whoever sends it: what ``sticky`` balancing keeps on one deployment,
    whose server then has that prefix cached. None without a user message."""
    opened = _opening(body)
    return _digest(opened[0]) if opened is not None and opened[0] else None


def _opening(body: Mapping[str, Any]) -> tuple[list[Any], Any] | None:
    """The system prompt(s) up to and with the first user message (empty without a user
    message), and the first answer after it (its content and tool calls; None on a
    first turn); None when there are no messages."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    opening: list[Any] = []
    opened = False
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        if not opened and role in ("system", "developer", "user"):
            opening.append({"role": role, "content": _bounded(message.get("content"))})
            opened = role == "user"
        elif role == "assistant" and opened:  # one before any user message greets
            answer = [_bounded(message.get("content")), _bounded(message.get("tool_calls"))]
            return opening, answer
    return (opening if opened else []), None


def _digest(material: Any) -> str:
    text = json.dumps(material, ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _bounded(value: Any) -> Any:
    """`value` with each string over `_LONG` characters reduced to its length, head and
    tail: an image's data URL in the opening must not cost milliseconds of hashing on
    every turn. Two openings that differ only inside such a string share a name."""
    if isinstance(value, str):
        if len(value) <= _LONG:
            return value
        half = _LONG // 2
        return f"{len(value)}:{value[:half]}:{value[-half:]}"
    if isinstance(value, list):
        return [_bounded(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _bounded(v) for k, v in value.items()}
    return value


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # a plain dict from the SDK's extra_headers
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value.strip() or None if isinstance(value, str) else None


class Affinity:
    """Applies the registry's `AffinitySettings` to plans."""

    def __init__(
        self,
        settings: AffinitySettings,
        registry: Registry,
        store: KeyValueStore,
        on_outcome: Callable[[str], None] | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._registry = registry
        self._store = store
        self._prefix = f"{settings.namespace}:affinity:"
        self._outage = Outage(log, on_failure=on_error)
        self._on_outcome = on_outcome

    @classmethod
    def open(
        cls,
        registry: Registry,
        on_outcome: Callable[[str], None] | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> Affinity | None:
        """The registry's affinity, or None when it has none. `on_outcome` is told what
        each request it applied to came to (`apply`); `on_error`, each call its store
        failed (the turn is routed on its own: counted ``unknown`` or ``first``)."""
        settings = registry.affinity
        if settings is None:
            return None
        # memory is kept across registry reloads, so that a reload does not move every
        # open conversation
        store = state_store(
            "affinity", settings.url, settings.max_entries, _MEMORY_BYTES, settings.timeout_s
        )
        return cls(settings, registry, store, on_outcome, on_error)

    async def apply(
        self,
        plan: Plan,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        client: str | None = None,
        *,
        remember: bool = True,
    ) -> Plan:
        """`plan` with the conversation's model, remembered for its next turn. The
        outcome told to `on_outcome`: ``first`` (a first turn, remembered), ``unknown``
        (a later turn whose conversation is not remembered: expired, evicted, or
        remembered by another worker; and a session header's first turn, which the
        header cannot tell from a forgotten one), ``same`` (routed to its model anyway),
        ``kept`` (moved back to its model), ``upgraded`` (moved up to a costlier one).
        Without `remember` (a decision nothing is sent for: ``POST /v1/route``) the
        conversation is read, not written, and nothing is told: a dry run must not
        change where later turns go."""
        decision = plan.decision
        if decision.layer == PINNED or decision.blocked:
            return plan
        if decision.safety is not None and decision.safety.model is not None:
            return plan
        named = conversation_key(body, headers, client)
        if named is None:
            return plan
        remembered = await self._get(named.name) if named.look_up else None
        if remembered is None and named.look_up and named.opening is not None:
            remembered = await self._get(named.opening)  # its second turn
        chosen = self._choose(decision.model, remembered)
        if remember:
            await self._set(named.name, chosen)  # also slides the conversation's expiry
            self._count(named.look_up, remembered, decision.model, chosen)
        if chosen == decision.model:
            return plan
        kept = replace(
            decision,
            model=chosen,
            layer=AFFINITY_LAYER,
            reason=(
                f"the conversation stays on {chosen} ({self.settings.mode}); "
                f"{decision.layer} chose {decision.model}: {decision.reason}"
            ),
        )
        chain = (chosen, *(m for m in plan.chain if m != chosen))
        return replace(plan, decision=kept, chain=chain, cascade=None)

    def _count(self, looked: bool, remembered: str | None, decided: str, chosen: str) -> None:
        if self._on_outcome is None:
            return
        if remembered is None:
            outcome = "unknown" if looked else "first"
        elif remembered == decided:
            outcome = "same"
        else:
            outcome = "kept" if chosen == remembered else "upgraded"
        with contextlib.suppress(Exception):  # a metric must never fail a request
            self._on_outcome(outcome)

    def _choose(self, decided: str, remembered: str | None) -> str:
        model = self._registry.models.get(remembered) if remembered is not None else None
        if remembered is None or model is None or model.kind != "chat":
            return decided  # a first turn, or a model since removed from the pool
        if self.settings.mode == "keep":
            return remembered
        current = self._registry.models[decided].price
        costlier = (model.price.output, model.price.input) > (current.output, current.input)
        return remembered if costlier else decided

    async def _get(self, key: str) -> str | None:
        if self._outage.down():
            return None
        try:
            value = await self._store.get(self._prefix + key)
        except StoreUnavailable as exc:
            self._failed(exc)
            return None
        return value.decode("utf-8", "replace") if value is not None else None

    async def _set(self, key: str, model: str) -> None:
        if self._outage.down():
            return
        try:
            await self._store.set(self._prefix + key, model.encode(), self.settings.ttl_s)
        except StoreUnavailable as exc:
            self._failed(exc)

    def _failed(self, exc: StoreUnavailable) -> None:
        """A call Redis failed: counted, and Redis left alone, as `note_failure` says
        (not for a call the store refused unasked, nor for Redis's error reply)."""
        note_failure(
            self._outage, exc, "affinity: %s; turns are routed on their own meanwhile", exc
        )

    async def aclose(self) -> None:
        await self._store.aclose()
