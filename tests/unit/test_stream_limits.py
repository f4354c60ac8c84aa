"""Live-stream caps and budgets (streaming/limits.py): the pure rules."""

from datetime import UTC, datetime, timedelta

import pytest

from rtcsite.errors import Busy, RateLimited
from streaming import limits
from streaming.limits import LiveEntry

A, B = "a" * 16, "b" * 16


@pytest.fixture
def caps(settings):
    settings.STREAM_MAX_LIVE_PER_IDENTITY = 2
    settings.STREAM_MAX_LIVE_PER_ADDRESS = 3
    settings.STREAM_MAX_LIVE_PER_PROCESS = 4
    settings.STREAM_MAX_LIVE = 5
    return settings


def entries(*specs):
    return [LiveEntry(f"s{i}", owner, address) for i, (owner, address) in enumerate(specs)]


def test_identity_cap_is_429(caps):
    live = entries((A, "10.0.0.1"), (A, "10.0.0.2"))
    exc = limits.refusal(live, owner_id=A, address="10.0.0.3", in_process=0, slug="new")
    assert isinstance(exc, RateLimited) and exc.details["quota"] == "live-per-identity"
    assert exc.retry_after == limits.RETRY_AFTER and "2 live streams" in exc.message
    assert limits.refusal(live, owner_id=B, address="10.0.0.3", in_process=0) is None


def test_address_cap_is_429(caps):
    live = entries((A, "10.0.0.1"), (B, "10.0.0.1"), ("c" * 16, "10.0.0.1"))
    exc = limits.refusal(live, owner_id="d" * 16, address="10.0.0.1", in_process=0)
    assert isinstance(exc, RateLimited) and exc.details["quota"] == "live-per-address"
    assert limits.refusal(live, owner_id="d" * 16, address="10.0.0.9", in_process=0) is None


def test_process_and_site_caps_are_503(caps):
    exc = limits.refusal([], owner_id=A, address="10.0.0.1", in_process=4)
    assert (
        isinstance(exc, Busy) and exc.status == 503 and exc.details["quota"] == "live-per-process"
    )
    assert limits.refusal([], owner_id=A, address="10.0.0.1", in_process=None) is None
    live = entries(*[(f"{i:016x}", f"10.0.1.{i}") for i in range(5)])
    exc = limits.refusal(live, owner_id=A, address="10.0.0.1", in_process=0)
    assert isinstance(exc, Busy) and exc.details["quota"] == "live-site"


def test_the_stream_itself_duplicates_and_unknowns_are_not_counted(caps):
    live = [LiveEntry("mine", A, "10.0.0.1"), LiveEntry("other", A, "10.0.0.1")] * 3
    # "mine" is the one going live (a retry): only "other" counts, once
    assert limits.refusal(live, owner_id=A, address="10.0.0.1", in_process=1, slug="mine") is None
    anonymous = entries(("", ""), ("", ""), ("", ""))
    assert limits.refusal(anonymous, owner_id="", address="", in_process=0) is None


def test_zero_disables_a_cap(caps):
    caps.STREAM_MAX_LIVE_PER_IDENTITY = 0
    caps.STREAM_MAX_LIVE = 0
    live = entries(*[(A, f"10.0.1.{i}") for i in range(10)])
    assert limits.refusal(live, owner_id=A, address="10.0.0.1", in_process=0) is None


def test_duration_budget(settings):
    settings.STREAM_MAX_DURATION = 4 * 3600
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert limits.over_duration(start, start + timedelta(hours=3, minutes=59)) == ""
    reason = limits.over_duration(start, start + timedelta(hours=4))
    assert reason == "ended: reached the maximum live duration (4 h)"
    assert limits.over_duration(None) == ""
    settings.STREAM_MAX_DURATION = 0
    assert limits.over_duration(start, start + timedelta(days=9)) == ""


def test_disk_budget_and_folder_size(settings, tmp_path):
    settings.STREAM_MAX_DISK_MB = 1
    (tmp_path / "init_0.mp4").write_bytes(bytes(600_000))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "chunk.m4s").write_bytes(bytes(500_000))
    used = limits.folder_bytes(tmp_path)
    assert used == 1_100_000
    assert limits.over_disk(used) == "ended: its recording reached the disk budget (1 MB)"
    assert limits.over_disk(1024 * 1024) == ""
    assert limits.folder_bytes(tmp_path / "missing") == 0
    settings.STREAM_MAX_DISK_MB = 0
    assert limits.over_disk(10**12) == ""
