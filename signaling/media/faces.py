"""Face boxes drawn into an echo room's returned video.

A ``FaceOverlay`` is the ``FaceTracker`` of ``faces/boxes.py`` (the one drawing, colour,
tracking between full scans and detection pool shared with the live-stream overlay) as an
aiortc frame filter. What is the echo's own: boxes are opt-in per session
(``set_enabled``), each session detects at most ``SERVER_ROOM_DETECT_FPS`` times a second
(frames in between reuse the boxes, so N sessions cost a bounded share of the pool), and
the tracker's counters are the session's ``media-stats`` (``signaling/media/rooms.py``).
"""

from __future__ import annotations

from concurrent.futures import Executor

from av import VideoFrame

from faces.boxes import FaceTracker, draw_boxes, draw_boxes_i420
from faces.detector import to_gray


class FaceOverlay(FaceTracker):
    """A frame filter for the echo's video: boxes from the newest finished detection."""

    def __init__(
        self,
        pool: Executor | None = None,
        detect_fps: float | None = None,
        full_interval: float | None = None,
    ) -> None:
        from django.conf import settings

        super().__init__(
            detect_fps=settings.SERVER_ROOM_DETECT_FPS if detect_fps is None else detect_fps,
            full_interval=full_interval,
            pool=pool,
        )
        self.enabled = False

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled
        if not enabled:
            self.reset()  # switched on again: the first job scans the whole frame

    def __call__(self, frame: VideoFrame) -> VideoFrame:
        if not self.enabled:
            return frame
        width, height = frame.width, frame.height
        if width % 2 or height % 2:
            return self._filter_bgr(frame)
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        planes = frame.to_ndarray()  # our own copy
        boxes = self.boxes
        # The job reads the Y plane later: give it the camera's pixels, not our drawing.
        self.offer(planes[:height].copy() if boxes else planes[:height])
        if not boxes:
            return frame
        draw_boxes_i420(planes, width, height, boxes)
        return _like(VideoFrame.from_ndarray(planes, format="yuv420p"), frame)

    def _filter_bgr(self, frame: VideoFrame) -> VideoFrame:
        """Odd-sized frames have no clean 4:2:0 layout: convert, like any BGR image."""
        image = frame.to_ndarray(format="bgr24")
        self.offer(to_gray(image))
        boxes = self.boxes
        if not boxes:
            return frame
        return _like(VideoFrame.from_ndarray(draw_boxes(image, boxes), format="bgr24"), frame)


def _like(new: VideoFrame, old: VideoFrame) -> VideoFrame:
    new.pts = old.pts
    new.time_base = old.time_base
    return new
