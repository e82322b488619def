"""`ResponseCache`: answers to requests seen before, without an upstream call.

The key is a SHA-256 over what decides the answer: the registry version (a registry
change starts a fresh cache, so an edited model or prompt never serves stale answers),
the decision (route, the chain of models, cascade, the reasoning gate's verdict), whether
the client streams, and the body as it is sent upstream (after safety's redaction),
less the fields that do not change the answer (``model``, ``user``, ``metadata``,
``litellm_metadata``, ``tags``, ``stream``). A blocked request never reaches the cache.

Clients steer it with the request's ``Cache-Control``: ``no-cache`` (ask upstream, then
store), ``no-store`` (neither read nor write), ``max-age=N`` (only answers at most N
seconds old). Writes happen in the background after the answer has gone out; a store
that fails turns into misses for a second, then is tried again, and is logged at most
once a minute.

With ``semantic`` set, a request that misses its exact key is looked up by meaning: its
*context* key hashes the same material with the last user message left out, and the
`SemanticIndex` holds, per context, the embeddings of the last user messages whose
answers were stored (the routing decision's own embedding: nothing is encoded twice).
The nearest one at or above the threshold names the stored answer. Requests whose text
safety redacted are not looked up or indexed that way (their embedding is of the text
before redaction).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from llmroute.sse import chunk_of, event_of
from llmroute.state.answering import note_failure
from llmroute.state.contrast import guarded_terms
from llmroute.state.redis_conn import Outage
from llmroute.state.semantic_index import (
    F32,
    U8,
    MemorySemanticIndex,
    Query,
    RedisSemanticIndex,
    SemanticIndex,
    word_pairs,
)
from llmroute.state.stores import KeyValueStore, StoreUnavailable, open_store, resolve_cache_url
from llmroute.verbatim_json import answer_json_within

if TYPE_CHECKING:
    from llmroute.dispatch.plan import Plan
    from llmroute.registry.schema import CacheSettings, Registry

__all__ = ["CacheDirectives", "CacheKeys", "CachedAnswer", "ResponseCache", "open_semantic_index"]

log = logging.getLogger("llmroute.cache")

# Request fields that do not change the answer: left out of the key.
_NOT_IN_KEY = frozenset({"model", "user", "metadata", "litellm_metadata", "tags", "stream"})
_KEY_VERSION = "v1"
_DONE = b"data: [DONE]"
_WRITE_CALLS = 3  # an answer's store calls, one after another: its entry, index, decision


@dataclass(frozen=True, slots=True)
class CacheDirectives:
    """What the client's ``Cache-Control`` allows: reading the cache (`lookup`), writing
    the answer to it (`store`), and the oldest answer it accepts (`max_age_s`)."""

    lookup: bool = True
    store: bool = True
    max_age_s: float | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> CacheDirectives:
        value = headers.get("cache-control")
        if value is None and isinstance(headers, dict):  # the SDK's extra_headers
            value = next((v for k, v in headers.items() if k.lower() == "cache-control"), None)
        if not value:
            return _DEFAULT_DIRECTIVES
        lookup, store, max_age = True, True, None
        for part in value.lower().split(","):
            name, _, arg = part.strip().partition("=")
            if name == "no-cache":
                lookup = False
            elif name == "no-store":
                lookup = store = False
            elif name == "max-age":
                try:
                    max_age = max(0.0, float(arg.strip().strip('"')))
                except ValueError:
                    continue  # an unreadable max-age is ignored, as HTTP caches do
        return cls(lookup, store, max_age)


_DEFAULT_DIRECTIVES = CacheDirectives()


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A stored answer: the pool model and deployment that gave it, when (Unix seconds),
    and its bytes: the ``chat.completion`` JSON, or the SSE events of a stream."""

    model: str
    deployment: str
    stored_at: float
    stream: bool
    payload: bytes

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.stored_at)

    def data(self) -> dict[str, Any]:
        value = json.loads(self.payload)
        if not isinstance(value, dict):
            raise ValueError("a cached completion is not a JSON object")
        return value

    def encode(self) -> bytes:
        head = json.dumps(
            {"m": self.model, "d": self.deployment, "t": self.stored_at, "s": self.stream},
            separators=(",", ":"),
        )
        return head.encode() + b"\n" + self.payload

    @classmethod
    def decode(cls, raw: bytes) -> CachedAnswer | None:
        """None for bytes that are not an entry (another program's key, a torn write):
        a completion must be a JSON object, a stream must end with ``[DONE]``."""
        head, sep, payload = raw.partition(b"\n")
        if not sep:
            return None
        try:
            meta = json.loads(head)
            answer = cls(str(meta["m"]), str(meta["d"]), float(meta["t"]), bool(meta["s"]), payload)
        except (ValueError, KeyError, TypeError):
            return None
        whole = _DONE in payload[-64:] if answer.stream else payload[:1] == b"{"
        return answer if whole else None


