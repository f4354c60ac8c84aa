"""The lobby WebSocket.

For now it authenticates and greets (``hello``) and answers ``ping``; the Presence
feature adds live join/leave deltas to it.
"""

from __future__ import annotations

from identity.websocket import PROTOCOL_VERSION, AuthenticatedJsonConsumer


class LobbyConsumer(AuthenticatedJsonConsumer):
    """``/ws/lobby/``: one per open lobby page."""

    async def on_connect(self) -> None:
        await self.send_json(
            {"type": "hello", "protocol": PROTOCOL_VERSION, "you": self.identity.as_dict()}
        )
