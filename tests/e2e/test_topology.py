"""The documented deployment with real parts (tests/support/topology.py): Debian's nginx with
the site file of deploy/, two web Daphne processes and one media Daphne under SCHED_IDLE on
Unix sockets, one Redis, a fresh PostgreSQL database, collectstatic'd files. Chromium talks
to nginx only; which process served what is read from the processes' access logs and the
``process`` of their presences.

- a mesh room whose web process is killed with ``kill -9``: its two pages reconnect through
  nginx to the other process (``?resume=``) and see each other leave and come back; a third
  member that does not come back (a Python socket) leaves their pages once its presence
  expires; the killed process restarts, nginx sends the room's slug to it again, a new page
  lands there: one room spanning both processes, media flowing between all three, no ghost;
- an echo room served by the media process;
- a live stream published through the HTTP ingest (every chunk to one web process) and
  watched with hls.js, segments served by nginx from MEDIA_ROOT;
- the admin login, its static files from nginx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import websockets
from playwright.sync_api import expect

from tests.e2e.test_mesh import (
    create_room,
    expect_full_mesh,
    expect_in_mesh,
    open_room,
    participants,
)
from tests.e2e.test_server_rooms import create_room as create_server_room
from tests.e2e.test_server_rooms import expect_playing as expect_echo_playing
from tests.e2e.test_server_rooms import people
from tests.e2e.test_stream_viewers import expect_playing as expect_stream_playing
from tests.integration.test_presence_processes import recv_until
from tests.integration.test_ws_auth_daphne import page_token
from tests.support import ingest
from tests.support.postgres import PostgresMissing
from tests.support.topology import NginxMissing, Topology, running_topology

pytestmark = [pytest.mark.redis, pytest.mark.timeout(900)]

WAIT_MS = 120_000  # generous: three processes, nginx, FFmpeg and Chromium on two shared cores
PRESENCE_TTL = 10  # short, so "no ghost after the TTL" is checked within the test
PASSWORD = "correct-horse-battery-staple-42"


@pytest.fixture(scope="module")
def topology():
    try:
        with running_topology(
            env={
                "PRESENCE_TTL": str(PRESENCE_TTL),
                "STREAM_LADDER": "360",  # one rendition: less CPU for FFmpeg
            }
        ) as running:
            yield running
            print(running.logs())
    except (NginxMissing, PostgresMissing) as exc:
        pytest.fail(str(exc))


class GoneClient:
    """A room socket opened from Python through nginx that never comes back once it drops:
    a visitor whose laptop closed as the process died. Its presence is left to expire."""

    def __init__(self, top: Topology, slug: str) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        token, _ = page_token(top)
        url = f"{top.ws_url}/ws/rooms/{slug}/?token={token}"
        self.ws = self.run(self.connect(url, top.url))
        welcome = self.run(recv_until(self.ws, lambda m: m["type"] == "welcome", 60))
        self.peer = welcome["you"]["peer"]
        asyncio.run_coroutine_threadsafe(self.drain(), self.loop)

    @staticmethod
    async def connect(url: str, origin: str):
        return await websockets.connect(url, origin=origin)

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(90)

    async def drain(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in self.ws:
                pass

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_mesh_room_spans_both_web_processes_after_one_is_killed(chromium_browser, topology):
    top: Topology = topology
    base = top.base_url
    with participants(chromium_browser, base, ["Ada", "Brian"]) as (ada, brian):
        path = create_room(ada, "Topology Mesh")
        slug = path.strip("/").split("/")[-1]
        socket = f'"WSCONNECT /ws/rooms/{slug}/"'
        open_room(brian, base, path)
        expect_full_mesh([ada, brian])
        gone = GoneClient(top, slug)
        ghost_tile = f'[data-testid="remote-tile"][data-peer="{gone.peer}"]'
        for person in (ada, brian):
            expect(person.page.locator(ghost_tile)).to_have_count(1)
        # nginx hashes the slug: all three sockets on one web process
        (first,) = top.served_by(socket)
        (second,) = (name for name in top.web if name != first)
        assert top.served(first, socket) == 3
        old = {ada.peer_id, brian.peer_id}
        assert {p["peer_id"]: top.name_of(p["process"]) for p in top.room_presence(slug)} == {
            peer: first for peer in {*old, gone.peer}
        }

        killed_at = time.monotonic()
        top.kill(first)
        # Both pages reconnect through nginx, to the other process, as new peers that
        # released their old places (?resume=); each sees the other leave and join again.
        for person in (ada, brian):
            person.page.wait_for_function(
                "(old) => window.rtcMesh.selfId && !old.includes(window.rtcMesh.selfId)",
                arg=list(old),
                timeout=WAIT_MS,
            )
        for person in (ada, brian):
            other = brian if person is ada else ada
            expect(person.tile_of(other)).to_have_attribute("data-state", "connected")
            for peer in old:
                expect(person.page.locator(f'[data-peer="{peer}"]')).to_have_count(0)
        back = time.monotonic() - killed_at  # figures for docs/deploy.md, not thresholds
        print(f"kill -9 {first}: both pages connected again on {second} after {back:.1f} s")
        assert top.served(second, socket) == 2
        # The client that did not come back is a ghost until its presence expires (TTL plus
        # up to one sweep), then it leaves every page.
        for person in (ada, brian):
            expect(person.page.locator(ghost_tile)).to_have_count(0, timeout=WAIT_MS)
        ghost = time.monotonic() - killed_at
        print(
            f"the client that did not come back left the pages {ghost:.1f} s after the kill "
            f"(PRESENCE_TTL {PRESENCE_TTL} s)"
        )
        gone.close()
        expect_full_mesh([ada, brian])
        assert {p["process"] for p in top.room_presence(slug)} == {top.process_id(second)}

        restarted_at = time.monotonic()
        top.restart(first)
        ready = time.monotonic() - restarted_at
        # nginx skips a failed process for fail_timeout, then sends the slug back to it
        top.wait_routed(f"/ws/rooms/{slug}/", first)
        routed = time.monotonic() - killed_at
        print(
            f"{first} answered {ready:.1f} s after its restart; the slug routed to it again "
            f"{routed:.1f} s after the kill"
        )
        with participants(chromium_browser, base, ["Chen"]) as (chen,):
            open_room(chen, base, path)
            expect_in_mesh(chen)
            trio = [ada, brian, chen]
            expect_full_mesh(trio)  # media flows between all three, across the processes
            # No ghost: exactly the three live peers, each on the process that holds it.
            by_process = {p["peer_id"]: top.name_of(p["process"]) for p in top.room_presence(slug)}
            assert by_process == {
                ada.peer_id: second,
                brian.peer_id: second,
                chen.peer_id: first,
            }
        for name in top.web:
            assert "Traceback" not in top.log(name, 10**9), top.log(name)


def test_echo_room_runs_on_the_sched_idle_media_process(chromium_browser, topology):
    top: Topology = topology
    (media,) = top.media
    assert os.sched_getscheduler(top.pid(media)) == os.SCHED_IDLE
    for name in top.web:
        assert os.sched_getscheduler(top.pid(name)) == os.SCHED_OTHER
    with people(chromium_browser, ["Ada"]) as (ada,):
        path = create_server_room(ada, top.base_url, "echo", "Topology Echo")
        slug = path.strip("/").split("/")[-1]
        expect_echo_playing(ada)
        assert top.served_by(f'"WSCONNECT /ws/media/{slug}/"') == [media]


def ffmpeg_child(pid: int) -> int:
    """The FFmpeg a Daphne process started for its live stream (one stream, one child)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and b"ffmpeg" in (stat.parent / "cmdline").read_bytes():
                children.append(int(stat.parent.name))
    (child,) = children
    return child


