"""A real Daphne process serving the site, for integration and browser tests.

Each server gets its own SQLite file and MEDIA_ROOT (so tests never touch the developer's
database), runs the real ASGI application, and is stopped by PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
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
    #: CPU niceness (``nice -n``): media processes run below the web processes (deploy.md)
    nice: int = 0
    #: Linux SCHED_IDLE (``chrt --idle``): any normal task that wakes preempts this process
    sched_idle: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

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
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.env)
        return env

    def manage(self, *args: str, extra_env: dict[str, str] | None = None) -> str:
        """Run a management command against this server's database."""
        env = self.full_env() | (extra_env or {})
        done = subprocess.run(
            [str(VENV_BIN / "python"), "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start(self, *, migrate: bool = True, timeout: float = 90.0) -> DaphneServer:
        if migrate:
            self.manage("migrate", "--noinput", "-v0")
        self.log_path = self.workdir / "daphne.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the child's lifetime
        self.process = subprocess.Popen(
            [
                *priority_prefix(nice=self.nice, sched_idle=self.sched_idle),
                str(VENV_BIN / "daphne"),
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--access-log",
                os.devnull,
                # Daphne refuses (403) a socket the app has not accepted within 5 s: on a
                # loaded shared machine the first connects can take longer than that
                "--websocket_connect_timeout",
                "60",
                self.app,
            ],
            cwd=ROOT,
            env=self.full_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Daphne exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/me/token/", timeout=1):
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Daphne did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except (AttributeError, OSError):
            return ""

    def kill(self) -> None:
        """SIGKILL, as a crash would: no cleanup code runs in the server."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
