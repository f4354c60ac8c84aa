"""ASGI entry point: HTTP to Django, WebSockets to Channels consumers.

WebSockets pass the Origin check against ALLOWED_HOSTS (a cross-site page cannot open
a socket with the visitor's cookies); each consumer then insists on its signed token
(rtcsite.ws.consumer), which is the only identity a socket has. No session or user is put
in a socket's scope: nothing reads them, and Channels' ``AuthMiddlewareStack`` cost every
connect a thread-pool hop (and a session read when the browser sends its cookie) plus
about 3 KB held per socket (bench ws_capacity, docs/decisions.md).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtcsite.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from rtcsite.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
    }
)
