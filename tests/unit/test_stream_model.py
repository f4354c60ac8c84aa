"""Stream model, publish keys, pages, admin, retention and the media path rules."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from identity.services import Identity
from streaming import media, status
from streaming.models import Stream, StreamStatus, hash_publish_key
from streaming.services import create_stream, list_streams, rotate_publish_key
from streaming.status import mark_stale_streams

pytestmark = pytest.mark.django_db
ALICE = Identity(id="a" * 16, name="alice")


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


# --- model and keys ----------------------------------------------------------------------
def test_create_stream_returns_key_once_and_stores_only_its_hash():
    stream, key = create_stream("  My   show ", ALICE)
    assert stream.title == "My show"
    assert re.fullmatch(r"my-show-[a-z0-9]{6}", stream.slug)
    assert stream.status == StreamStatus.IDLE
    assert stream.owner_id == ALICE.id and stream.owner_name == "alice"
    assert key.startswith("sk_") and len(key) > 40
    row = Stream.objects.get(pk=stream.pk)
    assert key not in str(row.__dict__)
    assert row.publish_key_hash == hash_publish_key(key)
    assert row.check_publish_key(key)
    for wrong in ("", None, key[:-1], key + "x", "x" * 500):
        assert not row.check_publish_key(wrong)


def test_two_streams_with_one_title_get_distinct_slugs_and_keys():
    (a, ka), (b, kb) = create_stream("Show", ALICE), create_stream("Show", ALICE)
    assert a.slug != b.slug and ka != kb
    assert not a.check_publish_key(kb)


def test_rotate_publish_key_invalidates_the_old_one():
    stream, old = create_stream("Show", ALICE)
    new = rotate_publish_key(stream)
    stream.refresh_from_db()
    assert new != old
    assert stream.check_publish_key(new) and not stream.check_publish_key(old)


def test_live_duration_and_urls():
    stream, _ = create_stream("Show", ALICE)
    assert stream.live_duration() is None
    stream.started_at = timezone.now() - timedelta(seconds=90)
    stream.ended_at = stream.started_at + timedelta(seconds=42)
    assert stream.live_duration() == timedelta(seconds=42)
    assert stream.hls_url == f"/media/streams/{stream.slug}/master.m3u8"
    assert stream.dash_url == f"/media/streams/{stream.slug}/manifest.mpd"
    assert stream.get_absolute_url() == f"/streams/{stream.slug}/"


def test_list_streams_live_first_and_hides_failed_and_purged():
    live, _ = create_stream("Live one", ALICE)
    idle, _ = create_stream("Idle one", ALICE)
    failed, _ = create_stream("Failed one", ALICE)
    purged, _ = create_stream("Purged one", ALICE)
    Stream.objects.filter(pk=live.pk).update(status=StreamStatus.LIVE)
    Stream.objects.filter(pk=failed.pk).update(status=StreamStatus.FAILED)
    Stream.objects.filter(pk=purged.pk).update(
        status=StreamStatus.ENDED, files_purged_at=timezone.now()
    )
    assert [s.slug for s in list_streams()] == [live.slug, idle.slug]


def test_stale_live_streams_are_marked_failed():
    stream, _ = create_stream("Show", ALICE)
    Stream.objects.filter(pk=stream.pk).update(status=StreamStatus.LIVE)
    assert mark_stale_streams() == 0
    assert mark_stale_streams(timezone.now() + timedelta(minutes=5)) == 1
    stream.refresh_from_db()
    assert stream.status == StreamStatus.FAILED and "stopped" in stream.reason


def test_the_lease_decides_takeover_and_staleness(settings):
    """A live row's lease (``worker_seen_at``): fresh, nobody may claim it and maintenance
    leaves it alone even if the row was not otherwise updated; expired, exactly one claim
    wins; ``mark_stale_streams`` fails it only later (``stale_after`` >= the lease), so
    ingest may take it over first."""
    settings.STREAM_OWNER_LEASE = 10.0
    stream, _ = create_stream("Show", ALICE)
    now = timezone.now()
    long_ago = now - timedelta(hours=1)
    Stream.objects.filter(pk=stream.pk).update(
        status=StreamStatus.LIVE, worker="host:1", worker_seen_at=now
    )
    Stream.objects.filter(pk=stream.pk).update(updated_at=long_ago)  # no progress saved
    stream.refresh_from_db()
    assert 9 < status.lease_left(stream) <= 10
    assert not status._claim_sync(stream.pk, "host:1")
    assert mark_stale_streams() == 0

    Stream.objects.filter(pk=stream.pk).update(worker_seen_at=now - timedelta(seconds=11))
    stream.refresh_from_db()
    assert status.lease_left(stream) < 0
    assert mark_stale_streams() == 0  # not before stale_after(): a takeover may come
    assert not status._claim_sync(stream.pk, "host:2")  # not the holder named
    assert status._claim_sync(stream.pk, "host:1")
    assert not status._claim_sync(stream.pk, "host:1")  # one winner
    stream.refresh_from_db()
    assert stream.worker != "host:1" and status.lease_left(stream) > 9
    # The claimer's saves go through; a process it was taken from writes nothing more.
    assert status._save_owned_sync(stream.pk, {"segments_written": 3})
    Stream.objects.filter(pk=stream.pk).update(worker="host:9")
    assert not status._save_owned_sync(stream.pk, {"segments_written": 4})
    assert Stream.objects.get(pk=stream.pk).segments_written == 3
    Stream.objects.filter(pk=stream.pk).update(worker_seen_at=timezone.now())
    assert status.stale_after() >= settings.STREAM_OWNER_LEASE
    later = timezone.now() + timedelta(seconds=status.stale_after() + 1)
    assert mark_stale_streams(later) == 1


# --- pages -------------------------------------------------------------------------------
def test_create_page_shows_the_key_once_then_never():
    client = Client()
    response = client.post("/streams/new/", {"title": "Camera one"})
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    key = re.search(r'data-testid="new-key">(sk_[^<]+)<', page).group(1)
    stream = Stream.objects.get(title="Camera one")
    assert stream.check_publish_key(key)
    again = client.get(response["Location"]).content.decode()
    assert key not in again and 'data-testid="new-key"' not in again


def test_create_refuses_an_empty_title():
    response = Client().post("/streams/new/", {"title": "   "}, follow=True)
    assert "Give the stream a title." in response.content.decode()
    assert not Stream.objects.exists()


def test_lobby_streams_tab_lists_streams_honestly():
    stream, _ = create_stream("Lobby show", ALICE)
    html = Client().get("/").content.decode()
    assert f'data-stream="{stream.slug}"' in html
    assert 'data-testid="unavailable-streams"' not in html  # the viewer pages exist
    assert f'data-testid="viewers-{stream.slug}"' in html
    assert f"/streams/{stream.slug}/hls/" not in html  # idle: nothing to watch yet
    stream.status = "live"
    stream.save()
    html = Client().get("/").content.decode()
    assert f'href="/streams/{stream.slug}/hls/"' in html
    assert f'href="/streams/{stream.slug}/dash/"' in html


def test_status_endpoint_and_detail_page():
    stream, _ = create_stream("Show", ALICE)
    client = Client()
    body = client.get(f"/streams/{stream.slug}/status/").json()
    assert body["status"] == "idle" and body["hls"].endswith("master.m3u8")
    assert client.get("/streams/nope-000000/status/").status_code == 404
    assert client.get(f"/streams/{stream.slug}/").status_code == 200
    assert client.get("/streams/nope-000000/").status_code == 404


def test_http_ingest_refuses_without_or_with_a_wrong_key():
    stream, key = create_stream("Show", ALICE)
    client = Client()
    url = f"/streams/{stream.slug}/ingest/"
    assert client.post(url, {"seq": "0"}).status_code == 401
    response = client.post(url, {"seq": "0"}, HTTP_AUTHORIZATION="Bearer sk_wrong")
    assert response.status_code == 403 and response.json()["error"] == "bad-key"
    response = client.post("/streams/nope-000000/ingest/", {}, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 404
    assert client.get(url).status_code == 405


# --- admin -------------------------------------------------------------------------------
@pytest.fixture
def admin_client():
    user = User.objects.create_superuser("root", "root@example.org", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_admin_list_filters_and_columns(admin_client):
    stream, _ = create_stream("Admin show", ALICE)
    Stream.objects.filter(pk=stream.pk).update(
        status=StreamStatus.LIVE,
        started_at=timezone.now() - timedelta(seconds=65),
        bytes_received=3 * 1024 * 1024,
        segments_written=12,
        renditions=["480p", "360p"],
    )
    html = admin_client.get("/admin/streaming/stream/").content.decode()
    assert "Admin show" in html and "3.0 MB" in html and "480p, 360p" in html
    assert "1:0" in html  # live for 1:05-ish
    assert f'href="/streams/{stream.slug}/"' in html
    assert f"/media/streams/{stream.slug}/master.m3u8" in html
    assert f'href="/streams/{stream.slug}/hls/"' in html  # the viewer pages
    assert f'href="/streams/{stream.slug}/dash/"' in html
    assert "?status__exact=live" in html  # status filter
    filtered = admin_client.get("/admin/streaming/stream/?status__exact=ended").content.decode()
    assert "Admin show" not in filtered


def test_admin_rotate_action_shows_new_key_once(admin_client):
    stream, old = create_stream("Rotate me", ALICE)
    response = admin_client.post(
        "/admin/streaming/stream/",
        {"action": "rotate_keys", "_selected_action": [stream.pk]},
        follow=True,
    )
    html = response.content.decode()
    new = re.search(r"(sk_[A-Za-z0-9_-]{40,})", html).group(1)
    stream.refresh_from_db()
    assert stream.check_publish_key(new) and not stream.check_publish_key(old)
    assert new not in admin_client.get("/admin/streaming/stream/").content.decode()


# --- retention ---------------------------------------------------------------------------
def _with_files(stream: Stream) -> None:
    folder = stream.media_dir()
    folder.mkdir(parents=True)
    (folder / "master.m3u8").write_text("#EXTM3U\n")
    (folder / "chunk-stream0-00001.m4s").write_bytes(b"x" * 100)


def test_purge_streams_dry_run_then_real(settings):
    settings.STREAM_RETENTION_HOURS = 24
    old, _ = create_stream("Old", ALICE)
    recent, _ = create_stream("Recent", ALICE)
    live, _ = create_stream("Live", ALICE)
    for stream in (old, recent, live):
        _with_files(stream)
    Stream.objects.filter(pk=old.pk).update(
        status=StreamStatus.ENDED, ended_at=timezone.now() - timedelta(hours=30)
    )
    Stream.objects.filter(pk=recent.pk).update(
        status=StreamStatus.FAILED, ended_at=timezone.now() - timedelta(hours=2)
    )
    Stream.objects.filter(pk=live.pk).update(status=StreamStatus.LIVE)
    orphan = old.media_dir().parent / "orphan-folder"
    orphan.mkdir()
    (orphan / "x.m4s").write_bytes(b"y")
    os.utime(orphan, (0, 0))

    out = StringIO()
    call_command("purge_streams", "--dry-run", stdout=out)
    assert f"would delete {old.slug}" in out.getvalue()
    assert "orphan folder orphan-folder" in out.getvalue()
    assert old.media_dir().exists() and orphan.exists()

    out = StringIO()
    call_command("purge_streams", stdout=out)
    assert not old.media_dir().exists() and not orphan.exists()
    assert recent.media_dir().exists() and live.media_dir().exists()
    old.refresh_from_db()
    assert old.files_purged_at is not None
    out = StringIO()
    call_command("purge_streams", "--hours", "1", stdout=out)
    assert not recent.media_dir().exists() and live.media_dir().exists()


# --- media path rules (HTTP behaviour: tests/integration/test_media_serving.py) ----------
def test_media_resolve_rules(media_root, tmp_path):
    folder = media_root / "streams" / "show-abc123"
    folder.mkdir(parents=True)
    (folder / "master.m3u8").write_text("#EXTM3U\n")
    (folder / "notes.txt").write_text("no")
    secret = tmp_path / "secret.m3u8"
    secret.write_text("secret")
    (folder / "link.m3u8").symlink_to(secret)
    (folder / "run1").mkdir()  # a restarted encoder's files (streaming/runs.py)
    (folder / "run1" / "chunk-stream0-00001.m4s").write_bytes(b"x")
    (folder / "run1" / "link.m3u8").symlink_to(secret)
    (folder / "run0").mkdir()
    (folder / "run0" / "master.m3u8").write_text("#EXTM3U\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "master.m3u8").write_text("#EXTM3U\n")
    (outside / "chunk-stream0-00001.m4s").write_bytes(b"x")
    (media_root / "streams" / "linked-abc123").symlink_to(outside)  # a folder that is a link
    (folder / "run2").symlink_to(outside)  # a run folder that is a link
    assert media.resolve("show-abc123/master.m3u8") is not None
    assert media.resolve("show-abc123/run1/chunk-stream0-00001.m4s") is not None
    for bad in (
        "linked-abc123/master.m3u8",
        "show-abc123/run2/chunk-stream0-00001.m4s",
        "show-abc123/run1/link.m3u8",
        "show-abc123/run0/master.m3u8",
        "show-abc123/run1/../master.m3u8",
        "show-abc123/run1/run1/chunk-stream0-00001.m4s",
        "show-abc123/../show-abc123/master.m3u8",
        "../secret.m3u8",
        "show-abc123/link.m3u8",
        "show-abc123/notes.txt",
        "show-abc123/.hidden.m3u8",
        "show-abc123/sub/master.m3u8",
        "/etc/passwd",
        "show-abc123/%2e%2e",
        "show-abc123\\master.m3u8",
        "Show/master.m3u8",
        "show-abc123/missing.m3u8",
    ):
        assert media.resolve(bad) is None, bad


def test_media_root_may_sit_behind_a_symlink(settings, tmp_path):
    real = tmp_path / "disk"
    (real / "streams" / "show-abc123").mkdir(parents=True)
    (real / "streams" / "show-abc123" / "master.m3u8").write_text("#EXTM3U\n")
    (tmp_path / "media").symlink_to(real)
    settings.MEDIA_ROOT = tmp_path / "media"
    found = media.resolve("show-abc123/master.m3u8")
    assert found is not None and found[0].read_text() == "#EXTM3U\n"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=10-", (10, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=990-2000", (990, 999)),
        ("bytes=1000-", False),
        ("bytes=-0", False),
        ("bytes=5-1", None),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
    ],
)
def test_parse_range(header, expected):
    assert media.parse_range(header, 1000) == expected


# --- settings ----------------------------------------------------------------------------
@pytest.mark.django_db(False)
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAM_SEGMENT_SECONDS": "fast"}, "STREAM_SEGMENT_SECONDS='fast' is not a number"),
        ({"STREAM_FPS": "thirty"}, "STREAM_FPS='thirty' is not an integer"),
        ({"STREAM_IDLE_TIMEOUT": "-1"}, "STREAM_IDLE_TIMEOUT=-1.0 must be >= 0"),
        (
            {"STREAM_MAX_CHUNK_BYTES": "9000000", "STREAM_QUEUE_BYTES": "8000000"},
            "STREAM_MAX_CHUNK_BYTES must not exceed STREAM_QUEUE_BYTES",
        ),
    ],
)
def test_stream_settings_refuse_bad_values(env, message):
    from tests.unit.test_settings import run_settings

    done = run_settings(**env)
    assert done.returncode != 0 and message in done.stderr, done.stderr[-500:]


@pytest.mark.django_db(False)
def test_stream_settings_from_env_reach_the_pipeline(settings):
    from streaming.pipeline import PipelineConfig

    settings.STREAM_LADDER = "480,240"
    settings.STREAM_SEGMENT_SECONDS = 0.5
    settings.STREAM_QUEUE_BYTES = 1 << 20
    settings.STREAM_MAX_CHUNK_BYTES = 256 << 10
    settings.STREAM_IDLE_TIMEOUT = 0
    config = PipelineConfig.from_settings()
    assert [r.height for r in config.ladder] == [480, 240]
    assert config.encoder.segment_seconds == 0.5
    assert config.max_queue_bytes == 1 << 20 and config.max_chunk_bytes == 256 << 10
    assert config.idle_timeout is None
