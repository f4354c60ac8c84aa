"""Mesh rooms in real Chromium: three browsers (three identities) connect in a full mesh.

Each page uses Chromium's fake camera and microphone. "Playing" means what a person would
see: the remote <video> has a size and its decoded frame count keeps going up.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager

from playwright.sync_api import expect

from tests.e2e.browsers import Visitor, new_visitor, visitors

WAIT_MS = 45_000  # generous: three Chromium pages share two cores with the servers

# {peer id: frames decoded} for the remote videos, once there are `count` of them, all
# with a size and not paused; null until then.
PLAYING_FRAMES_JS = """(count) => {
  const videos = [...document.querySelectorAll('[data-testid="remote-video"]')];
  if (videos.length !== count) return null;
  if (!videos.every((v) => v.videoWidth > 0 && !v.paused && v.srcObject)) return null;
  return Object.fromEntries(
    videos.map((v) => [v.dataset.peer, v.getVideoPlaybackQuality().totalVideoFrames]));
}"""
FRAMES_ADVANCED_JS = """(before) => {
  const videos = [...document.querySelectorAll('[data-testid="remote-video"]')];
  return videos.length === Object.keys(before).length && videos.every(
    (v) => v.dataset.peer in before && v.videoWidth > 0
      && v.getVideoPlaybackQuality().totalVideoFrames > before[v.dataset.peer]);
}"""


class Participant(Visitor):
    @property
    def peer_id(self) -> str:
        return self.page.evaluate("window.rtcMesh.selfId")

    def tiles(self):
        return self.page.get_by_test_id("remote-tile")

    def tile_of(self, other: Participant):
        return self.page.locator(f'[data-testid="remote-tile"][data-peer="{other.peer_id}"]')


def new_participant(browser, base_url: str, name: str) -> Participant:
    """A browser context of its own (its own session cookie: its own identity), renamed."""
    participant = new_visitor(browser, name, WAIT_MS, Participant)
    page = participant.page
    page.on("websocket", lambda ws: watch_socket(participant, ws))
    page.goto(f"{base_url}/#mesh")
    page.get_by_test_id("display-name").fill(name)
    page.get_by_role("button", name="Rename").click()
    expect(page.get_by_test_id("display-name")).to_have_value(name)
    return participant


def watch_socket(participant: Participant, ws) -> None:
    """Keep the room socket's story (not candidates or pings) for failure reports."""
    if "/ws/rooms/" not in ws.url:
        return

    def note(direction: str, payload) -> None:
        text = payload if isinstance(payload, str) else "<binary>"
        if '"candidate"' not in text[:40] and '"ping"' not in text and '"pong"' not in text:
            participant.console.append(f"ws {direction} {text[:160]}")

    ws.on("framesent", lambda payload: note(">", payload))
    ws.on("framereceived", lambda payload: note("<", payload))
    ws.on("close", lambda _ws: participant.console.append("ws closed"))


def create_room(participant: Participant, title: str) -> str:
    """Create the room through the lobby form, as a visitor would; return its path."""
    page = participant.page
    page.get_by_test_id("room-name-mesh").fill(title)
    page.get_by_test_id("join-mesh").click()
    expect(page).to_have_url(re.compile(r"/rooms/[a-z0-9-]+/$"))
    return "/" + page.url.split("/", 3)[3]


def open_room(participant: Participant, base_url: str, path: str) -> None:
    participant.page.goto(base_url + path)


def expect_in_mesh(participant: Participant) -> None:
    expect(participant.page.locator("[data-room]")).to_have_attribute(
        "data-mesh", "ready", timeout=WAIT_MS
    )


def expect_connected_to(participant: Participant, others: list[Participant]) -> None:
    """One connected tile per other participant, named after them, and no other tile."""
    tiles = participant.tiles()
    expect(tiles).to_have_count(len(others), timeout=WAIT_MS)
    for other in others:
        tile = participant.tile_of(other)
        expect(tile).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
        expect(tile.get_by_test_id("tile-name")).to_have_text(other.name)


