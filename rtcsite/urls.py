from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "rtcsite admin"
admin.site.site_title = "rtcsite"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("identity.urls")),
    path("", include("rooms.urls")),
    path("", include("streaming.urls")),
    path("", include("faces.urls")),
    path("", include("signaling.urls")),
]
