"""The ASGI application freezes what start-up loaded, so full garbage collections do not
scan it (docs/decisions.md, "Start-up objects frozen"). In a fresh interpreter: the test
process has long since loaded the application."""

import json
import os

from tests.support.process import run_python

PROBE = (
    "import gc, json; import rtcsite.asgi; gc.collect(); "
    "print(json.dumps({'frozen': gc.get_freeze_count(), 'scanned': len(gc.get_objects())}))"
)


def test_startup_objects_are_frozen_and_not_scanned():
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["DJANGO_SETTINGS_MODULE"] = "rtcsite.settings"
    done = run_python("-c", PROBE, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    # Django, Channels, Twisted and the apps: tens of thousands of objects, all frozen ...
    assert figures["frozen"] > 50_000
    # ... and a full collection sees only the few made after the freeze
    assert figures["scanned"] < figures["frozen"] / 10
