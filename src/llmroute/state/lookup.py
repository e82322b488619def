"""One request's way through the response cache, shared by the gateway and the SDK:
look it up (`look_up`), replay a stored answer (`replay`), or store the fresh one
(`CacheLookup.store`, `CacheLookup.tee`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from llmroute.state.response_cache import CachedAnswer, CacheDirectives, CacheKeys, ResponseCache

if TYPE_CHECKING:
    from llmroute.dispatch import Opened, Plan, Served

__all__ = ["CacheLookup", "look_up", "replay"]


@dataclass(frozen=True, slots=True)
class CacheLookup:
    """A cacheable request: its keys, what its client allows, and the stored answer when
    there was one (`similarity` set when it came from the semantic lookup)."""

    cache: ResponseCache
    keys: CacheKeys
    directives: CacheDirectives
    answer: CachedAnswer | None
    similarity: float | None = None
    found_under: str | None = None  # a semantic hit's key (an exact hit's is `key`)

    @property
    def key(self) -> str:
        return self.keys.exact

    async def store(self, served: Served) -> None:
        """Store a completion (in the background, once written: `put_completion`)."""
        await self.cache.put_completion(
            self.keys, self.directives, served.model, served.deployment, served.data
        )

    def tee(self, opened: Opened) -> AsyncIterator[bytes]:
        """The stream's events, stored once they have all gone out."""
        return self.cache.tee_stream(
            self.keys, self.directives, lambda: (opened.model, opened.deployment), opened.events
        )


async def look_up(
    cache: ResponseCache | None,
    plan: Plan,
    body: Mapping[str, Any],
    stream: bool,
    headers: Mapping[str, str],
    partition: str | None = None,
    *,
    evictable: bool = False,
) -> CacheLookup | None:
    """None when there is no cache or this request is not cached. Raises
    `PolicyViolation` for a blocked request. `partition`: see `ResponseCache.key`.
    `evictable`: note which stored answer serves the plan's decision (the one found, or
    the one this request will store), so that negative feedback on it can evict it."""
    if cache is None:
        return None
    keys = cache.keys(plan, body, stream, partition)
    if keys is None:
        return None
    if evictable:
        keys = replace(keys, decision=plan.decision.id)
    directives = CacheDirectives.from_headers(headers)
    lookup = CacheLookup(cache, keys, directives, await cache.get(keys.exact, directives))
    if lookup.answer is None and keys.context is not None:
        similar = await cache.get_similar(keys, directives)
        if similar is not None:
            answer, similarity, found_under = similar
            lookup = CacheLookup(cache, keys, directives, answer, similarity, found_under)
    if evictable and lookup.answer is not None:
        where = lookup.found_under or keys.exact
        cache.remember(plan.decision.id, where, lookup.answer.stored_at)
    return lookup


async def replay(answer: CachedAnswer) -> AsyncIterator[bytes]:
    """A stored stream's events, one at a time, as they were sent (dispatch ends every
    event with a blank line)."""
    for event in answer.payload.split(b"\n\n"):
        if event:
            yield event + b"\n\n"
