"""A bare Channels consumer on Daphne: the second peer of ``ws_capacity``.

Served by the same Daphne command line and settings as the site (``daphne_site`` with
``app="bench.bare_channels_asgi:application"``), so the embedded channel layer is the same
and every socket still registers a channel. The consumer accepts, greets once (``hello``,
the readiness message the raw ``websockets`` peer also sends) and echoes: no middleware, no
token, no presence. ``raw websockets / bare Channels / ours`` then splits the gap into what
Daphne + Channels cost per socket and what our consumers add.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtcsite.settings")
django_asgi_app = get_asgi_application()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter  # noqa: E402

HELLO = '{"type":"hello"}'


class BareConsumer(AsyncWebsocketConsumer):
    """Accept, say hello, echo."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=HELLO)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": BareConsumer.as_asgi()})
