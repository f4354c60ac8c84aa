"""The documented deployment, run for real on 127.0.0.1: Debian's nginx with the site file
``manage.py deploy_config`` renders (the one shipped in deploy/, for this host), web and media
Daphne processes started with the ``ExecStart`` of the rendered systemd units on their Unix
sockets (media ones under ``chrt --idle 0``: the units' ``CPUSchedulingPolicy=idle``), one
Redis (a private key prefix), a fresh PostgreSQL database, one MEDIA_ROOT and collectstatic'd
files served by nginx.

Used by the topology tests (a pytest fixture wraps ``running_topology``) and the soak
benchmark, so nothing here imports pytest. Everything is stopped by PID and deleted after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.daphne import VENV_BIN, DaphneServer
from tests.support.ports import free_port
from tests.support.postgres import fresh_database
from tests.support.process import ROOT, log_tail, run_python, stop_process

DEFAULT_NGINX = "/usr/sbin/nginx"

#: nginx's main configuration around the site file: everything it writes in the work dir,
#: in the foreground, one worker (the tests' machines have two cores).
MAIN_CONF = """\
{user}
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {dir}/access.log;  # Nginx.access_log
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    include {site};
}}
"""


class NginxMissing(RuntimeError):
    """No nginx binary at ``NGINX_PATH`` (scripts/test-env.sh installs Debian's)."""


def nginx_path() -> str:
    path = os.environ.get("NGINX_PATH", DEFAULT_NGINX)
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        raise NginxMissing(
            f"nginx not found at {path}. Install Debian's with 'apt-get install nginx' "
            "(scripts/test-env.sh does this as root) or set NGINX_PATH."
        )
    return path


@dataclass
class Nginx:
    """One nginx master (and its worker) in the foreground, with its own prefix, pid file,
    logs and temp paths under ``workdir``; ``site`` is included into a minimal main config."""

    site: Path
    workdir: Path
    port: int | None = None  # where the site listens, to wait for it
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        # Workers run as nginx's default user (nobody) when the master is root; here they
        # must read files in private temp dirs, so they keep the user they were started as.
        user = "user root root;" if os.geteuid() == 0 else ""
        self.conf = self.workdir / "nginx.conf"
        self.conf.write_text(MAIN_CONF.format(user=user, dir=self.workdir, site=self.site))
        self.error_log = self.workdir / "error.log"

    def argv(self, *extra: str) -> list[str]:
        prefix = str(self.workdir) + "/"
        return [nginx_path(), "-p", prefix, "-e", str(self.error_log), "-c", str(self.conf), *extra]

    def check(self) -> subprocess.CompletedProcess:
        """``nginx -t``: the configuration parses and every file it names loads."""
        return subprocess.run(self.argv("-t"), capture_output=True, text=True, timeout=30)

    def start(self, timeout: float = 30) -> Nginx:
        log = open(self.workdir / "stderr.log", "ab")  # noqa: SIM115 - the child's lifetime
        self.process = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited early:\n{self.log()}")
            if self.port is None or _accepts(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen within {timeout}s:\n{self.log()}")

    @property
    def access_log(self) -> Path:
        """One line per request (sockets' too): what nginx itself served."""
        return self.workdir / "access.log"

    def log(self) -> str:
        return log_tail(self.error_log) + log_tail(self.workdir / "stderr.log")

    def stop(self) -> None:
        stop_process(self.process)  # SIGTERM: nginx's fast shutdown, workers included


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# --- the rendered deployment files ----------------------------------------------------------
def render_deploy_files(out: Path, *options: str) -> Path:
    """``manage.py deploy_config --out out *options`` (the command an operator runs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
    done = run_python(
        "manage.py", "deploy_config", "--out", str(out), *options, env=env, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"deploy_config failed:\n{done.stdout}\n{done.stderr}")
    return out


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines as systemd's ``EnvironmentFile=`` reads them (quotes removed,
    ``#`` lines skipped)."""
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = "".join(shlex.split(value)) if value.strip() else ""
    return env


def unit_exec_start(unit: Path, instance: str) -> list[str]:
    """The ``ExecStart=`` of a systemd template unit for one instance (``%i``)."""
    match = re.search(r"^ExecStart=(.+)$", unit.read_text(), re.M)
    assert match, f"{unit} has no ExecStart="
    return shlex.split(match.group(1).replace("%i", instance))


def unit_environment(unit: Path) -> dict[str, str]:
    """The ``Environment=KEY=value`` lines of a unit (added to its ``EnvironmentFile=``)."""
    return dict(
        line.partition("=")[::2]
        for line in re.findall(r"^Environment=(\S+)$", unit.read_text(), re.M)
    )


def unit_sched_idle(unit: Path) -> bool:
    return re.search(r"^CPUSchedulingPolicy=idle$", unit.read_text(), re.M) is not None


def process_id(pid: int) -> str:
    """What rtcsite.process.PROCESS_ID is in the process with this pid (presence, streams)."""
    return f"{socket.gethostname()[:60]}:{pid}"


# --- the topology ----------------------------------------------------------------------------
@dataclass
class Topology:
    """A running deployment. Processes are named after their sockets: ``web-1``, ``web-2``,
    ``media-1``."""

    workdir: Path
    port: int
    nginx: Nginx
    processes: dict[str, DaphneServer]
    env: dict[str, str]
    deploy_dir: Path
    monitor_port: int
    base_url: str = field(init=False)
    ws_url: str = field(init=False)
    #: nginx's monitoring server (/metrics, /healthz, /readyz)
    monitor_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.monitor_url = f"http://127.0.0.1:{self.monitor_port}"

    @property
    def url(self) -> str:
        """``base_url``, under the name tests/support/ingest.py expects of a server."""
        return self.base_url

    @property
    def web(self) -> list[str]:
        return [name for name in self.processes if name.startswith("web-")]

    @property
    def media(self) -> list[str]:
        return [name for name in self.processes if name.startswith("media-")]

    @property
    def media_root(self) -> Path:
        return Path(self.env["MEDIA_ROOT"])

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def process_id(self, name: str) -> str:
        """The ``host:pid`` the process records in presence and on streams."""
        return process_id(self.pid(name))

    def name_of(self, process: str) -> str | None:
        """Which of our processes a ``host:pid`` is (None: none running now)."""
        for name in self.processes:
            server = self.processes[name]
            if (
                server.process
                and server.process.poll() is None
                and self.process_id(name) == process
            ):
                return name
        return None

    def kill(self, name: str) -> None:
        """``kill -9``: no cleanup runs in that process (its presence is left to expire)."""
        self.processes[name].kill()

    def terminate(self, name: str) -> None:
        server = self.processes[name]
        if server.process and server.process.poll() is None:
            os.kill(server.pid, signal.SIGTERM)
            server.process.wait(timeout=30)

    def restart(self, name: str, timeout: float = 90) -> None:
        """Start it again on its socket, as systemd's ``Restart=always`` does (a running
        process is killed first)."""
        server = self.processes[name]
        server.kill()
        server.spawn()
        server.wait_ready(timeout)

    def log(self, name: str, chars: int = 5000) -> str:
        """The tail of a process's log (Daphne's access log lines included)."""
        if name == "nginx":
            return self.nginx.log()
        return log_tail(self.processes[name].log_path, chars)

    def logs(self) -> str:
        """Every log's tail, for failure messages."""
        return "\n".join(f"--- {name}\n{self.log(name)}" for name in ["nginx", *self.processes])

    def served(self, name: str, needle: str) -> int:
        """How many lines of that process's log (its access log: ``"GET /path/"``,
        ``"WSCONNECT /ws/rooms/<slug>/"``) contain ``needle``."""
        text = log_tail(self.processes[name].log_path, 10**9)
        return sum(needle in line for line in text.splitlines())

    def served_by(self, needle: str) -> list[str]:
        """The processes whose log names ``needle``."""
        return [name for name in self.processes if self.served(name, needle)]

    def wait_routed(self, path: str, name: str, timeout: float = 60) -> None:
        """GET ``path`` through nginx until ``name`` answers it: e.g. until nginx sends a
        slug back to a restarted process (it skips a failed one for ``fail_timeout``)."""
        before = self.served(name, f'"GET {path}"')
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # a socket path answers 404 to a GET: the process logged it all the same
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(self.base_url + path, timeout=10).close()
            if self.served(name, f'"GET {path}"') > before:
                return
            time.sleep(0.5)
        raise AssertionError(f"nginx did not route {path} to {name} within {timeout}s")

    def room_presence(self, slug: str) -> list[dict]:
        """The room's live presences in Redis (``peer_id``, ``process``...), read through the
        site's own presence backend."""
        from presence.backends.redis import RedisPresenceBackend

        async def read() -> list[dict]:
            backend = RedisPresenceBackend(
                self.env["REDIS_URL"],
                prefix=self.env["PRESENCE_KEY_PREFIX"],
                ttl=float(self.env.get("PRESENCE_TTL", 30)),
            )
            try:
                return [presence.as_dict() for presence in await backend.list_room(slug)]
            finally:
                await backend.close()

        # In a thread of its own: Playwright's sync API keeps a loop running in this one.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, read()).result()

    def manage(self, *args: str, extra_env: dict[str, str] | None = None) -> str:
        """A management command with the processes' settings (same database and Redis)."""
        return next(iter(self.processes.values())).manage(*args, extra_env=extra_env)

    def create_superuser(self, username: str, password: str) -> None:
        self.manage(
            "createsuperuser",
            "--noinput",
            "--username",
            username,
            "--email",
            f"{username}@example.org",
            extra_env={"DJANGO_SUPERUSER_PASSWORD": password},
        )

    def stop(self) -> None:
        self.nginx.stop()
        for server in self.processes.values():
            server.stop()


@contextmanager
def running_topology(
    *,
    web: int = 2,
    media: int = 1,
    env: dict[str, str] | None = None,
    redis_url: str | None = None,
    key_prefix: str | None = None,
    database_url: str | None = None,
    workdir: Path | None = None,
    timeout: float = 180,
) -> Iterator[Topology]:
    """Start the deployment, yield it, stop it and delete what it made.

    ``env`` adds settings (e.g. a short ``PRESENCE_TTL``); ``redis_url`` defaults to
    ``TEST_REDIS_URL`` (keys under ``key_prefix``, default a random one, deleted after);
    ``database_url`` defaults to a fresh database on ``TEST_POSTGRES_URL`` (dropped after).
    """
    nginx_path()  # fail first, with the install hint
    redis_url = redis_url or os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    key_prefix = key_prefix or f"rtcsite-topology-{uuid.uuid4().hex[:10]}"
    own_workdir = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="rtcsite-topo-"))
    with ExitStack() as stack:
        if own_workdir:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        stack.callback(_delete_keys, redis_url, key_prefix)
        if database_url is None:
            database_url = stack.enter_context(fresh_database())
        port, monitor_port = free_port(), free_port()
        deploy_dir = render_deploy_files(
            workdir / "deploy",
            *("--server-name", "127.0.0.1", "--http", f"127.0.0.1:{port}"),
            *("--monitor", f"127.0.0.1:{monitor_port}"),
            *("--root", str(ROOT), "--venv", str(VENV_BIN.parent), "--data-dir", str(workdir)),
            *("--run-dir", str(workdir / "run"), "--web", str(web), "--media", str(media)),
        )
        (workdir / "run").mkdir(exist_ok=True)
        site_env = read_env_file(deploy_dir / "rtcsite.env.example") | {
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CHANNEL_LAYER_PREFIX": f"{key_prefix}-layer",
            "PRESENCE_KEY_PREFIX": f"{key_prefix}-presence",
            "CACHE_KEY_PREFIX": f"{key_prefix}-cache",
            # Test-only: no STUN/TURN host to reach (Chromium resolves only 127.0.0.1),
            # loopback candidates for the media processes' peers, and the CSP in report-only
            # mode (Playwright's wait_for_function evals its predicate).
            "ICE_SERVERS": "[]",
            "SERVER_ROOM_ALLOW_PRIVATE_CANDIDATES": "1",
            "CONTENT_SECURITY_POLICY_REPORT_ONLY": "1",
            **(env or {}),
        }
        processes: dict[str, DaphneServer] = {}
        for kind, count in (("web", web), ("media", media)):
            unit = deploy_dir / "systemd" / f"rtcsite-{kind}@.service"
            for n in range(1, count + 1):
                argv = unit_exec_start(unit, str(n))
                sock = Path(argv[argv.index("-u") + 1])
                server = DaphneServer(
                    env=site_env | unit_environment(unit),
                    workdir=workdir / f"{kind}-{n}",
                    daphne=[a for i, a in enumerate(argv[:-1]) if not _is_socket_arg(argv, i)],
                    app=argv[-1],
                    unix_socket=sock,
                    access_log=None,  # the unit's own: "-", into the process's log
                    sched_idle=unit_sched_idle(unit),
                )
                server.workdir.mkdir(parents=True, exist_ok=True)
                processes[f"{kind}-{n}"] = server
        nginx = Nginx(deploy_dir / "nginx" / "rtcsite.conf", workdir / "nginx", port=port)
        topology = Topology(workdir, port, nginx, processes, site_env, deploy_dir, monitor_port)
        stack.callback(topology.stop)
        first = next(iter(processes.values()))
        first.manage("migrate", "--noinput", "-v0")
        first.manage("collectstatic", "--noinput", "-v0")
        for server in processes.values():
            server.spawn()
        for server in processes.values():
            server.wait_ready(timeout)
        nginx.start()
        yield topology


def _is_socket_arg(argv: list[str], i: int) -> bool:
    """``-u <path>``: DaphneServer adds it back from ``unix_socket``."""
    return argv[i] == "-u" or (i > 0 and argv[i - 1] == "-u")


def _delete_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
