"""Every Prometheus metric of the site, defined once here; code elsewhere makes one-line calls.

**Several processes** (web and media Daphnes): set ``PROMETHEUS_MULTIPROC_DIR`` to one
directory per host, the same for all of the host's processes, and writable. Each process
then writes its values to memory-mapped files there (prometheus-client's multi-process
mode) and ``/metrics`` on any one of them reports the host's total: counters summed over
every process that ever ran since the directory was emptied, gauges over the *live* ones
(``livesum``/``liveall``: a dead process's gauge files are removed, see ``reap_dead``).
Unset (the embedded one-process default), values live in this process and ``/metrics``
reports only it, with the library's process and GC collectors: right for one process,
wrong for several (each would report itself alone).

Gauges that describe state held elsewhere (server peers, live streams, queue depth) are
sampled every ``HEALTH_PUBLISH_INTERVAL`` by ``rtcsite.health``, not tracked at each change.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import time
from pathlib import Path

from django.conf import settings
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from rtcsite import process

#: Only servers share the directory: a management command (``maintain`` every hour) would
#: leave files there that every scrape reads for ever. Others keep their values in memory.
#: (prometheus-client reads the same variable from the environment when it writes.)
MULTIPROC_DIR = settings.PROMETHEUS_MULTIPROC_DIR if process.SERVING else ""
if not MULTIPROC_DIR:
    values.ValueClass = values.MutexValue  # prometheus-client chose by the variable alone
_LIVE_FILE = re.compile(r"^gauge_live\w+_(\d+)\.db$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def reap_dead() -> int:
    """Drop the live-gauge files of processes that are gone (``mark_process_dead``): a
    ``kill -9``-ed Daphne's sockets must not be counted for ever. Runs at start-up and
    before each scrape (one ``listdir``). Counters of dead processes are kept: they are
    totals, and Prometheus's ``rate()`` needs them not to go down."""
    if not MULTIPROC_DIR:
        return 0
    dead = set()
    for name in os.listdir(MULTIPROC_DIR):
        match = _LIVE_FILE.match(name)
        if match and not _pid_alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, MULTIPROC_DIR)
    return len(dead)


