"""A real coturn TURN server on 127.0.0.1 with TURN REST (shared-secret) auth."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port
from tests.support.process import log_tail, stop_process


class TurnMissing(RuntimeError):
    pass


def turnserver_path() -> str:
    path = os.environ.get("TURNSERVER_PATH") or shutil.which("turnserver") or ""
    if not path or not os.access(path, os.X_OK):
        raise TurnMissing(
            "coturn's turnserver is not installed: 'apt-get install coturn' as root "
            "(scripts/run-tests does this) or set TURNSERVER_PATH."
        )
    return path


@dataclass
class TurnServer:
    """``turnserver -n`` (no config file), loopback only, relay ports in a small range."""

    port: int = field(default_factory=free_port)
    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    realm: str = "rtcsite.test"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rtcsite-turn-")))
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "turn.log"

    @property
    def ice_server(self) -> dict:
        """The ICE_SERVERS entry: the site derives REST credentials from the secret."""
        return {"urls": [f"turn:127.0.0.1:{self.port}?transport=udp"], "secret": self.secret}

    def start(self) -> TurnServer:
        low = 49152 + secrets.randbelow(10000)
        args = [
            turnserver_path(),
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={self.port}",
            f"--min-port={low}",
            f"--max-port={low + 200}",
            "--use-auth-secret",
            f"--static-auth-secret={self.secret}",
            f"--realm={self.realm}",
            "--allow-loopback-peers",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            f"--userdb={self.workdir / 'turndb'}",
            f"--log-file={self.log_path}",
            "--simple-log",
            "--no-stdout-log",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"turnserver exited: {self.log()}")
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"turnserver did not answer: {self.log()}")

    def _answers(self) -> bool:
        """A STUN binding request over UDP gets a response once the server listens."""
        request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + secrets.token_bytes(12)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            try:
                sock.sendto(request, ("127.0.0.1", self.port))
                data, _ = sock.recvfrom(2048)
            except OSError:
                return False
        return data[:2] == b"\x01\x01"

    def log(self) -> str:
        return log_tail(self.log_path, 4000)

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)
