"""All WebSocket routes of the site, gathered from the apps."""

from django.urls import re_path

from faces.routing import websocket_urlpatterns as faces_patterns
from presence.routing import websocket_urlpatterns as presence_patterns
from rtcsite.ws.consumer import NotFoundConsumer
from signaling.routing import websocket_urlpatterns as signaling_patterns
from streaming.routing import websocket_urlpatterns as streaming_patterns

websocket_urlpatterns = [
    *presence_patterns,
    *signaling_patterns,
    *streaming_patterns,
    *faces_patterns,
    re_path(r"", NotFoundConsumer.as_asgi()),
]
