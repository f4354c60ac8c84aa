from django.urls import path

from streaming.consumers import StreamIngestConsumer, StreamViewerConsumer

websocket_urlpatterns = [
    path("ws/streams/<slug:slug>/ingest/", StreamIngestConsumer.as_asgi()),
    path("ws/streams/<slug:slug>/watch/", StreamViewerConsumer.as_asgi()),
]
