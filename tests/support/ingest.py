"""Publishing helpers for tests against a real Daphne: create a stream, push chunks, stop.

Shared by the ingest, clock and viewer tests (HTTP multipart like the browser's
``FormData``, and the WebSocket ingest's JSON replies).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.cookiejar import CookieJar
from pathlib import Path

from tests.support.media import TimedChunk, cached_webm, mediarecorder_chunks


def media_cache(request, tmp_path_factory) -> Path:
    """Where generated clips are kept: pytest's cache folder (between runs), else a temp one
    (with ``-p no:cacheprovider``)."""
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("rtcsite-media")) if cache else tmp_path_factory.mktemp("media")


def clip_chunks(request, tmp_path_factory, seconds: float) -> list[TimedChunk]:
    """A 640x480 30 fps VP8 + Opus clip of ``seconds``, in MediaRecorder-like 250 ms chunks."""
    clip = cached_webm(
        media_cache(request, tmp_path_factory), seconds=seconds, size="640x480", fps=30
    )
    return mediarecorder_chunks(clip, timeslice_ms=250)


def new_stream(
    server, title: str = "Test show", *, face_overlay: bool = False, low_latency: bool | None = None
) -> tuple[str, str]:
    """Create a stream as a browser does (form + CSRF) and read the key shown once.
    ``low_latency``: the form's box (None: not sent, ``STREAM_LOW_LATENCY_DEFAULT``)."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(server.url + "/streams/").read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    fields = {"title": title, "csrfmiddlewaretoken": csrf}
    if face_overlay:
        fields["face_overlay"] = "on"
    if low_latency is not None:
        fields["low_latency_shown"] = "1"
        if low_latency:
            fields["low_latency"] = "on"
    form = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(
        server.url + "/streams/new/", data=form, headers={"Referer": server.url + "/streams/"}
    )
    with opener.open(request) as response:  # redirected to the publisher page
        slug = response.url.rstrip("/").split("/")[-2]
        html = response.read().decode()
    key = re.search(r'data-testid="new-key">(sk_[^<]+)<', html).group(1)
    return slug, key


def multipart(fields: dict[str, str], file_bytes: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        disposition = f'Content-Disposition: form-data; name="{name}"'
        parts.append(f"--{boundary}\r\n{disposition}\r\n\r\n{value}\r\n".encode())
    parts.append(
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="chunk"; '
            'filename="chunk.webm"\r\nContent-Type: video/webm\r\n\r\n'
        ).encode()
        + file_bytes
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def http(method: str, url: str, *, body: bytes | None = None, headers=None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def post_chunk(server, slug: str, key: str, seq, data: bytes, **fields: str) -> tuple[int, dict]:
    """One chunk by HTTP POST (extra form fields, e.g. ``capture_ms``, as keywords)."""
    body, content_type = multipart({"seq": str(seq), **fields}, data)
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {key}"}
    return http("POST", f"{server.url}/streams/{slug}/ingest/", body=body, headers=headers)


def stop_http(server, slug: str, key: str) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"}
    return http("POST", f"{server.url}/streams/{slug}/stop/", body=b"", headers=headers)


def media_dir(server, slug: str) -> Path:
    return server.workdir / "media" / "streams" / slug


def stream_status(server, slug: str) -> dict:
    return http("GET", f"{server.url}/streams/{slug}/status/")[1]


def wait_status(server, slug: str, wanted: str, within: float = 60.0) -> dict:
    """The stream's status once it is ``wanted`` (fails after ``within`` seconds)."""
    deadline = time.monotonic() + within
    while (status := stream_status(server, slug))["status"] != wanted:
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    return status


def page_token(server) -> str:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    html = opener.open(server.url + "/streams/").read().decode()
    return re.search(r'name="rtc-ws-token" content="([^"]+)"', html).group(1)


async def ws_recv(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), 15))


def start_publishing_in_page(
    page,
    server,
    title: str,
    transport: str,
    wait_ms: int = 120_000,
    *,
    low_latency: bool | None = None,
) -> str:
    """Create a stream on the site's form, start the publisher page; returns the slug.

    ``wait_ms``: generous, shared machines are often loaded. ``low_latency``: tick or untick
    the form's box (None: as the form shows it, ``STREAM_LOW_LATENCY_DEFAULT``).
    """
    from playwright.sync_api import expect

    page.goto(f"{server.url}/streams/")
    page.get_by_test_id("stream-title").fill(title)
    if low_latency is not None:
        page.get_by_test_id("low-latency").set_checked(low_latency)
    page.get_by_test_id("create-stream").click()
    expect(page).to_have_url(re.compile(r"/streams/[a-z0-9-]+/publish/$"), timeout=wait_ms)
    slug = page.url.rstrip("/").split("/")[-2]
    key = page.get_by_test_id("new-key").inner_text()
    assert key.startswith("sk_")
    expect(page.get_by_test_id("publish-key")).to_have_value(key, timeout=wait_ms)
    page.get_by_test_id(f"transport-{transport}").check()
    page.get_by_test_id("start").click()
    expect(page.locator("#publisher")).to_have_attribute("data-pub-state", "live", timeout=wait_ms)
    return slug
