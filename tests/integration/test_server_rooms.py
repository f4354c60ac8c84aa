"""Echo and relay rooms with real aiortc peers on loopback, through the real room socket.

The client is ``tests.support.participant.ServerRoomClient`` (a Python participant that
trickles its candidates like a browser); the socket is the full ASGI app through Channels'
communicator, so the server peers live in this process and what they leave behind can
be counted: asyncio tasks, UDP sockets, threads, live peers.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from contextlib import asynccontextmanager

import numpy as np
import pytest
from channels.db import database_sync_to_async

from faces.boxes import BOX_YUV
from identity.services import Identity
from rooms.models import Room, RoomKind
from rtcsite.ws.codes import CloseCode
from signaling.media import peer as peer_module
from tests.support.media import astronaut_frame
from tests.support.participant import ServerRoomClient
from tests.support.ws import communicator

pytestmark = [pytest.mark.django_db(transaction=True)]

WAIT = 60  # seconds: generous, the machine is shared
PEOPLE = [Identity(id=f"{i:016x}", name=f"user{i}") for i in range(1, 5)]
PICTURE, FACE = astronaut_frame(640, 480)


@database_sync_to_async
def make_room(slug: str, kind: str) -> Room:
    return Room.objects.create(slug=slug, title=slug, kind=kind)


async def join(who: Identity, slug: str):
    comm = communicator(f"/ws/media/{slug}/", identity=who)
    connected, _ = await comm.connect()
    assert connected
    welcome = await comm.receive_json_from(timeout=10)
    assert welcome["type"] == "welcome", welcome
    return comm, welcome


@asynccontextmanager
async def participant(who: Identity, slug: str, tracks="default", **kwargs):
    """A joined server room socket (``/ws/media/``) with a ServerRoomClient pumping its
    messages."""
    comm, welcome = await join(who, slug)
    if tracks == "default":
        tracks = ServerRoomClient.default_tracks(PICTURE)
    client = ServerRoomClient(comm.send_json_to, tracks, **kwargs)
    client.welcome = welcome
    client.pump(lambda: comm.receive_json_from(timeout=3600))
    try:
        yield client
    finally:
        await client.close()
        await comm.disconnect()


async def offer_answered(client: ServerRoomClient) -> None:
    """Offer and wait until the server's answer is applied."""
    await client.offer()
    await asyncio.wait_for(client.answered.wait(), WAIT)