def publish_in_real_time(top: Topology, slug: str, key: str, chunks, stop: threading.Event):
    """POST each chunk through nginx when its media time comes, as a camera would."""
    started = time.monotonic()
    for seq, chunk in enumerate(chunks):
        if stop.is_set():
            return
        time.sleep(max(0.0, started + chunk.end_ms / 1000 - time.monotonic()))
        status, body = ingest.post_chunk(top, slug, key, seq, chunk.data)
        assert status == 202, (status, body)


def test_live_stream_through_http_ingest_watched_with_hls_js(
    request, tmp_path_factory, browser_context, topology
):
    top: Topology = topology
    chunks = ingest.clip_chunks(request, tmp_path_factory, seconds=40)
    # Standard mode: every segment request must then come from disk. A low-latency stream's
    # segments being written come from the app by design (through nginx:
    # tests/integration/test_growing_segments.py).
    slug, key = ingest.new_stream(top, "Topology Live", low_latency=False)
    stop = threading.Event()
    publisher = threading.Thread(
        target=publish_in_real_time, args=(top, slug, key, chunks, stop), daemon=True
    )
    publisher.start()
    try:
        viewer = browser_context.new_page()
        viewer.goto(f"{top.base_url}/streams/{slug}/hls/")
        expect(viewer.locator("#viewer")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
        expect_stream_playing(viewer)
        expect(viewer.get_by_test_id("player-state")).to_contain_text("hls.js")
        # The encoder killed from outside: a new run (run1/) whose segments nginx serves
        # from disk too, listed after a discontinuity in the app's media playlist.
        (owner,) = top.served_by(f'"POST /streams/{slug}/ingest/"')
        os.kill(ffmpeg_child(top.pid(owner)), signal.SIGKILL)
        stream_dir = top.media_root / "streams" / slug
        deadline = time.monotonic() + WAIT_MS / 1000
        while not list(stream_dir.glob("run1/*.m4s")) and time.monotonic() < deadline:
            time.sleep(0.5)
        restarted = sorted(p.name for p in stream_dir.glob("run1/*.m4s"))
        assert restarted, "no segment from the restarted encoder"
        run1 = f"{top.base_url}/media/streams/{slug}/run1/{restarted[0]}"
        with urllib.request.urlopen(run1) as r:
            assert r.status == 200 and r.headers["Server"].startswith("nginx")
        # The app lists run1 once the pipeline's tick has stitched its manifest (moments
        # after the segment file): wait for it, as a player reloading the playlist would.
        playlist, media = "", f"{top.base_url}/media/streams/{slug}/media_0.m3u8"
        while "run1/" not in playlist and time.monotonic() < deadline:
            with urllib.request.urlopen(media) as r:
                playlist = r.read().decode()
            time.sleep(0 if "run1/" in playlist else 0.5)
        assert "#EXT-X-DISCONTINUITY" in playlist and "run1/" in playlist, playlist[-400:]
        expect_stream_playing(viewer)
    finally:
        stop.set()
        publisher.join(timeout=60)
    # Every chunk reached one web process (hash on the slug), where the FFmpeg runs.
    ingest_line = f'"POST /streams/{slug}/ingest/"'
    (owner,) = top.served_by(ingest_line)
    assert owner in top.web
    assert top.served(owner, ingest_line) >= 2
    # Segments came from disk through nginx; only the media playlists went to the app.
    segments = sorted(p.name for p in (top.media_root / "streams" / slug).glob("*.m4s"))
    assert segments
    nginx_log = top.nginx.access_log.read_text()
    assert re.search(rf'"GET /media/streams/{slug}/[^" ]+\.m4s HTTP/1\.1" 200', nginx_log)
    for name in top.processes:
        assert not re.search(rf"GET /media/streams/{slug}/\S+\.m4s", top.log(name, 10**9))
    assert top.served_by(f"/media/streams/{slug}/media_0.m3u8")
    segment = urllib.request.urlopen(f"{top.base_url}/media/streams/{slug}/{segments[-1]}")
    assert segment.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert segment.headers["Access-Control-Allow-Origin"] == "*"
    assert segment.headers["Server"].startswith("nginx")
    assert ingest.stop_http(top, slug, key)[0] in (200, 202)


def test_admin_login_through_nginx(page, topology):
    top: Topology = topology
    top.create_superuser("admin", PASSWORD)
    static = []
    page.on("response", lambda r: static.append(r) if "/static/admin/" in r.url else None)
    page.goto(f"{top.base_url}/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_contain_text("rtcsite admin")
    expect(page.locator("#user-tools")).to_contain_text("admin")
    assert static and all(
        r.status == 200 and r.headers["server"].startswith("nginx") for r in static
    )
    assert top.served_by('"POST /admin/login/')[0] in top.web
    # The admin's health page lists every process of the deployment, with its unit's role
    # (each publishes a record every HEALTH_PUBLISH_INTERVAL; the first comes at start-up).
    deadline = time.monotonic() + 30
    while True:
        data = page.request.get(f"{top.base_url}/admin/health.json").json()
        roles = sorted(p["role"] for p in data["processes"])
        if roles == ["media", "web", "web"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert roles == ["media", "web", "web"]
    assert {p["pid"] for p in data["processes"]} == {top.pid(name) for name in top.processes}


def test_probes_and_metrics_only_on_the_monitoring_server(topology):
    """/healthz and /readyz answer through both servers; /metrics only on the monitoring
    one, for every process of the host (one multi-process folder, the env file's)."""
    top: Topology = topology

    def get(url: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    for base in (top.base_url, top.monitor_url):
        assert get(f"{base}/healthz")[0] == 200
        status, body = get(f"{base}/readyz")
        assert status == 200
        assert json.loads(body)["checks"] == {"database": "ok", "redis": "ok"}
    assert get(f"{top.base_url}/metrics")[0] == 404
    status, text = get(f"{top.monitor_url}/metrics")
    assert status == 200
    roles = set(re.findall(r'rtcsite_process_cpu_ratio\{pid="\d+",role="(\w+)"\}', text))
    assert roles == {"web", "media"}
    assert get(f"{top.monitor_url}/")[0] == 404
