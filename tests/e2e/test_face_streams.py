"""Face boxes that reach stream viewers, in real Chromium with the astronaut fake camera.

* face-api in the publisher's browser draws the boxes on a canvas, the canvas is published
  (/faces/ → publisher.js → the live pipeline);
* a plain camera stream created with "Server-side face boxes" (streaming/overlay.py).

Either way the hls.js viewer page must show the box colour (green) on the box's top edge:
the viewer's decoded frame is drawn onto a canvas and its pixels read.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_faces import WAIT_MS, around, astronaut_clip, face_browser, wait_for_one_box

__all__ = ["astronaut_clip", "face_browser"]  # module-scoped fixtures shared with test_faces

pytestmark = pytest.mark.timeout(600)

STREAM_WAIT_MS = 150_000  # going live and writing segments on a loaded 2-core machine

# Is there green within a few pixels of the middle of the box's top edge in the frame the
# <video> shows now? (box in 640x480 source pixels; the rung may be smaller)
GREEN_EDGE_JS = """([x, y, w]) => {
  const video = document.getElementById('video');
  if (!video || !video.videoWidth || video.readyState < 2) return false;
  const s = video.videoHeight / 480;
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(video, 0, 0);
  const cx = Math.round((x + w / 2) * s), cy = Math.round(y * s), r = Math.ceil(6 * s);
  const data = ctx.getImageData(cx - r, cy - r, 2 * r + 1, 2 * r + 1).data;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 1] > 170 && data[i] < 110 && data[i + 2] < 110) return true;
  }
  return false;
}"""


@pytest.fixture
def context(face_browser):
    context = face_browser.new_context()
    context.grant_permissions(["camera", "microphone"])
    context.set_default_timeout(WAIT_MS)
    yield context
    context.close()


def watch_until_green(viewer: Page, url: str, box: list[int]) -> None:
    viewer.goto(url)
    expect(viewer.locator("#viewer")).to_have_attribute(
        "data-video-width", re.compile(r"^[1-9]\d*$"), timeout=STREAM_WAIT_MS
    )
    viewer.wait_for_function(GREEN_EDGE_JS, arg=box[:3], timeout=STREAM_WAIT_MS, polling=250)


def test_face_api_canvas_published_shows_boxes_to_hls_viewers(
    context, live_server_proc, astronaut_clip
):
    server, face = live_server_proc, astronaut_clip[1]
    page = context.new_page()
    page.goto(f"{server.url}/faces/")
    page.get_by_test_id("fp-title").fill("Faces canvas")
    page.get_by_test_id("fp-create").click()
    expect(page).to_have_url(re.compile(r"/faces/\?stream=faces-canvas-[a-z0-9]+$"))
    slug = page.url.split("stream=")[1]
    assert page.get_by_test_id("fp-key").input_value().startswith("sk_")
    page.get_by_test_id("face-detector").select_option("browser")
    box = wait_for_one_box(page, "browser", frames=2)
    assert around(box, face), (box, face)

    page.get_by_test_id("fp-transport").select_option("ws")
    page.get_by_test_id("fp-start").click()
    expect(page.locator("#face-publisher")).to_have_attribute(
        "data-pub-state", "live", timeout=STREAM_WAIT_MS
    )
    expect(page.get_by_test_id("fp-segments")).to_have_text(
        re.compile(r"^([3-9]|\d\d+)$"), timeout=STREAM_WAIT_MS
    )
    box = json.loads(page.get_by_test_id("face-boxes").inner_text())[0]  # as drawn now

    watch_until_green(context.new_page(), f"{server.url}/streams/{slug}/hls/", box)
    assert page.get_by_test_id("fp-error").inner_text() == "—"
    page.get_by_test_id("fp-stop").click()
    expect(page.locator("#face-publisher")).to_have_attribute(
        "data-pub-state", "ended", timeout=STREAM_WAIT_MS
    )


def test_camera_stream_with_server_side_boxes_shows_them_to_hls_viewers(
    context, live_server_proc, astronaut_clip
):
    server, face = live_server_proc, astronaut_clip[1]
    page = context.new_page()
    page.goto(f"{server.url}/streams/")
    page.get_by_test_id("stream-title").fill("Server boxes")
    page.get_by_test_id("face-overlay").check()
    page.get_by_test_id("create-stream").click()
    expect(page).to_have_url(re.compile(r"/streams/server-boxes-[a-z0-9]+/publish/$"))
    slug = page.url.rstrip("/").split("/")[-2]
    page.get_by_test_id("transport").select_option("http")
    page.get_by_test_id("start").click()
    expect(page.locator("#publisher")).to_have_attribute(
        "data-pub-state", "live", timeout=STREAM_WAIT_MS
    )
    expect(page.get_by_test_id("pub-segments")).to_have_text(
        re.compile(r"^([3-9]|\d\d+)$"), timeout=STREAM_WAIT_MS
    )

    watch_until_green(context.new_page(), f"{server.url}/streams/{slug}/hls/", list(face))
    page.get_by_test_id("stop").click()
    expect(page.locator("#publisher")).to_have_attribute(
        "data-pub-state", "ended", timeout=STREAM_WAIT_MS
    )