def expect_remote_videos_playing(participant: Participant, count: int) -> None:
    """`count` remote videos with a size, and every one of them shows new frames."""
    page = participant.page
    before = page.wait_for_function(
        PLAYING_FRAMES_JS, arg=count, polling=250, timeout=WAIT_MS
    ).json_value()
    page.wait_for_function(FRAMES_ADVANCED_JS, arg=before, polling=250, timeout=WAIT_MS)


def expect_full_mesh(participants: list[Participant]) -> None:
    for participant in participants:
        expect_in_mesh(participant)
    for participant in participants:
        others = [p for p in participants if p is not participant]
        expect_connected_to(participant, others)
    for participant in participants:
        expect_remote_videos_playing(participant, len(participants) - 1)


def expect_bitrate_shown(participant: Participant) -> None:
    """Every remote tile shows a live inbound video bitrate from getStats()."""
    participant.page.wait_for_function(
        """() => {
          const peers = window.rtcMesh.peers();
          return peers.length > 0 && peers.every((p) => p.stats && p.stats.kbps > 0
            && p.history.length >= 2);
        }""",
        polling=500,
        timeout=WAIT_MS,
    )
    for tile in participant.tiles().all():
        expect(tile.get_by_test_id("tile-bitrate")).to_contain_text("bit/s")


def expect_refused_as_full(participant: Participant, room_path: str) -> None:
    page = participant.page
    expect(page.get_by_test_id("room-banner")).to_contain_text("is full", timeout=WAIT_MS)
    expect(page.locator("[data-room]")).to_have_attribute("data-refused", "room-full")
    expect(page.get_by_test_id("mesh-status")).to_have_text("The room is full.")
    expect(page.get_by_test_id("rejoin")).to_have_text("Try again")
    # refused before the camera was opened: nothing to preview, nobody to see
    assert page.evaluate("document.getElementById('local-video').srcObject") is None
    expect(participant.tiles()).to_have_count(0)


def check_mute_shows_on_others(actor: Participant, watchers: list[Participant]) -> None:
    page = actor.page
    page.get_by_test_id("toggle-audio").click()
    expect(page.get_by_test_id("toggle-audio")).to_have_attribute("aria-pressed", "true")
    for watcher in watchers:
        tile = watcher.tile_of(actor)
        expect(tile).to_have_attribute("data-audio", "false")
        expect(tile.get_by_test_id("tile-media")).to_contain_text("muted")
    page.get_by_test_id("toggle-video").click()
    for watcher in watchers:
        tile = watcher.tile_of(actor)
        expect(tile).to_have_attribute("data-video", "false")
        expect(tile.get_by_test_id("tile-media")).to_contain_text("camera off")
    page.get_by_test_id("toggle-audio").click()
    page.get_by_test_id("toggle-video").click()
    for watcher in watchers:
        tile = watcher.tile_of(actor)
        expect(tile).to_have_attribute("data-audio", "true")
        expect(tile).to_have_attribute("data-video", "true")
        expect(tile.get_by_test_id("tile-media")).to_have_text("")


REMOTE_UFRAG_JS = """(peer) => {
  const pc = window.rtcMesh.controller?.links.get(peer)?.pc;
  return pc?.remoteDescription?.sdp.match(/a=ice-ufrag:(\\S+)/)?.[1] ?? null;
}"""


def check_ice_restart(actor: Participant, other: Participant) -> None:
    """An ICE restart (what a "failed" link does by itself) renegotiates fresh ICE
    credentials over the socket while the media keeps flowing."""
    peer, actor_peer = other.peer_id, actor.peer_id
    ufrag = actor.page.evaluate(REMOTE_UFRAG_JS, peer)
    assert ufrag
    actor.page.evaluate("(peer) => window.rtcMesh.restartIce(peer)", peer)
    other.page.wait_for_function(
        "(peer) => window.rtcMesh.peers().some((p) => p.peer === peer && p.remoteRestarts > 0)",
        arg=actor_peer,
        timeout=WAIT_MS,
    )
    actor.page.wait_for_function(
        f"(peer) => ({REMOTE_UFRAG_JS})(peer) !== {ufrag!r}"
        " && window.rtcMesh.controller.links.get(peer).pc.signalingState === 'stable'",
        arg=peer,
        timeout=WAIT_MS,
    )
    expect(actor.tile_of(other)).to_have_attribute("data-state", "connected")
    expect_remote_videos_playing(actor, 2)
    expect_remote_videos_playing(other, 2)


