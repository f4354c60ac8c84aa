"""WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep) over HTTP: parse, authorise, call the
session service, answer.

Endpoints ``/streams/<slug>/whip/`` and ``/whep/`` take ``OPTIONS`` and ``POST`` (an
``application/sdp`` offer → ``201`` with the answer, ``Location`` of the session resource,
``ETag``, ``Accept-Patch`` and the ICE servers as ``Link: <…>; rel="ice-server"``). Session
resources ``…/<id>/`` take ``PATCH`` (trickle ICE, ``application/trickle-ice-sdpfrag``)
and ``DELETE``. Every other method is ``405`` with ``Allow``, as both specifications
reserve them. WHIP needs the stream's publish key (``Authorization: Bearer``) on every
request but the CORS preflight; WHEP viewers of a public stream need none (the session URL
is their capability). Errors are ``text/plain`` with the refusal's message: WHIP clients
(OBS, FFmpeg) show or log the body as is. CORS is open (``*``, no cookies): publishers and
players may run on any origin, and read the headers they need.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from rtcsite.errors import ClientError, TooLarge, with_retry_after
from rtcsite.http import bearer_token, client_address
from rtcsite.ice import client_ice_servers
from streaming import ingest, sessions, whip
from streaming.sessions import SDP, SDPFRAG

logger = logging.getLogger(__name__)

#: a browser's offer with every codec is ~6-10 kB; anything near this is not an offer
MAX_SDP_BYTES = 64 * 1024
MAX_SDPFRAG_BYTES = 16 * 1024

ENDPOINT_METHODS = "OPTIONS, POST"
SESSION_METHODS = "OPTIONS, PATCH, DELETE"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Patch, Accept-Post, "
    "Retry-After, Content-Type",
}


# --- responses -----------------------------------------------------------------------------
def _cors(response: HttpResponse) -> HttpResponse:
    for name, value in CORS_HEADERS.items():
        response[name] = value
    return response


def error_response(exc: ClientError) -> HttpResponse:
    """The refusal as text: its message, its status, ``Retry-After`` on 429/503 and
    ``WWW-Authenticate`` on 401 (RFC 6750)."""
    response = HttpResponse(
        exc.message + "\n", status=exc.status, content_type="text/plain; charset=utf-8"
    )
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="rtcsite"'
    return _cors(with_retry_after(response, exc))


def _not_allowed(request: HttpRequest, allowed: str) -> HttpResponse:
    response = error_response(
        ClientError(f"{request.method} is not used here; allowed: {allowed}.", status=405)
    )
    response["Allow"] = allowed
    return response


def _options(request: HttpRequest, allowed: str, *, ice_user: str | None) -> HttpResponse:
    """CORS preflight, or a plain OPTIONS (which also gets the ICE servers, RFC 9725
    §4.6: only for clients that cannot take them from the POST's answer)."""
    response = _cors(HttpResponse(status=204))
    response["Allow"] = allowed
    response["Access-Control-Allow-Methods"] = allowed
    response["Access-Control-Allow-Headers"] = "Authorization, Content-Type, If-Match"
    response["Access-Control-Max-Age"] = "600"
    if "POST" in allowed:
        response["Accept-Post"] = SDP
    preflight = "Access-Control-Request-Method" in request.headers
    if ice_user is not None and not preflight:
        _link_ice_servers(response, ice_user)
    return response


def _quote(value: str) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _link_ice_servers(response: HttpResponse, user: str) -> None:
    """``Link: <url>; rel="ice-server"`` per URL (RFC 9725 §4.6), TURN REST credentials
    derived for ``user`` as for rooms (``rtcsite.ice``)."""
    links = []
    for server in client_ice_servers(settings.ICE_SERVERS, user):
        for url in server["urls"]:
            link = f'<{quote(url, safe=":/?=&@.-_~")}>; rel="ice-server"'
            if "username" in server:
                link += f"; username={_quote(server['username'])}"
                link += f"; credential={_quote(server['credential'])}"
                link += '; credential-type="password"'
            links.append(link)
    if links:
        response["Link"] = ", ".join(links)


def _content_type(request: HttpRequest) -> str:
    return request.content_type.split(";")[0].strip().lower() if request.content_type else ""


def _read_body(request: HttpRequest, expected: str, limit: int) -> str:
    """The body as text if it is ``expected`` and within ``limit``; else 415/413/400."""
    content_type = _content_type(request)
    if content_type != expected:
        raise ClientError(
            f"Send {expected}, not {content_type or 'no Content-Type'}.",
            code="unsupported-media-type",
            status=415,
        )
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise TooLarge(f"A body of {declared} bytes is over the limit of {limit}.", limit=limit)
    body = request.body
    if len(body) > limit:
        raise TooLarge(f"A body of {len(body)} bytes is over the limit of {limit}.", limit=limit)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ClientError("The body is not UTF-8 text.", code="bad-sdp") from None
    if not text.strip():
        raise ClientError(f"The body is empty: send the {expected}.", code="bad-sdp")
    return text


def _created(session: sessions.WebRtcSession, answer: str) -> HttpResponse:
    response = _cors(HttpResponse(answer, status=201, content_type=SDP))
    response["Location"] = session.location
    response["ETag"] = session.etag
    response["Accept-Patch"] = SDPFRAG
    response["Cache-Control"] = "no-store"
    _link_ice_servers(response, session.id)
    return response


# --- endpoints -----------------------------------------------------------------------------
@csrf_exempt
async def whip_endpoint(request: HttpRequest, slug: str) -> HttpResponse:
    """``/streams/<slug>/whip/``: ``POST`` an offer with the publish key to go live."""
    if request.method == "OPTIONS":
        return _options(request, ENDPOINT_METHODS, ice_user=await _publisher(request, slug))
    if request.method != "POST":
        return _not_allowed(request, ENDPOINT_METHODS)
    try:
        stream = await ingest.authenticate(slug, bearer_token(request))
        offer = _read_body(request, SDP, MAX_SDP_BYTES)
        session, answer = await whip.publish(stream, offer, client_address(request))
    except ClientError as exc:
        logger.info("whip %s: refused %s %s", slug, exc.status, exc.message)
        return error_response(exc)
    return _created(session, answer)


async def _publisher(request: HttpRequest, slug: str) -> str | None:
    """The TURN user for a WHIP OPTIONS that carries the stream's key; None (no ICE
    servers) without it: TURN credentials are for publishers, not for whoever asks."""
    key = bearer_token(request)
    if not key or "Access-Control-Request-Method" in request.headers:
        return None
    try:
        await ingest.authenticate(slug, key)
    except ClientError:
        return None
    return f"whip-{slug}"


@csrf_exempt
async def whep_endpoint(request: HttpRequest, slug: str) -> HttpResponse:
    """``/streams/<slug>/whep/``: ``POST`` an offer to watch a public live stream."""
    if request.method == "OPTIONS":
        return _options(request, ENDPOINT_METHODS, ice_user=f"whep-{slug}")
    if request.method != "POST":
        return _not_allowed(request, ENDPOINT_METHODS)
    from streaming import whep  # the WHEP viewer session (streaming/whep.py)

    try:
        offer = _read_body(request, SDP, MAX_SDP_BYTES)
        # ?peer=: the viewer page's own audience place, so the page is counted once
        peer = request.GET.get("peer") or None
        session, answer = await whep.watch(slug, offer, client_address(request), peer=peer)
    except ClientError as exc:
        logger.info("whep %s: refused %s %s", slug, exc.status, exc.message)
        return error_response(exc)
    return _created(session, answer)


# --- session resources ---------------------------------------------------------------------
@csrf_exempt
async def whip_session(request: HttpRequest, slug: str, session_id: str) -> HttpResponse:
    return await _session(request, "whip", slug, session_id)


@csrf_exempt
async def whep_session(request: HttpRequest, slug: str, session_id: str) -> HttpResponse:
    return await _session(request, "whep", slug, session_id)


async def _session(request: HttpRequest, kind: str, slug: str, session_id: str) -> HttpResponse:
    if request.method == "OPTIONS":
        return _options(request, SESSION_METHODS, ice_user=None)
    if request.method not in ("PATCH", "DELETE"):
        return _not_allowed(request, SESSION_METHODS)
    try:
        if kind == "whip":  # the publisher's key on every request, not only the POST
            await ingest.authenticate(slug, bearer_token(request))
        session = sessions.lookup(kind, slug, session_id)
        if request.method == "DELETE":
            reason = whip.STOPPED_BY_PUBLISHER if kind == "whip" else "the viewer left"
            # Shielded: a client that hangs up early (Django then cancels this view) must
            # not cut the stop short (FFmpeg finalising the playlists).
            await asyncio.shield(session.spawn(session.close(reason), "delete"))
            return _cors(
                HttpResponse(
                    f"Session ended: {reason}.\n", content_type="text/plain; charset=utf-8"
                )
            )
        return await _patch(request, session)
    except ClientError as exc:
        logger.info("%s %s: %s refused %s %s", kind, slug, request.method, exc.status, exc.message)
        return error_response(exc)


async def _patch(request: HttpRequest, session: sessions.WebRtcSession) -> HttpResponse:
    """Trickle ICE (RFC 9725 §4.3.1): the entity tag must match (428 without, 412 if
    another); an ICE restart (``If-Match: "*"``) is refused 422: aiortc cannot restart."""
    fragment = sessions.parse_sdpfrag(_read_body(request, SDPFRAG, MAX_SDPFRAG_BYTES))
    if_match = request.headers.get("If-Match", "").strip()
    if not if_match:
        raise ClientError(
            "PATCH needs If-Match with the session's ETag.", code="precondition", status=428
        )
    if if_match == "*":
        raise ClientError(
            "ICE restarts are not supported: DELETE this session and POST a new offer.",
            code="ice-restart",
            status=422,
        )
    if if_match != session.etag:
        raise ClientError(
            "If-Match does not name this session's ICE session (its ETag).",
            code="precondition",
            status=412,
        )
    await session.add_candidates(fragment)
    return _cors(HttpResponse(status=204))
