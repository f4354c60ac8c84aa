from django.urls import path

from faces.consumers import FaceFramesConsumer

websocket_urlpatterns = [
    path("ws/faces/", FaceFramesConsumer.as_asgi()),
]
