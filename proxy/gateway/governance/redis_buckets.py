"""Token buckets in Redis, shared by every replica: the one module that imports redis.

All the buckets of one request (its key's and its team's, requests and tokens) are read,
refilled, checked and taken in one Lua script: one round trip, atomic, and on the Redis server's
own clock (``TIME``), so replicas whose clocks disagree still agree on a bucket. A bucket is a
hash ``{l: level, t: updated}``; it expires when it would be full again, which is what a missing
bucket means, so idle keys and teams leave nothing behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from proxy.gateway.governance.shared_limits import StoreUnavailable, Take

# KEYS: the buckets (a key may come twice: a debit and a check of one bucket). ARGV, three per
# entry: capacity (units; it refills at capacity per minute), need, take. An entry with need 0 is
# a debit: taken whatever the level, first. Then the others are checked: if each bucket holds its
# need, each entry's take is taken; if one does not, none is. Returns the seconds to wait (0:
# taken), then each entry's bucket level after, as strings (Redis would truncate Lua numbers).
TAKE = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) + tonumber(now_t[2]) / 1000000
local n = #KEYS
local capacity, need, take, at, level, dirty = {}, {}, {}, {}, {}, {}
for i = 1, n do
  local key = KEYS[i]
  capacity[i] = tonumber(ARGV[3 * i - 2])
  need[i], take[i] = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  if at[key] == nil then
    at[key] = i
    level[i] = capacity[i]
    local stored = redis.call('HMGET', key, 'l', 't')
    if stored[1] then
      local elapsed = math.max(0, now - tonumber(stored[2]))
      level[i] = math.min(capacity[i], tonumber(stored[1]) + elapsed * capacity[i] / 60)
    end
  end
end
local wait = 0
for i = 1, n do
  local b = at[KEYS[i]]
  if need[i] == 0 and take[i] ~= 0 then
    level[b], dirty[b] = level[b] - take[i], true
  end
end
for i = 1, n do
  local b = at[KEYS[i]]
  if need[i] > 0 and level[b] < need[i] then
    wait = math.max(wait, (need[i] - level[b]) / (capacity[b] / 60))
  end
end
for i = 1, n do
  local b = at[KEYS[i]]
  if wait == 0 and need[i] > 0 and take[i] ~= 0 then
    level[b], dirty[b] = level[b] - take[i], true
  end
end
for b in pairs(dirty) do
  redis.call('HSET', KEYS[b], 'l', level[b], 't', now)
  local full_ms = math.ceil((capacity[b] - level[b]) / (capacity[b] / 60) * 1000)
  redis.call('PEXPIRE', KEYS[b], math.max(1, full_ms))
end
local out = {tostring(wait)}
for i = 1, n do out[i + 1] = tostring(level[at[KEYS[i]]]) end
return out
"""


class RedisBuckets:
    """shared_limits.BucketStore on one Redis server (not Redis Cluster: a request's buckets
    are updated by one script)."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self.where = where(url)
        self._timeout_s = timeout_s
        # No retries: a store in trouble is answered by the fallback, not waited for. Each call
        # is bounded as a whole by _call; a socket timeout as well would cost ~20 % more CPU
        # per call (redis-py wraps every read in asyncio.wait_for).
        self._client = Redis.from_url(
            url,
            socket_timeout=None,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._script = self._client.register_script(TAKE)

    async def take(self, takes: Sequence[Take]) -> tuple[float, list[float]]:
        """Seconds to wait (0: every ``take`` was taken), and each bucket's level after; the
        debits (need 0) are taken in either case."""
        args: list[float] = []
        for t in takes:
            args += (t.capacity, t.need, t.take)
        out = await self._call(self._script(keys=[t.key for t in takes], args=args))
        return float(out[0]), [float(v) for v in out[1:]]

    async def load(self) -> None:
        """Load the script (later calls are one EVALSHA); also tells whether Redis answers."""
        await self._call(self._client.script_load(TAKE))

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, command: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await command
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(str(exc) or type(exc).__name__) from exc


def where(url: str) -> str:
    """The URL without its credentials, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
