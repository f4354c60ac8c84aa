from django.contrib import admin
from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path

from rtcsite import health
from rtcsite.adminlogin import ThrottledAdminAuthenticationForm

admin.site.site_header = "rtcsite admin"
admin.site.site_title = "rtcsite"
admin.site.login_form = ThrottledAdminAuthenticationForm  # password guessing is throttled


def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """``/favicon.ico``: browsers ask for it on every page without a ``<link rel=icon>`` (the
    admin's): the static file, by its (hashed, cached for good) static URL."""
    return HttpResponsePermanentRedirect(static("favicon.ico"))


urlpatterns = [
    path("favicon.ico", favicon, name="favicon"),
    # staff only (admin_view: the admin's login and permission check)
    path("admin/health/", admin.site.admin_view(health.admin_page), name="admin-health"),
    path("admin/health.json", admin.site.admin_view(health.admin_data), name="admin-health-data"),
    path("admin/", admin.site.urls),
    path("", include("identity.urls")),
    path("", include("rooms.urls")),
    path("", include("streaming.urls")),
    path("", include("faces.urls")),
    path("", include("signaling.urls")),
]