async def wait_for(predicate, what: str, within: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def next_error(client: ServerRoomClient, count: int = 1) -> dict:
    await wait_for(lambda: len(client.errors) >= count, "an error message")
    return client.errors[count - 1]


# --- what a session leaves behind ---------------------------------------------------------
def udp_sockets() -> int:
    count = 0
    for name in ("udp", "udp6"):
        with open(f"/proc/self/net/{name}") as table:
            inodes = {line.split()[9] for line in list(table)[1:]}
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
    return count


def own_threads() -> int:
    """Threads other than long-lived pool workers (codec decoders are per receiver)."""
    return sum(
        1
        for t in threading.enumerate()
        if not t.name.startswith(
            ("ThreadPoolExecutor", "face-detect", "asyncio_", "room-reader", "rtcsite-health")
        )
    )


def baseline_footprint() -> dict[str, int]:
    """The footprint before a session, with the per-process presence sweeper and health
    sampler running (the first connection starts them; they belong to the process, not to a
    session)."""
    from presence import services
    from rtcsite import health

    services.ensure_sweeper()
    health.ensure_sampler()
    return footprint()


def footprint() -> dict[str, int]:
    tasks = asyncio.all_tasks()
    return {
        "tasks": len(tasks),
        "media tasks": sum(
            1
            for t in tasks
            if t.get_name().startswith(("frame-source", "server-peer", "media-stats"))
        ),
        "udp sockets": udp_sockets(),
        "threads": own_threads(),
        "server peers": len(peer_module.live_peers()),
    }


async def expect_back_to(baseline: dict[str, int]) -> None:
    """Everything returns to the baseline (waits: aiortc winds down in tasks of its own)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while (now := footprint()) != baseline:
        if loop.time() > deadline:
            tasks = [t.get_coro() for t in asyncio.all_tasks()]
            pytest.fail(f"left behind: {now} (before: {baseline}); tasks: {tasks}")
        await asyncio.sleep(0.2)


def green_pixels(frame, box: tuple[int, int, int, int]) -> int:
    """Pixels of the box colour around ``box`` (the face), in a decoded frame."""
    planes = frame.to_ndarray(format="yuv420p")
    h, w = frame.height, frame.width
    x, y, bw, bh = box
    pad = 20
    x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(w, x + bw + pad), min(h, y + bh + pad)
    luma = planes[:h].astype(int)[y0:y1, x0:x1]
    u = (
        planes[h : h + h // 4]
        .reshape(h // 2, w // 2)
        .astype(int)[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
    )
    v = (
        planes[h + h // 4 :]
        .reshape(h // 2, w // 2)
        .astype(int)[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
    )
    yv, uv, vv = BOX_YUV
    chroma = (np.abs(u - uv) < 20) & (np.abs(v - vv) < 20)
    near = np.abs(luma[::2, ::2][: chroma.shape[0], : chroma.shape[1]] - yv) < 30
    return int((chroma & near).sum())


# --- echo -----------------------------------------------------------------------------------
async def test_echo_returns_video_and_audio_then_leaves_nothing_behind():
    await make_room("echo1", RoomKind.ECHO)
    baseline = baseline_footprint()
    async with participant(PEOPLE[0], "echo1") as client:
        await offer_answered(client)
        video = await client.wait_frames("video", 30, WAIT)
        await client.wait_frames("audio", 30, WAIT)
        assert (video.last.width, video.last.height) == (640, 480)
        assert green_pixels(video.last, FACE) == 0  # boxes are opt-in
        during = footprint()
        assert during["server peers"] == 1
        assert during["media tasks"] >= 3  # two sources and the stats loop
        assert during["udp sockets"] > baseline["udp sockets"]  # ICE candidates' sockets
        await wait_for(lambda: client.stats, "a media-stats message")
        stats = client.stats[-1]
        assert stats["faces"] is False and stats["frames_out"] > 0
        assert not client.errors
    await expect_back_to(baseline)


async def test_echo_face_boxes_on_and_off():
    await make_room("echo-faces", RoomKind.ECHO)
    face = FACE
    async with participant(PEOPLE[0], "echo-faces") as client:
        await client.offer()
        await client.wait_frames("video", 10, WAIT)
        assert green_pixels(client.received["video"].last, face) == 0

        await client.send({"type": "echo-options", "faces": True})
        await wait_for(
            lambda: client.stats and client.stats[-1]["faces"] and client.stats[-1]["boxes"],
            "media-stats with a detected face",
        )
        stats = client.stats[-1]
        (box,) = stats["boxes"]
        assert abs(box["x"] - face[0]) < 20 and abs(box["y"] - face[1]) < 20
        assert stats["detect_ms"] > 0
        await client.wait_frames("video", 10, WAIT)
        assert green_pixels(client.received["video"].last, face) > 100

        await client.send({"type": "echo-options", "faces": False})
        await wait_for(lambda: client.stats[-1]["faces"] is False, "faces off in media-stats")
        await client.wait_frames("video", 10, WAIT)
        assert green_pixels(client.received["video"].last, face) == 0
        assert not client.errors


async def test_echo_room_holds_one_and_a_new_offer_replaces_the_session():
    await make_room("echo-one", RoomKind.ECHO)
    comm, _ = await join(PEOPLE[0], "echo-one")
    other = communicator("/ws/media/echo-one/", identity=PEOPLE[1])
    await other.connect()
    assert (await other.receive_json_from(timeout=10))["code"] == "room-full"
    assert (await other.receive_output(timeout=10))["code"] == CloseCode.ROOM_FULL

    first = ServerRoomClient(comm.send_json_to, ServerRoomClient.default_tracks(PICTURE))
    second = ServerRoomClient(comm.send_json_to, ServerRoomClient.default_tracks(PICTURE))
    try:
        pump = first.pump(lambda: comm.receive_json_from(timeout=3600))
        await first.offer()
        await first.wait_frames("video", 5, WAIT)
        (first_peer,) = peer_module.live_peers()
        # the page rebuilt its RTCPeerConnection: a new offer, a new server peer
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        second.pump(lambda: comm.receive_json_from(timeout=3600))
        await second.offer()
        await second.wait_frames("video", 5, WAIT)
        assert first_peer.closed
        assert len(peer_module.live_peers()) == 1
    finally:
        await first.close()
        await second.close()
        await comm.disconnect()
    assert not peer_module.live_peers()


# --- relay ----------------------------------------------------------------------------------
async def test_relay_between_two_peers_leave_rejoin_and_third_refused():
    await make_room("relay1", RoomKind.RELAY)
    baseline = baseline_footprint()
    async with participant(PEOPLE[0], "relay1") as ada:
        await offer_answered(ada)
        async with participant(PEOPLE[1], "relay1") as bob:
            await bob.offer()
            got_a = await ada.wait_frames("video", 20, WAIT)
            got_b = await bob.wait_frames("video", 20, WAIT)
            await ada.wait_frames("audio", 20, WAIT)
            assert got_a.last.width == 640 and got_b.last.width == 640
            # the publisher already there was asked for a keyframe when bob arrived
            await wait_for(
                lambda: ada.stats and ada.stats[-1]["keyframe_requests"] >= 1,
                "a keyframe request to the first participant",
            )

            third = communicator("/ws/media/relay1/", identity=PEOPLE[2])
            await third.connect()
            assert (await third.receive_json_from(timeout=10))["code"] == "room-full"
            await third.disconnect()

        # bob left: ada's slot stops; a newcomer is relayed at once
        async with participant(PEOPLE[2], "relay1") as cleo:
            await cleo.offer()
            await ada.wait_frames("video", 20, WAIT)
            await cleo.wait_frames("video", 20, WAIT)
        assert not ada.errors
    await expect_back_to(baseline)


# --- bad input ------------------------------------------------------------------------------
BAD_OFFERS = {
    "bad-sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=video notaport RTP/SAVPF 96\r\n",
    "no-media": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
}


def replace_codecs(sdp: str) -> str:
    """The offer with every codec renamed to one the server does not have."""
    return (
        sdp.replace("VP8/90000", "AV1X/90000")
        .replace("H264/90000", "AV1X/90000")
        .replace("opus/48000", "lyra/48000")
        .replace("PCMU/8000", "lyra/8000")
        .replace("PCMA/8000", "lyra/8000")
    )


async def test_bad_offers_and_candidates_get_clear_errors_and_the_room_carries_on():
    await make_room("echo-bad", RoomKind.ECHO)
    await make_room("echo-good", RoomKind.ECHO)
    async with (
        participant(PEOPLE[0], "echo-good") as good,
        participant(PEOPLE[1], "echo-bad") as bad,
    ):
        await good.offer()
        await good.wait_frames("video", 5, WAIT)

        # a candidate before any offer: no session to add it to
        await bad.send(
            {
                "type": "candidate",
                "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"},
            }
        )
        assert (await next_error(bad, 1))["code"] == "no-session"
        for n, (code, sdp) in enumerate(BAD_OFFERS.items(), start=2):
            await bad.send({"type": "offer", "sdp": sdp})
            error = await next_error(bad, n)
            assert error["code"] == code and error["ref"] == "offer", error
        hostile = "v=0\r\n" + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n" * 3 + "a=\x00\x01" * 100
        await bad.send({"type": "offer", "sdp": hostile})
        assert (await next_error(bad, 4))["code"] in {"bad-sdp", "too-many-tracks"}

        # unsupported codecs: a real offer whose codecs the server cannot speak
        probe = ServerRoomClient(bad.send, ServerRoomClient.default_tracks(PICTURE), trickle=False)
        for track in probe.tracks:
            probe.pc.addTransceiver(track, direction="sendrecv")
        await probe.pc.setLocalDescription(await probe.pc.createOffer())
        await bad.send({"type": "offer", "sdp": replace_codecs(probe.pc.localDescription.sdp)})
        error = await next_error(bad, 5)
        assert error["code"] == "unsupported-codec", error
        assert "codec" in error["message"]
        await probe.close()

        # a datachannel-only offer
        channel_only = ServerRoomClient(bad.send, [], trickle=False)
        channel_only.pc.createDataChannel("x")
        await channel_only.pc.setLocalDescription(await channel_only.pc.createOffer())
        await bad.send({"type": "offer", "sdp": channel_only.pc.localDescription.sdp})
        assert (await next_error(bad, 6))["code"] == "no-media"
        await channel_only.close()

        # the good room never noticed; the bad socket still works and gets a session
        await good.wait_frames("video", 10, WAIT)
        assert not good.errors
        await bad.offer()
        await bad.wait_frames("video", 5, WAIT)
        # a candidate of an earlier session (other ICE ufrag) is refused
        await bad.send(
            {
                "type": "candidate",
                "candidate": {
                    "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
                    "sdpMid": "0",
                    "usernameFragment": "stale",
                },
            }
        )
        assert (await next_error(bad, 7))["code"] == "unknown-session"
        await bad.send({"type": "answer", "sdp": "v=0\r\n"})
        assert (await next_error(bad, 8))["code"] == "bad-message"
        await bad.send({"type": "echo-options", "faces": "yes"})
        assert (await next_error(bad, 9))["code"] == "bad-message"
        await bad.wait_frames("video", 5, WAIT)

        # floods: candidates beyond the per-session cap, offers beyond their own budget
        flood = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}
        for _ in range(45):
            await bad.send({"type": "candidate", "candidate": flood})
        await wait_for(
            lambda: any(e["code"] == "too-many-candidates" for e in bad.errors),
            "too-many-candidates",
        )
        for _ in range(12):
            await bad.send({"type": "offer", "sdp": BAD_OFFERS["no-media"]})
        await wait_for(
            lambda: any(e["code"] == "rate-limited" and e["ref"] == "offer" for e in bad.errors),
            "offers rate-limited",
        )
        await good.wait_frames("video", 10, WAIT)
        assert not good.errors
    assert not peer_module.live_peers()


# --- recording ----------------------------------------------------------------------------
RANDOM_NAME = re.compile(r"[A-Za-z0-9_-]{32}\.webm")  # secrets.token_urlsafe(24)


async def test_recording_writes_a_playable_webm_listed_as_a_recording(settings, tmp_path):
    """...privately: under RECORDINGS_ROOT, outside the public MEDIA_ROOT, by a random name
    (issue 14.9: it was MEDIA_ROOT/recordings/<room>-<time>-<id prefix>-<4 hex>.webm)."""
    import av

    from signaling.models import Recording

    settings.SERVER_ROOM_RECORDINGS = True
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.RECORDINGS_ROOT = tmp_path / "private"
    await make_room("echo-rec", RoomKind.ECHO)
    baseline = baseline_footprint()
    async with participant(PEOPLE[0], "echo-rec") as client:
        assert client.welcome["recording_available"] is True
        await client.send({"type": "record", "on": True})
        assert (await next_error(client))["code"] == "no-session"  # nothing to record yet
        await client.offer()
        await client.wait_frames("video", 5, WAIT)
        await client.send({"type": "record", "on": True})
        await wait_for(lambda: {"type": "recording", "on": True} in client.other, "recording on")
        await client.wait_frames("video", 40, WAIT)
        await client.send({"type": "record", "on": False})
        await wait_for(
            lambda: any(m.get("type") == "recording" and not m["on"] for m in client.other),
            "recording off",
        )
    await expect_back_to(baseline)  # the recorder's thread and tasks are gone too
    row = await database_sync_to_async(Recording.objects.get)(room_slug="echo-rec")
    assert row.status == "done", row.error
    assert row.video_frames > 10 and row.audio_frames > 10 and row.size_bytes > 1000
    assert RANDOM_NAME.fullmatch(row.file.name), row.file.name
    assert "echo-rec" not in row.file.name and PEOPLE[0].id[:8] not in row.file.name
    path = tmp_path / "private" / row.file.name
    assert path.stat().st_size == row.size_bytes
    assert not (tmp_path / "media").exists() or not any((tmp_path / "media").rglob("*.webm"))
    with pytest.raises(ValueError):
        row.file.url  # noqa: B018 - no public URL exists for a recording
    with av.open(str(path)) as container:
        kinds = sorted(stream.type for stream in container.streams)
        assert kinds == ["audio", "video"]
        frames = list(container.decode(video=0))
    assert len(frames) > 10 and (frames[0].width, frames[0].height) == (640, 480)


async def test_recording_stops_cleanly_at_its_size_and_duration_caps(settings, tmp_path):
    """RECORDING_MAX_BYTES / RECORDING_MAX_SECONDS: the recorder stops by itself, the file
    is whole (it plays), the row is done and the page hears why."""
    import av

    from signaling.models import Recording

    settings.SERVER_ROOM_RECORDINGS = True
    settings.RECORDINGS_ROOT = tmp_path
    settings.RECORDING_MAX_BYTES = 30_000
    await make_room("echo-cap", RoomKind.ECHO)
    baseline = baseline_footprint()

    def offs() -> list[dict]:
        return [m for m in client.other if m.get("type") == "recording" and not m["on"]]

    async with participant(PEOPLE[0], "echo-cap") as client:
        await client.offer()
        await client.wait_frames("video", 5, WAIT)
        await client.send({"type": "record", "on": True})  # and never "off": the cap stops it
        await wait_for(lambda: len(offs()) == 1, "the size cap to stop the recording")
        by_size = offs()[0]
        assert by_size["limit"] == "size" and by_size["status"] == "done"
        assert 30_000 <= by_size["bytes"] < 30_000 + 200_000  # a frame and the cues over it

        settings.RECORDING_MAX_BYTES = 1 << 30
        settings.RECORDING_MAX_SECONDS = 1
        await client.send({"type": "record", "on": True})
        await wait_for(lambda: len(offs()) == 2, "the duration cap to stop the recording")
        by_time = offs()[1]
        assert by_time["limit"] == "duration" and by_time["status"] == "done"
        await client.wait_frames("video", 10, WAIT)  # the call goes on
        assert not client.errors
    await expect_back_to(baseline)
    rows = await database_sync_to_async(list)(
        Recording.objects.filter(room_slug="echo-cap").order_by("started_at")
    )
    assert [r.status for r in rows] == ["done", "done"]
    assert rows[0].size_bytes == by_size["bytes"]
    for row in rows:
        with av.open(str(tmp_path / row.file.name)) as container:
            assert len(list(container.decode(video=0))) > 0


async def test_recording_is_refused_when_switched_off():
    await make_room("echo-norec", RoomKind.ECHO)
    async with participant(PEOPLE[0], "echo-norec") as client:
        assert client.welcome["recording_available"] is False
        await client.send({"type": "record", "on": True})
        assert (await next_error(client))["code"] == "recording-disabled"
