"""Server rooms: echo CPU/fps/latency with and without face boxes vs a plain aiortc echo,
signaling isolation under echo load, and how many echo sessions with boxes stay ≥ 15 fps.

* **Peer (the limit), same run:** a bare aiortc peer in a process of its own that echoes
  the client's tracks straight back (``pc.addTrack(MediaRelay().subscribe(track))``, the
  aiortc example server): no Django, no signaling socket, no latest-frame plumbing.
* **Ours:** the site's echo room in one Daphne (embedded defaults), negotiated over the
  room socket by ``tests.support.participant.ServerRoomClient``.
* **Client:** this process, one ``ServerRoomClient`` per session sending the astronaut
  (tests/support/media.py) at 640x480, 20 fps, each frame numbered in its top rows; the
  number read back from returned frames gives the round trip (send → echoed frame decoded).
  The client's own encode/decode shares the 2 cores with the server: its CPU is recorded.
* **CPU** of the server (or the plain peer) from ``/proc`` over the measuring window, as a
  share of one core, divided by sessions.
* **Isolation:** two sockets in a mesh room on the same Daphne; A sends offers to B paced at
  25/s (under the production rate limit), one-way latency each; p50/p99 with no echo
  sessions and with N echo sessions with boxes running, in three layouts (``LAYOUTS``):
  the sessions in the same Daphne, on a media process at nice 10, and on a media process
  under SCHED_IDLE (the deployed one: docs/deploy.md) while the probe stays on the first.
  The echo load runs in a child process, so the probe's own event loop is idle and its
  latency is the server's (and the shared machine's).
* **Capacity:** echo sessions with boxes added one at a time; each level measured; the
  highest level at which the server sends every session ≥ 15 fps (its ``media-stats``
  ``fps_out``) is the figure; what the client received is recorded next to it (the client
  decodes and encodes every session on the same 2 cores, so it is a pessimistic figure).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.clients import Endpoint, relay_connect
from bench.offers import offer_text
from bench.support import (
    EMBEDDED_ENV,
    HOST,
    REPO,
    cpu_seconds,
    daphne_site,
    make_tokens,
    ms,
    peer_process,
    percentile,
    room_slug,
    sibling_process,
)

NAME = "server_rooms"
FPS = 20
SIZE = (640, 480)
TARGET_CORE_WITH_BOXES = 0.35
TARGET_ISOLATION_P99_GROWTH = 2.0
SUSTAIN_FPS = 15.0


def echo_rooms_code(count: int) -> str:
    return (
        "from rooms.models import Room\n"
        "Room.objects.bulk_create([Room(slug=f'echo-{i:03d}', title=f'Echo {i}', kind='echo', "
        f"capacity=1) for i in range({count})])\n"
    )


# --- the plain aiortc echo peer (its own process) ------------------------------------------------


def plain_echo_main(port: int) -> None:
    """A bare aiortc echo: one offer per WebSocket, answered; tracks sent straight back."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaRelay
    from websockets.asyncio.server import serve

    relay = MediaRelay()
    peers: set[RTCPeerConnection] = set()

    async def handler(ws) -> None:
        offer = json.loads(await ws.recv())
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        peers.add(pc)

        @pc.on("track")
        def on_track(track) -> None:
            pc.addTrack(relay.subscribe(track))

        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await ws.send(json.dumps({"type": "answer", "sdp": pc.localDescription.sdp}))
        with contextlib.suppress(Exception):
            await ws.wait_closed()
        await pc.close()
        peers.discard(pc)

    async def main() -> None:
        async with serve(handler, HOST, port):
            print("ready", flush=True)
            await asyncio.Future()

    asyncio.run(main())


# --- a session: one client, one socket ------------------------------------------------------------


