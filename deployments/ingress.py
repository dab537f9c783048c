"""The WebSocket ingress deployment: thin and async; all model work goes to the ASR handle.

No ``from __future__ import annotations`` here: FastAPI must see the real ``WebSocket``
class on the route methods that Serve rewrites.
"""

import asyncio
import contextlib
import logging
import math
import random
import time
import uuid
from collections import Counter
from typing import Any

import ray
from fastapi import FastAPI, Response, WebSocket
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.websockets import WebSocketDisconnect, WebSocketState

from deployments import deepgram, memory, metrics, web
from deployments.archive import ArchiveConfig, ArchiveWriter
from deployments.auth import ANONYMOUS, AuthConfig, KeyRing, Principal, accepted_subprotocol, check_origin
from deployments.gather import DecodeGather
from deployments.hooks import Hooks, HooksConfig
from deployments.key_leases import KeyLeases
from deployments.session import Deadlines, StreamSession, Transport
from deployments.store import SessionStore, StoreConfig
from deployments.streaming import PolicyConfig
from deployments.transcript import DecodeRequest, Hypothesis
from ingest.errors import (
    AheadOfRealTime,
    ModelError,
    Overloaded,
    RayscribeError,
    StoreUnavailable,
    TooManyStreams,
)
from ingest.protocol import Limits, ServerProtocol

log = logging.getLogger("ray.serve")
STREAM_PATH = "/v1/stream"
_RETRYABLE = (
    ActorDiedError,
    ActorUnavailableError,
    RayActorError,
    BackPressureError,
    DeploymentUnavailableError,
)


def _cooling(left_s: float) -> AheadOfRealTime:
    return AheadOfRealTime(f"a stream of this key ran ahead of real time; retry in {math.ceil(left_s)} s")


