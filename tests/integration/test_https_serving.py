"""Daphne serves the site over TLS with the certificate `manage.py gencert` makes.

Starts the real ``daphne -e ssl:...`` command printed by gencert (on 127.0.0.1 and a free
port) against a freshly migrated SQLite database, and fetches the lobby over HTTPS,
verifying the self-signed certificate as its own CA with hostname 127.0.0.1.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from rtcsite.certs import daphne_endpoint
from tests.support.daphne import ROOT, VENV_BIN, DaphneServer
from tests.support.ports import free_port

STARTUP_TIMEOUT = 45.0


def tls_context(cafile: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile))
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    return context


def wait_until_serving(proc: subprocess.Popen, port: int, context: ssl.SSLContext, log: Path):
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"daphne exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1"),
            ):
                return
        except (OSError, ssl.SSLError) as exc:
            last_error = exc
            time.sleep(0.2)
    pytest.fail(f"daphne did not answer on {port}: {last_error!r}\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_daphne_serves_lobby_over_https(tmp_path):
    cert_dir = tmp_path / "certs"
    call_command("gencert", out_dir=cert_dir, hosts=["127.0.0.1", "localhost"], stdout=StringIO())
    key_path, cert_path = cert_dir / "key.pem", cert_dir / "cert.pem"
    # The shared harness gives the env (DEBUG=1, own SQLITE_PATH / MEDIA_ROOT) and migrates;
    # the process is started here because it listens with the TLS endpoint (-e ssl:...).
    harness = DaphneServer(workdir=tmp_path)
    harness.manage("migrate", "--noinput", "-v0")
    env = harness.full_env()

    port = free_port()
    endpoint = daphne_endpoint(key_path, cert_path, port=port, interface="127.0.0.1")
    log = tmp_path / "daphne.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [str(VENV_BIN / "daphne"), "-e", endpoint, "rtcsite.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        context = tls_context(cert_path)
        wait_until_serving(proc, port, context, log)

        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=15)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            body = response.read().decode()
            peer_cert = conn.sock.getpeercert(binary_form=True)
        finally:
            conn.close()
        assert response.status == 200, body
        assert '<h1 class="visually-hidden">Lobby</h1>' in body
        assert "<title>Lobby · rtcsite</title>" in body
        assert ssl.DER_cert_to_PEM_cert(peer_cert).strip() == cert_path.read_text().strip()

        # The certificate really is checked: a client trusting only the system CAs refuses it,
        # and one trusting it refuses a name that is not in its SubjectAltName.
        with (
            pytest.raises(ssl.SSLCertVerificationError),
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            pass
        with (
            pytest.raises(ssl.SSLCertVerificationError, match="match"),
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="not-in-the-cert.example"),
        ):
            pass
    finally:
        stop(proc)
    assert proc.returncode is not None
