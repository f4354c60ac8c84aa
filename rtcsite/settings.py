"""Django settings for rtcsite, read from the environment.

Every knob has an embedded default that works on a fresh machine (SQLite, in-memory
channel layer, bundled FFmpeg); setting ``REDIS_URL`` / ``DATABASE_URL`` scales out.
See README.md ("Configuration") for the full list.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from rtcsite.env import (
    env_bool,
    env_float,
    env_int,
    env_json,
    env_list,
    env_networks,
    env_rate,
    env_str,
)
from rtcsite.ice import validate_ice_servers
from rtcsite.security import parse_proxy_ssl_header

BASE_DIR = Path(__file__).resolve().parent.parent

# --- core ---------------------------------------------------------------------------------
DEFAULT_SECRET_KEY = "insecure-dev-key-change-me-rtcsite"  # refused when DEBUG=0
DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY", DEFAULT_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEFAULT_SECRET_KEY:
    raise ImproperlyConfigured(
        "Refusing to start with DEBUG=0 and the default SECRET_KEY: set SECRET_KEY "
        "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))')."
    )
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",  # first, so `runserver` is Daphne's ASGI server
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "rtcsite",
    "identity",
    "rooms",
    "signaling",
    "presence",
    "streaming",
    "faces",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "rtcsite.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "identity.middleware.IdentityMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "rtcsite.urls"
ASGI_APPLICATION = "rtcsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "identity.context_processors.identity",
            ],
        },
    },
]

# --- database -----------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- channel layer ------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "")
# "pubsub" (RedisPubSubChannelLayer): pushes instead of polling, about twice the relay
# throughput of "core" (RedisChannelLayer) (docs/decisions.md, "Channel layer").
CHANNEL_LAYER_BACKEND = env_str("CHANNEL_LAYER_BACKEND", "pubsub")
if REDIS_URL:
    if CHANNEL_LAYER_BACKEND not in {"core", "pubsub"}:
        raise ImproperlyConfigured("CHANNEL_LAYER_BACKEND must be 'core' or 'pubsub'.")
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": (
                # channels_redis' pub/sub layer, quiet and resubscribable across a Redis
                # restart (rtcsite/layers.py)
                "rtcsite.layers.RedisPubSubLayer"
                if CHANNEL_LAYER_BACKEND == "pubsub"
                else "channels_redis.core.RedisChannelLayer"
            ),
            "CONFIG": {
                # redis-py 8 defaults socket_timeout to 5 s, exactly the layer's BZPOPMIN
                # wait: idle consumers would die with TimeoutError. Give reads headroom.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
                "prefix": env_str("CHANNEL_LAYER_PREFIX", "rtcsite"),
            },
        }
    }
else:
    # In-memory, with its expiry sweep throttled (rtcsite/layers.py: O(sockets) per message)
    CHANNEL_LAYERS = {"default": {"BACKEND": "rtcsite.layers.EmbeddedChannelLayer"}}
# The cache holds the quota counters (rtcsite/quotas.py): shared by every process through
# Redis when REDIS_URL is set, else per process (one process needs nothing more).
CACHE_KEY_PREFIX = env_str("CACHE_KEY_PREFIX", "rtcsite")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CACHE_KEY_PREFIX,
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "KEY_PREFIX": CACHE_KEY_PREFIX,
        }
    }
# Relay offers/answers/candidates between peers on the same process directly, not through
# the layer (signaling/local.py; measured in bench/bench_signaling.py).
SIGNALING_LOCAL_DELIVERY = env_bool("SIGNALING_LOCAL_DELIVERY", True)
# Seconds a process reuses a room it read for a socket connect (rooms/services.cached_room).
ROOM_CACHE_SECONDS = env_float("ROOM_CACHE_SECONDS", 5.0, minimum=0)
# Visitor rooms (not pinned) leave the lobby this long after their last join; still open by
# URL. `manage.py maintain` deletes them after ROOM_IDLE_DELETE_HOURS.
ROOM_IDLE_HIDE_HOURS = env_float("ROOM_IDLE_HIDE_HOURS", 24.0, minimum=0)
ROOM_IDLE_DELETE_HOURS = env_float("ROOM_IDLE_DELETE_HOURS", 720.0, minimum=0)
# A room's last-activity time is written at most once per this many seconds (joins are hot).
ROOM_ACTIVITY_WRITE_SECONDS = env_float("ROOM_ACTIVITY_WRITE_SECONDS", 300.0, minimum=0)

# --- identity / WebSocket tokens ------------------------------------------------------------
WS_TOKEN_MAX_AGE = env_int("WS_TOKEN_MAX_AGE", 900, minimum=10)  # seconds
DISPLAY_NAME_MAX_LENGTH = 40

# --- WebRTC -------------------------------------------------------------------------------
ICE_SERVERS = validate_ice_servers(env_json("ICE_SERVERS", []))
# "relay" forces browsers through TURN (hides their addresses from each other); "all" is
# the WebRTC default.
ICE_TRANSPORT_POLICY = env_str("ICE_TRANSPORT_POLICY", "all")
if ICE_TRANSPORT_POLICY not in {"all", "relay"}:
    raise ImproperlyConfigured("ICE_TRANSPORT_POLICY must be 'all' or 'relay'.")
# Server rooms (signaling/media/): aiortc peers in this process, face detection in a pool.
SERVER_ROOM_MAX_PEERS = env_int("SERVER_ROOM_MAX_PEERS", 16, minimum=1)  # per process
# ...and per identity and per client address in this process (identities are free to mint:
# the address bounds one machine's share; raise it for sites behind one NAT)
SERVER_ROOM_MAX_PEERS_PER_IDENTITY = env_int("SERVER_ROOM_MAX_PEERS_PER_IDENTITY", 2, minimum=1)
SERVER_ROOM_MAX_PEERS_PER_ADDRESS = env_int("SERVER_ROOM_MAX_PEERS_PER_ADDRESS", 4, minimum=1)
SERVER_ROOM_DETECT_FPS = env_float("SERVER_ROOM_DETECT_FPS", 5.0, minimum=0)  # per echo; 0: max
# seconds between full-frame face scans of a boxed video (echo session, stream overlay)
# while faces are tracked (faces/boxes.py); 0: always
SERVER_ROOM_FULL_SCAN_INTERVAL = env_float("SERVER_ROOM_FULL_SCAN_INTERVAL", 1.0, minimum=0)
SERVER_ROOM_STATS_INTERVAL = env_float("SERVER_ROOM_STATS_INTERVAL", 1.0, minimum=0.1)
SERVER_ROOM_RECORDINGS = env_bool("SERVER_ROOM_RECORDINGS", False)  # pages may record sessions
# Recordings are private (people's faces and voices): kept outside MEDIA_ROOT, which the
# proxy serves to anyone, and handed to staff only by signaling.views.recording_file.
RECORDINGS_ROOT = Path(env_str("RECORDINGS_ROOT", str(BASE_DIR / "recordings")))
# Non-empty (e.g. "/_recordings/"): that view answers with X-Accel-Redirect to this nginx
# `internal` location instead of streaming the file itself (docs/deploy.md).
RECORDINGS_X_ACCEL_PREFIX = env_str("RECORDINGS_X_ACCEL_PREFIX", "")
RECORDING_MAX_BYTES = env_int("RECORDING_MAX_BYTES", 200 << 20, minimum=64 * 1024)  # per file
RECORDING_MAX_SECONDS = env_float("RECORDING_MAX_SECONDS", 1800.0, minimum=1)  # per file
# `manage.py maintain` deletes finished recordings (file and row) older than this.
RECORDING_RETENTION_HOURS = env_float("RECORDING_RETENTION_HOURS", 720.0, minimum=0)
# Server peers send STUN checks to private, loopback and mDNS candidates a client names only
# when allowed: on with DEBUG (dev and tests run on 127.0.0.1) and for serve_lan; off in
# production, where they would let a visitor probe the server's own networks.
SERVER_ROOM_ALLOW_PRIVATE_CANDIDATES = env_bool("SERVER_ROOM_ALLOW_PRIVATE_CANDIDATES", DEBUG)

# --- media / FFmpeg -----------------------------------------------------------------------
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
MEDIA_URL = "/media/"
if RECORDINGS_ROOT.resolve().is_relative_to(MEDIA_ROOT.resolve()):
    raise ImproperlyConfigured("RECORDINGS_ROOT must not be inside MEDIA_ROOT (served publicly).")
FFMPEG_BINARY = env_str("FFMPEG_BINARY", "")  # empty: the binary bundled by imageio-ffmpeg

# --- static files -------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))  # collectstatic
# Vendored npm files are copied into static/vendor/ by `manage.py vendor_assets`.
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "rtcsite.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG  # dev: serve new files at once, no STATIC_ROOT needed

# --- security -----------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = 60 * 60 * 24 * 30
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
# HTTPS enforcement is the deployment's choice (docs/deploy.md): a LAN or dev server may
# have no TLS at all, so both are off unless the environment turns them on.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)  # 0: no HSTS header
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# "X-Forwarded-Proto" (or "X-Forwarded-Proto,https"): behind a TLS-terminating proxy that
# sets this header (and strips it from clients), requests carrying it are HTTPS.
SECURE_PROXY_SSL_HEADER = parse_proxy_ssl_header(env_str("SECURE_PROXY_SSL_HEADER", ""))
# Admin sign-in: this many wrong passwords per username or per client address within the
# window (seconds, from the first failure) block sign-in for both until it ends.
ADMIN_LOGIN_MAX_FAILURES = env_int("ADMIN_LOGIN_MAX_FAILURES", 5, minimum=1)
ADMIN_LOGIN_WINDOW = env_int("ADMIN_LOGIN_WINDOW", 900, minimum=1)
# Content-Security-Policy of every response (rtcsite.security.ContentSecurityPolicyMiddleware):
# scripts and styles from this site's files only, no inline code or handlers, no eval
# ('wasm-unsafe-eval' lets face-api compile WebAssembly, not evaluate strings); blob: for
# MSE playback (hls.js/dash.js) and hls.js's worker; connect-src 'self' covers ws(s)://.
CONTENT_SECURITY_POLICY = env_str(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
    "img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
)
# 1: send it as Content-Security-Policy-Report-Only (violations reported, nothing blocked),
# e.g. to try a changed policy. The test servers use it: Playwright's wait_for_function
# evaluates strings, which the enforced policy refuses (tests/e2e/test_csp.py enforces it).
CONTENT_SECURITY_POLICY_REPORT_ONLY = env_bool("CONTENT_SECURITY_POLICY_REPORT_ONLY", False)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- logging, health and metrics (rtcsite/logctx.py, health.py, metrics.py, observe.py) ----
# "plain" (one line: time, level, logger, [room= stream= peer= user= conn=], message) or
# "json" (one JSON object a line with the same fields as keys, for log shippers).
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured("LOG_FORMAT must be 'plain' or 'json'.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "rtcsite.logctx.ContextFilter"}},
    "formatters": {
        "plain": {
            "()": "rtcsite.logctx.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s",
        },
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger", "asctime": "time"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        },
        # the latest warnings and errors, for the admin's health page
        "recent": {"()": "rtcsite.logctx.RecentErrorsHandler", "filters": ["context"]},
    },
    "root": {"handlers": ["console", "recent"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": env_str("ACCESS_LOG_LEVEL", "WARNING")},
        "daphne": {"level": "WARNING"},
    },
}
# "web" or "media" (or empty): shown on the admin's health page and as a metrics label.
PROCESS_ROLE = env_str("PROCESS_ROLE", "")
# Seconds /readyz (and the health page) waits for the database and for Redis, each.
HEALTH_CHECK_TIMEOUT = env_float("HEALTH_CHECK_TIMEOUT", 1.0, minimum=0.05)
# Seconds between a process's status records (kept three intervals) and sampled gauges.
HEALTH_PUBLISH_INTERVAL = env_float("HEALTH_PUBLISH_INTERVAL", 5.0, minimum=0.5)
# /metrics: who may scrape (CIDR list; empty: no address), and/or a bearer token (empty:
# none). Anyone else gets 404. Behind a proxy the address is the one it forwards.
METRICS_ALLOW_FROM = env_networks("METRICS_ALLOW_FROM", ["127.0.0.0/8", "::1/128"])
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# Read by prometheus-client itself at import (rtcsite/metrics.py): one directory per host
# shared by all its processes; empty: this process's metrics only (one process).
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "")

# --- WebSocket limits -----------------------------------------------------------------------
WS_MAX_MESSAGE_BYTES = env_int("WS_MAX_MESSAGE_BYTES", 64 * 1024, minimum=1024)
SESSION_SAVE_EVERY_REQUEST = False

# --- presence -------------------------------------------------------------------------------
PRESENCE_TTL = env_int("PRESENCE_TTL", 30, minimum=3)  # seconds without heartbeat → gone
PRESENCE_HEARTBEAT_INTERVAL = env_int(
    "PRESENCE_HEARTBEAT_INTERVAL", max(1, PRESENCE_TTL // 3), minimum=1
)
PRESENCE_SWEEP_INTERVAL = env_int("PRESENCE_SWEEP_INTERVAL", 2, minimum=1)
# A process's lease, renewed by its sweeper: a dead process's presences are expired once it
# lapses (presence.backends.base), instead of after PRESENCE_TTL.
PRESENCE_LEASE_TTL = env_int(
    "PRESENCE_LEASE_TTL", min(PRESENCE_TTL, 3 * PRESENCE_SWEEP_INTERVAL), minimum=2
)
if PRESENCE_LEASE_TTL <= PRESENCE_SWEEP_INTERVAL:
    raise ImproperlyConfigured("PRESENCE_LEASE_TTL must exceed PRESENCE_SWEEP_INTERVAL.")
# The room service (rtcsite.ws.service): while Redis is away, how often each process probes
# it; once back, how long it waits for the other processes to re-track before resyncing
# its clients (keep PROBE + RESYNC_DELAY under PRESENCE_HEARTBEAT_INTERVAL).
SERVICE_PROBE_INTERVAL = env_float("SERVICE_PROBE_INTERVAL", 0.5, minimum=0.05)
SERVICE_RESYNC_DELAY = env_float("SERVICE_RESYNC_DELAY", 1.0, minimum=0)
PRESENCE_KEY_PREFIX = env_str("PRESENCE_KEY_PREFIX", "rtcsite:presence")
# Dotted path of a presence backend class; empty: Redis if REDIS_URL is set, else memory.
PRESENCE_BACKEND = env_str("PRESENCE_BACKEND", "")
# Lobby join/leave deltas, and stream viewer counts (to viewers and lobbies): at most one
# fan-out per this many seconds once they come fast (presence.services).
LOBBY_DELTA_INTERVAL = env_float("LOBBY_DELTA_INTERVAL", 0.05, minimum=0)
# Names a lobby client gets per room card in its snapshot (the rest is a count).
LOBBY_NAMES_PER_CARD = env_int("LOBBY_NAMES_PER_CARD", 3, minimum=0)

# --- live streaming -------------------------------------------------------------------------
# Read by streaming/ (pipeline, ffmpeg, ladder, services) with getattr and a default.


STREAM_LADDER = env_str("STREAM_LADDER", "720,360")  # heights, or height:kbps[:audio kbps]
STREAM_SEGMENT_SECONDS = env_float("STREAM_SEGMENT_SECONDS", 0.5, minimum=0.2)
STREAM_FPS = env_int("STREAM_FPS", 30, minimum=1)
STREAM_X264_PRESET = env_str("STREAM_X264_PRESET", "veryfast")
STREAM_LOW_LATENCY_INPUT = env_bool("STREAM_LOW_LATENCY_INPUT", True)  # -probesize 32 ...
STREAM_LIVE_WINDOW_SECONDS = env_float("STREAM_LIVE_WINDOW_SECONDS", 10.0, minimum=0)
# Low-latency mode (per stream, chosen at creation): LL-HLS parts and LL-DASH chunks of
# STREAM_LL_PART_SECONDS inside STREAM_LL_SEGMENT_SECONDS segments, 100 ms ingest chunks.
STREAM_LOW_LATENCY_DEFAULT = env_bool("STREAM_LOW_LATENCY_DEFAULT", True)
STREAM_LL_SEGMENT_SECONDS = env_float("STREAM_LL_SEGMENT_SECONDS", 1.0, minimum=0.5)
STREAM_LL_PART_SECONDS = env_float("STREAM_LL_PART_SECONDS", 0.2, minimum=0.1)
if STREAM_LL_PART_SECONDS > STREAM_LL_SEGMENT_SECONDS:
    raise ImproperlyConfigured("STREAM_LL_PART_SECONDS must not exceed STREAM_LL_SEGMENT_SECONDS.")
STREAM_LL_TIMESLICE_MS = env_int("STREAM_LL_TIMESLICE_MS", 100, minimum=20)
# Requests held open for low-latency viewers, per process: per client address, in all.
STREAM_LL_HELD_PER_CLIENT = env_int("STREAM_LL_HELD_PER_CLIENT", 32, minimum=0)
STREAM_LL_HELD_MAX = env_int("STREAM_LL_HELD_MAX", 4000, minimum=0)
STREAM_QUEUE_BYTES = env_int("STREAM_QUEUE_BYTES", 8 << 20, minimum=64 * 1024)
STREAM_MAX_CHUNK_BYTES = env_int("STREAM_MAX_CHUNK_BYTES", 4 << 20, minimum=1024)
if STREAM_MAX_CHUNK_BYTES > STREAM_QUEUE_BYTES:
    raise ImproperlyConfigured("STREAM_MAX_CHUNK_BYTES must not exceed STREAM_QUEUE_BYTES.")
STREAM_GAP_TIMEOUT = env_float("STREAM_GAP_TIMEOUT", 2.0, minimum=0.1)
STREAM_IDLE_TIMEOUT = env_float("STREAM_IDLE_TIMEOUT", 30.0, minimum=0)  # 0: never
STREAM_STOP_TIMEOUT = env_float("STREAM_STOP_TIMEOUT", 20.0, minimum=1)
# A killed FFmpeg is restarted this many times per stream, then the stream fails.
STREAM_ENCODER_RESTARTS = env_int("STREAM_ENCODER_RESTARTS", 3, minimum=0)
# A live stream's process renews its lease on the row every third of this; once it is
# older, ingest reaching another process takes the stream over (streaming/ingest.py).
STREAM_OWNER_LEASE = env_float("STREAM_OWNER_LEASE", 10.0, minimum=2)
STREAM_FEED_WAIT = env_float("STREAM_FEED_WAIT", 2.0, minimum=0)  # wait for queue space
STREAM_RATE_LIMIT = env_float("STREAM_RATE_LIMIT", 20.0, minimum=0.1)  # chunks/s per stream
STREAM_RETENTION_HOURS = env_float("STREAM_RETENTION_HOURS", 72.0, minimum=0)
# The source frame size a WebM header may declare (streaming/webm.py check_source): a side
# at most this many pixels, and at most this many pixels in all (4096x2160: DCI 4K).
STREAM_SOURCE_MAX_SIDE = env_int("STREAM_SOURCE_MAX_SIDE", 4096, minimum=16)
STREAM_SOURCE_MAX_PIXELS = env_int("STREAM_SOURCE_MAX_PIXELS", 4096 * 2160, minimum=256)
# Each FFmpeg child (streaming/ffmpeg.py ChildLimits): address-space limit in MiB (0: none;
# a 720p+360p run peaks near VMPEAK_MB, see docs/decisions.md), niceness added, and
# oom_score_adj (the kernel's OOM killer takes an encoder before the web process).
STREAM_FFMPEG_MEMORY_MB = env_int("STREAM_FFMPEG_MEMORY_MB", 2048, minimum=0)
STREAM_FFMPEG_NICE = env_int("STREAM_FFMPEG_NICE", 10, minimum=0)
STREAM_FFMPEG_OOM_SCORE_ADJ = env_int("STREAM_FFMPEG_OOM_SCORE_ADJ", 500, minimum=0)
if STREAM_FFMPEG_NICE > 19 or STREAM_FFMPEG_OOM_SCORE_ADJ > 1000:
    raise ImproperlyConfigured("STREAM_FFMPEG_NICE is 0..19, STREAM_FFMPEG_OOM_SCORE_ADJ 0..1000.")
# Streams that never went live leave the lobby after this long without an update, and are
# deleted by `manage.py maintain` after STREAM_IDLE_DELETE_HOURS.
STREAM_IDLE_HIDE_HOURS = env_float("STREAM_IDLE_HIDE_HOURS", 6.0, minimum=0)
STREAM_IDLE_DELETE_HOURS = env_float("STREAM_IDLE_DELETE_HOURS", 168.0, minimum=0)
# Uploaded chunks are parsed in memory up to this size (Django's default is 2.5 MB).
FILE_UPLOAD_MAX_MEMORY_SIZE = max(2_621_440, STREAM_MAX_CHUNK_BYTES + 1)

# --- WHEP playback (streaming/whep.py, whep_feed.py): one extra H.264 + Opus encode per
# live stream, packetised (never re-encoded) for every WebRTC viewer ---
STREAM_WHEP = env_bool("STREAM_WHEP", True)  # the encoder writes the WebRTC rendition
# Keyframe interval of that rendition: the longest a new viewer waits for a picture.
STREAM_WHEP_GOP_SECONDS = env_float("STREAM_WHEP_GOP_SECONDS", 1.0, minimum=0.1)
# WHEP viewers at once, per process and per client address (0: no limit).
STREAM_WHEP_MAX_VIEWERS = env_int("STREAM_WHEP_MAX_VIEWERS", 100, minimum=0)
STREAM_WHEP_MAX_VIEWERS_PER_ADDRESS = env_int("STREAM_WHEP_MAX_VIEWERS_PER_ADDRESS", 4, minimum=0)

# --- face detection (faces/detector.py: one OpenCV detector for every feature) ---
FACE_SCALE_FACTOR = env_float("FACE_SCALE_FACTOR", 1.1, minimum=1.01)
FACE_MIN_NEIGHBORS = env_int("FACE_MIN_NEIGHBORS", 8, minimum=0)
FACE_MIN_SIZE = env_int("FACE_MIN_SIZE", 30, minimum=8)  # pixels, source coordinates
FACE_DETECT_WIDTH = env_int("FACE_DETECT_WIDTH", 320, minimum=0)  # resize before; 0: full size
FACE_EQUALIZE = env_bool("FACE_EQUALIZE", False)  # histogram equalisation before detecting
FACE_OPENCV_THREADS = env_int("FACE_OPENCV_THREADS", 1, minimum=0)  # 0: OpenCV's default
# Pushed frames (faces/services.py): limits per client. FACE_DETECT_THREADS: the process's one
# detection pool (pushed frames, echo rooms, stream overlays; 0: one per core).
FACE_MAX_FRAME_BYTES = env_int("FACE_MAX_FRAME_BYTES", 512 * 1024, minimum=1024)
FACE_MAX_FRAME_PIXELS = env_int("FACE_MAX_FRAME_PIXELS", 1920 * 1080, minimum=64 * 64)
FACE_MAX_FPS = env_float("FACE_MAX_FPS", 30.0, minimum=0.001)  # frames/s per connection
FACE_DETECT_THREADS = env_int("FACE_DETECT_THREADS", 0, minimum=0)

# --- quotas (rtcsite/quotas.py): what one visitor may make the site do --------------------
# Rates are "N/window" (window in s, or with a unit: "20/h", "50/10m"); N = 0: no limit.
# Counted per identity and per client address (IPv6: per /64), across processes with Redis.
ROOM_CREATE_RATE = env_rate("ROOM_CREATE_RATE", "20/h")  # new rooms per identity
ROOM_CREATE_RATE_PER_ADDRESS = env_rate("ROOM_CREATE_RATE_PER_ADDRESS", "60/h")
STREAM_CREATE_RATE = env_rate("STREAM_CREATE_RATE", "10/h")  # new streams per identity
STREAM_CREATE_RATE_PER_ADDRESS = env_rate("STREAM_CREATE_RATE_PER_ADDRESS", "30/h")
# New identities (sessions: a database row each) handed to cookie-less requests
IDENTITY_MINT_RATE_PER_ADDRESS = env_rate("IDENTITY_MINT_RATE_PER_ADDRESS", "300/h")
# Live streams at once (each one FFmpeg: ~0.3 core, bench stream_capacity); 0: no limit
STREAM_MAX_LIVE_PER_IDENTITY = env_int("STREAM_MAX_LIVE_PER_IDENTITY", 2, minimum=0)
STREAM_MAX_LIVE_PER_ADDRESS = env_int("STREAM_MAX_LIVE_PER_ADDRESS", 4, minimum=0)
STREAM_MAX_LIVE_PER_PROCESS = env_int("STREAM_MAX_LIVE_PER_PROCESS", 4, minimum=0)
STREAM_MAX_LIVE = env_int("STREAM_MAX_LIVE", 16, minimum=0)  # the whole site
STREAM_MAX_DURATION = env_float("STREAM_MAX_DURATION", 4 * 3600.0, minimum=0)  # s live; 0: none
# Segments kept per stream (VOD included); 4 h of the default ladder is ~6 GB. 0: none
STREAM_MAX_DISK_MB = env_float("STREAM_MAX_DISK_MB", 8192.0, minimum=0)
# Seconds between walks of a live stream's folder for that budget: a walk stats every
# segment kept (tens of thousands after hours); the budget is overshot by at most this long.
STREAM_DISK_CHECK_INTERVAL = env_float("STREAM_DISK_CHECK_INTERVAL", 10.0, minimum=0)

# WHIP ingest (streaming/whip.py): a publication that sends no media for this long ends
# like a stop (seconds; 0: never, left to ICE consent expiry).
STREAM_WHIP_IDLE_TIMEOUT = env_float("STREAM_WHIP_IDLE_TIMEOUT", 10.0, minimum=0)

# Pushed frames cost what the client makes them cost, and identities are free: each identity
# has a detection budget in this process, shared by its connections (CPU seconds of detection
# per second, and the burst it may spend at once); frames over it are refused at once.
FACE_DETECT_BUDGET = env_float("FACE_DETECT_BUDGET", 0.5, minimum=0.001)
FACE_DETECT_BUDGET_BURST = env_float("FACE_DETECT_BUDGET_BURST", 2.0, minimum=0.001)
# Client-chosen parameters are clamped to what a frame may cost (full-frame 2-megapixel
# detection at scale 1.01, min size 8 takes seconds): scale at least, min size at least,
# detect width at most (0, full size, becomes this).
FACE_CLIENT_MIN_SCALE_FACTOR = env_float("FACE_CLIENT_MIN_SCALE_FACTOR", 1.05, minimum=1.01)
FACE_CLIENT_MIN_SIZE = env_int("FACE_CLIENT_MIN_SIZE", 20, minimum=8)
FACE_CLIENT_MAX_DETECT_WIDTH = env_int("FACE_CLIENT_MAX_DETECT_WIDTH", 640, minimum=64)