class Session:
    """One ServerRoomClient over a real WebSocket (room socket or plain peer)."""

    def __init__(self, url: str, origin: str, picture) -> None:
        self.url, self.origin, self.picture = url, origin, picture
        self.ws = None
        self.client = None
        self.latencies: list[float] = []

    async def start(self, *, room: bool, faces: bool = False) -> None:
        from websockets.asyncio.client import connect

        from tests.support.participant import PatternTrack, ServerRoomClient, read_stamp

        self.ws = await connect(self.url, origin=self.origin, max_size=2**20, ping_interval=None)
        if room:
            welcome = json.loads(await self.ws.recv())
            if welcome.get("type") != "welcome":
                raise RuntimeError(f"not welcomed: {welcome}")
        track = PatternTrack(self.picture, FPS)
        from aiortc.mediastreams import AudioStreamTrack

        async def send(message: dict[str, Any]) -> None:
            await self.ws.send(json.dumps(message))

        self.client = ServerRoomClient(
            send, [track, AudioStreamTrack()], trickle=room, keep_frames=False
        )

        def on_frame(kind: str, frame) -> None:
            if kind == "video" and self.client.received["video"].frames % 4 == 0:
                number = read_stamp(frame)
                sent = track.sent_at.get(number)
                if sent is not None:
                    self.latencies.append(time.monotonic() - sent)

        self.client.on_frame = on_frame

        async def receive() -> dict[str, Any]:
            return json.loads(await self.ws.recv())

        self.client.pump(receive)
        if faces:
            await send({"type": "echo-options", "faces": True})
        await self.client.offer()
        await self.client.wait_frames("video", 20, 60)

    def mark(self) -> tuple[int, float]:
        got = self.client.received.get("video")
        self.latencies.clear()
        return (got.frames if got else 0), time.monotonic()

    def fps_since(self, mark: tuple[int, float]) -> float:
        frames, at = mark
        got = self.client.received.get("video")
        return ((got.frames if got else 0) - frames) / max(1e-6, time.monotonic() - at)

    def detect_ms(self, key: str = "detect_ms") -> float | None:
        stats = [s[key] for s in self.client.stats[-5:] if s.get(key)]
        return statistics.median(stats) if stats else None

    def detections(self) -> tuple[int, int]:
        """(detections, full-frame scans) the server reported so far."""
        last = self.client.stats[-1] if self.client.stats else {}
        return last.get("detections", 0), last.get("scans", 0)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()


async def measure(sessions: list[Session], pid: int, seconds: float) -> dict[str, Any]:
    """Received fps per session, round-trip latency, CPU share of ``pid`` over a window."""
    marks = [s.mark() for s in sessions]
    counts0 = [s.detections() for s in sessions]
    cpu0, wall0, client0 = cpu_seconds(pid), time.monotonic(), time.process_time()
    await asyncio.sleep(seconds)
    cpu1, wall1, client1 = cpu_seconds(pid), time.monotonic(), time.process_time()
    counts1 = [s.detections() for s in sessions]
    per_s = [
        ((d1 - d0) / (wall1 - wall0), (f1 - f0) / (wall1 - wall0))
        for (d0, f0), (d1, f1) in zip(counts0, counts1, strict=True)
    ]
    scan = [d for s in sessions if (d := s.detect_ms("scan_ms")) is not None]
    fps = [s.fps_since(m) for s, m in zip(sessions, marks, strict=True)]
    latencies = [x for s in sessions for x in s.latencies]
    core = (cpu1 - cpu0) / (wall1 - wall0)
    detect = [d for s in sessions if (d := s.detect_ms()) is not None]
    server_fps = [s.client.stats[-1]["fps_out"] for s in sessions if s.client.stats]
    return {
        "sessions": len(sessions),
        "server_core": round(core, 3),
        "core_per_session": round(core / max(1, len(sessions)), 3),
        "client_core": round((client1 - client0) / (wall1 - wall0), 3),
        "fps_min": round(min(fps), 1) if fps else 0.0,
        "fps_median": round(statistics.median(fps), 1) if fps else 0.0,
        "server_fps_min": min(server_fps) if server_fps else None,
        "rtt_p50_ms": ms(percentile(latencies, 50)) if latencies else None,
        "rtt_p99_ms": ms(percentile(latencies, 99)) if latencies else None,
        "detect_ms": round(statistics.median(detect), 1) if detect else None,
        "scan_ms": round(statistics.median(scan), 1) if scan else None,
        "detections_per_s": round(statistics.median(d for d, _ in per_s), 1) if per_s else 0,
        "scans_per_s": round(statistics.median(f for _, f in per_s), 1) if per_s else 0,
    }


# --- echo load in a process of its own (so the probe's client loop stays idle) --------------------


#: Media process priority, as docs/deploy.md runs them: ``Nice=10``, or (the default
#: there) ``CPUSchedulingPolicy=idle``. The stand-in browsers run at the lowest priority
#: of each layout: real ones are on other machines, and their VP8 encode/decode must not
#: be what starves the server under test.
MEDIA_NICE = 10
LOAD_NICE = 19
LAYOUTS = {
    # name: (media process priority, stand-in browsers' priority)
    "same process": (None, {"nice": LOAD_NICE}),
    "media process, nice 10": ({"nice": MEDIA_NICE}, {"nice": LOAD_NICE}),
    "media process, SCHED_IDLE": ({"sched_idle": True}, {"sched_idle": True}),
}


