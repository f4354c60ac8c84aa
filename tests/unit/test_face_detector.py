"""The shared OpenCV detector on real images (scikit-image's astronaut has one face)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from faces.boxes import BOX_BGR, draw_boxes
from faces.detector import (
    BadImage,
    Box,
    DetectorParams,
    FaceDetector,
    decode_image,
    get_detector,
)

FACE = Box(177, 66, 95, 95)  # where OpenCV finds the astronaut's face (the figure)


@pytest.fixture(scope="module")
def astronaut_bgr() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


def near(box: Box, expected: Box, tolerance: int) -> bool:
    return all(
        abs(a - b) <= tolerance
        for a, b in zip(
            (box.x, box.y, box.w, box.h),
            (expected.x, expected.y, expected.w, expected.h),
            strict=True,
        )
    )


def test_finds_the_astronauts_face_at_full_size(astronaut_bgr: np.ndarray) -> None:
    boxes = FaceDetector(DetectorParams(detect_width=0)).detect(astronaut_bgr)
    assert len(boxes) == 1
    assert near(boxes[0], FACE, 4), boxes


def test_resized_detection_scales_boxes_back(astronaut_bgr: np.ndarray) -> None:
    boxes = FaceDetector(DetectorParams(detect_width=320)).detect(astronaut_bgr)
    assert len(boxes) == 1
    assert near(boxes[0], FACE, 10), boxes  # found on a 320-px copy, in source pixels


def test_upscaled_input_gives_upscaled_boxes(astronaut_bgr: np.ndarray) -> None:
    big = cv2.resize(astronaut_bgr, (1024, 1024))
    boxes = FaceDetector(DetectorParams(detect_width=320)).detect(big)
    assert len(boxes) == 1
    assert near(boxes[0], Box(FACE.x * 2, FACE.y * 2, FACE.w * 2, FACE.h * 2), 20), boxes


def test_grayscale_plane_input_is_accepted(astronaut_bgr: np.ndarray) -> None:
    gray = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
    assert len(FaceDetector().detect(gray)) == 1


def test_face_free_image_has_no_boxes() -> None:
    coffee = cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR)
    assert FaceDetector().detect(coffee) == []
    assert FaceDetector().detect(np.zeros((480, 640), np.uint8)) == []


def test_draw_boxes_paints_the_box_colour(astronaut_bgr: np.ndarray) -> None:
    image = astronaut_bgr.copy()
    draw_boxes(image, [FACE])
    assert tuple(int(v) for v in image[FACE.y + FACE.h // 2, FACE.x]) == BOX_BGR
    assert tuple(int(v) for v in image[FACE.y, FACE.x + FACE.w // 2]) == BOX_BGR
    centre = image[FACE.y + FACE.h // 2, FACE.x + FACE.w // 2]
    assert tuple(int(v) for v in centre) != BOX_BGR


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"scale_factor": 1.0}, "scale_factor"),
        ({"min_neighbors": -1}, "min_neighbors"),
        ({"min_neighbors": 2.5}, "whole number"),
        ({"min_size": "big"}, "must be a number"),
        ({"detect_width": 10}, "detect_width"),
        ({"threshold": 3}, "unknown"),
    ],
)
def test_bad_parameters_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DetectorParams().with_overrides(overrides)


def test_good_overrides_apply() -> None:
    params = DetectorParams().with_overrides({"min_neighbors": 3, "detect_width": 0})
    assert (params.min_neighbors, params.detect_width) == (3, 0)


def test_decode_image_round_trip_and_refusals(astronaut_bgr: np.ndarray) -> None:
    ok, webp = cv2.imencode(".webp", astronaut_bgr)
    assert ok
    assert decode_image(webp.tobytes(), max_pixels=512 * 512).shape == (512, 512, 3)
    with pytest.raises(BadImage, match="pixels"):
        decode_image(webp.tobytes(), max_pixels=100 * 100)
    with pytest.raises(BadImage, match="decodable"):
        decode_image(b"not an image at all", max_pixels=10**6)
    with pytest.raises(BadImage, match="decodable"):
        decode_image(webp.tobytes()[:200], max_pixels=10**6)  # truncated
    with pytest.raises(BadImage, match="empty"):
        decode_image(b"", max_pixels=10**6)


def test_shared_detector_is_warm_and_thread_safe(astronaut_bgr: np.ndarray) -> None:
    from concurrent.futures import ThreadPoolExecutor

    detector = get_detector()
    assert get_detector() is detector
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: detector.detect(astronaut_bgr), range(12)))
    assert all(len(r) == 1 and near(r[0], FACE, 10) for r in results)


def test_tracking_finds_the_face_near_where_it_was(astronaut_bgr: np.ndarray) -> None:
    detector = FaceDetector()
    gray = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
    moved = np.roll(gray, (12, -15), axis=(0, 1))  # the face moved 15 px left, 12 down
    boxes = detector.detect_near(moved, [FACE])
    assert len(boxes) == 1
    assert near(boxes[0], Box(FACE.x - 15, FACE.y + 12, FACE.w, FACE.h), 10), boxes


def test_tracking_does_not_find_faces_away_from_the_previous_boxes(
    astronaut_bgr: np.ndarray,
) -> None:
    detector = FaceDetector()
    assert detector.detect_near(astronaut_bgr, [Box(380, 350, 95, 95)]) == []  # no face there
    gray = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
    assert detector.detect_near(gray, []) == []


def test_tracking_two_overlapping_regions_counts_the_face_once(astronaut_bgr: np.ndarray) -> None:
    nudged = Box(FACE.x + 20, FACE.y + 10, FACE.w, FACE.h)  # both regions contain the face
    boxes = FaceDetector().detect_near(astronaut_bgr, [FACE, nudged])
    assert len(boxes) == 1 and near(boxes[0], FACE, 12), boxes


def test_tracking_lossy_video_frames_finds_one_face_at_several_sizes() -> None:
    """VP8-coded frames (as an echo room decodes them) at three sizes, the face moving."""
    import fractions

    import av

    from tests.support.media import astronaut_frame

    detector = FaceDetector()
    for size in ((640, 480), (320, 240), (1280, 720)):
        image, (fx, fy, fw, fh) = astronaut_frame(*size)
        planes = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
        encoder = av.CodecContext.create("libvpx", "w")
        encoder.width, encoder.height, encoder.pix_fmt = *size, "yuv420p"
        encoder.bit_rate = 300_000
        encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        decoder = av.CodecContext.create("libvpx", "r")
        previous = [Box(fx, fy, fw, fh)]
        for i in range(8):
            shift = 2 * i  # 2 px per frame down and right
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts, frame.time_base = i, fractions.Fraction(1, 20)
            for packet in encoder.encode(frame):
                for decoded in decoder.decode(packet):
                    luma = np.roll(decoded.to_ndarray()[: size[1]], (shift, shift), axis=(0, 1))
                    boxes = detector.detect_near(luma, previous)
                    assert len(boxes) == 1, (size, i, boxes)
                    box = boxes[0]
                    assert abs(box.x - fx - shift) < 24 and abs(box.y - fy - shift) < 24
                    previous = boxes
