from django.urls import path

from signaling.consumers import RoomConsumer

websocket_urlpatterns = [
    path("ws/rooms/<slug:slug>/", RoomConsumer.as_asgi()),
    # Echo and relay pages connect here: same consumer, a path of its own so a proxy can
    # send server-room sockets (and so their aiortc peers) to dedicated media processes
    # (docs/architecture.md, "Process model"; docs/deploy.md).
    path("ws/media/<slug:slug>/", RoomConsumer.as_asgi()),
]
