"""ASGI entry point: HTTP to Django, WebSockets to Channels consumers.

WebSockets pass the Origin check (rtcsite/ws/origin.py: the socket's own scheme, host and
port, or one of CSRF_TRUSTED_ORIGINS, with the host in ALLOWED_HOSTS; a page of another
site, scheme or port cannot open a socket with the visitor's cookies); each consumer then
insists on its signed token (rtcsite.ws.consumer), which is the only identity a socket has.
No session or user is put in a socket's scope: nothing reads them, and Channels'
``AuthMiddlewareStack`` cost every connect a thread-pool hop (and a session read when the
browser sends its cookie) plus about 3 KB held per socket (bench ws_capacity,
docs/decisions.md).
"""

import gc
import os

from django.core.asgi import get_asgi_application

from rtcsite import process

process.SERVING = True  # before Django's set-up imports rtcsite.metrics

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtcsite.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402

from rtcsite.observe import Observe  # noqa: E402
from rtcsite.routing import websocket_urlpatterns  # noqa: E402
from rtcsite.serving import refuse_public_listen_with_default_key  # noqa: E402
from rtcsite.ws.origin import SameOriginValidator  # noqa: E402

# Daphne and runserver load this module before they listen: the bind is checked here.
refuse_public_listen_with_default_key()


class MediaHandler(ASGIHandler):
    """Django for ``/media/streams/`` without the middleware stack.

    Stream media (playlists, manifests, segments being written) is what players ask for
    several times a second, low-latency ones 5-20 times (blocking reloads, parts). None of
    it reads a session, an identity, a CSRF token or renders a page, yet each of the ten
    sync middleware costs a hop to the thread that runs sync code (docs/decisions.md,
    "Stream media past the middleware", for the CPU per request). The view
    (streaming/media.py) sets every header its responses need.
    """

    def load_middleware(self, is_async=False):
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = convert_exception_to_response(self._get_response_async)

    async def __call__(self, scope, receive, send):
        # Without the per-request ThreadSensitiveContext: it gives each request a thread of
        # its own for sync code (started and joined per request); the media view runs none,
        # and the request signals' receivers share the one sync thread.
        await self.handle(scope, receive, send)


MEDIA_PREFIX = "/media/streams/"
media_asgi_app = MediaHandler()


async def http_app(scope, receive, send):
    app = media_asgi_app if scope["path"].startswith(MEDIA_PREFIX) else django_asgi_app
    await app(scope, receive, send)


# Observe: /healthz, /readyz and /metrics before Django; socket counts and log context.
application = Observe(
    ProtocolTypeRouter(
        {
            "http": http_app,
            "websocket": SameOriginValidator(URLRouter(websocket_urlpatterns)),
        }
    )
)

# Everything loaded so far (Django, the apps, Channels, Twisted: ~110,000 objects) lives as
# long as the process. Unfrozen, every full garbage collection scans it: 50-75 ms during
# which no socket of the process is served, the first one soon after a burst of joins
# (docs/decisions.md, "Start-up objects frozen"). Frozen, full collections scan only what
# was made since.
gc.freeze()
