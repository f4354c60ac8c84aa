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

import asyncio
import contextlib
import gc
import io
import os

from django.core.asgi import get_asgi_application

from rtcsite import process

process.SERVING = True  # before Django's set-up imports rtcsite.metrics

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtcsite.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.urls import set_script_prefix  # noqa: E402

from rtcsite.observe import Observe  # noqa: E402
from rtcsite.routing import websocket_urlpatterns  # noqa: E402
from rtcsite.serving import refuse_public_listen_with_default_key  # noqa: E402
from rtcsite.ws.origin import SameOriginValidator  # noqa: E402
from streaming.media import serve_stream_file  # noqa: E402

# Daphne and runserver load this module before they listen: the bind is checked here.
refuse_public_listen_with_default_key()


class MediaHandler(ASGIHandler):
    """Django for ``/media/streams/`` with only what the media view needs.

    Stream media (playlists, manifests, segments being written) is what players ask for
    several times a second, low-latency ones 5-20 times (blocking reloads, parts). None of
    it reads a session, an identity, a CSRF token, the database or a request body, and the
    view (streaming/media.py) sets every header its responses need. So, against Django's
    own handler (docs/decisions.md, "Stream media past the middleware", for the CPU per
    request): no middleware; no URL resolving (the view is known); no per-request thread
    context (it starts and joins a thread per request for sync code; the view runs none);
    no ``request_started`` signal and the response closed on the event loop, each of which
    cost a hop to the sync thread; a request body (none is expected) is read and dropped,
    never spooled to memory or disk. Kept: the request object, exceptions as 400/500
    responses, and a client's disconnect cancelling the view (a held request ends then).
    """

    def load_middleware(self, is_async=False):
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = convert_exception_to_response(self._view)  # no URL resolving

    @staticmethod
    async def _view(request):
        return await serve_stream_file(request, request.path_info[len(MEDIA_PREFIX) :])

    async def __call__(self, scope, receive, send):
        while True:  # the request body, if any, dropped as it comes
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if not message.get("more_body", False):
                break
        set_script_prefix(get_script_prefix(scope))
        request, error = self.create_request(scope, io.BytesIO())
        if request is None:
            await self.send_response(error, send)
            return

        async def respond():
            response = await self._middleware_chain(request)
            response._handler_class = self.__class__
            try:
                await self.send_response(response, send)
            finally:
                response.close()  # our responses' closers: a held request's release

        responding = asyncio.ensure_future(respond())
        listening = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait((responding, listening), return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when Daphne cancels us (shutdown, a client long gone): no task left
            listening.cancel()
            responding.cancel()  # no-op once done; the client left: a held request ends
        # The view's own error has become a 500 response; a message after the request
        # other than a disconnect (AssertionError in Django's listener) is ignored.
        with contextlib.suppress(asyncio.CancelledError, RequestAborted, AssertionError):
            await listening
        try:
            await responding
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():
                raise  # our own cancellation, not the view's


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
