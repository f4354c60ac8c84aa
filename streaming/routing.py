from django.urls import path

from streaming.consumers import StreamIngestConsumer

websocket_urlpatterns = [
    path("ws/streams/<slug:slug>/ingest/", StreamIngestConsumer.as_asgi()),
]
