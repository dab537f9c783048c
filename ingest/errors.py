"""The one rayscribe exception tree.

::

    RayscribeError
    ├── ProtocolError            client broke protocol v1           close 1002
    │   ├── MessageTooBig        frame over the size limit           close 1009
    │   └── InvalidText          a text frame that is not UTF-8      close 1007
    ├── Unauthorized             no API key, or an unknown one       close 4401
    ├── Forbidden                key/Origin not allowed for this     close 4403
    ├── TimedOut                 no ``start`` / no frame in time     close 4408
    │   ├── HandshakeTimeout     ``start`` did not come in time      close 4408
    │   └── IdleTimeout          no audio or keepalive in time       close 4408
    ├── LimitExceeded            a per-key/per-stream quota          close 4429
    │   ├── TooManyStreams       the key's concurrent-stream limit   close 4429
    │   ├── RateLimited          audio ahead of real time / finalize close 4429
    │   │   └── AheadOfRealTime  audio past the lead (the key cools) close 4429
    │   └── SessionTooLong       the stream passed max session audio close 4413
    ├── SlowConsumer             client stopped reading (resumable)  close 4008
    ├── UnsupportedAudio         encoding/rate/channels/samples bad  close 1003
    ├── SessionNotFound          resume of an unknown/expired session close 4404
    │   └── SessionClosed        resume of a session that was closed close 4410
    ├── InvalidResumeToken       resume token does not match         close 4403
    ├── ResumeConflict           another connection resumed it       close 4409
    ├── StoreUnavailable         session store (Redis) unreachable   close 4503
    ├── StateLost                the store lost a session's tail     (internal: healed)
    ├── UnknownHook              start.hook names no offered handler close 4422
    ├── HookFailed               a hook raised / answered no object  (hook_error, no close)
    │   └── HookTimeout          a hook did not answer in time       (hook_error, no close)
    ├── Overloaded               server cannot take the stream now   close 1013
    ├── ConfigError              bad configuration value             (not a close)
    ├── ModelError               the ASR model failed to load / run  close 1011
    └── InternalError            anything unexpected, details hidden close 1011

Every class carries a stable machine-readable ``code`` (sent in ``error`` messages) and the
WebSocket ``close_code`` the server uses when it ends a stream because of it.
"""

from __future__ import annotations

from typing import ClassVar


class RayscribeError(Exception):
    """Base of every error rayscribe raises on purpose."""

    code: ClassVar[str] = "internal_error"
    close_code: ClassVar[int] = 1011

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ProtocolError(RayscribeError):
    """The peer sent something protocol v1 does not allow here."""

    code = "protocol_error"
    close_code = 1002


class MessageTooBig(ProtocolError):
    """A frame exceeded the negotiated maximum size."""

    code = "message_too_big"
    close_code = 1009


class InvalidText(ProtocolError):
    """A text frame whose payload is not valid UTF-8 (RFC 6455 requires it)."""

    code = "invalid_utf8"
    close_code = 1007


class Unauthorized(RayscribeError):
    """No API key was presented, or the key is unknown (or was rotated out)."""

    code = "unauthorized"
    close_code = 4401


class Forbidden(RayscribeError):
    """The caller is known but not allowed this: a browser Origin not on the list."""

    code = "forbidden"
    close_code = 4403


class TimedOut(RayscribeError):
    """The client kept a socket open without saying anything for too long."""

    code = "timeout"
    close_code = 4408


class HandshakeTimeout(TimedOut):
    """No ``start``/``resume`` within ``handshake_timeout_s`` of the socket opening."""

    code = "handshake_timeout"


class IdleTimeout(TimedOut):
    """A started stream sent no audio and no keepalive for ``idle_timeout_s``."""

    code = "idle_timeout"


class LimitExceeded(RayscribeError):
    """A quota of the key or of the stream was exceeded; retry later or slow down."""

    code = "limit_exceeded"
    close_code = 4429


class TooManyStreams(LimitExceeded):
    """The API key (or client address, with auth off) has its maximum of concurrent streams."""

    code = "too_many_streams"


class RateLimited(LimitExceeded):
    """Audio ran further ahead of real time than allowed, or ``finalize`` came too often."""

    code = "rate_limited"


class AheadOfRealTime(RateLimited):
    """Audio ran further ahead of real time than allowed; the key (or address) that sent it
    may not open streams for a while (``limits.rate_cooldown_s``)."""


class SessionTooLong(LimitExceeded):
    """The stream carried more audio than ``max_session_s``."""

    code = "session_too_long"
    close_code = 4413


class SlowConsumer(RayscribeError):
    """The client stopped reading: its outbound queue passed the bound.  Resumable (v1.1)."""

    code = "slow_consumer"
    close_code = 4008


class UnsupportedAudio(RayscribeError):
    """Audio the server cannot decode: bad encoding, rate, channel count or samples."""

    code = "unsupported_audio"
    close_code = 1003


class SessionNotFound(RayscribeError):
    """A client asked to resume a session the server does not know."""

    code = "session_not_found"
    close_code = 4404


class SessionClosed(SessionNotFound):
    """A client asked to resume a session that already ended with ``close``."""

    code = "session_closed"
    close_code = 4410


class InvalidResumeToken(RayscribeError):
    """The resume token does not match the session's."""

    code = "invalid_resume_token"
    close_code = 4403


class ResumeConflict(RayscribeError):
    """Another connection resumed this session (fencing): this one may no longer write it."""

    code = "resume_conflict"
    close_code = 4409


class StoreUnavailable(RayscribeError):
    """The session store (Redis) cannot be reached: resume is unavailable until it returns."""

    code = "store_unavailable"
    close_code = 4503


class StateLost(RayscribeError):
    """The store is missing finals it had acknowledged (a Redis crash lost its last writes)."""

    code = "state_lost"

    def __init__(self, message: str, next_seq: int) -> None:
        super().__init__(message)
        self.next_seq = next_seq  # the first seq the store does not hold


class UnknownHook(RayscribeError):
    """``start.hook`` names a handler this server does not offer."""

    code = "unknown_hook"
    close_code = 4422


class HookFailed(RayscribeError):
    """An utterance hook raised or answered something that is not a JSON object; sent as a
    ``hook_error`` message, the stream goes on (close_code unused)."""

    code = "hook_failed"


class HookTimeout(HookFailed):
    """An utterance hook did not answer in time."""

    code = "hook_timeout"


class Overloaded(RayscribeError):
    """The server cannot accept or keep up with the stream right now; retry later."""

    code = "overloaded"
    close_code = 1013


class ConfigError(RayscribeError):
    """A configuration value is missing or invalid."""

    code = "config_error"


class ModelError(RayscribeError):
    """The ASR model could not be loaded or failed to run."""

    code = "model_error"


class InternalError(RayscribeError):
    """An unexpected failure; the details are logged, never sent to the client."""

    code = "internal_error"


CLOSE_NORMAL = 1000
CLOSE_SERVICE_RESTART = 1012  # the server is draining this replica: reconnect and resume


def error_for_code(code: str, message: str) -> RayscribeError:
    """The error of the tree whose ``code`` this is (a relayed ``error`` message), else an
    internal error with that message."""
    pending: list[type[RayscribeError]] = RayscribeError.__subclasses__()
    while pending:
        cls = pending.pop()
        if cls.code == code:
            return cls(message)
        pending.extend(cls.__subclasses__())
    return InternalError(message)
