"""The server peers' frame plumbing with real aiortc tracks and PyAV frames (no network)."""

from __future__ import annotations

import asyncio
import fractions

import cv2
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from faces.boxes import BOX_BGR, draw_boxes_i420
from faces.detector import Box
from signaling.media.tracks import FrameSource, SlotTrack


class CountingTrack(MediaStreamTrack):
    """Frames numbered 0, 1, 2… as fast as they are asked for (pts = number), ``limit`` in all."""

    kind = "video"

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.made = 0

    async def recv(self) -> VideoFrame:
        if self.made >= self.limit:
            raise MediaStreamError
        await asyncio.sleep(0)
        frame = VideoFrame(64, 48, "yuv420p")
        frame.pts = self.made
        frame.time_base = fractions.Fraction(1, 90_000)
        self.made += 1
        return frame


async def test_a_slow_consumer_gets_the_newest_frame_and_nothing_queues():
    track = CountingTrack(limit=200)
    source = FrameSource(track, "t")
    seq, _first = await source.next_frame(0)
    await source.wait_ended()  # a slow consumer: the reader keeps draining meanwhile
    assert track.made == 200  # the incoming track was read to the end: no backlog in aiortc
    got = await source.next_frame(seq)
    assert got is not None
    newer_seq, newest = got
    assert newer_seq == 200 and newest.pts == 199  # skipped to the newest, not the next
    assert await source.next_frame(newer_seq) is None  # ended: no more frames
    await source.close()


async def test_slot_timestamps_never_go_back_when_the_source_changes():
    slot = SlotTrack("video")
    first = FrameSource(CountingTrack(limit=10_000), "a")
    slot.plug(first)
    stamps = [(await slot.recv()).pts for _ in range(5)]
    second = FrameSource(CountingTrack(limit=10_000), "b")  # a rejoin: pts start at 0 again
    slot.plug(second)
    await asyncio.sleep(0.01)
    stamps += [(await slot.recv()).pts for _ in range(5)]
    assert stamps == sorted(stamps) and stamps[-1] > stamps[4]
    slot.plug(None)
    waiting = asyncio.create_task(slot.recv())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # nothing plugged: nothing sent
    slot.stop()
    try:
        await waiting
    except MediaStreamError:
        pass
    else:
        raise AssertionError("a stopped slot must end recv()")
    await first.close()
    await second.close()


def test_boxes_drawn_in_i420_come_back_as_the_box_colour():
    height, width = 120, 160
    grey = np.full((height, width, 3), 128, dtype=np.uint8)
    planes = cv2.cvtColor(grey, cv2.COLOR_BGR2YUV_I420)
    draw_boxes_i420(planes, width, height, [Box(40, 30, 60, 50)])
    bgr = VideoFrame.from_ndarray(planes, format="yuv420p").to_ndarray(format="bgr24")
    edge = bgr[30, 70].astype(int)  # middle of the top edge
    assert np.abs(edge - np.array(BOX_BGR)).max() < 40, edge
    inside = bgr[55, 70].astype(int)
    assert np.abs(inside - 128).max() < 10, inside  # only the outline is drawn


async def test_face_overlay_tracks_between_full_scans_and_draws_every_frame():
    """Real detection in a real pool on the astronaut: a scan first, then tracking jobs."""
    from concurrent.futures import ThreadPoolExecutor

    from signaling.media.faces import FaceOverlay
    from tests.support.media import astronaut_frame

    image, (fx, fy, _, _) = astronaut_frame(640, 480)
    planes = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)

    def camera_frame() -> VideoFrame:
        frame = VideoFrame.from_ndarray(planes.copy(), format="yuv420p")
        frame.pts, frame.time_base = 0, fractions.Fraction(1, 90_000)
        return frame

    with ThreadPoolExecutor(1) as pool:
        overlay = FaceOverlay(pool=pool, detect_fps=0, full_interval=60.0)
        overlay.set_enabled(True)
        for _ in range(400):
            out = overlay(camera_frame())
            if overlay.detections >= 6:
                break
            await asyncio.sleep(0.01)
        assert overlay.detections >= 6
        assert overlay.scans == 1  # one full scan, every later job tracked the face
        assert len(overlay.boxes) == 1
        box = overlay.boxes[0]
        assert abs(box.x - fx) < 24 and abs(box.y - fy) < 24
        assert overlay.scan_ms is not None and overlay.detect_ms is not None
        luma = out.to_ndarray()[:480]
        assert luma[box.y + 1, box.x + box.w // 2] != planes[box.y + 1, box.x + box.w // 2]

        overlay.set_enabled(False)
        overlay.set_enabled(True)  # switched on again: the next job scans the whole frame
        scans = overlay.scans
        for _ in range(400):
            overlay(camera_frame())
            if overlay.scans > scans:
                break
            await asyncio.sleep(0.01)
        assert overlay.scans == scans + 1
        overlay.close()


def test_vectorised_audio_level_matches_aiortcs():
    from av import AudioFrame

    from signaling.media import audio_level

    rng = np.random.default_rng(5)
    tone = (8000 * np.sin(np.arange(1920) / 7)).astype(np.int16)
    for samples in (np.zeros(1920, np.int16), tone, rng.integers(-32768, 32767, 1920)):
        frame = AudioFrame.from_ndarray(
            samples.astype(np.int16).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = 48_000
        assert audio_level.audio_level_dbov(frame) == audio_level.original(frame)
    assert audio_level.audio_level_dbov(frame) > -10  # loud noise, not the silent floor
