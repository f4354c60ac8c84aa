"""rtcsite.asgi: stream media served by Django without the middleware stack, pages with it."""

import asyncio

import pytest

from rtcsite.asgi import application


async def _get(path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    requested = asyncio.Event()

    async def receive():
        if not requested.is_set():
            requested.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected

    messages = []

    async def send(message):
        messages.append(message)

    await application(scope, receive, send)
    start = messages[0]
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], {k.lower(): v for k, v in start["headers"]}, body


@pytest.fixture
def stream_folder(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    folder = tmp_path / "streams" / "handler-test"
    folder.mkdir(parents=True)
    (folder / "init-stream0.m4s").write_bytes(b"\0\0\0\x08free")
    return folder


@pytest.mark.django_db(transaction=True)
async def test_stream_media_skips_the_middleware(stream_folder):
    status, headers, body = await _get("/media/streams/handler-test/init-stream0.m4s")
    assert status == 200 and body == b"\0\0\0\x08free"
    assert headers[b"access-control-allow-origin"] == b"*"  # the view's own headers
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert b"x-frame-options" not in headers  # no middleware ran
    assert b"content-security-policy" not in headers
    status, headers, _body = await _get("/media/streams/handler-test/nope.m4s")
    assert status == 404 and headers[b"access-control-allow-origin"] == b"*"


@pytest.mark.django_db(transaction=True)
async def test_pages_keep_the_middleware(stream_folder):
    status, headers, _body = await _get("/streams/time/")
    assert status == 200
    assert headers[b"x-frame-options"] == b"DENY"