if MULTIPROC_DIR:
    Path(MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
    reap_dead()
    # A reused pid: a dead process's live gauges under this pid would be read as ours.
    multiprocess.mark_process_dead(os.getpid(), MULTIPROC_DIR)

# --- sockets -------------------------------------------------------------------------------
SOCKETS = Gauge(
    "rtcsite_sockets",
    "Open WebSockets by kind (mesh, media, lobby, viewer, ingest, faces, other)",
    ["kind"],
    multiprocess_mode="livesum",
)
SOCKET_OPENS = Counter("rtcsite_socket_opens", "WebSockets accepted, by kind", ["kind"])
SOCKET_CLOSES = Counter(
    "rtcsite_socket_closes",
    "WebSocket closes by kind, close code and side that closed (server/client)",
    ["kind", "code", "by"],
)
WS_ERRORS = Counter(
    "rtcsite_ws_errors", "error messages sent to socket clients, by error code", ["code"]
)
RELAYED = Counter(
    "rtcsite_signaling_relayed",
    "Offers/answers/candidates relayed between mesh peers, by type and path (local/layer)",
    ["type", "via"],
)
# --- presence ------------------------------------------------------------------------------
JOINS = Counter("rtcsite_joins", "Places taken (room sockets, stream viewers)", ["scope"])
LEAVES = Counter("rtcsite_leaves", "Places given back by their socket", ["scope"])
PRESENCE_OPS = Counter("rtcsite_presence_ops", "Presence backend operations", ["op"])
PRESENCE_SWEEPS = Counter("rtcsite_presence_sweeps", "Expiry sweeps run")
PRESENCE_SWEEP_ERRORS = Counter("rtcsite_presence_sweep_errors", "Expiry sweeps that failed")
PRESENCE_EXPIRED = Counter("rtcsite_presence_expired", "Presences expired (ghosts removed)")
LOBBY_FANOUTS = Counter("rtcsite_lobby_fanouts", "Group sends to every lobby socket")
LOBBY_FRAMES = Counter("rtcsite_lobby_frames", "Lobby delta frames sent in those fan-outs")
# --- server rooms (sampled) ----------------------------------------------------------------
SERVER_PEERS = Gauge(
    "rtcsite_server_peers", "aiortc server peers open", multiprocess_mode="livesum"
)
SERVER_PEER_FPS = Gauge(
    "rtcsite_server_peer_fps",
    "Video frames per second through server peers, summed (in: from browsers, out: to them)",
    ["direction"],
    multiprocess_mode="livesum",
)
SERVER_PEER_FRAMES = Counter(
    "rtcsite_server_peer_frames", "Video frames through server peers", ["direction"]
)
# --- live streams --------------------------------------------------------------------------
LIVE_STREAMS = Gauge(
    "rtcsite_live_streams", "Stream pipelines running", multiprocess_mode="livesum"
)
INGEST_CHUNKS = Counter("rtcsite_ingest_chunks", "Stream chunks received (HTTP and socket)")
INGEST_BYTES = Counter("rtcsite_ingest_bytes", "Stream chunk bytes received")
ENCODER_QUEUE_BYTES = Gauge(
    "rtcsite_encoder_queue_bytes",
    "Bytes queued for FFmpeg's stdin, summed over live streams",
    multiprocess_mode="livesum",
)
CHUNK_TO_SEGMENT = Gauge(
    "rtcsite_chunk_to_segment_seconds",
    "Worst live stream: how long its newest chunk has waited with no newer segment written",
    multiprocess_mode="livemax",
)
FFMPEG_EXITS = Counter(
    "rtcsite_ffmpeg_exits", "FFmpeg exits by outcome (ok, error, signal)", ["outcome"]
)
FFMPEG_RESTARTS = Counter("rtcsite_ffmpeg_restarts", "Encoders restarted after a failure")
# --- HTTP and process ----------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "rtcsite_http_requests", "HTTP requests by method and status class", ["method", "status"]
)
HTTP_SECONDS = Histogram(
    "rtcsite_http_request_seconds",
    "HTTP request time, first byte to last",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PROCESS_CPU = Gauge(
    "rtcsite_process_cpu_ratio",
    "CPU time per second of each process (1 = one core)",
    ["pid", "role"],
    multiprocess_mode="liveall",
)
PROCESS_RSS = Gauge(
    "rtcsite_process_resident_bytes",
    "Resident memory of each process",
    ["pid", "role"],
    multiprocess_mode="liveall",
)


def exit_outcome(code: int | None) -> str:
    """An FFmpeg exit code as a label: ``ok``, ``error`` or ``signal``."""
    return "ok" if code == 0 else "signal" if code is not None and code < 0 else "error"


def swept(expired: int) -> None:
    PRESENCE_SWEEPS.inc()
    if expired:
        PRESENCE_EXPIRED.inc(expired)


def lobby_fanout(frames: int) -> None:
    LOBBY_FANOUTS.inc()
    LOBBY_FRAMES.inc(frames)


#: wall-clock time of each live stream's latest chunk in this process (chunk-to-segment lag)
last_chunk_at: dict[str, float] = {}


def ingested(slug: str, size: int) -> None:
    INGEST_CHUNKS.inc()
    INGEST_BYTES.inc(size)
    last_chunk_at[slug] = time.time()


# --- exposition ----------------------------------------------------------------------------
def exposition() -> tuple[bytes, str]:
    """The scrape body: every live process of this host (multi-process) or this one."""
    if not MULTIPROC_DIR:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    reap_dead()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, MULTIPROC_DIR)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def scrape_allowed(address: str, forwarded_for: str, authorization: str) -> bool:
    """Whether a scrape may see ``/metrics``: the bearer ``METRICS_TOKEN`` if one is set, or
    a client address in ``METRICS_ALLOW_FROM``. Through a proxy the address judged is the
    last ``X-Forwarded-For`` entry (the one the proxy added: a client cannot choose it), so
    a proxy on loopback does not open the endpoint to everyone behind it."""
    token = settings.METRICS_TOKEN
    bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    if token and bearer and hmac.compare_digest(bearer.encode(), token.encode()):
        return True
    if forwarded_for:
        address = forwarded_for.rsplit(",", 1)[-1].strip()
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in network for network in settings.METRICS_ALLOW_FROM)