class LimitsConfig(BaseModel):
    """Per-key and per-stream limits; each refusal is a typed error (docs/protocol.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_streams_per_key: int = Field(16, ge=1)  # all replicas (Redis leases); per address with auth off
    max_pending: int = Field(16, ge=1)  # sockets per replica that have not sent start yet
    handshake_timeout_s: float = Field(10.0, gt=0.0)  # socket open -> start/resume
    idle_timeout_s: float = Field(60.0, gt=0.0)  # no audio and no keepalive
    max_text_bytes: int = Field(16 * 1024, ge=256)
    max_speed: float = Field(4.0, ge=1.0)  # audio may run this much faster than real time...
    max_lead_s: float = Field(75.0, ge=1.0)  # ...after this lead (a resume resends <= 60 s)
    # a key (auth off: an address) whose stream was cut for running ahead of real time opens
    # no stream on any replica for this long: a client reconnecting at once to flood again
    # had each new stream's lead decoded (0: off)
    rate_cooldown_s: float = Field(10.0, ge=0.0)
    max_session_s: float = Field(4 * 3600.0, gt=0.0)  # stream seconds per session
    finalize_burst: int = Field(5, ge=1)
    finalize_per_s: float = Field(1.0, gt=0.0)
    send_timeout_s: float = Field(10.0, gt=0.0)  # one message not taken by the client
    max_queued_bytes: int = Field(256 * 1024, ge=4096)  # outbound bytes per session


class IngressConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: PolicyConfig = PolicyConfig()
    max_sessions: int = Field(64, ge=1)  # per ingress replica; more are refused with 1013
    max_frame_bytes: int = Field(512 * 1024, ge=1024)
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    # browser Origins allowed to open streams ("*": any); requests without Origin are not browsers
    allowed_origins: list[str] = []
    # a failed decode (ASR replica died or restarting) is retried, with backoff, this long
    decode_retry_budget_s: float = Field(30.0, ge=0.0, le=600.0)
    # > 0: the decodes this replica's streams ask for within this long of each other go to
    # the ASR deployment in one call (deployments/gather.py); 0: one call per decode
    decode_gather_s: float = Field(0.0, ge=0.0, le=0.1)
    store: StoreConfig = StoreConfig()
    # completed sessions' transcripts as a Parquet dataset (docs/archive.md); uri None: off
    archive: ArchiveConfig = ArchiveConfig()
    # utterance handlers a session may name in start.hook (deployments/hooks.py)
    hooks: HooksConfig = HooksConfig()


class _SocketTransport:
    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def receive(self) -> str | bytes | None:
        try:
            message = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        if message.get("bytes") is not None:
            return bytes(message["bytes"])
        return str(message.get("text") or "")

    async def send_text(self, text: str) -> None:
        if self.ws.application_state == WebSocketState.CONNECTED:
            await self.ws.send_text(text)

    async def close(self, code: int) -> None:
        if self.ws.application_state == WebSocketState.CONNECTED:
            await self.ws.close(code)


# no /docs, /redoc or /openapi.json: nothing to browse on a public port
app = FastAPI(title="rayscribe", docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=128)
@serve.ingress(app)
class Ingress:
    def __init__(
        self,
        asr: DeploymentHandle[Any],
        config: dict[str, Any] | None = None,
        hooks: dict[str, DeploymentHandle[Any]] | None = None,
    ) -> None:
        self.asr = asr
        self.hook_handles = hooks or {}
        memory.tune_allocator()
        self.config = IngressConfig.model_validate(config or {})
        q = self.config.limits
        self.limits = Limits(
            max_frame_bytes=self.config.max_frame_bytes,
            max_text_bytes=q.max_text_bytes,
            max_speed=q.max_speed,
            max_lead_s=q.max_lead_s,
            max_session_s=q.max_session_s,
            finalize_burst=q.finalize_burst,
            finalize_per_s=q.finalize_per_s,
        )
        self.deadlines = Deadlines(
            q.handshake_timeout_s, q.idle_timeout_s, q.send_timeout_s, q.max_queued_bytes
        )
        self.keys = KeyRing(self.config.auth)
        if self.config.auth.mode == "off":
            log.warning("auth is OFF (explicitly configured): anyone who reaches this port may stream")
        self.store = SessionStore(self.config.store, owner=ray.get_runtime_context().get_actor_name() or "")
        archive = self.config.archive
        self.archive = ArchiveWriter(archive) if archive.uri is not None else None
        self.hooks = Hooks(self.config.hooks, self._call_hook) if self.hook_handles else None
        self.sessions: set[StreamSession] = set()
        self.per_key: Counter[str] = Counter()  # this replica's streams per key
        self.cooling: dict[str, float] = {}  # key -> until when its new streams are refused
        self.key_leases = KeyLeases(self.store)  # the key's streams on every replica
        self.leases: dict[str, str] = {}  # connection id -> key id, refreshed by _renew_leases
        self._lease_renewal: asyncio.Task[None] | None = None
        gather_s = self.config.decode_gather_s
        self.gather = DecodeGather(self._transcribe_many, gather_s) if gather_s > 0 else None

    @property
    def active(self) -> int:
        return len(self.sessions)

    @app.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "active_sessions": self.active,
            "store_available": self.store.available,
            "rss_bytes": memory.rss_bytes(),
        }

    async def drain(self, reason: str = "server restart") -> int:
        """Persist every session, tell its client to resume elsewhere, close with 1012."""
        sessions = list(self.sessions)
        results = await asyncio.gather(*(s.drain(reason) for s in sessions), return_exceptions=True)
        for session, result in zip(sessions, results, strict=True):
            if isinstance(result, BaseException):  # one session's failure must not stop the rest
                log.error("session %s: drain failed", session.session_id, exc_info=result)
        return len(sessions)

    async def __del__(self) -> None:
        # Serve runs this only once no request is ongoing (an open socket is one), so it is a
        # last resort; with sockets open the replica is killed at graceful_shutdown_timeout_s
        # and clients resume from the state every commit already persisted.
        await self.drain("replica shutting down")
        if self.archive is not None:  # write what is queued; what cannot be is logged at ERROR
            await self.archive.aclose()
        await self.store.aclose()

    @app.get("/")
    async def page(self) -> Response:
        return await self.static("index.html")

    @app.get("/static/{name}")
    async def static(self, name: str) -> Response:
        found = web.asset(name)
        if found is None:
            return Response(status_code=404)
        return Response(found[0], media_type=found[1], headers={"Cache-Control": "no-cache"})

    @app.websocket(STREAM_PATH)
    async def stream(self, ws: WebSocket) -> None:
        await self._host(ws, deepgram_api=False)

    @app.websocket(deepgram.LISTEN_PATH)
    async def listen(self, ws: WebSocket) -> None:
        """Deepgram's live API over the same sessions, keys and limits (deployments/deepgram.py)."""
        await self._host(ws, deepgram_api=True)

    async def _host(self, ws: WebSocket, deepgram_api: bool) -> None:
        """Admit one stream (Origin, key, limits) and run it on this replica; ``deepgram_api``:
        its messages are Deepgram's (the query string says how it streams)."""
        offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        # the socket is accepted only to say why it is refused (typed error + close code): no
        # frame of a refused client is ever read
        await ws.accept(subprotocol=accepted_subprotocol(offered))
        socket = _SocketTransport(ws)
        transport: Transport = socket
        if deepgram_api:
            try:
                options = deepgram.parse_options(ws.query_params)
            except RayscribeError as e:  # a clear error, then close: never a silent stream
                metrics.count_error(type(e))
                await socket.send_text(deepgram.error_message(e.code, e.message))
                await socket.close(e.close_code)
                return
            transport = deepgram.DeepgramTransport(socket, options)
        conn_id = uuid.uuid4().hex
        try:
            principal = self._admit(ws, offered)
            await self._lease(principal, conn_id)
        except RayscribeError as e:
            await self._refuse(transport, e)
            return
        session = StreamSession(
            conn_id,
            transport,
            self._decode,
            self.config.policy,
            self.limits,
            self.store,
            self.deadlines,
            principal.key_id if principal.authenticated else "",
            self.archive,
            self.hooks,
        )
        self.sessions.add(session)
        self.per_key[principal.key_id] += 1
        metrics.set_active_sessions(self.active)
        try:
            await session.run()
            if isinstance(session.protocol.error, AheadOfRealTime):
                await self._cool(principal.key_id)
        finally:
            self.sessions.discard(session)
            await self._release(conn_id)
            self.per_key[principal.key_id] -= 1
            if self.per_key[principal.key_id] <= 0:
                del self.per_key[principal.key_id]
            metrics.set_active_sessions(self.active)
            if not self.sessions:
                memory.trim()  # hand freed audio buffers back to the OS (see deployments/memory.py)

    def _admit(self, ws: WebSocket, offered: list[str]) -> Principal:
        """Origin, API key, then the replica's and the key's limits; raises the typed refusal."""
        check_origin(ws.headers.get("origin"), self.config.allowed_origins, ws.headers.get("host"))
        principal = self.keys.authenticate(ws.headers, offered, ws.query_params)
        if principal is ANONYMOUS:  # auth off: the per-key limit applies per client address
            principal = Principal(f"addr:{ws.client.host if ws.client else '?'}", authenticated=False)
        until = self.cooling.get(principal.key_id)
        if until is not None:
            if time.monotonic() < until:
                raise _cooling(until - time.monotonic())
            del self.cooling[principal.key_id]
        if self.active >= self.config.max_sessions:
            raise Overloaded(f"this replica already serves {self.active} streams; retry later")
        pending = sum(1 for s in self.sessions if not s.started)
        if pending >= self.config.limits.max_pending:
            raise Overloaded(f"{pending} connections wait for their start; retry later")
        if self.per_key[principal.key_id] >= self.config.limits.max_streams_per_key:
            raise TooManyStreams(f"this key has {self.per_key[principal.key_id]} open streams here")
        return principal

    async def _cool(self, key_id: str) -> None:
        """The key's stream ran ahead of real time: refuse its new streams for a while, here
        and (through the store) on every replica, so a client that reconnects at once to flood
        again gets no fresh lead."""
        seconds = self.config.limits.rate_cooldown_s
        if seconds <= 0:
            return
        self.cooling[key_id] = time.monotonic() + seconds
        with contextlib.suppress(StoreUnavailable):  # this replica still refuses it
            await self.key_leases.cool(key_id, seconds)

    async def _lease(self, principal: Principal, conn_id: str) -> None:
        """The key's streams on all replicas (``max_streams_per_key``), unless the key cools
        down on another replica; with the store unreachable only this replica's count and
        cooldown apply (``_admit``)."""
        limit = self.config.limits.max_streams_per_key
        try:
            if self.config.limits.rate_cooldown_s > 0 and (
                left := await self.key_leases.cooling_s(principal.key_id)
            ):
                raise _cooling(left)
            granted, held = await self.key_leases.acquire(principal.key_id, conn_id, limit)
        except StoreUnavailable:
            return
        if not granted:
            raise TooManyStreams(f"this key has {held} open streams")
        self.leases[conn_id] = principal.key_id
        if self._lease_renewal is None or self._lease_renewal.done():
            self._lease_renewal = asyncio.create_task(self._renew_leases())

    async def _release(self, conn_id: str) -> None:
        key_id = self.leases.pop(conn_id, None)
        if key_id is None:  # no lease taken (the store was unreachable at admission)
            return
        with contextlib.suppress(StoreUnavailable):  # unreleased, it lapses in 3 heartbeats
            await self.key_leases.release(key_id, conn_id)

    async def _renew_leases(self) -> None:
        """Keep this replica's leases alive while it has any; a dead replica's lapse."""
        while self.leases:
            await asyncio.sleep(self.config.store.heartbeat_s)
            with contextlib.suppress(StoreUnavailable):  # logged by the store; next beat retries
                await self.key_leases.refresh([(k, c) for c, k in self.leases.items()])

    async def _refuse(self, transport: Transport, error: RayscribeError) -> None:
        refusal = ServerProtocol(self.limits)
        refusal.fail(error)
        metrics.count_error(type(error))
        for text in refusal.data_to_send():
            await transport.send_text(text)
        await transport.close(refusal.close_code or error.close_code)

    async def _call_hook(self, name: str, utterance: dict[str, Any]) -> object:
        reply: object = await self.hook_handles[name].remote(utterance)
        return reply

    async def _transcribe_many(self, requests: list[DecodeRequest]) -> list[Hypothesis | BaseException]:
        metrics.decode_call()
        results: list[Hypothesis | BaseException] = await self.asr.transcribe_many.remote(requests)
        return results

    async def _decode(self, request: DecodeRequest) -> Hypothesis:
        """Decode on any ASR replica; a dead or restarting one delays the stream (retried with
        backoff within ``decode_retry_budget_s``) instead of ending it."""
        deadline = time.monotonic() + self.config.decode_retry_budget_s
        delay, attempt = 0.1, 0
        while True:
            try:
                stamped = metrics.stamp(request)
                if self.gather is not None:
                    return await self.gather.decode(stamped)
                metrics.decode_call()
                result: Hypothesis = await self.asr.transcribe.remote(stamped)
                return result
            except _RETRYABLE as e:
                attempt += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ModelError("no ASR replica could decode the stream") from e
                log.warning("ASR call failed (%s); retry %d in %.1f s", type(e).__name__, attempt, delay)
                await asyncio.sleep(min(left, delay * (0.5 + random.random())))
                delay = min(delay * 2, 2.0)
