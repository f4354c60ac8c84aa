"""Stream pages and the HTTP ingest endpoints: parse the request, call streaming.services
or streaming.ingest.

Ingest (``POST /streams/<slug>/ingest/``, ``POST /streams/<slug>/stop/``) authenticates with
the publish key (``Authorization: Bearer <key>``), not with cookies, so it is CSRF-exempt
and usable by non-browser publishers. Replies are JSON; see docs/protocol.md ("Live
stream ingest").
"""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from rtcsite.errors import ClientError, TooLarge, http_response
from rtcsite.http import bearer_token, client_address, refusal_page
from streaming import services
from streaming.clock import ClockError, iso_ms, now_ms, parse_capture_ms
from streaming.ingest import authenticate, feed_chunk, stop_stream
from streaming.lowlatency import LowLatency, read_mode
from streaming.models import StreamStatus

logger = logging.getLogger(__name__)

SESSION_NEW_KEYS = "rtcsite_new_stream_keys"
MULTIPART_OVERHEAD = 16 * 1024  # boundaries, part headers and the seq field


def publish_key_from(request: HttpRequest) -> str | None:
    return bearer_token(request) or request.headers.get("X-Publish-Key") or None


def remember_new_key(request: HttpRequest, slug: str, key: str) -> None:
    """Keep a new stream's key in the session until its publisher page shows it once."""
    keys = request.session.get(SESSION_NEW_KEYS, {})
    keys[slug] = key
    request.session[SESSION_NEW_KEYS] = keys


def new_key(request: HttpRequest, slug: str, *, forget: bool) -> str:
    """The key ``remember_new_key`` kept for ``slug`` ("" if none); ``forget``: shown now,
    so drop it."""
    keys = request.session.get(SESSION_NEW_KEYS) or {}
    key = keys.pop(slug, "") if forget else keys.get(slug, "")
    if key and forget:
        request.session[SESSION_NEW_KEYS] = keys
    return key


# --- pages -------------------------------------------------------------------------------
def _create_context(**extra) -> dict:
    """The stream list and what the create form needs (its low-latency box's default)."""
    return {
        "streams": services.list_streams(),
        "low_latency_default": settings.STREAM_LOW_LATENCY_DEFAULT,
        **extra,
    }


def index(request: HttpRequest) -> HttpResponse:
    """``/streams/``: the streams and a form to create one."""
    return render(request, "streaming/index.html", _create_context())


@require_POST
def create(request: HttpRequest) -> HttpResponse:
    """Create a stream, then its publisher page; over a quota, this page again with the
    message (429/503 and ``Retry-After``)."""
    try:
        stream, key = services.create_stream(
            request.POST.get("title", ""),
            request.identity,
            face_overlay=request.POST.get("face_overlay") == "on",
            low_latency=_low_latency_choice(request),
            address=client_address(request),
        )
    except ClientError as exc:
        context = _create_context(title=request.POST.get("title", ""))
        return refusal_page(request, "streaming/index.html", context, exc)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("streaming:index")
    remember_new_key(request, stream.slug, key)
    return redirect(stream.get_publish_url())


def _low_latency_choice(request: HttpRequest) -> bool | None:
    """The form's checkbox (``low_latency=on``; the form also sends ``low_latency_shown``,
    so an unchecked box means standard). A POST without either (a script): the default."""
    if "low_latency" in request.POST:
        return request.POST["low_latency"] in ("on", "1", "true")
    if "low_latency_shown" in request.POST:
        return False
    return None


def offered_low_latency(stream) -> LowLatency | None:
    """The stream's low-latency mode, or None (standard only).

    The folder's mode file once the pipeline has written it (what the origin serves), else
    the stream's own choice (``Stream.low_latency``, not yet streaming) with the settings'
    part and segment targets.
    """
    mode = read_mode(stream.media_dir())
    if mode is None and getattr(stream, "low_latency", False):
        mode = LowLatency(settings.STREAM_LL_PART_SECONDS, settings.STREAM_LL_SEGMENT_SECONDS)
    return mode


def detail(request: HttpRequest, slug: str) -> HttpResponse:
    """``/streams/<slug>/``: status, links to both players and the playlists."""
    stream = services.get_stream(slug)
    if stream is None:
        raise Http404("No such stream.")
    return render(
        request,
        "streaming/detail.html",
        {
            "stream": stream,
            "low_latency": offered_low_latency(stream),
            "whep_on": settings.STREAM_WHEP,
        },
    )


PLAYERS = {"hls": "HLS (hls.js)", "dash": "MPEG-DASH (dash.js)", "webrtc": "WebRTC (WHEP)"}
LATENCY_MODES = ("low", "standard")

