"""Pushed-frame detection is budgeted per identity: one identity pushing expensive frames on
several connections cannot starve another identity's detections. Real Daphne, one detection
thread, real WebSocket clients; served detections are counted, not timed."""

from __future__ import annotations

import asyncio
import json

import cv2
import skimage.data
import websockets

from tests.integration.test_presence_processes import recv_until
from tests.integration.test_ws_auth_daphne import page_token

WAIT = 120
CHEAP_WANTED = 40  # detections the cheap client waits for
HOG_CONNECTIONS = 3


def jpeg(width: int, height: int) -> bytes:
    rgb = cv2.resize(skimage.data.astronaut(), (width, height))
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


class Pusher:
    """One connection pushing one frame at a time, counting what comes back."""

    def __init__(self, ws, frame: bytes) -> None:
        self.ws, self.frame = ws, frame
        self.served = 0
        self.refused: dict[str, int] = {}

    async def push(self, stop: asyncio.Event, wanted: int | None = None) -> None:
        while not stop.is_set():
            await self.ws.send(self.frame)
            reply = await recv_until(self.ws, lambda m: m["type"] in ("faces", "error"), WAIT)
            if reply["type"] == "faces":
                self.served += 1
                if wanted is not None and self.served >= wanted:
                    stop.set()
            else:
                self.refused[reply["code"]] = self.refused.get(reply["code"], 0) + 1
                await asyncio.sleep(0.05)  # a polite client; the server refused at once anyway


def test_an_expensive_identity_cannot_starve_another(daphne_factory):
    server = daphne_factory(
        {
            "FACE_DETECT_THREADS": "1",
            "FACE_DETECT_BUDGET": "0.2",
            "FACE_DETECT_BUDGET_BURST": "0.5",
            # the cheap client sends its next frame as soon as one is answered: on a fast run
            # that passes the 30 frames/s per-connection cap, which is not what this tests
            "FACE_MAX_FPS": "1000",
        }
    )
    expensive, cheap = jpeg(1280, 720), jpeg(160, 120)

    async def connect(token: str):
        ws = await websockets.connect(
            f"{server.ws_url}/ws/faces/?token={token}", origin=server.url, max_size=None
        )
        await recv_until(ws, lambda m: m["type"] == "hello", WAIT)
        return ws

    async def scenario():
        hog_token, _ = page_token(server)
        fair_token, _ = page_token(server)
        hogs = [Pusher(await connect(hog_token), expensive) for _ in range(HOG_CONNECTIONS)]
        fair = Pusher(await connect(fair_token), cheap)
        try:
            # the costliest parameters a client may ask for are clamped, and said so
            for hog in hogs:
                await hog.ws.send(
                    json.dumps(
                        {
                            "type": "params",
                            "params": {"scale_factor": 1.01, "min_size": 8, "detect_width": 0},
                        }
                    )
                )
                reply = await recv_until(hog.ws, lambda m: m["type"] == "params", WAIT)
                params = reply["params"]
                assert (params["scale_factor"], params["min_size"], params["detect_width"]) == (
                    1.05,
                    20,
                    640,
                )
            stop = asyncio.Event()
            await asyncio.gather(
                *(hog.push(stop) for hog in hogs), fair.push(stop, wanted=CHEAP_WANTED)
            )
        finally:
            for pusher in [*hogs, fair]:
                await pusher.ws.close()

        hog_served = sum(h.served for h in hogs)
        refused = sum(h.refused.get("detection-budget", 0) for h in hogs)
        assert fair.served == CHEAP_WANTED and not fair.refused, fair.refused
        # the expensive identity was told, at once, and served less than the cheap one
        assert refused > 0
        assert hog_served < fair.served, (hog_served, fair.served)

    asyncio.run(scenario())
