"""`manage.py serve_lan` started for real: HTTPS with DEBUG=0 and a kept random key; and
servers that would face the network with the public default key refuse to start."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import ssl
import stat
import subprocess
import time

import websockets

from tests.integration.test_https_serving import stop, tls_context, wait_until_serving
from tests.support.daphne import ROOT, VENV_BIN
from tests.support.ports import free_port
from tests.support.process import run_python

SCRUB = ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "DJANGO_SETTINGS_MODULE")


def base_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST") and k not in SCRUB}
    env.update(
        SQLITE_PATH=str(tmp_path / "db.sqlite3"),
        MEDIA_ROOT=str(tmp_path / "media"),
        STATIC_ROOT=str(tmp_path / "static"),
        PYTHONUNBUFFERED="1",
    )
    return env


def get(port: int, context: ssl.SSLContext, path: str) -> tuple[int, str, dict]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=15)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    finally:
        conn.close()


def serve_lan(tmp_path, port: int) -> tuple[subprocess.Popen, object]:
    log = tmp_path / f"serve_lan-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "python"), "manage.py", "serve_lan", "--port", str(port),
                "--interface", "127.0.0.1", "--host", "127.0.0.1", "--host", "localhost",
                "--state-dir", str(tmp_path / "state"),
            ],
            cwd=ROOT, env=base_env(tmp_path), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return proc, log


async def open_socket(port: int, token: str, origin: str, context: ssl.SSLContext) -> dict:
    url = f"wss://127.0.0.1:{port}/ws/lobby/?token={token}&v=1"
    async with websockets.connect(url, origin=origin, ssl=context, open_timeout=15) as ws:
        return json.loads(await asyncio.wait_for(ws.recv(), 10))


def test_serve_lan_https_debug_off_with_a_kept_key(tmp_path):
    port = free_port()
    key_file = tmp_path / "state" / "secret_key"
    proc, log = serve_lan(tmp_path, port)
    try:
        cert = tmp_path / "state" / "cert.pem"
        deadline = time.monotonic() + 60
        while not cert.exists():  # serve_lan makes it before Daphne starts
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        context = tls_context(cert)
        wait_until_serving(proc, port, context, log)
        status, body, _ = get(port, context, "/no-such-page/")
        assert status == 404
        assert "DEBUG = True" not in body and "URLconf" not in body  # not the debug page
        status, body, headers = get(port, context, "/")
        assert status == 200 and "Content-Security-Policy" in headers
        # static files are served by whitenoise from collectstatic's hashed names
        css = re.search(r'href="(/static/css/site\.[0-9a-f]{12}\.css)"', body)
        assert css, body[:500]
        assert get(port, context, css.group(1))[0] == 200
        for page in ("/streams/", "/faces/"):  # pages naming vendored files by hashed name
            assert get(port, context, page)[0] == 200, page
        # a wss socket from the page's own https origin is accepted (CSRF_TRUSTED_ORIGINS)
        token = re.search(r'name="rtc-ws-token" content="([^"]+)"', body).group(1)
        hello = asyncio.run(open_socket(port, token, f"https://127.0.0.1:{port}", context))
        assert hello["type"] == "hello"
    finally:
        stop(proc)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    first_key, first_stat = key_file.read_text(), key_file.stat()
    assert len(first_key.strip()) >= 50

    port = free_port()
    proc, log = serve_lan(tmp_path, port)
    try:
        wait_until_serving(proc, port, context, log)  # the same certificate, still valid
        assert get(port, context, "/")[0] == 200
    finally:
        stop(proc)
    assert key_file.read_text() == first_key
    assert key_file.stat().st_mtime_ns == first_stat.st_mtime_ns


def test_default_key_refuses_to_listen_beyond_loopback(tmp_path):
    env = base_env(tmp_path)  # no SECRET_KEY: the public default
    port = str(free_port())
    daphne = subprocess.run(
        [str(VENV_BIN / "daphne"), "-b", "0.0.0.0", "-p", port, "rtcsite.asgi:application"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert daphne.returncode != 0
    assert "Refusing to listen on 0.0.0.0 with the default SECRET_KEY" in daphne.stderr
    assert "Traceback" not in daphne.stderr
    runserver = run_python(
        "manage.py", "runserver", "--noreload", f"0.0.0.0:{port}", env=env, timeout=60
    )
    assert runserver.returncode != 0
    assert "Refusing to listen on 0.0.0.0" in runserver.stdout + runserver.stderr
