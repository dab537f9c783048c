"""Streams per API key across every ingress replica: one lease per open stream in Redis.

Key schema: ``{prefix}k:{key_id}`` is a sorted set, member = the connection's id, score = when
its lease lapses (ms); ``{prefix}cool:{key_id}`` exists (with a TTL) while the key cools down
after one of its streams ran ahead of real time.  A replica refreshes the leases of its open streams every
``heartbeat_s``; a lease lapses ``3 x heartbeat_s`` after its replica stopped refreshing it (a
killed replica's streams stop counting within seconds).  Acquiring is one Lua script (drop
lapsed leases, count, add), so two replicas admitting the key's last slot at once cannot both
get it.  With Redis unreachable the per-replica counter in the ingress is the only limit (a
store outage must not refuse every stream).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from deployments.store import SessionStore

# KEYS[1] the key's set; ARGV: now (ms), connection id, limit, lease (ms)
_ACQUIRE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) == false and held >= tonumber(ARGV[3]) then
  return {0, held}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, held}
"""


class KeyLeases:
    """This replica's leases; every call may raise ``StoreUnavailable``."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.lease_ms = int(3 * store.config.heartbeat_s * 1000)
        self._acquire = store.redis.register_script(_ACQUIRE)

    def _key(self, key_id: str) -> str:
        return f"{self.store.config.prefix}k:{key_id}"

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)  # wall clock: every replica compares the same scores

    async def acquire(self, key_id: str, conn_id: str, limit: int) -> tuple[bool, int]:
        """(granted, streams the key held before this one, cluster-wide)."""
        args: list[str | int] = [self._now_ms(), conn_id, limit, self.lease_ms]
        granted, held = await self.store.guarded("lease", self._acquire(keys=[self._key(key_id)], args=args))
        return bool(int(granted)), int(held)

    async def refresh(self, leases: Iterable[tuple[str, str]]) -> None:
        """Extend the leases (key id, connection id) of this replica's open streams."""
        until = self._now_ms() + self.lease_ms
        pipe = self.store.redis.pipeline(transaction=False)
        for key_id, conn_id in leases:
            # XX: a lease dropped meanwhile (released, lapsed) is not brought back
            pipe.zadd(self._key(key_id), {conn_id: until}, xx=True)
            pipe.pexpire(self._key(key_id), self.lease_ms)
        await self.store.guarded("lease refresh", pipe.execute())

    async def release(self, key_id: str, conn_id: str) -> None:
        await self.store.guarded("lease release", self.store.redis.zrem(self._key(key_id), conn_id))

    # --- cooldown: a key whose stream ran ahead of real time (``limits.rate_cooldown_s``) ---

    def _cool_key(self, key_id: str) -> str:
        return f"{self.store.config.prefix}cool:{key_id}"

    async def cool(self, key_id: str, seconds: float) -> None:
        """Refuse the key's new streams on every replica for ``seconds``."""
        ms = max(1, int(seconds * 1000))
        await self.store.guarded("cooldown", self.store.redis.set(self._cool_key(key_id), 1, px=ms))

    async def cooling_s(self, key_id: str) -> float:
        """Seconds left of the key's cooldown (0: none)."""
        ms = await self.store.guarded("cooldown", self.store.redis.pttl(self._cool_key(key_id)))
        return max(0, int(ms)) / 1000  # -2: no such key, -1: no expiry (never set so)