# The viewer page's playback choice: (player, mode, name, latency, what it costs). Latency
# figures: docs/decisions.md ("Viewer latency: ..."; bench stream_latency, glass to glass p50).
PLAYBACK_CHOICES = (
    (
        "hls",
        "standard",
        "HLS",
        "about 2 s",
        "Whole segments (hls.js; Safari plays it natively): the steadiest, any player can open it.",
    ),
    (
        "hls",
        "low",
        "LL-HLS",
        "about 0.9 s",
        "Parts fetched as they are made: more requests, and a weak connection stalls sooner.",
    ),
    ("dash", "standard", "DASH", "about 2 s", "Whole segments (dash.js)."),
    (
        "dash",
        "low",
        "LL-DASH",
        "about 0.8 s",
        "Chunks read as they are written: more requests, and a weak connection stalls sooner.",
    ),
    (
        "webrtc",
        "",
        "WebRTC (WHEP)",
        "0.3-0.5 s from a WHIP publisher, 0.7-1.9 s from chunks",
        "Frames pushed as they are encoded, no segments: nothing buffered to ride out a weak "
        "link (frames are dropped instead), one 480p rendition, no rewind; needs UDP or TURN.",
    ),
)
# Whole segments of a low-latency stream are 1 s, not 0.5 s: about half a second later.
STANDARD_ON_LL_LATENCY = "about 2.5 s"


def playback_choices(stream, player: str, mode: str, low_latency) -> list[dict]:
    """The choices as the template shows them: current, a link, or unavailable (and why).

    The current player's two modes keep their ``?latency=`` links and test ids
    (``latency-choice-low|standard``); the other player's carry their path.
    """
    choices = []
    for kind, choice_mode, name, latency, cost in PLAYBACK_CHOICES:
        if kind != "webrtc" and choice_mode == "standard" and low_latency:
            latency = STANDARD_ON_LL_LATENCY
        if kind == player and (kind == "webrtc" or choice_mode == mode):
            state, href = "current", ""
        elif choice_mode == "low" and low_latency is None:
            state, href = "unavailable", ""
            cost = "This stream offers standard mode only (about 2 s behind, whole segments)."
        elif kind == "webrtc" and not settings.STREAM_WHEP:
            state, href = "unavailable", ""
            cost = "WebRTC playback is switched off on this site."
        elif kind == player:
            state, href = "link", f"?latency={choice_mode}"
        else:
            path = reverse("streaming:watch", args=[stream.slug, kind])
            state, href = "link", path + (f"?latency={choice_mode}" if choice_mode else "")
        testid = (
            f"latency-choice-{choice_mode}"
            if kind == player and kind != "webrtc"
            else f"play-{kind}" + (f"-{choice_mode}" if choice_mode else "")
        )
        choices.append(
            {
                "name": name,
                "latency": latency,
                "cost": cost,
                "state": state,
                "href": href,
                "testid": testid,
            }
        )
    return choices


def watch(request: HttpRequest, slug: str, player: str) -> HttpResponse:
    """``/streams/<slug>/hls/``, ``/dash/`` and ``/webrtc/``: the viewer page
    (static/js/viewer-page.js; WebRTC: static/js/whep.js).

    ``?latency=low|standard`` picks the HLS/DASH player mode; default: low for a low-latency
    stream. Low asked of a standard stream plays standard, with a note saying so.
    """
    stream = services.get_stream(slug)
    if stream is None or player not in PLAYERS:
        raise Http404("No such stream.")
    asked = request.GET.get("latency")
    if asked is not None and asked not in LATENCY_MODES:
        return HttpResponseBadRequest(
            "Unknown latency mode: ?latency= takes low or standard.", content_type="text/plain"
        )
    low_latency = offered_low_latency(stream)
    mode = asked or ("low" if low_latency else "standard")
    fell_back = mode == "low" and low_latency is None and player != "webrtc"
    if fell_back or (mode == "low" and low_latency is None):
        mode = "standard"
    return render(
        request,
        "streaming/watch.html",
        {
            "stream": stream,
            "player": player,
            "player_label": PLAYERS[player],
            "latency_mode": mode,
            "low_latency": low_latency,
            "latency_fell_back": fell_back,
            "playback_choices": playback_choices(stream, player, mode, low_latency),
            "whep_on": settings.STREAM_WHEP,
            # how often the dash.js page re-reads the MPD (static/js/viewer-page.js)
            "segment_seconds": (
                low_latency.segment_target if low_latency else settings.STREAM_SEGMENT_SECONDS
            ),
        },
    )


