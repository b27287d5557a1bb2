"""The layered cache's fixed values and Redis names, in one place.

Every Redis name the cache uses starts with the service's prefix
(``settings.redis_prefix``), so several deployments (and test sessions) share
a server without seeing each other's entries.
"""

from __future__ import annotations

from typing import Final

#: L2 entries of cache ``name`` live under ``{prefix}:cache:{name}:v{version}:{key}``:
#: the version changes with an entry's encoding, so that a new release never
#: reads an old release's bytes as its own.
L2_NAMESPACE: Final = "{prefix}:cache:{name}:v{version}"
#: The pub/sub channel on which every instance hears which keys to drop from L1.
INVALIDATION_CHANNEL: Final = "{prefix}:cache:invalidate"

# The first byte of an L2 value says what it is.
#: A value, its encoded bytes follow.
TAG_VALUE: Final = b"v"
#: A cached absence (the loader said None): answered without asking PostgreSQL.
TAG_NONE: Final = b"n"
#: Written by an invalidation: a read treats it as a miss, and a fill from a load
#: that may have started before the write cannot replace it (the Lua script
#: below) until it expires. Its lifetime must outlast the longest load.
TAG_TOMBSTONE: Final = b"t"

#: Writes loaded values unless the key holds a tombstone. KEYS: the keys; ARGV:
#: (ttl_ms, value) pairs, one per key. Returns how many were written. One round
#: trip for a whole batch of fills.
FILL_SCRIPT: Final = """
local n = 0
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if (not current) or string.sub(current, 1, 1) ~= 't' then
    redis.call('SET', key, ARGV[2 * i], 'PX', ARGV[2 * i - 1])
    n = n + 1
  end
end
return n
"""

#: Tombstones the keys and tells every instance to drop them from L1, in one round
#: trip. KEYS: the keys; ARGV[1]: tombstone ttl_ms; ARGV[2]: channel; ARGV[3]:
#: the message. Returns the number of subscribers that heard it.
INVALIDATE_SCRIPT: Final = """
for _, key in ipairs(KEYS) do
  redis.call('SET', key, 't', 'PX', ARGV[1])
end
return redis.call('PUBLISH', ARGV[2], ARGV[3])
"""

#: Keys per invalidation round trip (a Lua call and one pub/sub message).
INVALIDATE_CHUNK: Final = 1000

#: L1 (in process) and L2 (Redis) latency buckets, seconds: an L1 lookup takes
#: microseconds, a Redis round trip a fraction of a millisecond, PostgreSQL a few.
LATENCY_BUCKETS: Final = (
    0.000_002,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
