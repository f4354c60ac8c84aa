"""Quota counters (rtcsite/quotas.py): the pure window rule, addresses, rates, and counting
in the two caches the site runs on (LocMemCache, and a real Redis shared by processes)."""

import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured

from rtcsite import quotas
from rtcsite.env import env_rate, parse_rate
from rtcsite.errors import RateLimited


# --- pure parts ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("20/h", (20, 3600)),
        ("20/3600", (20, 3600)),
        ("50/10m", (50, 600)),
        (" 3 / 2d ", (3, 172800)),
        ("0/h", (0, 3600)),
        ("5/s", (5, 1)),
    ],
)
def test_parse_rate(raw, expected):
    assert parse_rate(raw) == expected


@pytest.mark.parametrize("raw", ["20", "x/h", "20/0", "-1/h", "20/hh", "20/1.5h"])
def test_bad_rates_are_refused_with_the_variable_named(raw, monkeypatch):
    monkeypatch.setenv("SOME_RATE", raw)
    with pytest.raises(ImproperlyConfigured, match="SOME_RATE"):
        env_rate("SOME_RATE", "1/h")


def test_decide_allows_up_to_the_limit_then_says_when_the_window_ends():
    now = 7200 + 1000.25  # 1000.25 s into an hour-long window
    assert quotas.decide(1, 3, now, 3600) is None
    assert quotas.decide(3, 3, now, 3600) is None
    assert quotas.decide(4, 3, now, 3600) == 2600  # 3600 - 1000.25, rounded up
    assert quotas.decide(4, 3, 10799.9, 3600) == 1  # never 0
    assert quotas.decide(10**6, 0, now, 3600) is None  # 0: no limit


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:1:2:3", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("", ""),
        (None, ""),
        ("not-an-address", ""),
    ],
)
def test_address_key(address, key):
    assert quotas.address_key(address) == key


# --- counting ------------------------------------------------------------------------------
def test_counts_per_identity_and_per_address_and_refuses_with_retry_after(settings):
    settings.ROOM_CREATE_RATE = (2, 3600)
    settings.ROOM_CREATE_RATE_PER_ADDRESS = (3, 60)
    quotas.check(quotas.ROOM_CREATE, identity="a" * 16, address="203.0.113.7")
    quotas.check(quotas.ROOM_CREATE, identity="a" * 16, address="203.0.113.7")
    with pytest.raises(RateLimited) as refused:
        quotas.check(quotas.ROOM_CREATE, identity="a" * 16, address="203.0.113.8")
    exc = refused.value
    assert exc.status == 429 and exc.code == "rate-limited"
    assert exc.details["scope"] == "identity" and exc.details["quota"] == "room-create"
    assert 1 <= exc.retry_after <= 3600
    assert exc.message.startswith("Too many new rooms from you: at most 2 per hour.")
    # the address: its third is allowed (another identity), the fourth is not
    quotas.check(quotas.ROOM_CREATE, identity="b" * 16, address="203.0.113.7")
    with pytest.raises(RateLimited) as refused:
        quotas.check(quotas.ROOM_CREATE, identity="c" * 16, address="203.0.113.7")
    assert refused.value.details["scope"] == "address"
    assert "your network address: at most 3 per minute" in refused.value.message
    # others are unaffected
    quotas.check(quotas.ROOM_CREATE, identity="d" * 16, address="198.51.100.1")


def test_ipv6_addresses_of_one_slash_64_share_a_count(settings):
    settings.IDENTITY_MINT_RATE_PER_ADDRESS = (2, 3600)
    quotas.check(quotas.IDENTITY_MINT, address="2001:db8::1")
    quotas.check(quotas.IDENTITY_MINT, address="2001:db8::2")
    with pytest.raises(RateLimited):
        quotas.check(quotas.IDENTITY_MINT, address="2001:db8::ffff:3")
    quotas.check(quotas.IDENTITY_MINT, address="2001:db8:0:1::1")  # another /64


def test_zero_means_no_limit_and_missing_keys_are_not_counted(settings):
    settings.STREAM_CREATE_RATE = (0, 3600)
    settings.STREAM_CREATE_RATE_PER_ADDRESS = (1, 3600)
    for _ in range(5):
        quotas.check(quotas.STREAM_CREATE, identity="a" * 16, address=None)
    quotas.check(quotas.STREAM_CREATE, identity="a" * 16, address="192.0.2.1")
    with pytest.raises(RateLimited):
        quotas.check(quotas.STREAM_CREATE, identity="a" * 16, address="192.0.2.1")


def test_a_new_window_starts_a_new_count(settings, monkeypatch):
    settings.ROOM_CREATE_RATE = (1, 60)
    clock = [6000.0]
    monkeypatch.setattr(quotas.time, "time", lambda: clock[0])
    quotas.check(quotas.ROOM_CREATE, identity="a" * 16)
    with pytest.raises(RateLimited) as refused:
        quotas.check(quotas.ROOM_CREATE, identity="a" * 16)
    assert refused.value.retry_after == 60
    clock[0] = 6060.0
    quotas.check(quotas.ROOM_CREATE, identity="a" * 16)


def redis_caches(redis_url, prefix):
    """Two RedisCache clients on one real Redis: what two processes have."""
    config = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": redis_url,
        "KEY_PREFIX": prefix,
    }
    return {"default": config, "other": config}


def test_redis_cache_counts_are_shared_between_clients(settings, redis_url, redis_prefix):
    settings.CACHES = redis_caches(redis_url, redis_prefix)
    settings.STREAM_CREATE_RATE = (3, 3600)
    for _ in range(3):
        quotas.check(quotas.STREAM_CREATE, identity="a" * 16)
    keys = list(caches["other"]._cache.get_client().scan_iter(match=f"{redis_prefix}*"))
    assert len(keys) == 1
    assert caches["other"].get(keys[0].decode().split(":", 2)[2]) == 3
    with pytest.raises(RateLimited):
        quotas.check(quotas.STREAM_CREATE, identity="a" * 16)
    ttl = caches["other"]._cache.get_client().ttl(keys[0])
    assert 0 < ttl <= 3601  # counters expire with their window


def test_an_unreachable_cache_lets_actions_through(settings, caplog):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
        }
    }
    settings.ROOM_CREATE_RATE = (1, 3600)
    for _ in range(3):
        quotas.check(quotas.ROOM_CREATE, identity="a" * 16)
    assert "cache unavailable" in caplog.text
