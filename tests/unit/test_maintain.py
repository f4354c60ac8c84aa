"""``manage.py maintain`` (issue 14.8/14.9): one idempotent job deletes stream media and
recordings past retention, expired sessions, long-idle visitor rooms and never-used streams,
and nothing else."""

from __future__ import annotations

import io
import os
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.utils import timezone

from presence.backends import REDIS, PeerInfo
from presence.backends.redis import RedisPresenceBackend
from rooms.models import Room, RoomKind
from signaling.models import Recording
from streaming.models import Stream, StreamStatus

pytestmark = pytest.mark.django_db

VISITOR = "00000000000000ee"


def ago(hours: float):
    return timezone.now() - timedelta(hours=hours)


def maintain(*args: str) -> str:
    out = io.StringIO()
    call_command("maintain", *args, stdout=out)
    return out.getvalue()


async def sit_in(room: str) -> None:
    """Someone in ``room``, as the site's presence (real Redis) knows across processes."""
    backend = RedisPresenceBackend.from_settings(django_settings)
    try:
        await backend.track_and_list(
            room, "p1", PeerInfo(user_id=VISITOR, name="sitter", process="x:1")
        )
    finally:
        await backend.close()


@pytest.fixture
def site(settings, tmp_path, redis_url, redis_prefix):
    """A site after a month of visitors: some of everything, old and new."""
    settings.REDIS_URL = redis_url
    settings.PRESENCE_KEY_PREFIX = redis_prefix
    settings.PRESENCE_BACKEND = REDIS
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.RECORDINGS_ROOT = tmp_path / "recordings"
    settings.STREAM_RETENTION_HOURS = 72
    settings.RECORDING_RETENTION_HOURS = 720
    settings.ROOM_IDLE_DELETE_HOURS = 720
    settings.STREAM_IDLE_DELETE_HOURS = 168
    rec = tmp_path / "recordings"
    rec.mkdir()

    def recording(name: str, ended_hours: float | None, started_hours: float) -> None:
        (rec / name).write_bytes(b"webm")
        row = Recording.objects.create(
            room_slug="r", room_kind="echo", participant="p", user_id=VISITOR, file=name
        )
        Recording.objects.filter(pk=row.pk).update(
            started_at=ago(started_hours),
            ended_at=None if ended_hours is None else ago(ended_hours),
            status=Recording.Status.RECORDING if ended_hours is None else Recording.Status.DONE,
        )

    recording("old.webm", ended_hours=800, started_hours=801)
    recording("new.webm", ended_hours=1, started_hours=2)
    recording("lost.webm", ended_hours=None, started_hours=900)  # its process died
    recording("running.webm", ended_hours=None, started_hours=0.1)
    (rec / "orphan-old.webm").write_bytes(b"x")
    os.utime(rec / "orphan-old.webm", (time.time() - 800 * 3600,) * 2)
    (rec / "orphan-new.webm").write_bytes(b"x")

    for slug, status, ended, started in [
        ("ended-old", StreamStatus.ENDED, 100, True),
        ("ended-new", StreamStatus.ENDED, 1, True),
        ("unused-old", StreamStatus.IDLE, None, False),
        ("unused-new", StreamStatus.IDLE, None, False),
    ]:
        Stream.objects.create(slug=slug, title=slug, status=status, owner_id=VISITOR)
        folder = settings.MEDIA_ROOT / "streams" / slug
        folder.mkdir(parents=True)
        (folder / "master.m3u8").write_text("#EXTM3U\n")
        Stream.objects.filter(slug=slug).update(
            ended_at=None if ended is None else ago(ended),
            started_at=ago(200) if started else None,
            updated_at=ago(200 if slug.endswith("old") else 1),
        )

    for slug, by, pinned, idle in [
        ("spam-old", VISITOR, False, 800),
        ("spam-new", VISITOR, False, 1),
        ("pinned-old", VISITOR, True, 800),
        ("admin-old", "", False, 800),
        ("occupied-old", VISITOR, False, 800),
    ]:
        Room.objects.create(slug=slug, title=slug, kind=RoomKind.MESH, created_by=by, pinned=pinned)
        Room.objects.filter(slug=slug).update(last_active_at=ago(idle))
    async_to_sync(sit_in)("occupied-old")

    for expiry in (-1, 1):
        session = SessionStore()
        session["n"] = expiry
        session.set_expiry(expiry * 3600)
        session.create()
    return tmp_path


def state(tmp_path) -> dict[str, set[str]]:
    return {
        "recordings": set(Recording.objects.values_list("file", flat=True)),
        "recording files": {p.name for p in (tmp_path / "recordings").iterdir()},
        "stream folders": {p.name for p in (tmp_path / "media" / "streams").iterdir()},
        "streams": set(Stream.objects.values_list("slug", flat=True)),
        "rooms": set(Room.objects.values_list("slug", flat=True)),
        "sessions": {str(s.get_decoded()["n"]) for s in Session.objects.all()},
    }


def test_maintain_deletes_what_outlived_its_time_and_nothing_else(site):
    before = state(site)
    assert "would delete" in maintain("--dry-run")
    assert state(site) == before  # a dry run only lists

    maintain()
    after = state(site)
    assert after["recordings"] == {"new.webm", "running.webm"}
    assert after["recording files"] == {"new.webm", "running.webm", "orphan-new.webm"}
    assert after["stream folders"] == {"ended-new", "unused-new"}
    assert after["streams"] == {"ended-old", "ended-new", "unused-new"}  # ended rows stay
    assert after["rooms"] == {"spam-new", "pinned-old", "admin-old", "occupied-old"}
    assert after["sessions"] == {"1"}

    maintain()  # idempotent: a second run finds nothing and changes nothing
    assert state(site) == after


def test_maintain_forgets_the_addresses_of_streams_no_longer_live(settings, tmp_path):
    """Only live streams are counted by address (streaming.limits): ended, failed and idle
    ones keep none after a run; a live one keeps its address."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.RECORDINGS_ROOT = tmp_path / "recordings"
    rows = {
        state: Stream.objects.create(
            slug=f"s-{state}", title=state, status=state, address="192.0.2.7"
        )
        for state in (StreamStatus.LIVE, StreamStatus.ENDED, StreamStatus.FAILED, StreamStatus.IDLE)
    }
    assert "would delete the client address of 3 stream(s)" in maintain("--dry-run")
    assert Stream.objects.filter(address="192.0.2.7").count() == 4
    maintain()
    kept = {
        s.status: s.address for s in Stream.objects.filter(pk__in=[r.pk for r in rows.values()])
    }
    assert kept == {
        StreamStatus.LIVE: "192.0.2.7",
        StreamStatus.ENDED: "",
        StreamStatus.FAILED: "",
        StreamStatus.IDLE: "",
    }
