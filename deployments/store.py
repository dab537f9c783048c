"""Session state in Redis: what a resumed connection needs to continue a stream exactly.

Key schema (``prefix`` from config, default ``rayscribe:``)::

    {prefix}s:{id}         hash: config (the ``start`` JSON), token (sha256 of the resume token),
                           epoch (fencing), state (open|closed), offset (stream seconds where the
                           uncommitted buffer starts), context (committed words the decoder still
                           needs: prompt + forced prefix), next_seq, words, owner (the ingress
                           replica serving it: for operators and fault tests), created, updated
    {prefix}s:{id}:finals  list: every committed final as JSON; index == seq

Every write is one Lua script, so a final and the offset it advances land together or not at all,
and a write carrying a stale epoch (a connection that was superseded by a resume) is refused.
Live sessions refresh both keys' TTL on every write; a disconnected session expires
``session_ttl_s`` after its last write; a closed one after ``closed_grace_s``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from deployments.transcript import Word
from ingest import messages as m
from ingest.errors import (
    InvalidResumeToken,
    ResumeConflict,
    SessionClosed,
    SessionNotFound,
    StateLost,
    StoreUnavailable,
)

log = logging.getLogger("ray.serve")
REDIS_URL_ENV = "RAYSCRIBE_REDIS_URL"
_UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    OSError,
)


class StoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "redis://127.0.0.1:6379/0"  # env RAYSCRIBE_REDIS_URL overrides it
    prefix: str = Field("rayscribe:", min_length=1)
    session_ttl_s: int = Field(300, ge=5)  # a disconnected session can be resumed this long
    closed_grace_s: int = Field(30, ge=1)  # a closed session's state is kept this long
    op_timeout_s: float = Field(1.0, gt=0.0)  # a dead Redis must not stall a stream for longer
    heartbeat_s: float = Field(2.0, gt=0.0)  # live sessions re-check fencing and refresh TTLs

    def resolved_url(self) -> str:
        return os.environ.get(REDIS_URL_ENV) or self.url


def hash_token(token: str, principal: str = "") -> str:
    """The stored form of a resume token; bound to the API key id that started the session, so
    a resume under another key does not match (``""``: auth off, the v1.1 hash unchanged)."""
    bound = f"{principal}\0{token}" if principal else token
    return hashlib.sha256(bound.encode()).hexdigest()


@dataclass(frozen=True)
class NewSession:
    """Written by the first successful sync of a session started with ``start``."""

    config: m.Start
    token_hash: str


@dataclass(frozen=True)
class Progress:
    """A session's durable position: everything a resume restores besides the finals."""

    offset: float  # stream seconds where the uncommitted audio starts
    context: list[Word]  # committed words the decoder still needs (prompt + forced prefix)
    words: int  # committed words so far (for the summary)
    # the newest hypothesis past the committed words: the first decode after a resume can agree
    # with it and commit at once instead of waiting for two fresh decodes
    pending: list[Word] = field(default_factory=list)


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    config: m.Start
    epoch: int
    progress: Progress
    next_seq: int
    missed: list[m.Final]  # finals after the client's last_seq


def _encode_words(words: list[Word]) -> list[list[str | float]]:
    return [[w.text, w.start, w.end, w.probability] for w in words]


def _decode_words(rows: list[list[str | float]]) -> list[Word]:
    return [Word(str(t), float(s), float(e), float(p)) for t, s, e, p in rows]


def _encode_context(progress: Progress) -> str:
    return json.dumps(
        {"committed": _encode_words(progress.context), "pending": _encode_words(progress.pending)}
    )


def _decode_context(raw: str) -> tuple[list[Word], list[Word]]:
    data = json.loads(raw) if raw else {}
    return _decode_words(data.get("committed", [])), _decode_words(data.get("pending", []))


