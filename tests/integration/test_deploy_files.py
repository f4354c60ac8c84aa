"""The deployment files in deploy/: generated, current, and accepted by the real tools.

deploy/ holds what ``manage.py deploy_config`` writes with its defaults (one source for the
docs, the topology tests and an operator's host): a template changed without re-running it
fails here. Debian's nginx must accept the shipped site file (``nginx -t``, wrapped in a
minimal main config, its certificate paths pointed at a real certificate), and the rendering
for a plain-HTTP test host.
"""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from rtcsite.management.commands.deploy_config import FILES
from tests.support.process import ROOT
from tests.support.topology import (
    Nginx,
    NginxMissing,
    nginx_path,
    read_env_file,
    render_deploy_files,
    unit_exec_start,
    unit_sched_idle,
)

DEPLOY = ROOT / "deploy"
LETSENCRYPT = "/etc/letsencrypt/live/rtc.example.org/"


def render(out: Path, *args: str) -> dict[str, str]:
    call_command("deploy_config", "--out", str(out), *args, stdout=StringIO())
    return {name: (out / name).read_text() for name in FILES}


def test_shipped_files_are_the_commands_output(tmp_path):
    rendered = render(tmp_path)
    shipped = {name: (DEPLOY / name).read_text() for name in FILES}
    stale = [name for name in FILES if rendered[name] != shipped[name]]
    assert not stale, (
        f"deploy/{', deploy/'.join(stale)} differ from the templates' output: run "
        "'.venv/bin/python manage.py deploy_config --out deploy'"
    )


def test_units_run_daphne_on_their_sockets_media_at_idle_priority():
    web = DEPLOY / "systemd" / "rtcsite-web@.service"
    media = DEPLOY / "systemd" / "rtcsite-media@.service"
    assert unit_exec_start(web, "2")[1:] == [
        *("--proxy-headers", "-u", "/run/rtcsite/web-2.sock"),
        *("--access-log", "-", "rtcsite.asgi:application"),
    ]
    assert "/run/rtcsite/media-1.sock" in unit_exec_start(media, "1")
    assert unit_sched_idle(media) and not unit_sched_idle(web)
    site = (DEPLOY / "nginx" / "rtcsite.conf").read_text()
    for sock in ("web-1", "web-2", "media-1"):
        assert f"server unix:/run/rtcsite/{sock}.sock" in site


def test_env_example_names_the_paths_nginx_serves():
    env = read_env_file(DEPLOY / "rtcsite.env.example")
    site = (DEPLOY / "nginx" / "rtcsite.conf").read_text()
    assert f"alias {env['STATIC_ROOT']}/;" in site
    assert f"alias {env['MEDIA_ROOT']}/streams/;" in site
    assert f"alias {env['RECORDINGS_ROOT']}/;" in site
    assert f"location {env['RECORDINGS_X_ACCEL_PREFIX']} {{" in site
    # systemd keeps everything after "=": no inline comments may hide in a value
    assert not [value for value in env.values() if " #" in value]


def test_every_proxied_location_sets_the_forwarded_headers():
    """Each ``proxy_pass`` (sockets and ingest included) passes the client's one address, the
    scheme and the Host with its port: a missing one makes quotas count nginx's address, or
    sockets fail the Origin check."""
    site = (DEPLOY / "nginx" / "rtcsite.conf").read_text()
    blocks = site.split("location ")[1:]
    proxied = [block for block in blocks if "proxy_pass" in block.split("}")[0]]
    assert len(proxied) == site.count("proxy_pass ") == 11
    for block in proxied:
        body = block.split("}")[0]
        assert "proxy_set_header X-Forwarded-For $remote_addr;" in body, block
        assert "proxy_set_header X-Forwarded-Proto $scheme;" in body, block
        assert "proxy_set_header Host $http_host;" in body, block
    assert "$proxy_add_x_forwarded_for" not in site


def test_refuses_impossible_options(tmp_path):
    with pytest.raises(CommandError, match="at least one"):
        render(tmp_path, "--web", "0")
    with pytest.raises(CommandError, match="start and end"):
        render(tmp_path, "--recordings-prefix", "/_recordings")


@pytest.fixture
def nginx_binary() -> str:
    try:
        return nginx_path()
    except NginxMissing as exc:
        pytest.fail(str(exc))


def check(site: Path, workdir: Path) -> str:
    done = Nginx(site, workdir).check()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "[warn]" not in output and "[emerg]" not in output, output
    return output


def test_nginx_accepts_the_shipped_site_file(tmp_path, nginx_binary):
    call_command("gencert", out_dir=tmp_path / "tls", hosts=["rtc.example.org"], stdout=StringIO())
    text = (DEPLOY / "nginx" / "rtcsite.conf").read_text()
    assert text.count(LETSENCRYPT) == 2
    text = text.replace(LETSENCRYPT + "fullchain.pem", str(tmp_path / "tls" / "cert.pem"))
    text = text.replace(LETSENCRYPT + "privkey.pem", str(tmp_path / "tls" / "key.pem"))
    site = tmp_path / "rtcsite.conf"
    site.write_text(text)
    assert "test is successful" in check(site, tmp_path / "nginx")


def test_nginx_accepts_a_plain_http_rendering(tmp_path, nginx_binary):
    out = render_deploy_files(
        tmp_path / "deploy", "--http", "127.0.0.1:8080", "--web", "4", "--media", "2"
    )
    site = out / "nginx" / "rtcsite.conf"
    assert "listen 127.0.0.1:8080;" in site.read_text()
    assert "ssl" not in site.read_text()
    check(site, tmp_path / "nginx")


def test_docs_show_the_files_themselves():
    """docs/deploy.md's blocks marked ``<!-- deploy/<file> -->`` are those files, verbatim."""
    docs = (ROOT / "docs" / "deploy.md").read_text()
    shown = dict(re.findall(r"<!-- deploy/(\S+) -->\n```\w+\n(.*?)```\n", docs, re.S))
    assert set(shown) == set(FILES)
    for name, text in shown.items():
        assert text == (DEPLOY / name).read_text(), f"docs/deploy.md shows an old deploy/{name}"
