"""Settings read from the environment: defaults, switches, refusals (fresh interpreters)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from rtcsite.ice import validate_ice_servers
from tests.support.process import run_python

PROBE = (
    "import json, django; from django.conf import settings; django.setup(); "
    "print(json.dumps({'layer': settings.CHANNEL_LAYERS['default']['BACKEND'], "
    "'db': settings.DATABASES['default']['ENGINE'], 'debug': settings.DEBUG, "
    "'ice': settings.ICE_SERVERS, 'hosts': settings.ALLOWED_HOSTS, "
    "'media': str(settings.MEDIA_ROOT), 'ffmpeg': settings.FFMPEG_BINARY, "
    "'cache': settings.CACHES['default'], 'room_rate': settings.ROOM_CREATE_RATE}))"
)
SCRUB = ("REDIS_URL", "DATABASE_URL", "SECRET_KEY", "DEBUG", "ICE_SERVERS", "ALLOWED_HOSTS")


def run_settings(**env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in SCRUB}
    full.update({"DJANGO_SETTINGS_MODULE": "rtcsite.settings", **env})
    return run_python("-c", PROBE, env=full, timeout=60)


def load(**env: str) -> dict:
    done = run_settings(**env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_embedded_defaults():
    values = load()
    assert values["layer"] == "rtcsite.layers.EmbeddedChannelLayer"
    assert values["db"] == "django.db.backends.sqlite3"
    assert values["debug"] is True
    assert values["ice"] == []


def test_redis_url_switches_channel_layer():
    assert load(REDIS_URL="redis://127.0.0.1:6379/3")["layer"] == (
        "rtcsite.layers.RedisPubSubLayer"
    )
    assert (
        load(REDIS_URL="redis://127.0.0.1:6379/3", CHANNEL_LAYER_BACKEND="core")["layer"]
        == "channels_redis.core.RedisChannelLayer"
    )
    assert (
        load(REDIS_URL="redis://127.0.0.1:6379/3", CHANNEL_LAYER_BACKEND="pubsub")["layer"]
        == "rtcsite.layers.RedisPubSubLayer"
    )


def test_redis_url_shares_the_cache_quota_counters_live_in():
    local = load()["cache"]
    assert local["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"
    shared = load(REDIS_URL="redis://127.0.0.1:6379/3", CACHE_KEY_PREFIX="site2")["cache"]
    assert shared == {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/3",
        "KEY_PREFIX": "site2",
    }


def test_quota_rates_from_env():
    assert load()["room_rate"] == [20, 3600]
    assert load(ROOM_CREATE_RATE="5/10m")["room_rate"] == [5, 600]
    done = run_settings(ROOM_CREATE_RATE="lots")
    assert done.returncode != 0 and "ROOM_CREATE_RATE='lots' is not a rate" in done.stderr


def test_database_url_switches_to_postgres():
    assert load(DATABASE_URL="postgres://u:p@127.0.0.1:5432/rtc")["db"] == (
        "django.db.backends.postgresql"
    )


def test_refuses_production_with_default_secret():
    done = run_settings(DEBUG="0")
    assert done.returncode != 0
    assert "Refusing to start with DEBUG=0 and the default SECRET_KEY" in done.stderr
    ok = load(DEBUG="0", SECRET_KEY="s" * 50, ALLOWED_HOSTS="example.org")
    assert ok["debug"] is False
    assert ok["hosts"] == ["example.org"]


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_bad_boolean_is_named(value):
    done = run_settings(DEBUG=value)
    assert done.returncode != 0
    assert "DEBUG=" in done.stderr


def test_ice_servers_from_env():
    servers = [
        {"urls": "stun:stun.example.org:3478"},
        {"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "c"},
    ]
    values = load(ICE_SERVERS=json.dumps(servers))
    assert values["ice"][0] == {"urls": ["stun:stun.example.org:3478"]}
    assert values["ice"][1]["username"] == "u"


@pytest.mark.parametrize(
    "bad",
    [
        {"urls": "stun:x"},
        [{"url": "stun:x"}],
        [{"urls": "http://x"}],
        [{"urls": []}],
        [{"urls": "stun:x", "password": "p"}],
        ["stun:x"],
    ],
)
def test_bad_ice_servers_rejected(bad):
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured):
        validate_ice_servers(bad)


def test_invalid_ice_json_is_named():
    done = run_settings(ICE_SERVERS="[{")
    assert done.returncode != 0
    assert "ICE_SERVERS is not valid JSON" in done.stderr


def test_ffmpeg_default_is_bundled_binary():
    from streaming.ffmpeg import ffmpeg_binary

    path = Path(ffmpeg_binary())
    assert path.is_file()
    assert "imageio_ffmpeg" in str(path)
    done = subprocess.run(
        [str(path), "-hide_banner", "-version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "ffmpeg version" in done.stdout


@pytest.mark.parametrize(
    "env", [{"STREAM_FFMPEG_NICE": "20"}, {"STREAM_FFMPEG_OOM_SCORE_ADJ": "1001"}]
)
def test_ffmpeg_child_limits_out_of_range_are_named(env):
    done = run_settings(**env)
    assert done.returncode != 0
    assert "STREAM_FFMPEG_NICE is 0..19, STREAM_FFMPEG_OOM_SCORE_ADJ 0..1000" in done.stderr


@pytest.mark.parametrize("inside", ["recordings", "streams/x", "."])
def test_recordings_inside_the_public_media_root_are_refused(tmp_path, inside):
    """MEDIA_ROOT is served to anyone (nginx `alias`): recordings must live elsewhere."""
    done = run_settings(MEDIA_ROOT=str(tmp_path), RECORDINGS_ROOT=str(tmp_path / inside))
    assert done.returncode != 0
    assert "RECORDINGS_ROOT must not be inside MEDIA_ROOT" in done.stderr


def test_recordings_beside_the_media_root_are_fine(tmp_path):
    load(MEDIA_ROOT=str(tmp_path / "media"), RECORDINGS_ROOT=str(tmp_path / "recordings"))