Observe = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class CacheKeys:
    """A cacheable request's exact key and, for the semantic lookup, its context key and
    the embedding of its last user message (both None when that lookup does not apply);
    `decision` when negative feedback on it may evict the answer."""

    exact: str
    context: str | None = None
    vector: F32 | None = None
    pairs: U8 | None = None  # the last user message's word pairs (`word_pairs`)
    decision: str | None = None  # the decision the answer serves, for feedback to evict


class ResponseCache:
    """The cache in front of dispatch. `on_result` is told ``hit``, ``miss``,
    ``bypass`` (the client's Cache-Control), ``semantic_hit`` or ``semantic_miss`` (the
    lookup by meaning after an exact miss), ``stored``, ``too_large``, ``evicted`` (by
    negative feedback) or ``error``."""

    def __init__(
        self,
        settings: CacheSettings,
        store: KeyValueStore,
        registry_version: str,
        *,
        on_result: Observe | None = None,
        clock: Callable[[], float] = time.time,
        semantic: SemanticIndex | None = None,
        outage_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.semantic = semantic if settings.semantic is not None else None
        self._semantic_chars = 0 if settings.semantic is None else settings.semantic.max_chars
        self._prefix = f"{settings.namespace}:resp:{_KEY_VERSION}:{registry_version}:"
        self._context_prefix = f"{_KEY_VERSION}:{registry_version}:"
        self._routes = None if settings.routes is None else frozenset(settings.routes)
        self._on_result = on_result
        self._clock = clock
        # monotonic, not `clock`: a wall-clock step must not stretch a pause
        self._outage = Outage(log, outage_clock)
        self._writes: set[asyncio.Task[None]] = set()

    @classmethod
    def open(
        cls,
        registry: Registry,
        registry_version: str,
        *,
        on_result: Observe | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ResponseCache | None:
        """The registry's cache, or None when it has none or it is turned off."""
        settings = registry.cache
        if settings is None:
            return None
        url = resolve_cache_url(settings, environ)
        if url is None:
            return None
        store = open_store(url, settings)
        log.info("response cache: %s, ttl %.0f s", store.url, settings.ttl_s)
        semantic = open_semantic_index(url, settings)
        return cls(settings, store, registry_version, on_result=on_result, semantic=semantic)

    # -- keys -----------------------------------------------------------------------------

    def key(
        self, plan: Plan, body: Mapping[str, Any], stream: bool, partition: str | None = None
    ) -> str | None:
        """The request's key, or None when this request is not cached (its route is not
        listed, or it streams and streams are not cached). `partition` (the gateway
        client key's name) keeps each client's answers to itself. Raises
        `PolicyViolation` for a blocked request, as dispatch would."""
        keys = self.keys(plan, body, stream, partition)
        return None if keys is None else keys.exact

    def keys(
        self, plan: Plan, body: Mapping[str, Any], stream: bool, partition: str | None = None
    ) -> CacheKeys | None:
        """`key`, with the context key and embedding of the semantic lookup when it
        applies (a semantic section, an embedding, a last user message, no redaction)."""
        decision = plan.decision
        if self._routes is not None and decision.route not in self._routes:
            return None
        if stream and not self.settings.streams:
            return None
        sent = plan.outgoing(dict(body))
        material = self._material(plan, sent, stream, partition)
        exact = self._prefix + _digest(material)
        vector = decision.embedding
        if self.semantic is None or not isinstance(vector, np.ndarray):
            return CacheKeys(exact)
        if decision.safety is not None and decision.safety.redacted_body is not None:
            return CacheKeys(exact)
        if plan.text is not None and plan.text.fim:
            return CacheKeys(exact)  # a fill-in-the-middle answer fits its prefix and suffix only
        if decision.embedded_chars > self._semantic_chars:
            return CacheKeys(exact)  # the encoder may have cut it: its tail is unseen
        split = _split_last_user_text(material["body"])
        if split is None:
            return CacheKeys(exact)
        context_body, text = split
        terms = guarded_terms(text)  # numbers, negation, opposites: never by meaning alone
        context = _digest({**material, "body": context_body, "terms": terms})
        return CacheKeys(exact, self._context_prefix + context, vector, word_pairs(text))

    def _material(
        self, plan: Plan, sent: Mapping[str, Any], stream: bool, partition: str | None
    ) -> dict[str, Any]:
        decision = plan.decision
        material = {
            "route": decision.route,
            "chain": plan.chain,
            "cascade": plan.cascade is not None,
            "reasoning": None if decision.reasoning is None else decision.reasoning.needed,
            "stream": stream,
            "body": {k: v for k, v in sent.items() if k not in _NOT_IN_KEY},
        }
        if partition is not None:
            material["partition"] = partition
        if plan.text is not None:  # a completion: raw models answer it otherwise
            material["text"] = {"fim": plan.text.fim, **dict(plan.text.fields)}
        return material

    # -- reads ----------------------------------------------------------------------------

    async def get(self, key: str, directives: CacheDirectives) -> CachedAnswer | None:
        """The stored answer the client accepts, or None (a miss, a bypass, a store that
        is down)."""
        if not directives.lookup:
            self._count("bypass")
            return None
        if self._outage.down():
            self._count("error")
            return None
        try:
            raw = await self.store.get(key)
        except StoreUnavailable as exc:
            self._failed(exc)
            return None
        answer = None if raw is None else CachedAnswer.decode(raw)
        max_age = directives.max_age_s
        if answer is not None and max_age is not None and answer.age_s(self._clock()) > max_age:
            answer = None
        self._count("miss" if answer is None else "hit")
        return answer

    async def get_similar(
        self, keys: CacheKeys, directives: CacheDirectives
    ) -> tuple[CachedAnswer, float, str] | None:
        """After an exact miss: the stored answer to the nearest message of the same
        context at or above the threshold, its similarity and its key; counted as
        ``semantic_hit`` or ``semantic_miss``."""
        settings = self.settings.semantic
        index = self.semantic
        if index is None or settings is None or keys.context is None:
            return None
        if keys.vector is None or keys.pairs is None:
            return None
        if not directives.lookup or self._outage.down():
            return None
        query = Query(keys.vector, keys.pairs, settings.threshold, settings.min_word_overlap)
        try:
            found = await index.nearest(keys.context, query)
            key = None if found is None else self._prefix + found[0]
            raw = None if key is None else await self.store.get(key)
        except StoreUnavailable as exc:
            self._failed(exc)
            return None
        answer = None if raw is None else CachedAnswer.decode(raw)
        max_age = directives.max_age_s
        if answer is not None and max_age is not None and answer.age_s(self._clock()) > max_age:
            answer = None
        if answer is None or found is None or key is None:
            self._count("semantic_miss")
            return None
        self._count("semantic_hit")
        return answer, found[1], key

    # -- writes ---------------------------------------------------------------------------

    async def put_completion(
        self,
        key: str | CacheKeys,
        directives: CacheDirectives,
        model: str,
        deployment: str,
        data: Any,
    ) -> None:
        """Store a ``chat.completion`` in the background (its ``usage.cost_usd`` set to 0:
        what a hit costs), and index it for the semantic lookup when `key` says how. It
        is written here, before `data` goes out (a caller may change it then), a step at
        a time and only up to ``max_entry_bytes``: a larger one is ``too_large`` before
        it is written whole (a 12 MB answer with logprobs held the event loop ~0.4 s)."""
        if not directives.store:
            return
        try:
            payload = await answer_json_within(_free(data), self.settings.max_entry_bytes)
        except ValueError:  # NaN (an upstream's is refused before): not JSON, not kept
            return
        if payload is None:
            self._count("too_large")
            return
        self._put_later(key, CachedAnswer(model, deployment, self._clock(), False, payload))

    def tee_stream(
        self,
        key: str | CacheKeys,
        directives: CacheDirectives,
        served_by: Callable[[], tuple[str, str]],
        events: AsyncIterator[bytes],
    ) -> AsyncIterator[bytes]:
        """`events`, unchanged; once their ``[DONE]`` has gone out, they are stored up to
        it (not when the stream broke or the client left before it, or they outgrew
        ``max_entry_bytes``) as made by the model and deployment `served_by()` names
        then (a stream may have fallen back to another model after it opened). What ends
        the stream after its ``[DONE]`` (its upstream breaking, the client leaving) does
        not keep it out: the client has the whole answer, and what follows the
        ``[DONE]`` is not the client's, so not stored."""
        if not directives.store:
            return events
        return self._tee(key, served_by, events)

    async def _tee(
        self,
        key: str | CacheKeys,
        served_by: Callable[[], tuple[str, str]],
        events: AsyncIterator[bytes],
    ) -> AsyncIterator[bytes]:
        limit = self.settings.max_entry_bytes
        parts: list[bytes] | None = []
        size = 0
        whole = False  # its ``[DONE]`` went out (its reader came back for more)
        try:
            async for event in events:
                if parts is not None and not whole:
                    size += len(event)
                    if size > limit:
                        parts = None
                        self._count("too_large")
                    else:
                        parts.append(event)
                yield event
                whole = whole or event.startswith(_DONE)
        finally:
            try:
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                if whole and parts is not None:
                    payload = b"".join(_free_event(event) for event in parts)
                    model, deployment = served_by()
                    answer = CachedAnswer(model, deployment, self._clock(), True, payload)
                    self._put_later(key, answer)

    def _put_later(self, key: str | CacheKeys, answer: CachedAnswer) -> None:
        if len(answer.payload) > self.settings.max_entry_bytes:
            self._count("too_large")
            return
        if self._outage.down():
            return
        keys = key if isinstance(key, CacheKeys) else CacheKeys(key)
        task = asyncio.get_running_loop().create_task(self._put(keys, answer))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _put(self, keys: CacheKeys, answer: CachedAnswer) -> None:
        ttl_s = self.settings.ttl_s
        try:
            await self.store.set(keys.exact, answer.encode(), ttl_s)
        except StoreUnavailable as exc:
            self._failed(exc)
            return
        index, context, vector, pairs = self.semantic, keys.context, keys.vector, keys.pairs
        if index is not None and context is not None and vector is not None and pairs is not None:
            digest = keys.exact[len(self._prefix) :]
            try:
                await index.add(context, vector, pairs, digest, ttl_s)
            except StoreUnavailable as exc:
                self._failed(exc)
                return
        self._count("stored")
        if keys.decision is not None:
            await self._remember(keys.decision, keys.exact, answer.stored_at)

    # -- what answered a decision, for feedback ------------------------------------------

    def remember(self, decision_id: str, key: str, stored_at: float) -> None:
        """Note, in the background, that the answer stored under `key` at `stored_at`
        served `decision_id` (kept as long as answers are), so that feedback on the
        decision can `evict` that answer."""
        if self._outage.down():
            return
        work = self._remember(decision_id, key, stored_at)
        task = asyncio.get_running_loop().create_task(work)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _remember(self, decision_id: str, key: str, stored_at: float) -> None:
        note = f"{stored_at!r} {key}".encode()
        try:
            await self.store.set(self._served_key(decision_id), note, self.settings.ttl_s)
        except StoreUnavailable as exc:
            self._failed(exc)

    async def evict(self, decision_id: str) -> bool:
        """Drop the stored answer that served `decision_id` (a user judged it wrong), so
        that no later request, exact or by meaning, gets it; whether it was still there
        (an answer stored since under the same key is another answer, and stays)."""
        if self._outage.down():
            return False
        try:
            note = await self.store.get(self._served_key(decision_id))
            stored_at, _, key = (note or b"").decode().partition(" ")
            raw = await self.store.get(key) if key else None
            answer = None if raw is None else CachedAnswer.decode(raw)
            evicted = (
                answer is not None
                and repr(answer.stored_at) == stored_at
                and await self.store.delete(key)
            )
        except StoreUnavailable as exc:
            self._failed(exc)
            return False
        except UnicodeDecodeError:
            return False
        if evicted:
            self._count("evicted")
        return evicted

    def _served_key(self, decision_id: str) -> str:
        return f"{self._prefix}served:{decision_id}"

    async def flush(self, timeout_s: float = 2.0) -> None:
        """Wait (at most `timeout_s`) for the writes in flight."""
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=timeout_s)

    @property
    def close_s(self) -> float:
        """How long a closing cache waits for its pending writes, by default: what each
        may take (`_WRITE_CALLS` calls of the store's ``timeout_s``), 2 s at least."""
        return max(2.0, _WRITE_CALLS * self.settings.timeout_s)

    async def aclose(self, timeout_s: float | None = None) -> None:
        """Let pending writes finish, then close the store (and the index). They get
        `timeout_s`, by default `close_s`; one still running then is cancelled, and said
        in a WARNING (it was cut unsaid as the store closed under it)."""
        if timeout_s is None:
            timeout_s = self.close_s
        late = set(self._writes)
        if late:
            _, late = await asyncio.wait(late, timeout=timeout_s)
        if late:
            log.warning(
                "response cache: closing with %d write(s) still waiting on %s after %g s: "
                "those answers are not stored",
                len(late),
                self.store.url,
                round(timeout_s, 2),
            )
            for task in late:
                task.cancel()
            await asyncio.wait(late, timeout=1.0)
        await self.store.aclose()
        if self.semantic is not None:
            await self.semantic.aclose()

    # -- bookkeeping ----------------------------------------------------------------------

    def _failed(self, exc: StoreUnavailable) -> None:
        """Counted ``error``; Redis left alone as `note_failure` says (not for a call
        the store refused unasked, nor for Redis's error reply)."""
        self._count("error")
        note_failure(self._outage, exc, "response cache unavailable, serving without it: %s", exc)

    def _count(self, result: str) -> None:
        if self._on_result is not None:
            self._on_result(result)


def open_semantic_index(url: str, settings: CacheSettings) -> SemanticIndex | None:
    """The index beside the store at `url` (``memory`` or Redis), when the registry asks
    for the semantic lookup."""
    semantic = settings.semantic
    if semantic is None:
        return None
    if url == "memory":
        return MemorySemanticIndex(semantic.max_per_context, semantic.max_contexts)
    return RedisSemanticIndex(url, settings.timeout_s, settings.namespace, semantic.max_per_context)


def _digest(material: Mapping[str, Any]) -> str:
    text = json.dumps(
        material, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _split_last_user_text(body: Mapping[str, Any]) -> tuple[dict[str, Any], str] | None:
    """`body` with the text of its last message left out, and that text, when that
    message is the user's and holds text only: what the semantic lookup compares by
    meaning (its numbers, negation and opposites must still be equal, `guarded_terms`:
    an embedding barely tells "17 * 23" from "17 * 24", nor "should I sell" from "should
    I not sell"). None otherwise (a tool result, an assistant prefill, an image: matched
    exactly only)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, Mapping) or last.get("role") != "user":
        return None
    text = _text_only(last.get("content"))
    if text is None:
        return None
    rest = {k: v for k, v in last.items() if k != "content"}
    return {**body, "messages": [*messages[:-1], rest]}, text


def _text_only(content: Any) -> str | None:
    """A message content's text; None when it holds anything else (an image, a file)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts = []
    for part in content:
        if not isinstance(part, Mapping) or part.get("type") != "text":
            return None
        texts.append(str(part.get("text", "")))
    return "\n".join(texts)


def _free(data: Any) -> Any:
    """`data` with ``usage.cost_usd`` 0.0, where it has one: a hit costs nothing (the
    token counts stay: they describe the answer)."""
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict) or "cost_usd" not in usage:
        return data
    return {**data, "usage": {**usage, "cost_usd": 0.0}}


def _free_event(event: bytes) -> bytes:
    """A stream's usage chunk with ``cost_usd`` 0.0 (`_free`); other events unchanged."""
    chunk = chunk_of(event) if b'"cost_usd"' in event else None
    freed = _free(chunk)
    return event if freed is chunk else event_of(freed)
