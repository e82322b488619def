"""State that outlives one request: the response cache and the stores behind it
(in-process memory by default, Redis to share it between gateways)."""

from llmroute.state.lookup import CacheLookup, look_up, replay
from llmroute.state.response_cache import CachedAnswer, CacheDirectives, ResponseCache
from llmroute.state.stores import (
    CACHE_ENV_VAR,
    KeyValueStore,
    MemoryStore,
    RedisStore,
    StoreUnavailable,
    open_store,
    resolve_cache_url,
)

__all__ = [
    "CACHE_ENV_VAR",
    "CacheDirectives",
    "CacheLookup",
    "CachedAnswer",
    "KeyValueStore",
    "MemoryStore",
    "RedisStore",
    "ResponseCache",
    "StoreUnavailable",
    "look_up",
    "open_store",
    "replay",
    "resolve_cache_url",
]
