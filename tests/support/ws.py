"""In-process WebSocket helpers around Channels' ``WebsocketCommunicator``."""

from __future__ import annotations

from channels.testing import WebsocketCommunicator

from identity.services import Identity
from identity.tokens import issue_token

ORIGIN = b"http://127.0.0.1"


def communicator(
    path: str,
    *,
    token: str | None = None,
    origin: bytes | None = ORIGIN,
    identity: Identity | None = None,
) -> WebsocketCommunicator:
    """A communicator for the full ASGI app (origin check, session/auth, routing)."""
    from rtcsite.asgi import application

    if identity is not None and token is None:
        token = issue_token(identity)
    query = f"?token={token}" if token is not None else ""
    headers = [(b"host", b"127.0.0.1")]
    if origin is not None:
        headers.append((b"origin", origin))
    return WebsocketCommunicator(application, path + query, headers=headers)
