from django.urls import path, re_path

from streaming import media, views, webrtc_http

app_name = "streaming"

urlpatterns = [
    path("streams/", views.index, name="index"),
    path("streams/new/", views.create, name="create"),
    path("streams/time/", views.server_time, name="time"),
    path("streams/<slug:slug>/", views.detail, name="detail"),
    path("streams/<slug:slug>/publish/", views.publish, name="publish"),
    path("streams/<slug:slug>/status/", views.status, name="status"),
    path("streams/<slug:slug>/ingest/", views.ingest, name="ingest"),
    path("streams/<slug:slug>/stop/", views.stop, name="stop"),
    path("streams/<slug:slug>/whip/", webrtc_http.whip_endpoint, name="whip"),
    path(
        "streams/<slug:slug>/whip/<str:session_id>/",
        webrtc_http.whip_session,
        name="whip-session",
    ),
    path("streams/<slug:slug>/whep/", webrtc_http.whep_endpoint, name="whep"),
    path(
        "streams/<slug:slug>/whep/<str:session_id>/",
        webrtc_http.whep_session,
        name="whep-session",
    ),
    re_path(
        r"^streams/(?P<slug>[-a-zA-Z0-9_]+)/(?P<player>hls|dash|webrtc)/$",
        views.watch,
        name="watch",
    ),
    re_path(r"^media/streams/(?P<path>.*)$", media.serve_stream_file, name="media"),
]
