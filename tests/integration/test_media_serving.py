"""``/media/streams/<slug>/<file>`` on a real Daphne: MIME, caching, Range, CORS, traversal."""

from __future__ import annotations

import http.client
import os

import pytest

SLUG = "show-abc123"
SECRET = b"TOP-SECRET-CONTENT"


@pytest.fixture(scope="module")
def server(live_server_proc):
    media = live_server_proc.workdir / "media"
    folder = media / "streams" / SLUG
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "master.m3u8").write_text("#EXTM3U\n#EXT-X-VERSION:7\n")
    (folder / "media_0.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n")
    (folder / "manifest.mpd").write_text('<?xml version="1.0"?><MPD type="dynamic"/>')
    (folder / "init-stream0.m4s").write_bytes(b"\x00\x00\x00\x18ftypiso6" + bytes(100))
    (folder / "chunk-stream0-00001.m4s").write_bytes(bytes(range(256)) * 40)  # 10240 bytes
    (folder / "clip.mp4").write_bytes(b"mp4" * 10)
    (folder / "notes.txt").write_bytes(SECRET)
    (folder / "master.m3u8.tmp").write_bytes(SECRET)
    # Secrets outside the stream folder, and a symlink pointing out of it.
    (media / "streams" / "outside.m3u8").write_bytes(SECRET)
    (live_server_proc.workdir / "secret.m3u8").write_bytes(SECRET)
    link = folder / "escape.m3u8"
    if not link.exists():
        link.symlink_to(live_server_proc.workdir / "secret.m3u8")
    return live_server_proc


def request(server, method: str, path: str, headers=None) -> tuple[int, dict, bytes]:
    """A raw request: http.client sends the path exactly as given (no normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


BASE = f"/media/streams/{SLUG}"


@pytest.mark.parametrize(
    ("name", "mime", "cache"),
    [
        ("master.m3u8", "application/vnd.apple.mpegurl", "no-cache"),
        ("media_0.m3u8", "application/vnd.apple.mpegurl", "no-cache"),
        ("manifest.mpd", "application/dash+xml", "no-cache"),
        ("init-stream0.m4s", "video/mp4", "public, max-age=31536000, immutable"),
        ("chunk-stream0-00001.m4s", "video/iso.segment", "public, max-age=31536000, immutable"),
        ("clip.mp4", "video/mp4", "public, max-age=31536000, immutable"),
    ],
)
def test_mime_cache_and_cors(server, name, mime, cache):
    status, headers, body = request(server, "GET", f"{BASE}/{name}")
    assert status == 200
    assert headers["content-type"] == mime
    assert headers["cache-control"] == cache
    assert headers["access-control-allow-origin"] == "*"
    assert headers["accept-ranges"] == "bytes"
    on_disk = (server.workdir / "media" / "streams" / SLUG / name).read_bytes()
    assert body == on_disk and int(headers["content-length"]) == len(on_disk)


def test_head_has_headers_and_no_body(server):
    status, headers, body = request(server, "HEAD", f"{BASE}/chunk-stream0-00001.m4s")
    assert status == 200 and body == b""
    assert headers["content-length"] == "10240"
    assert headers["content-type"] == "video/iso.segment"
    assert headers["access-control-allow-origin"] == "*"


def test_cors_preflight_allows_range(server):
    status, headers, _ = request(
        server,
        "OPTIONS",
        f"{BASE}/master.m3u8",
        {"Origin": "https://player.example", "Access-Control-Request-Method": "GET"},
    )
    assert status == 204
    assert headers["access-control-allow-origin"] == "*"
    assert "Range" in headers["access-control-allow-headers"]
    assert "GET" in headers["access-control-allow-methods"]


def test_post_is_refused(server):
    assert request(server, "POST", f"{BASE}/master.m3u8")[0] == 405


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [("bytes=0-99", 0, 99), ("bytes=10000-", 10000, 10239), ("bytes=-40", 10200, 10239)],
)
def test_range_requests(server, range_header, start, end):
    full = bytes(range(256)) * 40
    status, headers, body = request(
        server, "GET", f"{BASE}/chunk-stream0-00001.m4s", {"Range": range_header}
    )
    assert status == 206
    assert headers["content-range"] == f"bytes {start}-{end}/10240"
    assert headers["content-length"] == str(end - start + 1)
    assert body == full[start : end + 1]


def test_unsatisfiable_range_is_416(server):
    status, headers, _ = request(
        server, "GET", f"{BASE}/chunk-stream0-00001.m4s", {"Range": "bytes=20000-"}
    )
    assert status == 416
    assert headers["content-range"] == "bytes */10240"


@pytest.mark.parametrize("path", ["chunk-stream0-00001.m4s", "master.m3u8", "media_0.m3u8"])
@pytest.mark.parametrize("range_header", ["bytes=" + "9" * 5000 + "-", "bytes=0-" + "9" * 5000])
def test_absurd_range_is_ignored_not_an_error(server, path, range_header):
    """A position of thousands of digits (int() refuses over 4300: it was a 500): not a
    range we could serve, so the header is ignored and the whole file sent."""
    status, headers, body = request(server, "GET", f"{BASE}/{path}", {"Range": range_header})
    assert status == 200
    assert headers["content-length"] == str(len(body)) and body


def test_large_file_streams_completely(server):
    big = server.workdir / "media" / "streams" / SLUG / "chunk-stream1-00001.m4s"
    data = os.urandom(1_000_000)
    big.write_bytes(data)
    status, _headers, body = request(server, "GET", f"{BASE}/chunk-stream1-00001.m4s")
    assert status == 200 and body == data


@pytest.mark.parametrize(
    "path",
    [
        f"{BASE}/../outside.m3u8",
        f"{BASE}/../../secret.m3u8",
        f"{BASE}/..%2f..%2fsecret.m3u8",
        f"{BASE}/%2e%2e/outside.m3u8",
        f"{BASE}/%2E%2E/%2E%2E/secret.m3u8",
        f"{BASE}/%252e%252e/outside.m3u8",
        f"{BASE}/..%5c..%5csecret.m3u8",
        "/media/streams/../../secret.m3u8",
        "/media/streams/%2e%2e/secret.m3u8",
        "/media/streams//etc/passwd",
        "/media/streams/outside.m3u8",
        f"/media/streams/{SLUG}//etc/hosts.m3u8",
        f"{BASE}/escape.m3u8",  # symlink out of the stream folder
        f"{BASE}/notes.txt",  # not a media type
        f"{BASE}/master.m3u8.tmp",  # FFmpeg's temporary files
        f"{BASE}/master.m3u8%00.txt",
        f"{BASE}/missing.m3u8",
    ],
)
def test_traversal_and_other_files_are_refused(server, path):
    status, _headers, body = request(server, "GET", path)
    assert status in (400, 404), (path, status)
    assert SECRET not in body
