"""Where a client presents its API key: one function, so authentication has one input.

- ``Authorization: Bearer <key>`` (rayscribe clients) or ``Authorization: Token <key>``
  (Deepgram's SDKs);
- the WebSocket subprotocol pair ``token, <key>`` (browsers cannot set headers: the page and
  Deepgram's browser SDK offer it); the server must then select ``token`` or the browser
  fails the handshake (:func:`accepted_subprotocol`).

This module only extracts the key; checking it belongs to the auth layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

TOKEN_SUBPROTOCOL = "token"
_SCHEMES = ("bearer", "token")


def presented_key(headers: Mapping[str, str], subprotocols: Sequence[str] = ()) -> str | None:
    """The API key the client presented, or None."""
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() in _SCHEMES and value.strip():
        return value.strip()
    offered = [p.strip() for p in subprotocols]
    if TOKEN_SUBPROTOCOL in offered:
        i = offered.index(TOKEN_SUBPROTOCOL)
        if i + 1 < len(offered) and offered[i + 1]:
            return offered[i + 1]
    return None


def accepted_subprotocol(subprotocols: Sequence[str]) -> str | None:
    """The subprotocol to select in the handshake: ``token`` when the key came that way."""
    return TOKEN_SUBPROTOCOL if TOKEN_SUBPROTOCOL in [p.strip() for p in subprotocols] else None