def load_main(port: int, urls_json: str, faces: bool) -> None:
    """Run one echo session per URL until stdin closes; print "ready" once all play, and
    at the end one JSON line: the fps each session received and the server sent."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtcsite.settings")
    from tests.support.media import astronaut_frame

    picture, _ = astronaut_frame(*SIZE)
    origin = f"http://{HOST}:{port}"

    async def main() -> None:
        sessions = [Session(url, origin, picture) for url in json.loads(urls_json)]
        try:
            for session in sessions:
                await session.start(room=True, faces=faces)
            marks = [s.mark() for s in sessions]
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            received = [s.fps_since(m) for s, m in zip(sessions, marks, strict=True)]
            sent = [s.client.stats[-1]["fps_out"] for s in sessions if s.client.stats]
            print(json.dumps({"received_fps": received, "server_fps": sent}), flush=True)
        finally:
            for session in sessions:
                await session.close()

    asyncio.run(main())


def start_echo_load(
    port: int, urls: list[str], faces: bool, priority: dict[str, Any]
) -> subprocess.Popen:
    """``load_main`` in a child process at ``priority``; returns once every session plays."""
    from tests.support.daphne import priority_prefix

    code = (
        "from bench.bench_server_rooms import load_main; import sys; "
        "load_main(int(sys.argv[1]), sys.argv[2], sys.argv[3] == '1')"
    )
    proc = subprocess.Popen(
        [
            *priority_prefix(**priority),
            sys.executable,
            "-c",
            code,
            str(port),
            json.dumps(urls),
            "1" if faces else "0",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    assert proc.stdout is not None
    if b"ready" not in proc.stdout.readline():
        stop_echo_load(proc)
        raise RuntimeError("the echo load did not start")
    return proc


def stop_echo_load(proc: subprocess.Popen) -> dict[str, Any]:
    """Closing stdin ends the sessions cleanly (killed if that takes too long); returns
    the fps the load reported."""
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {}
    for line in reversed(out.decode(errors="replace").splitlines()):
        with contextlib.suppress(ValueError):
            return json.loads(line)
    return {}


# --- signaling probe (the signaling benchmark's client and offers) --------------------------------


async def signaling_probe(port: int, tokens: list[str], count: int) -> dict[str, Any]:
    slug = room_slug(0)
    a = await relay_connect("A", Endpoint(port, slug, tokens[0]), 30)
    b = await relay_connect("B", Endpoint(port, slug, tokens[1]), 30)
    try:
        texts = [offer_text(b.peer_id, i) for i in range(count)]
        latencies = []
        lost = 0
        ping = json.dumps({"type": "ping"})
        last_ping = 0.0
        for text in texts:
            if time.monotonic() - last_ping > 5:  # pings are the presence heartbeat
                await a.ws.send(ping)
                await b.ws.send(ping)
                last_ping = time.monotonic()
            arrived = b.arm(1)
            start = time.perf_counter()
            await a.ws.send(text)
            try:
                async with asyncio.timeout(30):
                    latencies.append(await arrived - start)
            except TimeoutError:  # an overloaded server: count it, keep measuring
                lost += 1
                if b.closed or a.closed or any(m.get("type") == "error" for m in a.others):
                    break  # B is gone (e.g. expired): nothing more will arrive
            await asyncio.sleep(0.04)  # 25 msg/s: under the room socket's rate limit
    finally:
        await a.close()
        await b.close()
    return {
        "n": len(latencies),
        "over_30s": lost,
        "p50_ms": ms(percentile(latencies, 50)),
        "p99_ms": ms(percentile(latencies, 99)),
    }


# --- the run ------------------------------------------------------------------------------------


async def run_all(
    server,
    media_servers: dict[str, tuple[Any, dict[str, Any]]],
    plain_port: int,
    plain_pid: int,
    quick: bool,
) -> dict[str, Any]:
    from tests.support.media import astronaut_frame

    picture, _ = astronaut_frame(*SIZE)
    window = 4.0 if quick else 8.0
    settle = 2.0 if quick else 4.0
    probe_n = 60 if quick else 500
    isolation_n = int(os.environ.get("SERVER_ROOMS_ISOLATION_SESSIONS") or (2 if quick else 3))
    max_sessions = 3 if quick else 6
    tokens = make_tokens(2 + max(max_sessions, isolation_n), "bench-echo")
    origin = f"http://{HOST}:{server.port}"
    results: dict[str, Any] = {}

    def room_url(i: int, port: int | None = None) -> str:
        port = port or server.port
        return f"ws://{HOST}:{port}/ws/media/echo-{i:03d}/?token={tokens[2 + i]}&v=1"

    async def one(kind: str) -> dict[str, Any]:
        if kind == "plain":
            session = Session(f"ws://{HOST}:{plain_port}/", origin, picture)
            await session.start(room=False)
            pid = plain_pid
        else:
            session = Session(room_url(0), origin, picture)
            await session.start(room=True, faces=kind == "boxes")
            pid = server.pid
        try:
            await asyncio.sleep(settle)
            return await measure([session], pid, window)
        finally:
            await session.close()
            await asyncio.sleep(1.0)

    for kind in ("plain", "echo", "boxes"):
        results[kind] = await one(kind)

    loop = asyncio.get_running_loop()

    async def probe_under_load(media, load_priority: dict[str, Any]) -> dict[str, Any]:
        """The signaling probe on ``server`` while N echo+boxes sessions run on ``media``
        (the same process, or a media process of its own)."""
        urls = [room_url(i, media.port) for i in range(isolation_n)]
        load = await loop.run_in_executor(
            None, start_echo_load, media.port, urls, True, load_priority
        )
        try:
            await asyncio.sleep(settle)
            cpu0, wall0 = cpu_seconds(media.pid), time.monotonic()
            probe = await signaling_probe(server.port, tokens, probe_n)
            probe["echo_sessions"] = isolation_n
            probe["media_process_core"] = round(
                (cpu_seconds(media.pid) - cpu0) / (time.monotonic() - wall0), 3
            )
        finally:
            fps = await loop.run_in_executor(None, stop_echo_load, load)
        probe["server_fps_min"] = min(fps.get("server_fps") or [0])
        probe["received_fps_min"] = round(min(fps.get("received_fps") or [0]), 1)
        await asyncio.sleep(2.0)
        return probe

    # isolation, per layout: the signaling relay alone, then with N echo sessions with
    # boxes in the same process, or on a media process of its own (what nginx does with
    # /ws/media/) while the probe stays on the web process
    results["isolation"] = []
    for layout, (media, load_priority) in media_servers.items():
        idle = await signaling_probe(server.port, tokens, probe_n)
        loaded = await probe_under_load(media or server, load_priority)
        results["isolation"].append({"layout": layout, "idle": idle, "loaded": loaded})

    # capacity: add echo sessions with boxes until one drops under SUSTAIN_FPS
    levels = []
    running: list[Session] = []
    try:
        for n in range(1, max_sessions + 1):
            session = Session(room_url(n - 1), origin, picture)
            running.append(session)
            try:
                await session.start(room=True, faces=True)
            except Exception as exc:  # no first frames in time: the machine is saturated
                levels.append({"sessions": n, "failed": str(exc)[:120], "server_fps_min": 0})
                break
            await asyncio.sleep(settle)
            level = await measure(running, server.pid, window)
            levels.append(level)
            if (level["server_fps_min"] or 0) < SUSTAIN_FPS:
                break
    finally:
        for session in running:
            await session.close()
    results["capacity"] = levels
    return results


def run(quick: bool) -> dict[str, Any]:
    load_before = os.getloadavg()
    report: dict[str, Any] = {}
    with (
        peer_process("bench.bench_server_rooms:plain_echo_main") as plain,
        daphne_site(
            # every stand-in browser is on 127.0.0.1: the per-address cap is not measured
            dict(EMBEDDED_ENV, SERVER_ROOM_MAX_PEERS_PER_ADDRESS="64"),
            rooms=1,
            report=report,
        ) as site,
        contextlib.ExitStack() as stack,
    ):
        site.manage("shell", "-c", echo_rooms_code(10))
        layouts: dict[str, tuple[Any, dict[str, Any]]] = {}
        for layout, (priority, load_priority) in LAYOUTS.items():
            media = None
            if priority is not None:  # same settings and rooms, a process of its own
                media = stack.enter_context(sibling_process(site, **priority))
            layouts[layout] = (media, load_priority)
        results = asyncio.run(run_all(site, layouts, plain.port, plain.pid, quick))
    load_after = os.getloadavg()
    return summarise(results, quick, load_before, load_after, report)


#: the layout docs/deploy.md deploys: its growth is the benchmark's headline ratio
DEPLOYED_LAYOUT = "media process, SCHED_IDLE"


def summarise(results, quick, load_before, load_after, report) -> dict[str, Any]:
    plain, echo, boxes = results["plain"], results["echo"], results["boxes"]
    levels = results["capacity"]
    sustained = max(
        (lv["sessions"] for lv in levels if (lv.get("server_fps_min") or 0) >= SUSTAIN_FPS),
        default=0,
    )
    rows = []
    for label, figures in (("plain aiortc echo", plain), ("echo", echo), ("echo + boxes", boxes)):
        rows += [
            {"metric": f"{label}: server CPU", "value": figures["server_core"], "unit": "core"},
            {"metric": f"{label}: received fps", "value": figures["fps_median"], "unit": "fps"},
            {"metric": f"{label}: round trip p50", "value": figures["rtt_p50_ms"], "unit": "ms"},
        ]
    rows += [
        {"metric": "echo + boxes: detection", "value": boxes["detect_ms"], "unit": "ms"},
        {"metric": "echo + boxes: full-frame scan", "value": boxes["scan_ms"], "unit": "ms"},
        {"metric": "echo + boxes: detections", "value": boxes["detections_per_s"], "unit": "/s"},
        {"metric": "echo + boxes: full scans", "value": boxes["scans_per_s"], "unit": "/s"},
    ]
    growths: dict[str, float | None] = {}
    isolation_text = []
    for entry in results["isolation"]:
        layout, idle, loaded = entry["layout"], entry["idle"], entry["loaded"]
        growth = round(loaded["p99_ms"] / idle["p99_ms"], 2) if idle["p99_ms"] else None
        entry["growth"] = growths[layout] = growth
        n = loaded["echo_sessions"]
        rows += [
            {
                "metric": f"signaling relay p99, idle ({layout})",
                "value": idle["p99_ms"],
                "unit": "ms",
            },
            {
                "metric": f"signaling relay p99, {n} echo+boxes ({layout})",
                "value": loaded["p99_ms"],
                "unit": "ms",
            },
            {"metric": f"signaling p99 growth ({layout})", "value": growth, "unit": "x"},
            {
                "metric": f"server fps, lowest echo session ({layout})",
                "value": loaded["server_fps_min"],
                "unit": "fps",
            },
        ]
        verdict = (
            "meets" if growth is not None and growth < TARGET_ISOLATION_P99_GROWTH else "misses"
        )
        isolation_text.append(
            f"{layout}: {idle['p99_ms']} -> {loaded['p99_ms']} ms ({growth}x, {verdict}; "
            f"echo at {loaded['server_fps_min']} fps)"
        )
    rows.append(
        {
            "metric": f"echo+boxes sessions sustained >= {SUSTAIN_FPS:.0f} fps",
            "value": sustained,
            "unit": "sessions",
        }
    )
    core_verdict = "meets" if boxes["server_core"] <= TARGET_CORE_WITH_BOXES else "misses"
    n = results["isolation"][0]["loaded"]["echo_sessions"]
    headline = (
        f"echo+boxes {boxes['server_core']:.2f} core at {boxes['fps_median']} fps ({core_verdict} "
        f"the {TARGET_CORE_WITH_BOXES} core target; plain aiortc echo {plain['server_core']:.2f}, "
        f"our echo {echo['server_core']:.2f}); round trip p50 {boxes['rtt_p50_ms']} ms vs plain "
        f"{plain['rtt_p50_ms']} ms; signaling p99 with {n} echo+boxes sessions (target "
        f"<{TARGET_ISOLATION_P99_GROWTH}x): {'; '.join(isolation_text)}; {sustained} echo+boxes "
        f"sessions sustain >= {SUSTAIN_FPS:.0f} fps; load avg {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after"
    )
    return {
        "name": NAME,
        "rows": rows,
        "ratio": growths.get(DEPLOYED_LAYOUT),
        "headline": headline,
        "parameters": {
            "fps": FPS,
            "size": list(SIZE),
            "picture": "astronaut (tests/support/media.py), frame number in the top rows",
            "peer": "bare aiortc echo in its own process (MediaRelay subscribe, no Django)",
            "server_env": {"DEBUG": "1", "embedded": True},
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in load_after],
            "cpu_count": os.cpu_count(),
        },
        "phases": results,
        "log_errors": report.get("log_errors"),
    }
