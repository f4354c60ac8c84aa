"""The documented deployment with real parts (tests/support/topology.py): Debian's nginx with
the site file of deploy/, two web Daphne processes and one media Daphne under SCHED_IDLE on
Unix sockets, one Redis, a fresh PostgreSQL database, collectstatic'd files. Chromium talks
to nginx only; which process served what is read from the processes' access logs and the
``process`` of their presences.

- a mesh room whose web process is killed with ``kill -9``: its two pages reconnect through
  nginx to the other process (``?resume=``) and see each other leave and come back; the
  killed process restarts, nginx sends the room's slug to it again, a third page lands there:
  one room spanning both processes, media flowing between all three, no ghost after the TTL;
- an echo room served by the media process;
- a live stream published through the HTTP ingest (every chunk to one web process) and
  watched with hls.js, segments served by nginx from MEDIA_ROOT;
- the admin login, its static files from nginx.
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.e2e.test_mesh import (
    create_room,
    expect_connected_to,
    expect_full_mesh,
    expect_in_mesh,
    open_room,
    participants,
)
from tests.e2e.test_server_rooms import create_room as create_server_room
from tests.e2e.test_server_rooms import expect_playing as expect_echo_playing
from tests.e2e.test_server_rooms import people
from tests.e2e.test_stream_viewers import expect_playing as expect_stream_playing
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


def test_mesh_room_spans_both_web_processes_after_one_is_killed(chromium_browser, topology):
    top: Topology = topology
    base = top.base_url
    with participants(chromium_browser, base, ["Ada", "Brian"]) as (ada, brian):
        path = create_room(ada, "Topology Mesh")
        slug = path.strip("/").split("/")[-1]
        socket = f'"WSCONNECT /ws/rooms/{slug}/"'
        open_room(brian, base, path)
        expect_full_mesh([ada, brian])
        # nginx hashes the slug: both sockets on one web process, none on the media one
        (first,) = top.served_by(socket)
        (second,) = (name for name in top.web if name != first)
        assert top.served(first, socket) == 2
        old = {ada.peer_id, brian.peer_id}
        assert {p["peer_id"]: top.name_of(p["process"]) for p in top.room_presence(slug)} == {
            peer: first for peer in old
        }

        top.kill(first)
        # Both pages reconnect through nginx, to the other process, as new peers that
        # released their old places (?resume=); each sees the other leave and join again.
        for person in (ada, brian):
            person.page.wait_for_function(
                "(old) => window.rtcMesh.selfId && !old.includes(window.rtcMesh.selfId)",
                arg=list(old),
                timeout=WAIT_MS,
            )
        expect_full_mesh([ada, brian])
        for person in (ada, brian):
            for peer in old:
                expect(person.page.locator(f'[data-peer="{peer}"]')).to_have_count(0)
        assert top.served(second, socket) == 2
        assert {p["process"] for p in top.room_presence(slug)} == {top.process_id(second)}

        top.restart(first)
        # nginx skips a failed process for fail_timeout, then sends the slug back to it
        top.wait_routed(f"/ws/rooms/{slug}/", first)
        with participants(chromium_browser, base, ["Chen"]) as (chen,):
            open_room(chen, base, path)
            expect_in_mesh(chen)
            trio = [ada, brian, chen]
            expect_full_mesh(trio)  # media flows between all three, across the processes
            by_process = {p["peer_id"]: top.name_of(p["process"]) for p in top.room_presence(slug)}
            assert by_process == {
                ada.peer_id: second,
                brian.peer_id: second,
                chen.peer_id: first,
            }

            # No ghost once the TTL has passed: the dead process's presences were released
            # by the resumes (or expired), nobody else's was lost.
            time.sleep(PRESENCE_TTL + 4)
            assert {p["peer_id"] for p in top.room_presence(slug)} == {
                ada.peer_id,
                brian.peer_id,
                chen.peer_id,
            }
            for person in trio:
                expect_connected_to(person, [p for p in trio if p is not person])
        assert "Traceback" not in top.log(second, 10**6)


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
    slug, key = ingest.new_stream(top, "Topology Live")
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
    nginx_log = (top.nginx.workdir / "access.log").read_text()
    assert re.search(rf'"GET /media/streams/{slug}/[^" ]+\.m4s HTTP/1\.1" 200', nginx_log)
    assert not top.served_by(f"/media/streams/{slug}/{segments[0]}")
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
    assert top.served_by('"POST /admin/login/"')[0] in top.web
