"""Utterance hooks: a session may name a handler (a Serve deployment of the same app, e.g. a
voice assistant's intent step) that gets each completed utterance; the answers go back to
the client as ``hook_result`` messages, in utterance order.

The server lists the handlers a client may name (``ingress.hooks``: name -> import path of a
Serve deployment class whose ``__call__`` takes the utterance as a dict and returns a JSON
object).  A handler's failure or silence is a ``hook_error`` message: the transcript goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ingest import messages as m
from ingest.errors import ConfigError, HookFailed, HookTimeout, RayscribeError, UnknownHook

log = logging.getLogger("ray.serve")
HookCall = Callable[[str, dict[str, Any]], Awaitable[object]]  # (handler name, utterance) -> reply


class HooksConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # name a client puts in start.hook -> "module:Class" of a Serve deployment in this app
    handlers: dict[str, str] = {}
    timeout_s: float = Field(10.0, gt=0.0)  # per utterance; past it: hook_error hook_timeout
    max_reply_bytes: int = Field(16 * 1024, ge=64)  # a larger answer is a hook_error
    max_waiting: int = Field(16, ge=1)  # utterances queued for one session's handler


def load_handler(path: str) -> Any:
    """The deployment class at ``module:Class`` (bound into the app by deployments.app)."""
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"hook handler {path!r} cannot be imported: {e}") from e


class Hooks:
    """The handlers a replica offers, and the call that reaches them."""

    def __init__(self, config: HooksConfig, call: HookCall) -> None:
        self.config = config
        self.call = call

    def check(self, name: str) -> None:
        if name not in self.config.handlers:
            offered = ", ".join(sorted(self.config.handlers)) or "none"
            raise UnknownHook(f"no hook named {name!r} here (offered: {offered})")

    async def ask(self, name: str, utterance: m.Utterance) -> dict[str, Any]:
        """One utterance to the handler; its reply as a JSON object, or the typed failure."""
        try:
            async with asyncio.timeout(self.config.timeout_s):
                reply = await self.call(name, utterance.model_dump())
        except TimeoutError as e:
            raise HookTimeout(f"the hook did not answer within {self.config.timeout_s:g} s") from e
        except RayscribeError:
            raise
        except Exception as e:  # the handler's own exception, carried back by Serve
            log.warning("hook %s failed: %s", name, e)
            raise HookFailed(f"the hook failed: {type(e).__name__}") from e
        if not isinstance(reply, dict):
            raise HookFailed(f"the hook answered {type(reply).__name__}, not a JSON object")
        try:
            size = len(json.dumps(reply))
        except (TypeError, ValueError) as e:
            raise HookFailed("the hook's answer is not JSON") from e
        if size > self.config.max_reply_bytes:
            raise HookFailed(f"the hook's answer has {size} bytes (at most {self.config.max_reply_bytes})")
        return reply


class SessionHook:
    """One session's hook: utterances go to the handler one at a time, in order, off the
    stream's path; each answer (or failure) is handed to ``send``."""

    def __init__(
        self, hooks: Hooks, name: str, send: Callable[[m.HookResult | m.HookError], Awaitable[None]]
    ) -> None:
        self.hooks, self.name, self.send = hooks, name, send
        self.queue: asyncio.Queue[m.Utterance] = asyncio.Queue(hooks.config.max_waiting)
        self.task = asyncio.create_task(self._run())

    async def submit(self, utterance: m.Utterance) -> None:
        try:
            self.queue.put_nowait(utterance)
        except asyncio.QueueFull:  # the handler falls behind the speaker: say so, keep the stream
            failed = HookFailed(f"{self.queue.maxsize} utterances already wait for the hook")
            await self.send(self._error(utterance, failed))

    async def finish(self) -> None:
        """Wait until every submitted utterance is answered (each call is bounded by the
        hook's timeout, so this is too), then stop."""
        bound = self.hooks.config.timeout_s * (self.queue.qsize() + 2)
        with contextlib.suppress(TimeoutError):  # a margin only: ask() ends each call in time
            async with asyncio.timeout(bound):
                await self.queue.join()
        self.cancel()

    def cancel(self) -> None:
        self.task.cancel()

    async def _run(self) -> None:
        while True:
            utterance = await self.queue.get()
            try:
                result = await self.hooks.ask(self.name, utterance)
                await self.send(m.HookResult(hook=self.name, utterance=utterance, result=result))
            except RayscribeError as e:
                await self.send(self._error(utterance, e))
            finally:
                self.queue.task_done()

    def _error(self, utterance: m.Utterance, error: RayscribeError) -> m.HookError:
        return m.HookError(hook=self.name, utterance=utterance, code=error.code, message=error.message)


def utterance_of(session_id: str, finals: list[m.Final]) -> m.Utterance:
    return m.Utterance(
        session_id=session_id,
        seq_from=finals[0].seq,
        seq_to=finals[-1].seq,
        text=" ".join(f.text for f in finals),
        start=finals[0].start,
        end=finals[-1].end,
    )
