"""Face boxes that reach stream viewers, in real Chromium with the astronaut fake camera.

* face-api in the publisher's browser draws the boxes on a canvas, the canvas is published
  (/faces/ → publisher.js → the live pipeline);
* a plain camera stream created with "Server-side face boxes" (streaming/overlay.py).

Either way the stream's video must carry the box colour (green) on the box's top edge: the
newest output segments (what every HLS/DASH viewer downloads) are decoded with PyAV while
the stream is live. (Reading the hls.js viewer page's pixels was tried first: on this shared
2-core machine at a load average of ~20 the viewer sometimes stayed "buffering" for minutes,
so these tests read the segments it would play; the viewer itself is tested by
test_stream_viewers.py.)
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.test_faces import WAIT_MS, around, wait_for_one_box
from tests.support.media import decoded_frames, green_on_top_edge

pytestmark = pytest.mark.timeout(600)

# Stopping drains the publisher's upload queue first, which can take minutes on a loaded
# machine; the stop path itself is tested in test_publish.py / test_stream_viewers.py.
STOPPED = re.compile(r"^(stopping|ended)$")
STREAM_WAIT_MS = 150_000  # going live and writing segments on a loaded 2-core machine


@pytest.fixture
def context(face_browser):
    context = face_browser.new_context()
    context.grant_permissions(["camera", "microphone"])
    context.set_default_timeout(WAIT_MS)
    yield context
    context.close()


def wait_until_green(out: Path, box: list[int] | tuple[int, ...]) -> None:
    """Poll the newest segments of every video rendition until one shows the box colour."""
    deadline = time.monotonic() + STREAM_WAIT_MS / 1000
    while time.monotonic() < deadline:
        frames = decoded_frames(out, 0, last=2) + decoded_frames(out, 1, last=2)
        if any(green_on_top_edge(frame, tuple(box)) for frame in frames):
            return
        time.sleep(1)
    pytest.fail(f"no frame of {out} shows the box colour at {box}")


def create_stream(page, title_field: str, title: str, create: str, lands_on: str):
    """Fill the stream-creation form on this page and wait for the page it leads to."""
    page.get_by_test_id(title_field).fill(title)
    page.get_by_test_id(create).click()
    expect(page).to_have_url(re.compile(lands_on), timeout=WAIT_MS)


def wait_live(page, root: str, segments: str) -> None:
    """The publisher (``root``) is live and has written a few segments."""
    expect(page.locator(root)).to_have_attribute("data-pub-state", "live", timeout=STREAM_WAIT_MS)
    expect(page.get_by_test_id(segments)).to_have_text(
        re.compile(r"^([3-9]|\d\d+)$"), timeout=STREAM_WAIT_MS
    )


def stop(page, root: str, button: str) -> None:
    page.get_by_test_id(button).click()
    expect(page.locator(root)).to_have_attribute("data-pub-state", STOPPED, timeout=STREAM_WAIT_MS)


def test_face_api_canvas_published_shows_boxes_to_hls_viewers(
    context, live_server_proc, astronaut_clip
):
    server, face = live_server_proc, astronaut_clip[1]
    page = context.new_page()
    page.goto(f"{server.url}/faces/")
    create_stream(
        page,
        "fp-title",
        "Faces canvas",
        "fp-create",
        r"/faces/\?stream=faces-canvas-[a-z0-9]+$",
    )
    slug = page.url.split("stream=")[1]
    assert page.get_by_test_id("fp-key").input_value().startswith("sk_")
    # face-api on the CPU shares two cores with the encoder and a viewer: 2 detections/s.
    page.get_by_test_id("face-interval").fill("500")
    page.get_by_test_id("face-detector").select_option("browser")
    box = wait_for_one_box(page, "browser", frames=2)
    assert around(box, face), (box, face)

    page.get_by_test_id("fp-transport").select_option("ws")
    page.get_by_test_id("fp-start").click()
    wait_live(page, "#face-publisher", "fp-segments")
    box = json.loads(page.get_by_test_id("face-boxes").inner_text())[0]  # as drawn now

    wait_until_green(server.workdir / "media" / "streams" / slug, box)
    assert page.get_by_test_id("fp-error").inner_text() == "—"
    stop(page, "#face-publisher", "fp-stop")


def test_camera_stream_with_server_side_boxes_shows_them_to_hls_viewers(
    context, live_server_proc, astronaut_clip
):
    server, face = live_server_proc, astronaut_clip[1]
    page = context.new_page()
    page.goto(f"{server.url}/streams/")
    page.get_by_test_id("face-overlay").check()
    create_stream(
        page,
        "stream-title",
        "Server boxes",
        "create-stream",
        r"/streams/server-boxes-[a-z0-9]+/publish/$",
    )
    slug = page.url.rstrip("/").split("/")[-2]
    page.get_by_test_id("transport-http").check()
    page.get_by_test_id("start").click()
    wait_live(page, "#publisher", "pub-segments")

    wait_until_green(server.workdir / "media" / "streams" / slug, face)
    detail = context.new_page()
    detail.goto(f"{server.url}/streams/{slug}/")
    expect(detail.get_by_test_id("face-overlay-on")).to_be_visible(timeout=WAIT_MS)
    stop(page, "#publisher", "stop")
