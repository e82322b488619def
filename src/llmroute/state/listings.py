"""A bound per group of records in a shared store (a client key's kept responses): each
record is listed with its size, by last write or renewal, and once the group holds more
than its `Cap` its least recently written goes, whoever else shares the store. Memory
keeps a `Listing` per group; Redis a sorted set and a hash of sizes beside the records,
changed in one script with them (`SET_LISTED`, `DELETE_LISTED`), so that every gateway
sharing the Redis keeps each key within its bound.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["DELETE_LISTED", "SET_LISTED", "Cap", "Listing"]


@dataclass(frozen=True, slots=True)
class Cap:
    """The most records (`entries`) and bytes (`size`) a group may hold; None: no bound."""

    entries: int | None = None
    size: int | None = None


class Listing:
    """One group's records in memory, least recently written or renewed first, with their
    sizes and their total."""

    __slots__ = ("sizes", "total")

    def __init__(self) -> None:
        self.sizes: OrderedDict[str, int] = OrderedDict()
        self.total = 0

    def put(self, key: str, size: int) -> None:
        self.total += size - self.sizes.pop(key, 0)
        self.sizes[key] = size

    def renew(self, key: str) -> None:
        if key in self.sizes:
            self.sizes.move_to_end(key)

    def pop(self, key: str) -> None:
        self.total -= self.sizes.pop(key, 0)

    def over(self, cap: Cap) -> bool:
        return (cap.entries is not None and len(self.sizes) > cap.entries) or (
            cap.size is not None and self.total > cap.size
        )

    def oldest(self, spared: str) -> str | None:
        """The record to evict: the least recently written other than `spared`."""
        return next((key for key in self.sizes if key != spared), None)


# KEYS[1] the record, KEYS[2] its group's listing (sorted set: key -> when written or
# renewed, in microseconds), KEYS[3] its sizes (hash: key -> bytes, "" -> their total), KEYS[4...]
# records to renew; ARGV[1] the value, ARGV[2] time to live (ms), ARGV[3] the most
# records, ARGV[4] the most bytes (-1: no bound), ARGV[5] 1 when the record is pinned (set
# unlisted: neither counted nor evicted), ARGV[6] (absent or empty: any) the value the
# record must still hold to be set (one changed or deleted meanwhile is left so). Listed
# records untouched for a time to live have expired and are unlisted first. Returns 1 when
# the record is kept (0: alone over the bound; -1: not holding ARGV[6], nothing written).
SET_LISTED = """
if ARGV[6] and ARGV[6] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[6] then
  return -1
end
local ttl = tonumber(ARGV[2]) * 1000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')[2]
if last and tonumber(last) >= now then
  now = tonumber(last) + 1  -- each write after the one before, even within a microsecond
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[3])  -- sizes of records no longer listed (the set was lost)
end
local function unlist(key)
  redis.call('ZREM', KEYS[2], key)
  local size = redis.call('HGET', KEYS[3], key)
  if size then  -- else its size was lost with the hash: counted as none
    redis.call('HDEL', KEYS[3], key)
    redis.call('HINCRBY', KEYS[3], '', 0 - tonumber(size))  -- never -0: not an integer
  end
end
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl)) do
  unlist(key)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 4, #KEYS do  -- in their order, as memory renews them: the oldest turn first
  if redis.call('PEXPIRE', KEYS[i], ARGV[2]) == 1 then
    redis.call('ZADD', KEYS[2], 'XX', now + i - 4, KEYS[i])
  end
end
unlist(KEYS[1])
if ARGV[5] == '1' then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
  return 1
end
redis.call('ZADD', KEYS[2], now + #KEYS - 3, KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], #ARGV[1])
redis.call('HINCRBY', KEYS[3], '', #ARGV[1])
local most, most_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local kept = 1
while (most >= 0 and redis.call('ZCARD', KEYS[2]) > most)
    or (most_bytes >= 0 and tonumber(redis.call('HGET', KEYS[3], '')) > most_bytes) do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 1)
  local victim = oldest[1]
  if not victim then break end
  if victim == KEYS[1] and oldest[2] then victim = oldest[2] end
  unlist(victim)
  redis.call('UNLINK', victim)
  if victim == KEYS[1] then
    kept = 0
    break
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return kept
"""

# KEYS[1] the record, KEYS[2] and KEYS[3] as SET_LISTED's; returns whether it was there
DELETE_LISTED = """
redis.call('ZREM', KEYS[2], KEYS[1])
local size = redis.call('HGET', KEYS[3], KEYS[1])
if size then  -- never made again when gone: it would be kept with no expiry
  redis.call('HDEL', KEYS[3], KEYS[1])
  redis.call('HINCRBY', KEYS[3], '', 0 - tonumber(size))
end
return redis.call('DEL', KEYS[1])
"""