@require_GET
def server_time(request: HttpRequest) -> HttpResponse:
    """``/streams/time/``: the server's UTC time, ISO 8601 with milliseconds.

    dash.js reads it through the MPD's ``UTCTiming`` (http-xsdate); the viewer and the
    publisher pages sync their clocks with it, so latency is measured on one clock.
    """
    response = HttpResponse(iso_ms(now_ms()), content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    response["Access-Control-Allow-Origin"] = "*"
    return response


def publish(request: HttpRequest, slug: str) -> HttpResponse:
    """``/streams/<slug>/publish/``: camera preview and chunk upload (static/js/publish-page.js)."""
    stream = services.get_stream(slug)
    if stream is None:
        raise Http404("No such stream.")
    key = new_key(request, slug, forget=True)
    is_owner = bool(stream.owner_id) and stream.owner_id == request.identity.id
    return render(
        request,
        "streaming/publish.html",
        {
            "stream": stream,
            "new_key": key,
            "is_owner": is_owner,
            "part_target": settings.STREAM_LL_PART_SECONDS,
            "ll_segment": settings.STREAM_LL_SEGMENT_SECONDS,
            # the status line follows the stream (publish-page.js polls the status URL)
            "status_labels": dict(StreamStatus.choices),
            "whip_endpoint": request.build_absolute_uri(reverse("streaming:whip", args=[slug])),
        },
    )


@require_GET
def status(request: HttpRequest, slug: str) -> HttpResponse:
    data = services.status(slug)
    if data is None:
        return JsonResponse({"error": "not-found", "message": "No such stream."}, status=404)
    response = JsonResponse(data)
    response["Cache-Control"] = "no-cache"
    return response


# --- ingest ------------------------------------------------------------------------------
@csrf_exempt
async def ingest(request: HttpRequest, slug: str) -> HttpResponse:
    """``POST`` multipart: ``seq`` (integer) and ``chunk`` (a file: the WebM bytes)."""
    if request.method != "POST":
        return JsonResponse({"error": "method", "message": "Use POST."}, status=405)
    limit = settings.STREAM_MAX_CHUNK_BYTES
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit + MULTIPART_OVERHEAD:
        return http_response(
            TooLarge(f"Request of {declared} bytes is over the chunk limit {limit}.")
        )
    key = publish_key_from(request)
    try:
        stream = await authenticate(slug, key)  # before parsing the body
        seq_raw, data, capture_ms = await sync_to_async(_read_multipart, thread_sensitive=False)(
            request
        )
        try:
            seq = int(seq_raw)
        except (TypeError, ValueError):
            raise ClientError("'seq' must be an integer >= 0.", code="invalid") from None
        if capture_ms is not None:
            try:  # its form here; the pipeline checks it against the server's clock
                capture_ms = parse_capture_ms(capture_ms)
            except ClockError as exc:
                raise ClientError(str(exc), code="invalid") from None
        reply = await feed_chunk(
            slug,
            key,
            seq,
            data,
            stream=stream,
            capture_ms=capture_ms,
            address=client_address(request),
        )
    except ClientError as exc:
        if exc.status >= 500 or exc.code in ("invalid", "too-large"):
            logger.info("ingest %s: %s %s", slug, exc.code, exc.message)
        return http_response(exc)
    return JsonResponse(reply, status=202 if reply["status"] != "duplicate" else 200)


def _read_multipart(request: HttpRequest) -> tuple[str | None, bytes, str | None]:
    """``seq``, the chunk's bytes and ``capture_ms`` as sent (text, or ``None``)."""
    try:
        upload = request.FILES.get("chunk")
        seq = request.POST.get("seq")
        capture_ms = request.POST.get("capture_ms") or None
    except Exception as exc:  # malformed multipart, too many fields, …
        raise ClientError(f"Malformed upload: {exc}", code="invalid") from exc
    if upload is None:
        raise ClientError("Send the chunk as a multipart file field named 'chunk'.", code="invalid")
    limit = settings.STREAM_MAX_CHUNK_BYTES
    if upload.size > limit:
        raise TooLarge(f"Chunk of {upload.size} bytes is over the limit of {limit}.")
    return seq, upload.read(), capture_ms


@csrf_exempt
async def stop(request: HttpRequest, slug: str) -> HttpResponse:
    if request.method != "POST":
        return JsonResponse({"error": "method", "message": "Use POST."}, status=405)
    try:
        reply = await stop_stream(slug, publish_key_from(request))
    except ClientError as exc:
        return http_response(exc)
    return JsonResponse(reply)
