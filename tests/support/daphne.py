"""A real Daphne process serving the site, for integration and browser tests.

Each server gets its own SQLite file, MEDIA_ROOT and RECORDINGS_ROOT (so tests never touch
the developer's database or files), runs the real ASGI application, and is stopped by PID.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.process import ROOT, log_tail, run_python, stop_process

VENV_BIN = Path(sys.executable).parent


def priority_prefix(*, nice: int = 0, sched_idle: bool = False) -> list[str]:
    """A command prefix that starts a process below normal CPU priority.

    ``sched_idle`` is the stronger one: a SCHED_IDLE task gives way at once to any normal
    task that wakes, where a niced task may first finish its time slice (docs/decisions.md,
    "Process model, revised"). Neither needs privileges: a process may always lower its own.
    """
    prefix = ["chrt", "--idle", "0"] if sched_idle else []
    if nice:
        prefix += ["nice", "-n", str(nice)]
    return prefix


@dataclass
class DaphneServer:
    """One Daphne subprocess; ``env`` adds to the inherited environment."""

    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rtcsite-srv-")))
    process: subprocess.Popen | None = None
    #: the ASGI application Daphne serves (benchmarks serve a bare Channels peer too)
    app: str = "rtcsite.asgi:application"
    #: the program run with Daphne's arguments (a benchmark runs a wrapper of Daphne's CLI)
    daphne: list[str] = field(default_factory=lambda: [str(VENV_BIN / "daphne")])
    #: CPU niceness (``nice -n``): media processes run below the web processes (deploy.md)
    nice: int = 0
    #: Linux SCHED_IDLE (``chrt --idle``): any normal task that wakes preempts this process
    sched_idle: bool = False
    #: listen on this Unix socket (``-u``, as the systemd units in deploy/ do) instead of
    #: 127.0.0.1:``port``
    unix_socket: Path | None = None
    #: Daphne's ``--access-log`` (``-``: into this server's log); ``None``: leave it to the
    #: ``daphne`` command line
    access_log: str | None = os.devnull
    url: str = field(init=False)
    ws_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url, self.ws_url = (f"{scheme}://127.0.0.1:{self.port}" for scheme in ("http", "ws"))
        self.log_path = self.workdir / "daphne.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def full_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.update(
            {
                "DEBUG": "1",
                "SQLITE_PATH": str(self.workdir / "db.sqlite3"),
                "MEDIA_ROOT": str(self.workdir / "media"),
                "RECORDINGS_ROOT": str(self.workdir / "recordings"),
                "PYTHONUNBUFFERED": "1",
                # Playwright's wait_for_function evals its predicate, which the enforced CSP
                # refuses; tests/e2e/test_csp.py serves the enforced policy.
                "CONTENT_SECURITY_POLICY_REPORT_ONLY": "1",
            }
        )
        env.update(self.env)
        return env

    def sibling(self, **options: Any) -> DaphneServer:
        """Another process of the same site: same settings, application and SQLite file
        (rooms made once are seen by both); ``options`` as for the constructor (``nice``...).
        Not started; its own work dir holds its log and media."""
        env = {**self.env, "SQLITE_PATH": self.full_env()["SQLITE_PATH"]}
        return DaphneServer(env=env, app=self.app, daphne=self.daphne, **options)

    def manage(self, *args: str, extra_env: dict[str, str] | None = None) -> str:
        """Run a management command against this server's database."""
        env = self.full_env() | (extra_env or {})
        done = run_python("manage.py", *args, env=env, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def create_rooms(self, *rooms: tuple[str, str] | tuple[str, str, int]) -> None:
        """Rooms ``(slug, kind[, capacity])`` in this server's database (title = slug)."""
        spec = json.dumps([[*room, None][:3] for room in rooms])
        self.manage(
            "shell",
            "-c",
            "import json; from rooms.models import Room; "
            f"[Room.objects.create(slug=s, title=s, kind=k, **({{'capacity': c}} if c else {{}})) "
            f"for s, k, c in json.loads({spec!r})]",
        )

    def command(self) -> list[str]:
        if self.unix_socket is not None:
            listen = ["-u", str(self.unix_socket)]
        else:
            listen = ["-b", "127.0.0.1", "-p", str(self.port)]
        return [
            *priority_prefix(nice=self.nice, sched_idle=self.sched_idle),
            *self.daphne,
            *listen,
            *(["--access-log", self.access_log] if self.access_log is not None else []),
            # Daphne refuses (403) a socket the app has not accepted within 5 s: on a
            # loaded shared machine the first connects can take longer than that
            *("--websocket_connect_timeout", "60"),
            self.app,
        ]

    def start(self, *, migrate: bool = True, timeout: float = 90.0) -> DaphneServer:
        if migrate:
            self.manage("migrate", "--noinput", "-v0")
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process without waiting for it (several start at once, then
        ``wait_ready``). The log is appended to: a restarted server keeps its history."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.process = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=self.full_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 90.0) -> DaphneServer:
        """Until the site answers a request (or the process exits: RuntimeError)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Daphne exited early:\n{self.log()}")
            if self._answers("/me/token/"):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Daphne did not answer within {timeout}s:\n{self.log()}")

    def _answers(self, path: str) -> bool:
        if self.unix_socket is None:
            try:
                with urllib.request.urlopen(self.url + path, timeout=1):
                    return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False
        conn = _UnixHTTPConnection(str(self.unix_socket))
        try:
            conn.request("GET", path, headers={"Host": "127.0.0.1"})
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def log(self) -> str:
        return log_tail(self.log_path)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no cleanup code runs in the server."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.process)


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (a server started with ``unix_socket``)."""

    def __init__(self, path: str) -> None:
        super().__init__("127.0.0.1", timeout=1)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)
