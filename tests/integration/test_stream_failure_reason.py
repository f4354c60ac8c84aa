"""A failed encode tells the public a short reason, never FFmpeg's words (server paths).

Real Daphne, real FFmpeg: a stream goes live, its output folder is moved away, FFmpeg exits
with an error naming the folder. The status endpoint, the stream's page and the lobby
socket say "encoder failed"; the detail (with the path) is kept for staff in the row's
``failure_detail`` (shown in the admin: tests/unit/test_stream_model.py).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import pytest
import websockets

from tests.support.ingest import (
    clip_chunks,
    media_dir,
    new_stream,
    page_token,
    post_chunk,
    stream_status,
    ws_recv,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def chunks(request, tmp_path_factory):
    return clip_chunks(request, tmp_path_factory, seconds=4)


def assert_public(text: str, server) -> None:
    assert str(server.workdir) not in text
    assert "FFmpeg" not in text and "No such file" not in text and "ffmpeg" not in text


def test_public_views_of_a_failed_encode_show_no_ffmpeg_output(daphne_factory, chunks):
    server = daphne_factory({"STREAM_IDLE_TIMEOUT": "30", "STREAM_RATE_LIMIT": "40"})
    slug, key = new_stream(server)

    async def scenario() -> dict:
        token = page_token(server)
        lobby = await websockets.connect(
            f"{server.ws_url}/ws/lobby/?token={token}", origin=server.url
        )
        try:
            while (await ws_recv(lobby))["type"] != "lobby-state":
                pass
            out = media_dir(server, slug)
            for seq, chunk in enumerate(chunks):
                status, body = await asyncio.to_thread(
                    post_chunk, server, slug, key, seq, chunk.data
                )
                if status != 202:
                    assert status in (409, 503), body
                    break
                if seq == 4:  # live and writing: take its folder away
                    deadline = time.monotonic() + 15
                    while not list(out.glob("chunk-stream0-*.m4s")):
                        assert time.monotonic() < deadline, "no segment written"
                        await asyncio.sleep(0.05)
                    out.rename(out.with_name(f"{slug}-moved"))  # atomic, unlike rmtree
                await asyncio.sleep(0.1)
            while True:
                message = await ws_recv(lobby)
                if message["type"] == "stream" and message["status"] == "failed":
                    return message
        finally:
            await lobby.close()

    lobby_message = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert lobby_message["reason"] == "encoder failed"

    status = stream_status(server, slug)
    assert status["status"] == "failed" and status["reason"] == "encoder failed", status
    assert_public(json.dumps(status), server)
    with urllib.request.urlopen(f"{server.url}/streams/{slug}/") as response:
        page = response.read().decode()
    assert "encoder failed" in page
    assert_public(page, server)

    # Staff keep FFmpeg's words (with the path) in the row.
    code = "from streaming.models import Stream; print(Stream.objects.get(slug=%r).failure_detail)"
    detail = server.manage("shell", "-c", code % slug)
    assert "FFmpeg exited with code" in detail and "No such file or directory" in detail, detail
