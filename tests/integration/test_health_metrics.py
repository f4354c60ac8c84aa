"""Issue 15.5 on real parts: two Daphne processes sharing Redis and one
PROMETHEUS_MULTIPROC_DIR, scraped by a real Prometheus (Debian's); the admin's health page
with both processes' records; JSON logs naming room and peer.

The servers, sockets and Prometheus are made once for the module: mesh room sockets on
both processes and a stream viewer stay open across the tests, which run in file order (the
last one kills a process).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import pytest
import redis
from websockets.sync.client import connect

from tests.conftest import reachable_redis_url
from tests.integration.test_recordings_private import get
from tests.integration.test_ws_auth_daphne import page_token
from tests.support.daphne import DaphneServer
from tests.support.ingest import clip_chunks, new_stream, post_chunk, stop_http
from tests.support.prometheus import Prometheus

SETUP = """
import json
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from rooms.models import Room

def session(user):
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return store.session_key

Room.objects.create(slug="observed", title="Observed", kind="mesh")
User = get_user_model()
print(json.dumps({
    "staff": session(User.objects.create_user("ops", "o@example.org", "pw", is_staff=True)),
    "visitor": session(User.objects.create_user("bob", "b@example.org", "pw")),
}))
"""


def recv_type(ws, kind: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = json.loads(ws.recv(timeout=30))
        if message["type"] == kind:
            return message
    raise AssertionError(f"no {kind} message")


@pytest.fixture(scope="module")
def site(redis_url_module):
    prefix = f"rtcsite-test-{uuid.uuid4().hex[:10]}"
    multiproc = tempfile.mkdtemp(prefix="rtcsite-prom-mp-")
    env = {
        "REDIS_URL": redis_url_module,
        "CHANNEL_LAYER_PREFIX": f"{prefix}-layer",
        "PRESENCE_KEY_PREFIX": f"{prefix}-presence",
        "CACHE_KEY_PREFIX": f"{prefix}-cache",
        "PROMETHEUS_MULTIPROC_DIR": multiproc,
        "HEALTH_PUBLISH_INTERVAL": "1",
        "PROCESS_ROLE": "web",
        "LOG_FORMAT": "json",
    }
    first = DaphneServer(env=env)
    second = first.sibling()
    prometheus = Prometheus(targets=[f"127.0.0.1:{first.port}"])
    sockets = []
    opened = contextlib.ExitStack()
    try:
        first.start()
        second.start(migrate=False)
        sessions = json.loads(first.manage("shell", "-c", SETUP).strip().splitlines()[-1])
        slug, _ = new_stream(first, "Observed show")
        peers = []
        for server in (first, first, second):
            token, _ = page_token(server)
            url = f"{server.ws_url}/ws/rooms/observed/?token={token}"
            ws = opened.enter_context(connect(url, origin=server.url))
            peers.append(recv_type(ws, "welcome")["you"]["peer"])
            sockets.append(ws)
        token, _ = page_token(second)
        watch = f"{second.ws_url}/ws/streams/{slug}/watch/?token={token}"
        viewer = opened.enter_context(connect(watch, origin=second.url))
        recv_type(viewer, "welcome")
        sockets.append(viewer)
        # a candidate to a peer that is not there: refused, and logged with room and peer
        sockets[0].send(
            json.dumps({"type": "candidate", "to": "0" * 12, "candidate": {"candidate": ""}})
        )
        assert recv_type(sockets[0], "error")["code"] == "unknown-peer"
        prometheus.start()
        yield {
            "first": first,
            "second": second,
            "prometheus": prometheus,
            "sessions": sessions,
            "peers": peers,
            "sockets": sockets,
            "multiproc": multiproc,
        }
    finally:
        opened.close()
        prometheus.stop()
        first.stop()
        second.stop()
        client = redis.Redis.from_url(redis_url_module)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        shutil.rmtree(multiproc, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_url_module() -> str:
    return reachable_redis_url()


def health_data(server, session: str | None) -> tuple[int, dict, bytes]:
    return get(server, "/admin/health.json", session)


def test_probes_answer_without_a_session(site):
    first = site["first"]
    status, headers, body = get(first, "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert "set-cookie" not in headers
    status, _, body = get(first, "/readyz")
    assert (status, json.loads(body)) == (
        200,
        {"status": "ok", "checks": {"database": "ok", "redis": "ok"}},
    )


def test_admin_health_page_shows_both_processes_to_staff_only(site):
    first, second = site["first"], site["second"]
    status, headers, _ = health_data(first, None)
    assert status == 302 and "/admin/login/" in headers["location"]
    status, headers, _ = health_data(first, site["sessions"]["visitor"])
    assert status == 302 and "/admin/login/" in headers["location"]

    expected = {first.pid: {"mesh": 2}, second.pid: {"mesh": 1, "viewer": 1}}
    deadline = time.monotonic() + 30
    while True:
        status, _, body = health_data(second, site["sessions"]["staff"])
        assert status == 200
        data = json.loads(body)
        seen = {
            p["pid"]: {kind: n for kind, n in p["sockets"].items() if n} for p in data["processes"]
        }
        if seen == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert seen == expected
    assert data["checks"] == {"database": "ok", "redis": "ok"}
    for record in data["processes"]:
        assert record["role"] == "web"
        assert record["rooms"] == 1
        assert record["checks"] == {"database": "ok", "redis": "ok"}

    status, _, page = get(first, "/admin/health/", site["sessions"]["staff"])
    assert status == 200
    assert b"js/admin-health.js" in page and b"<script>" not in page
    status, _, index = get(first, "/admin/", site["sessions"]["staff"])
    assert status == 200 and b'href="/admin/health/"' in index


def test_json_log_lines_name_room_and_peer(site):
    first = site["first"]
    lines = [line for line in first.log_path.read_text().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    refused = [r for r in records if "to unknown peer" in r["message"]]
    assert refused, f"no unknown-peer line in the log:\n{first.log()}"
    assert refused[0]["room"] == "observed"
    assert refused[0]["peer"] == site["peers"][0]
    assert refused[0]["level"] == "INFO" and refused[0]["conn"]


def test_a_live_stream_shows_its_encoder_in_records_and_metrics(site, request, tmp_path_factory):
    first, prometheus = site["first"], site["prometheus"]
    chunks = clip_chunks(request, tmp_path_factory, seconds=2)
    slug, key = new_stream(first, "Sampled show")
    for seq, chunk in enumerate(chunks):
        status, body = post_chunk(first, slug, key, seq, chunk.data)
        assert status in (200, 202), body
    deadline = time.monotonic() + 30
    while True:
        data = json.loads(health_data(first, site["sessions"]["staff"])[2])
        streams = [s for p in data["processes"] if p["pid"] == first.pid for s in p["streams"]]
        if streams or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [(s["slug"], s["state"]) for s in streams] == [(slug, "live")]
    assert isinstance(streams[0]["ffmpeg_pid"], int)
    prometheus.wait_for_value("sum(rtcsite_ingest_chunks_total)", len(chunks))
    prometheus.wait_for_value("sum(rtcsite_ingest_bytes_total)", sum(len(c.data) for c in chunks))
    prometheus.wait_for_value("sum(rtcsite_live_streams)", 1)
    assert stop_http(first, slug, key)[0] == 200
    prometheus.wait_for_value('sum(rtcsite_ffmpeg_exits_total{outcome="ok"})', 1)
    prometheus.wait_for_value("sum(rtcsite_live_streams)", 0)


def test_prometheus_counts_sockets_of_both_processes(site):
    prometheus, second = site["prometheus"], site["second"]
    # one target (the first process) reports the host: both processes' sockets
    prometheus.wait_for_value('sum(rtcsite_sockets{kind="mesh"})', 3)
    prometheus.wait_for_value('sum(rtcsite_sockets{kind="viewer"})', 1)
    prometheus.wait_for_value('sum(rtcsite_joins_total{scope="room"})', 3)
    prometheus.wait_for_value('sum(rtcsite_ws_errors_total{code="unknown-peer"})', 1)
    # a crashed process's sockets leave the gauge (its live-gauge files are reaped)...
    second.kill()
    prometheus.wait_for_value('sum(rtcsite_sockets{kind="mesh"})', 2)
    # (no live process has a viewer series now: "or vector(0)" reads that as 0)
    prometheus.wait_for_value('sum(rtcsite_sockets{kind="viewer"}) or vector(0)', 0)
    # ...while its counts stay in the totals
    prometheus.wait_for_value('sum(rtcsite_joins_total{scope="room"})', 3)

    # and /metrics is closed to a scraper outside METRICS_ALLOW_FROM
    request = urllib.request.Request(
        site["first"].url + "/metrics", headers={"X-Forwarded-For": "203.0.113.9"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 404
