"""Who writes prometheus-client's multi-process files: servers only, into the directory only."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.process import ROOT

COUNT_A_JOIN = (
    "import os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'rtcsite.settings'); {setup}; "
    "from rtcsite import metrics; metrics.JOINS.labels('room').inc(); "
    "print(metrics.MULTIPROC_DIR)"
)


def run(code: str, cwd, multiproc_dir: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(PROMETHEUS_MULTIPROC_DIR=multiproc_dir, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_only_servers_write_into_the_directory(tmp_path):
    shared = tmp_path / "metrics"
    shared.mkdir()
    # a management command (no rtcsite.asgi): its values stay in memory
    assert (
        run(COUNT_A_JOIN.format(setup="import django; django.setup()"), tmp_path, str(shared)) == ""
    )
    assert list(shared.iterdir()) == []
    # a server: its values go to the directory
    assert run(COUNT_A_JOIN.format(setup="import rtcsite.asgi"), tmp_path, str(shared)) == str(
        shared
    )
    assert any(p.name.startswith("counter_") for p in shared.iterdir())


def test_an_empty_setting_writes_no_files_anywhere(tmp_path):
    # prometheus-client alone takes a set-but-empty variable for multi-process mode and
    # writes its files into the working directory
    assert run(COUNT_A_JOIN.format(setup="import rtcsite.asgi"), tmp_path, "") == ""
    assert list(tmp_path.glob("*.db")) == []
