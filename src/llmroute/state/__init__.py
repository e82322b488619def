"""State that outlives one request: the response cache and the deployments' request
limits, in this process by default or in Redis to share them between gateways."""

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
    "RedisLimits",
    "RedisStore",
    "ResponseCache",
    "StoreUnavailable",
    "look_up",
    "open_limits",
    "open_store",
    "replay",
    "resolve_cache_url",
]
