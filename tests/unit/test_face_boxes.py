"""faces/boxes.py: the one box drawing (I420 and BGR) and the FaceTracker's scan/track rules.

The tracker tests drive it with a fake detector, an executor that runs jobs only when told
and a fake clock, so each rule (scan first, track between scans, scan every full_interval,
scan when tracking lost a face, rate cap, one job at a time on the newest frame, hold,
reset voiding a running job) is checked exactly; one test runs the real detector.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from av import VideoFrame

from faces.boxes import (
    BOX_BGR,
    BOX_THICKNESS,
    BOX_YUV,
    FaceTracker,
    bgr_to_yuv601,
    draw_boxes,
    draw_boxes_i420,
)
from faces.detector import Box

WIDTH, HEIGHT = 160, 120
GREY = 100


def grey_i420() -> np.ndarray:
    """A flat grey (HEIGHT*3/2, WIDTH) I420 array, PyAV's yuv420p layout."""
    planes = np.full((HEIGHT * 3 // 2, WIDTH), GREY, dtype=np.uint8)
    planes[HEIGHT:] = 128  # neutral chroma
    return planes


def split(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flat = planes.reshape(-1)
    luma, chroma = WIDTH * HEIGHT, WIDTH * HEIGHT // 4
    return (
        flat[:luma].reshape(HEIGHT, WIDTH),
        flat[luma : luma + chroma].reshape(HEIGHT // 2, WIDTH // 2),
        flat[luma + chroma :].reshape(HEIGHT // 2, WIDTH // 2),
    )


# --- drawing --------------------------------------------------------------------------------
def test_box_yuv_is_the_box_colour_under_bt601() -> None:
    assert bgr_to_yuv601(BOX_BGR) == BOX_YUV
    assert bgr_to_yuv601((0, 0, 0)) == (16, 128, 128)  # limited range: black is 16
    assert bgr_to_yuv601((255, 255, 255)) == (235, 128, 128)


@pytest.mark.parametrize("box", [Box(40, 30, 60, 50), Box(41, 31, 57, 47)])  # even and odd
def test_i420_outline_has_the_box_colour_in_all_planes_and_chroma_fits_luma(box: Box) -> None:
    planes = grey_i420()
    draw_boxes_i420(planes, WIDTH, HEIGHT, [box])
    y, u, v = split(planes)
    drawn = y == BOX_YUV[0]
    # An outline: the edges are drawn, the inside and the outside are not.
    mid_x, mid_y = box.x + box.w // 2, box.y + box.h // 2
    assert drawn[box.y + 1, mid_x] and drawn[box.y + box.h - 2, mid_x]
    assert drawn[mid_y, box.x + 1] and drawn[mid_y, box.x + box.w - 2]
    assert not drawn[mid_y, mid_x]
    assert not drawn[box.y - 3, mid_x] and not drawn[mid_y, box.x + box.w + 2]
    # Lines are BOX_THICKNESS wide.
    column = drawn[:, mid_x]
    assert column.sum() == 2 * BOX_THICKNESS
    assert drawn.sum() > 0 and y[~drawn].max() == y[~drawn].min() == GREY
    # Chroma carries the colour exactly where luma does: every 2x2 luma block is all box or
    # all background, and its chroma sample agrees.
    blocks = drawn.reshape(HEIGHT // 2, 2, WIDTH // 2, 2)
    all_box, any_box = blocks.all(axis=(1, 3)), blocks.any(axis=(1, 3))
    assert (all_box == any_box).all(), "a 2x2 block half drawn: chroma cannot match it"
    assert (u[all_box] == BOX_YUV[1]).all() and (v[all_box] == BOX_YUV[2]).all()
    assert (u[~all_box] == 128).all() and (v[~all_box] == 128).all()


def test_i420_flat_and_2d_layouts_draw_the_same() -> None:
    boxes = [Box(10, 12, 30, 40), Box(101, 51, 40, 40)]
    shaped, flat = grey_i420(), grey_i420().reshape(-1).copy()
    draw_boxes_i420(shaped, WIDTH, HEIGHT, boxes)
    draw_boxes_i420(flat, WIDTH, HEIGHT, boxes)
    assert (shaped.reshape(-1) == flat).all()


def test_i420_box_decodes_to_the_box_colour_and_box_at_the_border_is_clipped() -> None:
    planes = grey_i420()
    draw_boxes_i420(planes, WIDTH, HEIGHT, [Box(40, 30, 60, 50), Box(130, 90, 30, 30)])
    bgr = VideoFrame.from_ndarray(planes, format="yuv420p").to_ndarray(format="bgr24")
    edge = bgr[31, 70].astype(int)  # on the top edge
    assert np.abs(edge - np.array(BOX_BGR)).max() < 12, edge
    assert np.abs(bgr[118, 158].astype(int) - np.array(BOX_BGR)).max() < 12  # clipped corner


def test_bgr_drawing_has_the_same_geometry_as_luma() -> None:
    box = Box(40, 30, 60, 50)  # even: I420 draws it where BGR does
    image = np.full((HEIGHT, WIDTH, 3), GREY, dtype=np.uint8)
    draw_boxes(image, [box])
    planes = grey_i420()
    draw_boxes_i420(planes, WIDTH, HEIGHT, [box])
    bgr_drawn = (image == np.array(BOX_BGR, dtype=np.uint8)).all(axis=2)
    assert (bgr_drawn == (split(planes)[0] == BOX_YUV[0])).all()
    assert bgr_drawn[box.y, box.x + box.w // 2] and not bgr_drawn[box.y + box.h // 2, 70]


# --- tracking -------------------------------------------------------------------------------
FACE = Box(50, 40, 30, 30)
OTHER = Box(100, 20, 30, 30)


class FakeDetector:
    """Answers what the test says and records what was asked."""

    def __init__(self) -> None:
        self.scan: list[Box] = [FACE]
        self.near: list[Box] = [FACE]
        self.calls: list[str] = []
        self.images: list[object] = []
        self.fail = False

    def detect(self, image) -> list[Box]:
        self.calls.append("scan")
        self.images.append(image)
        if self.fail:
            raise RuntimeError("boom")
        return list(self.scan)

    def detect_near(self, image, previous) -> list[Box]:
        self.calls.append("track")
        self.images.append(image)
        return list(self.near)


class Deferred(Executor):
    """Runs submitted jobs only when ``run`` is called (a busy pool, made visible)."""

    def __init__(self) -> None:
        self.jobs: list = []

    def submit(self, fn, /, *args, **kwargs) -> Future:
        self.jobs.append((fn, args))
        return Future()

    def run(self) -> None:
        jobs, self.jobs = self.jobs, []
        for fn, args in jobs:
            fn(*args)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tracker(detect_fps: float = 0, full_interval: float = 1.0, hold: float = 0.0):
    detector, pool, clock = FakeDetector(), Deferred(), Clock()
    face_tracker = FaceTracker(
        detect_fps=detect_fps,
        full_interval=full_interval,
        hold=hold,
        pool=pool,
        detector=detector,  # type: ignore[arg-type]
        clock=clock,
    )
    return face_tracker, detector, pool, clock


def step(t: FaceTracker, pool: Deferred, clock: Clock, seconds: float, frame="frame") -> None:
    clock.now += seconds
    t.offer(frame)  # type: ignore[arg-type]
    pool.run()


def test_scans_first_then_tracks_then_scans_again_after_full_interval() -> None:
    t, detector, pool, clock = tracker(full_interval=1.0)
    step(t, pool, clock, 0)
    assert detector.calls == ["scan"] and t.boxes == [FACE]
    for _ in range(4):
        step(t, pool, clock, 0.2)  # 0.8 s after the scan: still tracking
    assert detector.calls == ["scan", "track", "track", "track", "track"]
    step(t, pool, clock, 0.25)  # 1.05 s after the scan
    assert detector.calls[-1] == "scan"
    step(t, pool, clock, 0.2)
    assert detector.calls[-1] == "track"
    assert (t.detections, t.scans) == (7, 2)
    assert t.detect_ms is not None and t.scan_ms is not None and t.detect_ms_total > 0


def test_tracking_that_loses_a_face_scans_in_the_same_job() -> None:
    t, detector, pool, clock = tracker()
    detector.scan = [FACE, OTHER]
    step(t, pool, clock, 0)
    detector.near = [FACE]  # OTHER moved too fast for tracking
    detector.scan = [FACE, Box(110, 25, 30, 30)]
    step(t, pool, clock, 0.1)
    assert detector.calls == ["scan", "track", "scan"]
    assert t.boxes == detector.scan and (t.detections, t.scans) == (2, 2)


def test_without_faces_only_full_scans_run() -> None:
    t, detector, pool, clock = tracker()
    detector.scan = []
    for _ in range(3):
        step(t, pool, clock, 0.1)
    assert detector.calls == ["scan"] * 3 and t.boxes == []


def test_full_interval_zero_scans_every_time() -> None:
    t, detector, pool, clock = tracker(full_interval=0)
    for _ in range(3):
        step(t, pool, clock, 0.1)
    assert detector.calls == ["scan"] * 3


def test_rate_cap_and_one_job_at_a_time_on_the_newest_frame() -> None:
    t, detector, pool, clock = tracker(detect_fps=5)  # a job every 0.2 s at most
    t.offer("f1")  # type: ignore[arg-type]
    pool.run()
    clock.now += 0.1
    t.offer("f2")  # type: ignore[arg-type]  # 0.1 s after the last start: too soon
    assert pool.jobs == []
    clock.now += 0.15
    t.offer("f3")  # type: ignore[arg-type]
    assert len(pool.jobs) == 1
    clock.now += 0.3
    t.offer("f4")  # type: ignore[arg-type]  # the rate allows it, but f3's job has not run
    assert len(pool.jobs) == 1  # dropped, not queued
    pool.run()
    assert detector.images == ["f1", "f4"]  # the job read the newest frame when it started


def test_hold_keeps_boxes_after_a_miss_then_drops_them() -> None:
    t, detector, pool, clock = tracker(hold=0.5)
    step(t, pool, clock, 0)
    detector.near, detector.scan = [], []
    step(t, pool, clock, 0.3)
    assert t.boxes == [FACE]  # a miss 0.3 s after the face was seen: held
    step(t, pool, clock, 0.3)
    assert t.boxes == []  # 0.6 s: gone


def test_reset_voids_a_running_job_and_the_next_job_scans() -> None:
    t, detector, pool, clock = tracker()
    step(t, pool, clock, 0)
    clock.now += 0.1
    t.offer("frame")  # type: ignore[arg-type]
    t.reset()  # while that job waits in the pool
    pool.run()
    assert t.boxes == [] and t.detections == 1  # its result was dropped
    step(t, pool, clock, 0.1)
    assert detector.calls[-1] == "scan" and t.boxes == [FACE]


def test_close_stops_jobs_and_a_failed_job_frees_the_tracker() -> None:
    t, detector, pool, clock = tracker()
    detector.fail = True
    step(t, pool, clock, 0)
    assert t.errors == 1 and t.boxes == []
    detector.fail = False
    step(t, pool, clock, 0.1)  # not stuck busy
    assert t.boxes == [FACE]
    t.close()
    t.offer("frame")  # type: ignore[arg-type]
    assert pool.jobs == [] and t.boxes == []


def test_real_detector_in_a_real_pool_scans_once_then_tracks() -> None:
    from tests.support.media import astronaut_frame

    image, (fx, fy, _, _) = astronaut_frame(640, 480)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    with ThreadPoolExecutor(1) as pool:
        t = FaceTracker(detect_fps=0, full_interval=60.0, pool=pool)
        deadline = time.monotonic() + 30
        while t.detections < 5 and time.monotonic() < deadline:
            t.offer(gray)
            time.sleep(0.005)
        assert t.detections >= 5 and t.scans == 1, (t.detections, t.scans)
        assert len(t.boxes) == 1
        assert abs(t.boxes[0].x - fx) < 24 and abs(t.boxes[0].y - fy) < 24
        t.close()
