"""State that outlives one request: the response cache, the deployments' request
limits and budgets, and circuit-breaker openings, in this process by default or in
Redis to share them between gateways."""

from llmroute.state.breakers import RedisBreakers, open_breakers
from llmroute.state.limits import MemoryLimits, RateLimits, RedisLimits, open_limits
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
    "MemoryLimits",
    "MemoryStore",
    "RateLimits",
    "RedisBreakers",
    "RedisLimits",
    "RedisStore",
    "ResponseCache",
    "StoreUnavailable",
    "look_up",
    "open_breakers",
    "open_limits",
    "open_store",
    "replay",
    "resolve_cache_url",
]
