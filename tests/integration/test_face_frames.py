"""Pushed-frame face detection: the WebSocket (/ws/faces/) and HTTP (/faces/detect/) endpoints
with real image bytes (scikit-image's astronaut: one face; coffee: none), the real consumer
and view, the real detector and thread pool. Bad frames get the documented error and the
session carries on.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
import skimage.data
from channels.testing import HttpCommunicator
from django.conf import settings
from django.test import override_settings
from PIL import Image

from faces import services
from faces.detector import detection_pool, reset_detection_pool
from identity.services import Identity
from identity.tokens import issue_token
from tests.support.media import ASTRONAUT_FACE
from tests.support.ws import communicator

pytestmark = [pytest.mark.django_db(transaction=True)]

DETECT_URL = "/faces/detect/"


def webp(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, data = cv2.imencode(
        ".webp", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, quality]
    )
    assert ok
    return data.tobytes()


ASTRONAUT = webp(skimage.data.astronaut())
COFFEE = webp(skimage.data.coffee())


def near_face(box: dict, tolerance: int = 12) -> bool:
    return all(abs(box[k] - v) <= tolerance for k, v in zip("xywh", ASTRONAUT_FACE, strict=True))


def someone() -> Identity:
    return Identity(id=uuid.uuid4().hex[:16], name="tester")


@pytest.fixture(autouse=True)
def fresh_pool() -> Iterator[None]:
    reset_detection_pool()
    yield
    reset_detection_pool()


@pytest.fixture
def one_thread() -> Iterator[threading.Event]:
    """A one-thread detection pool, held busy until the returned event is set."""
    release = threading.Event()
    with override_settings(FACE_DETECT_THREADS=1):
        reset_detection_pool()
        detection_pool().submit(release.wait, 60)
        yield release
        release.set()


async def connect(identity: Identity | None = None):
    comm = communicator("/ws/faces/", identity=identity or someone())
    connected, _ = await comm.connect()
    assert connected
    hello = await comm.receive_json_from()
    assert hello["type"] == "hello"
    return comm, hello


# --- WebSocket -------------------------------------------------------------------------------
async def test_ws_finds_the_astronaut_and_no_face_in_the_coffee():
    comm, hello = await connect()
    assert hello["limits"]["max_frame_bytes"] == settings.FACE_MAX_FRAME_BYTES
    assert "image/webp" in hello["limits"]["types"]
    await comm.send_to(bytes_data=ASTRONAUT)
    faces = await comm.receive_json_from(timeout=30)
    assert faces["type"] == "faces"
    assert faces["frame"] == 1
    assert (faces["width"], faces["height"]) == (512, 512)
    assert len(faces["boxes"]) == 1 and near_face(faces["boxes"][0]), faces
    assert faces["detect_ms"] > 0
    await comm.send_to(bytes_data=COFFEE)
    faces = await comm.receive_json_from(timeout=30)
    assert faces["type"] == "faces" and faces["boxes"] == [] and faces["frame"] == 2
    await comm.disconnect()


async def test_ws_bad_frames_get_errors_and_the_session_continues():
    comm, _ = await connect()
    garbage = b"this is not an image at all" * 10
    truncated = ASTRONAUT[: len(ASTRONAUT) // 2]
    for data, code in [
        (garbage, "bad-image"),
        (truncated, "bad-image"),
        (b"\0" * (settings.FACE_MAX_FRAME_BYTES + 1), "too-large"),
    ]:
        await comm.send_to(bytes_data=data)
        error = await comm.receive_json_from(timeout=30)
        assert error["type"] == "error", error
        assert (error["code"], error["ref"]) == (code, "frame"), error
        assert error["message"]
    # Too many pixels: a small PNG of a large, flat image.
    with override_settings(FACE_MAX_FRAME_PIXELS=100 * 100):
        await comm.send_to(bytes_data=ASTRONAUT)
        error = await comm.receive_json_from(timeout=30)
    assert error["code"] == "too-many-pixels" and "512x512" in error["message"], error
    # Still working:
    await comm.send_to(bytes_data=ASTRONAUT)
    faces = await comm.receive_json_from(timeout=30)
    assert faces["type"] == "faces" and len(faces["boxes"]) == 1
    await comm.disconnect()


async def test_ws_params_are_validated_and_applied():
    comm, hello = await connect()
    assert hello["params"]["min_neighbors"] == services.parse_params(None).min_neighbors
    for params, needle in [
        ({"min_neighbors": -1}, "min_neighbors"),
        ({"scale_factor": 9}, "scale_factor"),
        ({"min_size": "big"}, "min_size"),
        ({"colour": "red"}, "colour"),
        ("fast", "object"),
    ]:
        await comm.send_json_to({"type": "params", "params": params})
        error = await comm.receive_json_from()
        assert (error["type"], error["code"], error["ref"]) == ("error", "bad-params", "params")
        assert needle in error["message"], error
    # A minimum face size larger than the astronaut's face: no box any more.
    await comm.send_json_to({"type": "params", "params": {"min_size": 200}})
    reply = await comm.receive_json_from()
    assert reply == {"type": "params", "params": {**hello["params"], "min_size": 200}}
    await comm.send_to(bytes_data=ASTRONAUT)
    faces = await comm.receive_json_from(timeout=30)
    assert faces["boxes"] == []
    await comm.disconnect()


async def test_ws_second_frame_during_detection_is_answered_busy(one_thread):
    comm, _ = await connect()
    await comm.send_to(bytes_data=ASTRONAUT)  # waits for the held pool thread: in flight
    await comm.send_to(bytes_data=ASTRONAUT)
    busy = await comm.receive_json_from(timeout=30)
    assert (busy["type"], busy["code"], busy["frame"]) == ("error", "busy", 2), busy
    one_thread.set()
    faces = await comm.receive_json_from(timeout=30)
    assert faces["type"] == "faces" and faces["frame"] == 1 and len(faces["boxes"]) == 1
    await comm.send_to(bytes_data=ASTRONAUT)  # free again
    faces = await comm.receive_json_from(timeout=30)
    assert faces["type"] == "faces" and faces["frame"] == 3
    await comm.disconnect()


@override_settings(FACE_MAX_FPS=0.001)  # a burst of one frame, then one per 1000 s
async def test_ws_frame_rate_is_limited_per_connection():
    comm, _ = await connect()
    await comm.send_to(bytes_data=COFFEE)
    assert (await comm.receive_json_from(timeout=30))["type"] == "faces"
    await comm.send_to(bytes_data=COFFEE)
    error = await comm.receive_json_from(timeout=30)
    assert (error["code"], error["ref"], error["retry_after"]) == ("rate-limited", "frame", 1)
    other, _ = await connect()  # another connection has its own budget
    await other.send_to(bytes_data=COFFEE)
    assert (await other.receive_json_from(timeout=30))["type"] == "faces"
    await comm.send_json_to({"type": "ping", "t": 1})  # the socket itself still works
    assert await comm.receive_json_from() == {"type": "pong", "t": 1}
    await comm.disconnect()
    await other.disconnect()


async def test_ws_needs_a_token():
    comm = communicator("/ws/faces/")
    await comm.connect()
    error = await comm.receive_json_from()
    assert (error["type"], error["code"]) == ("error", "token-missing")
    await comm.disconnect()


# --- HTTP ------------------------------------------------------------------------------------
def auth(identity: Identity | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(identity or someone())}"}


@dataclass
class Reply:
    status: int
    body: dict
    headers: dict[str, str]


async def post(data: bytes, headers: dict[str, str], query: str = "", method: str = "POST"):
    """One request through the site's real ASGI application (per-request sync threads, as
    under Daphne; Django's test client runs sync middleware in one shared thread)."""
    from rtcsite.asgi import application

    raw = [(b"host", b"127.0.0.1"), (b"content-type", b"image/webp")]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    comm = HttpCommunicator(application, method, DETECT_URL + query, body=data, headers=raw)
    response = await comm.get_response(timeout=60)
    head = {k.decode().lower(): v.decode() for k, v in response["headers"]}
    return Reply(response["status"], json.loads(response["body"] or b"{}"), head)