def leave_and_rejoin(leaver: Participant, stayers: list[Participant]) -> None:
    old_peer = leaver.peer_id
    page = leaver.page
    page.get_by_test_id("leave").click()
    expect(page.get_by_test_id("rejoin")).to_be_visible()
    expect(page.get_by_test_id("mesh-status")).to_have_text("You left the room.")
    expect(leaver.tiles()).to_have_count(0)
    assert page.evaluate("document.getElementById('local-video').srcObject") is None
    for stayer in stayers:
        expect(stayer.page.locator(f'[data-peer="{old_peer}"]')).to_have_count(0)
        others = [p for p in stayers if p is not stayer]
        expect_connected_to(stayer, others)
        expect_remote_videos_playing(stayer, len(others))

    page.get_by_test_id("rejoin").click()
    expect_in_mesh(leaver)
    assert leaver.peer_id != old_peer  # a new connection, a new peer id
    expect_full_mesh([leaver, *stayers])


def participants(
    browser, base_url: str, names: list[str]
) -> AbstractContextManager[list[Participant]]:
    return visitors(lambda name: new_participant(browser, base_url, name), names)


def run_mesh_flow(browser, urls: list[str], title: str) -> None:
    """The whole story; ``urls[i]`` is the server participant i talks to (4 entries)."""
    with participants(browser, urls[0], ["Ada"]) as (ada,):
        path = create_room(ada, title)
        with (
            participants(browser, urls[1], ["Brian"]) as (brian,),
            participants(browser, urls[2], ["Chen"]) as (chen,),
        ):
            # Brian and Chen arrive together: whoever offers, negotiation must settle.
            open_room(brian, urls[1], path)
            open_room(chen, urls[2], path)
            trio = [ada, brian, chen]
            expect_full_mesh(trio)
            expect_bitrate_shown(ada)
            check_ice_restart(ada, brian)

            with participants(browser, urls[3], ["Dana"]) as (dana,):
                open_room(dana, urls[3], path)
                expect_refused_as_full(dana, path)
            for person in trio:
                expect(person.tiles()).to_have_count(2)

            check_mute_shows_on_others(ada, [brian, chen])
            leave_and_rejoin(chen, [ada, brian])


def test_three_browsers_full_mesh(chromium_browser, live_server_proc):
    url = live_server_proc.url
    run_mesh_flow(chromium_browser, [url] * 4, "Mesh Trio")


DENY_MEDIA_JS = """
navigator.mediaDevices.getUserMedia = () =>
  Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
"""


def test_page_without_camera_says_why_and_still_watches(chromium_browser, live_server_proc):
    """getUserMedia refused: the page says so, joins receive-only and still sees the other
    page; the other sees a tile for it. Covers both offer directions (it is there first
    and offers receive-only to the newcomer, then rejoins as the newcomer that answers with
    no tracks to attach)."""
    url = live_server_proc.url
    with participants(chromium_browser, url, ["Eve", "Finn"]) as (eve, finn):
        eve.context.add_init_script(DENY_MEDIA_JS)
        path = create_room(eve, "No Camera Room")
        expect_in_mesh(eve)
        expect(eve.page.get_by_test_id("media-error")).to_contain_text("denied")
        expect(eve.page.get_by_test_id("media-error")).to_contain_text("You can still see")
        expect(eve.page.get_by_test_id("toggle-audio")).to_be_disabled()
        expect(eve.page.get_by_test_id("local-tile")).to_have_attribute("data-video", "false")

        open_room(finn, url, path)
        expect_in_mesh(finn)
        expect_connected_to(eve, [finn])
        expect_connected_to(finn, [eve])
        expect_remote_videos_playing(eve, 1)
        tile = finn.tile_of(eve)
        expect(tile).to_have_attribute("data-video", "false")
        expect(tile.get_by_test_id("tile-media")).to_contain_text("camera off")

        eve.page.get_by_test_id("leave").click()
        expect(finn.tiles()).to_have_count(0)
        eve.page.get_by_test_id("rejoin").click()
        expect_in_mesh(eve)
        expect_connected_to(eve, [finn])
        expect_connected_to(finn, [eve])
        expect_remote_videos_playing(eve, 1)
