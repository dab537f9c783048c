"""The WebSocket ingress deployment: thin and async; all model work goes to the ASR handle.

No ``from __future__ import annotations`` here: FastAPI must see the real ``WebSocket``
class on the route methods that Serve rewrites.
"""

import asyncio
import logging
import uuid
from typing import Any

from fastapi import FastAPI, WebSocket
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle
from starlette.websockets import WebSocketDisconnect, WebSocketState

from deployments.session import StreamSession
from deployments.streaming import PolicyConfig
from deployments.transcript import DecodeRequest, Hypothesis
from ingest.errors import ModelError, Overloaded
from ingest.protocol import Limits, ServerProtocol

log = logging.getLogger("ray.serve")
STREAM_PATH = "/v1/stream"
_RETRYABLE = (ActorDiedError, ActorUnavailableError, RayActorError)


class IngressConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: PolicyConfig = PolicyConfig()
    max_sessions: int = Field(64, ge=1)  # per ingress replica; more are refused with 1013
    max_frame_bytes: int = Field(512 * 1024, ge=1024)
    decode_retries: int = Field(2, ge=0, le=10)  # on ASR replica death


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
        self.active = 0

    @app.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "active_sessions": self.active}

    @app.websocket(STREAM_PATH)
    async def stream(self, ws: WebSocket) -> None:
        await ws.accept()
        transport = _SocketTransport(ws)
        if self.active >= self.config.max_sessions:
            refusal = ServerProtocol(self.limits)
            refusal.fail(Overloaded(f"this replica already serves {self.active} streams; retry later"))
            for text in refusal.data_to_send():
                await transport.send_text(text)
            await transport.close(refusal.close_code or Overloaded.close_code)
            return
        self.active += 1
        try:
            session = StreamSession(
                uuid.uuid4().hex, transport, self._decode, self.config.policy, self.limits
            )
            await session.run()
        finally:
            self.active -= 1

    async def _decode(self, request: DecodeRequest) -> Hypothesis:
        for attempt in range(self.config.decode_retries + 1):
            try:
                result: Hypothesis = await self.asr.transcribe.remote(request)
                return result
            except _RETRYABLE as e:
                log.warning("ASR replica failed (%s); retry %d", type(e).__name__, attempt + 1)
                await asyncio.sleep(0.1 * (attempt + 1))
        raise ModelError("no ASR replica could decode the stream")