# KEYS: hash, finals.  ARGV: epoch, offset, context, words, now, ttl, config, token, owner,
# first_seq, final...  Returns {0, next_seq} or {-1} unknown, {-2, epoch} fenced, {-3} closed, {-4, next} gap.
_SYNC = """
local cur = redis.call('HGET', KEYS[1], 'epoch')
if not cur then
  if ARGV[7] == '' then return {-1} end
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'config', ARGV[7], 'token', ARGV[8],
             'next_seq', 0, 'state', 'open', 'created', ARGV[5])
  cur = ARGV[1]
end
if cur ~= ARGV[1] then return {-2, tonumber(cur)} end
if redis.call('HGET', KEYS[1], 'state') == 'closed' then return {-3} end
local next_seq = tonumber(redis.call('HGET', KEYS[1], 'next_seq'))
local seq = tonumber(ARGV[10])
for i = 11, #ARGV do
  if seq == next_seq then
    redis.call('RPUSH', KEYS[2], ARGV[i])
    next_seq = next_seq + 1
  elseif seq > next_seq then
    return {-4, next_seq}
  end
  seq = seq + 1
end
redis.call('HSET', KEYS[1], 'next_seq', next_seq, 'offset', ARGV[2], 'context', ARGV[3],
           'words', ARGV[4], 'updated', ARGV[5], 'owner', ARGV[9])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {0, next_seq}
"""

# KEYS: hash, finals.  ARGV: token hash, now, ttl, last_seq, owner.
# Returns {0, epoch, config, offset, context, words, next_seq, {missed...}} or {-1}/{-3}/{-5}.
_RESUME = """
local h = redis.call('HMGET', KEYS[1], 'epoch', 'state', 'token', 'config', 'offset', 'context',
                     'words', 'next_seq')
if not h[1] then return {-1} end
if h[2] == 'closed' then return {-3} end
if h[3] ~= ARGV[1] then return {-5} end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'updated', ARGV[2], 'owner', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local missed = redis.call('LRANGE', KEYS[2], tonumber(ARGV[4]) + 1, -1)
return {0, epoch, h[4], h[5] or '0', h[6] or '', h[7] or '0', h[8], missed}
"""

# KEYS: hash, finals.  ARGV: epoch, grace.  A superseded connection cannot close the session.
_CLOSE = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'closed')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


