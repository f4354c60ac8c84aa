from django.contrib import admin
from django.urls import include, path

from rtcsite.adminlogin import ThrottledAdminAuthenticationForm

admin.site.site_header = "rtcsite admin"
admin.site.site_title = "rtcsite"
admin.site.login_form = ThrottledAdminAuthenticationForm  # password guessing is throttled

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("identity.urls")),
    path("", include("rooms.urls")),
    path("", include("streaming.urls")),
    path("", include("faces.urls")),
    path("", include("signaling.urls")),
]
