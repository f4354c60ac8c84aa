"""Echo and relay rooms in real Chromium, against a real Daphne and its aiortc peers.

The fake camera plays the astronaut (tests/support/media.py), so face boxes can be looked
for where they must be: the server draws them into the video it sends back, and the test
reads the box colour from the decoded pixels (the <video> drawn into a canvas) around the
known face. "Playing" means a size and a decoded frame count that keeps going up.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager

from playwright.sync_api import Browser, Page, expect

from tests.e2e.browsers import Visitor, new_visitor, visitors

# `face_browser` and `astronaut_clip` (tests/e2e/conftest.py): the astronaut fake camera.

WAIT_MS = 60_000  # generous: Chromium, Daphne and aiortc codecs share two cores

PLAYING_FRAMES_JS = """() => {
  const v = document.querySelector('[data-testid="server-video"]');
  if (!v || !v.srcObject || v.paused || !(v.videoWidth > 0)) return null;
  return v.getVideoPlaybackQuality().totalVideoFrames;
}"""
FRAMES_ADVANCED_JS = """(before) => {
  const v = document.querySelector('[data-testid="server-video"]');
  return v.videoWidth > 0 && v.getVideoPlaybackQuality().totalVideoFrames > before + 10;
}"""
# Pixels of the box colour (pure green, faces.detector.BOX_BGR) in a ring around the
# face in the echoed video: the 4-px box line lies on the face's edge.
GREEN_AROUND_FACE_JS = """([x, y, w, h]) => {
  const v = document.querySelector('[data-testid="server-video"]');
  if (!(v.videoWidth > 0)) return null;
  const canvas = document.createElement('canvas');
  canvas.width = v.videoWidth;
  canvas.height = v.videoHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(v, 0, 0);
  const pad = 24;
  const data = ctx.getImageData(x - pad, y - pad, w + 2 * pad, h + 2 * pad).data;
  let green = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 1] > 180 && data[i] < 100 && data[i + 2] < 100) green += 1;
  }
  return green;
}"""


Person = Visitor


def people(browser: Browser, names: list[str]) -> AbstractContextManager[list[Person]]:
    return visitors(lambda name: new_visitor(browser, name, WAIT_MS), names)


def create_room(person: Person, base_url: str, kind: str, title: str) -> str:
    page = person.page
    page.goto(f"{base_url}/#{kind}")
    page.get_by_test_id(f"room-name-{kind}").fill(title)
    page.get_by_test_id(f"join-{kind}").click()
    expect(page).to_have_url(re.compile(r"/rooms/[a-z0-9-]+/$"))
    return "/" + page.url.split("/", 3)[3]


def expect_playing(person: Person) -> None:
    page = person.page
    before = page.wait_for_function(PLAYING_FRAMES_JS, polling=250, timeout=WAIT_MS).json_value()
    page.wait_for_function(FRAMES_ADVANCED_JS, arg=before, polling=250, timeout=WAIT_MS)
    expect(page.locator("[data-room]")).to_have_attribute("data-link", "connected")


def green_around(page: Page, face: tuple[int, int, int, int]) -> int:
    return page.evaluate(GREEN_AROUND_FACE_JS, list(face))


def test_echo_plays_back_with_and_without_face_boxes(
    face_browser, live_server_proc, astronaut_clip
):
    face = astronaut_clip[1]
    with people(face_browser, ["Ada"]) as (ada,):
        create_room(ada, live_server_proc.url, "echo", "Echo Chamber")
        page = ada.page
        expect_playing(ada)
        expect(page.get_by_test_id("server-stats")).to_contain_text("fps out")
        assert green_around(page, face) == 0  # no boxes unless asked for
        expect(page.get_by_test_id("record-toggle")).to_be_hidden()  # recording is off here

        page.get_by_test_id("faces-toggle").check()
        page.wait_for_function(
            "() => window.rtcServerRoom.serverStats?.boxes?.length === 1", timeout=WAIT_MS
        )
        expect(page.get_by_test_id("server-stats")).to_contain_text(re.compile(r"detection \d"))
        expect(page.get_by_test_id("server-stats")).to_contain_text("1 face")
        box = page.evaluate("window.rtcServerRoom.serverStats.boxes[0]")
        assert abs(box["x"] - face[0]) < 24 and abs(box["y"] - face[1]) < 24, (box, face)
        page.wait_for_function(
            f"() => ({GREEN_AROUND_FACE_JS})({list(face)}) > 100", polling=250, timeout=WAIT_MS
        )

        page.get_by_test_id("faces-toggle").uncheck()
        page.wait_for_function(
            "() => window.rtcServerRoom.serverStats?.faces === false", timeout=WAIT_MS
        )
        page.wait_for_function(
            f"() => ({GREEN_AROUND_FACE_JS})({list(face)}) === 0", polling=250, timeout=WAIT_MS
        )
        expect_playing(ada)


def test_relay_two_pages_third_refused_leave_and_rejoin(face_browser, live_server_proc):
    url = live_server_proc.url
    with people(face_browser, ["Ada", "Bob", "Cleo"]) as (ada, bob, cleo):
        path = create_room(ada, url, "relay", "Relay Pair")
        expect(ada.page.locator("[data-room]")).to_have_attribute("data-partner", "none")
        bob.page.goto(url + path)
        for person in (ada, bob):
            expect(person.page.locator("[data-room]")).to_have_attribute("data-partner", "present")
            expect_playing(person)
        expect(ada.page.get_by_test_id("server-caption")).to_contain_text("through the server")

        cleo.page.goto(url + path)
        expect(cleo.page.get_by_test_id("room-banner")).to_contain_text("is full")
        expect(cleo.page.get_by_test_id("server-status")).to_have_text("The room is full.")
        assert cleo.page.evaluate("document.getElementById('local-video').srcObject") is None

        bob.page.get_by_test_id("leave").click()
        expect(bob.page.get_by_test_id("server-status")).to_have_text("You left the room.")
        expect(ada.page.locator("[data-room]")).to_have_attribute("data-partner", "none")

        bob.page.get_by_test_id("rejoin").click()
        for person in (ada, bob):
            expect(person.page.locator("[data-room]")).to_have_attribute("data-partner", "present")
            expect_playing(person)
