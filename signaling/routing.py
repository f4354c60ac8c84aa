from django.urls import path

from signaling.consumers import MeshRoomConsumer
from signaling.media.consumers import MediaRoomConsumer

websocket_urlpatterns = [
    path("ws/rooms/<slug:slug>/", MeshRoomConsumer.as_asgi()),
    # Echo and relay rooms: a path of its own so a proxy can send server-room sockets (and
    # so their aiortc peers) to dedicated media processes (docs/deploy.md).
    path("ws/media/<slug:slug>/", MediaRoomConsumer.as_asgi()),
]