async def test_http_finds_the_astronaut_and_no_face_in_the_coffee():
    headers = auth()
    response = await post(ASTRONAUT, headers)
    assert response.status == 200, response.body
    body = response.body
    assert (body["width"], body["height"]) == (512, 512)
    assert len(body["boxes"]) == 1 and near_face(body["boxes"][0]), body
    response = await post(COFFEE, headers)
    assert response.status == 200 and response.body["boxes"] == []


async def test_http_bad_frames_and_params_get_errors():
    headers = auth()
    cases = [
        (b"not an image", "", 400, "bad-image"),
        (ASTRONAUT[:300], "", 400, "bad-image"),
        (b"\0" * (settings.FACE_MAX_FRAME_BYTES + 1), "", 413, "too-large"),
        (ASTRONAUT, "?min_neighbors=abc", 400, "bad-params"),
        (ASTRONAUT, "?scale_factor=5", 400, "bad-params"),
        (ASTRONAUT, "?nonsense=1", 400, "bad-params"),
    ]
    for data, query, status, code in cases:
        response = await post(data, headers, query)
        assert response.status == status, (query, response.body)
        assert response.body["error"] == code
        assert response.body["message"]
    gif = io.BytesIO()
    Image.new("RGB", (32, 32)).save(gif, "GIF")
    response = await post(gif.getvalue(), headers)
    assert response.status == 400 and "GIF" in response.body["message"]
    with override_settings(FACE_MAX_FRAME_PIXELS=100 * 100):
        response = await post(ASTRONAUT, headers)
    assert (response.status, response.body["error"]) == (413, "too-many-pixels")
    response = await post(ASTRONAUT, headers, "?min_size=40&equalize=false")
    assert response.status == 200 and len(response.body["boxes"]) == 1


async def test_http_needs_a_valid_token():
    response = await post(ASTRONAUT, {})
    assert (response.status, response.body["error"]) == (401, "token-missing")
    response = await post(ASTRONAUT, {"Authorization": "Bearer forged"})
    assert (response.status, response.body["error"]) == (401, "token-invalid")
    assert (await post(b"", {}, method="GET")).status == 405


async def test_http_second_frame_during_detection_is_answered_busy(one_thread):
    headers = auth()
    first = asyncio.ensure_future(post(ASTRONAUT, headers))
    for _ in range(200):  # until the first request is in flight
        if any(s.in_flight for s in services._http_sessions.values()):
            break
        await asyncio.sleep(0.05)
    second = await post(ASTRONAUT, headers)  # same identity
    assert (second.status, second.body["error"]) == (429, "busy")
    assert second.headers["retry-after"] == "1"
    other = asyncio.ensure_future(post(COFFEE, auth()))  # someone else: queued
    one_thread.set()
    assert len((await first).body["boxes"]) == 1
    assert (await other).status == 200


@override_settings(FACE_MAX_FPS=0.001)
async def test_http_frame_rate_is_limited_per_client():
    headers = auth()
    assert (await post(COFFEE, headers)).status == 200
    response = await post(COFFEE, headers)
    assert (response.status, response.body["error"]) == (429, "rate-limited")
    assert (await post(COFFEE, auth())).status == 200
