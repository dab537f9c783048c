"""The WebSocket ingress deployment: thin and async; all model work goes to the ASR handle.

No ``from __future__ import annotations`` here: FastAPI must see the real ``WebSocket``
class on the route methods that Serve rewrites.
"""

import asyncio
import logging
import random
import time
import uuid
from typing import Any

import ray
from fastapi import FastAPI, Response, WebSocket
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.websockets import WebSocketDisconnect, WebSocketState

from deployments import credentials, deepgram, metrics, web
from deployments.session import StreamSession, Transport
from deployments.store import SessionStore, StoreConfig
from deployments.streaming import PolicyConfig
from deployments.transcript import DecodeRequest, Hypothesis
from ingest.errors import ModelError, Overloaded, RayscribeError
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


class IngressConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: PolicyConfig = PolicyConfig()
    max_sessions: int = Field(64, ge=1)  # per ingress replica; more are refused with 1013
    max_frame_bytes: int = Field(512 * 1024, ge=1024)
    # a failed decode (ASR replica died or restarting) is retried, with backoff, this long
    decode_retry_budget_s: float = Field(30.0, ge=0.0, le=600.0)
    store: StoreConfig = StoreConfig()


def _presented_key(ws: WebSocket) -> str | None:
    return credentials.presented_key(ws.headers, ws.scope.get("subprotocols", []))


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


app = FastAPI(title="rayscribe")


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=128)
@serve.ingress(app)
class Ingress:
    def __init__(self, asr: DeploymentHandle[Any], config: dict[str, Any] | None = None) -> None:
        self.asr = asr
        self.config = IngressConfig.model_validate(config or {})
        self.limits = Limits(max_frame_bytes=self.config.max_frame_bytes)
        self.store = SessionStore(self.config.store, owner=ray.get_runtime_context().get_actor_name() or "")
        self.sessions: set[StreamSession] = set()

    @property
    def active(self) -> int:
        return len(self.sessions)

    @app.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "active_sessions": self.active, "store_available": self.store.available}

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
        # a browser offering "token, <key>" fails the handshake unless "token" is selected
        await ws.accept(subprotocol=credentials.accepted_subprotocol(ws.scope.get("subprotocols", [])))
        await self._host(_SocketTransport(ws), _presented_key(ws))

    @app.websocket(deepgram.LISTEN_PATH)
    async def listen(self, ws: WebSocket) -> None:
        """Deepgram's live API over the same sessions (deployments/deepgram.py)."""
        await ws.accept(subprotocol=credentials.accepted_subprotocol(ws.scope.get("subprotocols", [])))
        transport = _SocketTransport(ws)
        try:
            options = deepgram.parse_options(ws.query_params)
        except RayscribeError as e:  # a clear error, then close: never a silent stream
            metrics.count_error(type(e))
            await transport.send_text(deepgram.error_message(e.code, e.message))
            await transport.close(e.close_code)
            return
        await self._host(deepgram.DeepgramTransport(transport, options), _presented_key(ws))

    async def _host(self, transport: Transport, key: str | None) -> None:
        """Run one stream on this replica, under its limits.  ``key``: the API key the client
        presented (credentials.presented_key), for the auth layer to check here."""
        if self.active >= self.config.max_sessions:
            refusal = ServerProtocol(self.limits)
            refusal.fail(Overloaded(f"this replica already serves {self.active} streams; retry later"))
            metrics.count_error(Overloaded)
            for text in refusal.data_to_send():
                await transport.send_text(text)
            await transport.close(refusal.close_code or Overloaded.close_code)
            return
        session = StreamSession(
            uuid.uuid4().hex, transport, self._decode, self.config.policy, self.limits, self.store
        )
        self.sessions.add(session)
        metrics.set_active_sessions(self.active)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            metrics.set_active_sessions(self.active)

    async def _decode(self, request: DecodeRequest) -> Hypothesis:
        """Decode on any ASR replica; a dead or restarting one delays the stream (retried with
        backoff within ``decode_retry_budget_s``) instead of ending it."""
        deadline = time.monotonic() + self.config.decode_retry_budget_s
        delay, attempt = 0.1, 0
        while True:
            try:
                result: Hypothesis = await self.asr.transcribe.remote(metrics.stamp(request))
                return result
            except _RETRYABLE as e:
                attempt += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ModelError("no ASR replica could decode the stream") from e
                log.warning("ASR call failed (%s); retry %d in %.1f s", type(e).__name__, attempt, delay)
                await asyncio.sleep(min(left, delay * (0.5 + random.random())))
                delay = min(delay * 2, 2.0)