# KEYS: the abandoned set.  ARGV: now, limit.  Due entries, each taken by one caller only.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do redis.call('ZREM', KEYS[1], member) end
return due
"""


class SessionStore:
    """Async access to session state; every Redis failure surfaces as :class:`StoreUnavailable`."""

    def __init__(self, config: StoreConfig | None = None, owner: str = "") -> None:
        self.config = config or StoreConfig()
        self.owner = owner  # who writes through this store (an ingress replica's actor name)
        # one quick reconnect covers a restarted Redis; more retries would only stall streams
        self.redis: Redis = Redis.from_url(
            self.config.resolved_url(),
            socket_timeout=self.config.op_timeout_s,
            socket_connect_timeout=self.config.op_timeout_s,
            retry=Retry(NoBackoff(), 1),
            decode_responses=True,
        )
        self._sync = self.redis.register_script(_SYNC)
        self._resume = self.redis.register_script(_RESUME)
        self._close = self.redis.register_script(_CLOSE)
        self._claim = self.redis.register_script(_CLAIM)
        self.available = True  # flips on the first failure, back on the first success

    def _keys(self, session_id: str) -> list[str]:
        base = f"{self.config.prefix}s:{session_id}"
        return [base, f"{base}:finals"]

    async def guarded(self, what: str, coro: Any) -> Any:
        """Await a Redis call; a failure becomes :class:`StoreUnavailable` (logged once per outage)."""
        try:
            result = await coro
        except _UNAVAILABLE as e:
            if self.available:  # once per outage, not once per frame
                log.warning("session store unreachable (%s: %s); resume is unavailable", what, e)
                self.available = False
            raise StoreUnavailable("the session store is unreachable; retry later") from e
        if not self.available:
            log.warning("session store reachable again")
            self.available = True
        return result

    async def sync(
        self,
        session_id: str,
        epoch: int,
        first_seq: int,
        finals: list[m.Final],
        progress: Progress,
        new: NewSession | None = None,
    ) -> int:
        """Append ``finals`` (seq ``first_seq``...) and set the progress, atomically; return the
        next seq.  Finals already stored (a retried write) are skipped, not duplicated."""
        args: list[str | int] = [
            epoch,
            repr(progress.offset),
            _encode_context(progress),
            progress.words,
            repr(time.time()),
            self.config.session_ttl_s,
            new.config.to_json() if new else "",
            new.token_hash if new else "",
            self.owner,
            first_seq,
            *(f.model_dump_json(exclude_none=True) for f in finals),
        ]
        res = await self.guarded("sync", self._sync(keys=self._keys(session_id), args=args))
        code = int(res[0])
        if code == -2:
            raise ResumeConflict("this session was resumed by another connection")
        if code == -1:
            raise SessionNotFound(f"session {session_id} expired or is unknown")
        if code == -3:
            raise SessionClosed(f"session {session_id} is closed")
        if code == -4:
            held = int(res[1])
            raise StateLost(f"session {session_id}: the store holds finals before seq {held} only", held)
        return int(res[1])

    async def resume(self, session_id: str, token: str, last_seq: int, principal: str = "") -> SessionRecord:
        """Take the session over: bump its epoch (fencing out any older connection) and load it.
        ``principal``: the resuming connection's key id (it must be the one that started it)."""
        args: list[str | int] = [
            hash_token(token, principal),
            repr(time.time()),
            self.config.session_ttl_s,
            last_seq,
            self.owner,
        ]
        res = await self.guarded("resume", self._resume(keys=self._keys(session_id), args=args))
        code = int(res[0])
        if code == -1:
            raise SessionNotFound(f"session {session_id} is unknown or expired")
        if code == -3:
            raise SessionClosed(f"session {session_id} was closed; start a new one")
        if code == -5:
            raise InvalidResumeToken("the resume token does not match the session")
        _, epoch, config, offset, context, words, next_seq, missed = res
        committed, pending = _decode_context(context)
        return SessionRecord(
            session_id=session_id,
            config=m.Start.model_validate_json(config),
            epoch=int(epoch),
            progress=Progress(float(offset), committed, int(words), pending),
            next_seq=int(next_seq),
            missed=[m.Final.model_validate_json(f) for f in missed],
        )

    async def close(self, session_id: str, epoch: int) -> bool:
        """Mark the session closed; it is deleted after the grace period."""
        res = await self.guarded(
            "close", self._close(keys=self._keys(session_id), args=[epoch, self.config.closed_grace_s])
        )
        return bool(int(res))

    async def transcript(self, session_id: str) -> tuple[float | None, list[m.Final]]:
        """The session's creation time (unix seconds; None: unknown) and every final it holds,
        in seq order (the archive reads a closed session within ``closed_grace_s``)."""
        hash_key, finals_key = self._keys(session_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(hash_key, "created")
            pipe.lrange(finals_key, 0, -1)
            created, finals = await self.guarded("transcript", pipe.execute())
        return (float(created) if created else None), [m.Final.model_validate_json(f) for f in finals]

    @property
    def abandoned_key(self) -> str:
        return f"{self.config.prefix}abandoned"

    async def mark_abandoned(self, session_id: str, epoch: int, key_id: str | None, due: float) -> None:
        """A durable session's connection ended without ``close``: unless a resume takes it
        (a later epoch), it is archived at ``due`` (unix seconds), before it expires."""
        member = json.dumps([session_id, epoch, key_id])
        await self.guarded("mark_abandoned", self.redis.zadd(self.abandoned_key, {member: due}))

    async def claim_abandoned(self, now: float, limit: int = 32) -> list[tuple[str, int, str | None]]:
        """Abandoned sessions due by ``now`` as (session id, epoch it was abandoned at, key
        id), each handed to one caller only."""
        due = await self.guarded("claim_abandoned", self._claim(keys=[self.abandoned_key], args=[now, limit]))
        return [(str(sid), int(epoch), key) for sid, epoch, key in (json.loads(x) for x in due)]

    async def still_abandoned(self, session_id: str, epoch: int) -> bool:
        """Nobody resumed or closed the session since it was abandoned at ``epoch``."""
        hash_key = self._keys(session_id)[0]
        held, state = await self.guarded("still_abandoned", self.redis.hmget(hash_key, "epoch", "state"))
        return held is not None and int(held) == epoch and state != "closed"

    async def ttl(self, session_id: str) -> int:
        return int(await self.guarded("ttl", self.redis.ttl(self._keys(session_id)[0])))

    async def aclose(self) -> None:
        await self.redis.aclose()
