"""Production settings and headers: the documented environment passes `check --deploy`,
HTTPS enforcement and HSTS come from the environment, every page has a CSP."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.support.daphne import ROOT, DaphneServer
from tests.support.process import run_python
from tests.support.topology import read_env_file


def documented_production_env() -> dict[str, str]:
    """The example environment file (deploy/rtcsite.env.example, docs/deploy.md), as
    systemd's ``EnvironmentFile=`` reads it, with a real key for its placeholder."""
    env = read_env_file(ROOT / "deploy" / "rtcsite.env.example")
    env["SECRET_KEY"] = secrets.token_urlsafe(50)
    assert {"DEBUG", "SECURE_PROXY_SSL_HEADER", "SECURE_HSTS_SECONDS"} <= env.keys()
    return env


def test_check_deploy_is_clean_with_the_documented_environment():
    documented = documented_production_env()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
    for key in ("REDIS_URL", "DATABASE_URL", "SQLITE_PATH", "CONTENT_SECURITY_POLICY"):
        env.pop(key, None)
    env.update(documented)
    done = run_python(
        "manage.py", "check", "--deploy", "--fail-level", "DEBUG", env=env, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout, done.stdout + done.stderr


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def fetch(url: str, headers: dict[str, str] | None = None):
    """The response, redirects not followed; ``None`` while nothing listens."""
    opener = urllib.request.build_opener(NoRedirect)
    try:
        return opener.open(urllib.request.Request(url, headers=headers or {}), timeout=15)
    except urllib.error.HTTPError as exc:
        return exc
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@pytest.fixture
def tls_behind_proxy(tmp_path):
    """Daphne as behind nginx: the proxy header and HSTS from the environment."""
    server = DaphneServer(
        workdir=tmp_path,
        env={
            "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
            "SECURE_SSL_REDIRECT": "1",
            "SECURE_HSTS_SECONDS": "3600",
        },
    )
    # started here, not with server.start(): its readiness probe follows the redirect to an
    # https:// URL that this plain-HTTP Daphne cannot answer
    server.manage("migrate", "--noinput", "-v0")
    with server.log_path.open("wb") as log:
        server.process = subprocess.Popen(
            server.command(), cwd=ROOT, env=server.full_env(), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 90
        while fetch(server.url + "/me/token/") is None:
            assert server.process.poll() is None, server.log()
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


def test_ssl_redirect_hsts_and_proxy_header_come_from_the_environment(tls_behind_proxy):
    plain = fetch(tls_behind_proxy.url + "/")
    assert plain.status == 301
    assert plain.headers["Location"].startswith("https://127.0.0.1:")

    proxied = fetch(tls_behind_proxy.url + "/", {"X-Forwarded-Proto": "https"})
    assert proxied.status == 200
    assert proxied.headers["Strict-Transport-Security"] == "max-age=3600"


def test_pages_carry_the_content_security_policy(tmp_path, live_server_proc):
    server = DaphneServer(workdir=tmp_path, env={"CONTENT_SECURITY_POLICY_REPORT_ONLY": "0"})
    server.start()
    try:
        for path in ("/", "/streams/", "/faces/", "/no-such-page/"):
            response = fetch(server.url + path)
            policy = response.headers["Content-Security-Policy"]
            assert policy, path
            directives = dict(d.strip().partition(" ")[::2] for d in policy.split(";"))
            assert directives["script-src"].split() == ["'self'", "'wasm-unsafe-eval'"]
            assert directives["style-src"] == "'self'"
            assert "frame-ancestors 'none'" in policy
    finally:
        server.stop()
    # The test servers (tests/support/daphne.py) send the same policy as report-only.
    response = fetch(live_server_proc.url + "/")
    assert "Content-Security-Policy" not in response.headers
    assert response.headers["Content-Security-Policy-Report-Only"] == policy
