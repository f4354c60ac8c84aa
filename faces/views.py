"""Face detection page and the HTTP frame endpoint (docs/protocol.md, "Face detection").

``POST /faces/detect/`` takes the raw image bytes as the body and answers JSON. It is
authenticated by the same signed token as the WebSocket (``Authorization: Bearer <token>``
from ``/me/token/``), not by the session cookie: both transports then identify a client the
same way and share one set of limits, non-browser clients (the benchmark) need no cookie
jar, and it is safely CSRF-exempt — a cross-site page can make a browser send cookies but
cannot make it add an ``Authorization`` header.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from faces import services
from identity.tokens import TokenError, verify_token
from rtcsite.errors import ClientError, TooLarge, http_response
from rtcsite.http import bearer_token, client_address, refusal_page


def index_context(request: HttpRequest) -> dict:
    from streaming.services import get_stream
    from streaming.views import new_key

    stream = None
    key = ""
    slug = request.GET.get("stream", "")
    if slug:
        stream = get_stream(slug)
        key = new_key(request, slug, forget=False)  # the publisher page shows it, then drops it
    return {
        "limits": services.limits(),
        "params": services.parse_params(None),
        "stream": stream,
        "new_key": key,
    }


def index(request: HttpRequest) -> HttpResponse:
    """``/faces/``: camera, browser (face-api) and server (OpenCV) detection, publishing."""
    return render(request, "faces/index.html", index_context(request))


@require_POST
def new_stream(request: HttpRequest) -> HttpResponse:
    """Create a stream to publish the face-api canvas to, then come back to ``/faces/``
    (over a quota: this page again with the message, 429/503 and ``Retry-After``)."""
    from django.contrib import messages
    from django.core.exceptions import ValidationError

    from streaming.services import create_stream
    from streaming.views import remember_new_key

    try:
        stream, key = create_stream(
            request.POST.get("title", ""), request.identity, address=client_address(request)
        )
    except ClientError as exc:
        return refusal_page(request, "faces/index.html", index_context(request), exc)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("faces:index")
    remember_new_key(request, stream.slug, key)
    return redirect(f"{reverse('faces:index')}?stream={stream.slug}")


@csrf_exempt
async def detect(request: HttpRequest) -> HttpResponse:
    """``POST`` the image bytes; query parameters override detection parameters."""
    if request.method != "POST":
        return JsonResponse({"error": "method", "message": "Use POST."}, status=405)
    try:
        identity = verify_token(bearer_token(request))
    except TokenError as exc:
        return JsonResponse({"error": exc.code, "message": exc.message}, status=401)
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    limit = settings.FACE_MAX_FRAME_BYTES
    try:
        if declared > limit:  # before Django reads the body into memory
            raise TooLarge(
                f"Frame has {declared} bytes; at most {limit} are accepted.",
                limit=limit,
            )
        params = services.params_from_query(request.GET)
        session = services.http_session(identity.id)
        number = session.admit()
        result = await session.detect(request.body, params)
    except ClientError as exc:
        return http_response(exc)
    return JsonResponse({"frame": number, **result.as_dict()})
