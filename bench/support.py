"""The benchmarks' plumbing, written once (the clients are in ``bench/clients.py``, the run,
tables and JSON in ``bench/runner.py``).

* Servers: the site on Daphne (``daphne_site``: ``tests.support.daphne.DaphneServer``, the
  test harness's launcher, with its own SQLite and bench rooms made through ``manage.py
  shell``; more processes of the same site with ``DaphneServer.sibling``), and a benchmark's
  comparison peer in a Python process of its own (``peer_process``).
* Tokens for the room sockets (``make_tokens``), optional Redis with a unique key prefix
  (``redis_env``/``delete_keys``), SIGTERM turned into a clean exit.
* Numbers (``percentile``, ``ms``) and process figures from ``/proc``: RSS, open fds, fd
  limit, CPU seconds.

Benchmarks import ``tests.support`` (the launcher, media, the Python participant) rather
than keep a copy: the test harness is already what starts real servers here.
"""

from __future__ import annotations

import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support.process import log_tail, stop_process

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- numbers ----------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (sorts a copy); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# --- limits and /proc -------------------------------------------------------------------------


def raise_nofile() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (children inherit it).

    Only the soft limit: raising the hard one needs CAP_SYS_RESOURCE.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def proc_status_kb(pid: int, field: str = "VmRSS") -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (VmRSS, VmHWM, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_limit(pid: int) -> tuple[int, int]:
    """(soft, hard) ``Max open files`` of a running process."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise KeyError("Max open files")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def process_figures(pid: int) -> dict[str, Any]:
    soft, hard = nofile_limit(pid)
    return {
        "rss_kb": proc_status_kb(pid),
        "open_fds": open_fds(pid),
        "cpu_s": round(cpu_seconds(pid), 3),
        "nofile_soft": soft,
        "nofile_hard": hard,
    }


# --- tokens -------------------------------------------------------------------------------------


def make_tokens(count: int, prefix: str = "bench") -> list[str]:
    """``count`` valid WebSocket tokens for distinct random identities.

    Signed in this process with the settings the servers also read (the same environment,
    so the same ``SECRET_KEY``, the dev default unless one is set).
    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtcsite.settings")
    from identity.services import Identity
    from identity.tokens import issue_token

    return [
        issue_token(Identity(id=secrets.token_hex(8), name=f"{prefix}-{i}")) for i in range(count)
    ]


@contextmanager
def exit_cleanly_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` while benchmarking, so ``finally`` blocks still stop
    the servers we started (by PID) and delete our Redis keys if this process is stopped.
    Also a decorator: ``@exit_cleanly_on_sigterm()`` on a benchmark's ``run``."""

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- Redis --------------------------------------------------------------------------------------


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def unique_tag(kind: str) -> str:
    return f"rtcsite-bench-{kind}-{uuid.uuid4().hex[:8]}"


def redis_env(tag: str, url: str | None = None) -> dict[str, str]:
    """Server env for the Redis setup (presence + channels-redis), keys under ``tag``."""
    return {
        "REDIS_URL": url or redis_url(),
        "CHANNEL_LAYER_PREFIX": f"{tag}-layer",
        "PRESENCE_KEY_PREFIX": f"{tag}-presence",
    }


EMBEDDED_ENV = {"REDIS_URL": "", "DATABASE_URL": ""}


def delete_keys(tag: str, url: str | None = None) -> int:
    """Delete every Redis key starting with ``tag``; returns how many."""
    import redis

    client = redis.Redis.from_url(url or redis_url())
    try:
        keys = list(client.scan_iter(match=f"{tag}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        client.close()


def redis_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


# --- servers ------------------------------------------------------------------------------------


_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception))\b", re.M)


def log_error_counts(text: str, top: int = 8) -> dict[str, int]:
    """Exception class names starting lines of a server log (tracebacks' last lines)."""
    return dict(Counter(m.group(1) for m in _ERROR_LINE.finditer(text)).most_common(top))


@contextmanager
def daphne_site(
    env: dict[str, str],
    rooms: int = 0,
    capacity: int = 4,
    report: dict[str, Any] | None = None,
    app: str = "rtcsite.asgi:application",
    daphne: list[str] | None = None,
) -> Iterator[Any]:
    """A Daphne serving the site with its own SQLite (migrated), ``rooms`` mesh rooms
    ``bench-00000``... of ``capacity``; stopped by PID and its temp dir removed afterwards.
    ``report`` (if given) receives ``log_errors``: exception names counted in its log.
    ``app``: another ASGI application on the same setup (a benchmark's bare peer);
    ``daphne``: another program with Daphne's command line (``bench.daphne_unlimited``)."""
    from tests.support.daphne import DaphneServer

    options = {"daphne": daphne} if daphne else {}
    server = DaphneServer(env={**env, "LOG_LEVEL": "WARNING"}, app=app, **options)
    try:
        server.manage("migrate", "--noinput", "-v0")
        if rooms:
            server.manage("shell", "-c", create_rooms_code(rooms, capacity))
        server.start(migrate=False, timeout=60)
        yield server
    finally:
        if report is not None:  # before stopping: shutdown cancellations are not findings
            time.sleep(1.0)  # let the last disconnect handlers log
            log = getattr(server, "log_path", None)
            text = log.read_text(errors="replace") if log and log.exists() else ""
            report["log_errors"] = log_error_counts(text)
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def room_slug(i: int) -> str:
    return f"bench-{i:05d}"


def create_rooms_code(count: int, capacity: int) -> str:
    return (
        "from rooms.models import Room\n"
        "Room.objects.bulk_create([Room(slug=f'bench-{i:05d}', title=f'Bench {i}', "
        f"kind='mesh', capacity={capacity}) for i in range({count})], batch_size=500)\n"
    )


@contextmanager
def sibling_process(site: Any, **options: Any) -> Iterator[Any]:
    """Another process of ``site`` (``DaphneServer.sibling``: same settings and SQLite),
    started; stopped by PID and its temp dir removed afterwards. ``options``: ``nice``,
    ``sched_idle`` (a media process as docs/deploy.md runs it)."""
    server = site.sibling(**options)
    try:
        server.start(migrate=False, timeout=60)
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@dataclass
class PeerProcess:
    """A benchmark's comparison peer (raw relay, plain echo...) running in its own process."""

    port: int
    process: subprocess.Popen
    log_path: Path
    command: str  # how it was started, ``<port>`` for the port (recorded with the figures)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return log_tail(self.log_path, 4000)


@contextmanager
def peer_process(main: str, limit_s: float = 180.0) -> Iterator[PeerProcess]:
    """Run ``main`` (``"module:function"``, called with a free port) in a Python process of
    its own; ready once it prints a line ``ready``; stopped by PID afterwards."""
    from tests.support.ports import free_port

    module, function = main.split(":")
    code = f"import sys; from {module} import {function}; {function}(int(sys.argv[1]))"
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="rtcsite-bench-peer-"))
    log_path = workdir / "peer.log"
    try:
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", code, str(port)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        peer = PeerProcess(port, proc, log_path, f'python -c "{code}" <port>')
        try:
            deadline = time.monotonic() + limit_s
            while "ready" not in peer.log().splitlines():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{main} did not start (exit {proc.poll()}):\n{peer.log()}")
                time.sleep(0.05)
            yield peer
        finally:
            stop_process(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
