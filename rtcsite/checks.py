"""System checks that name what is missing and how to get it."""

from __future__ import annotations

from django.core.checks import Warning, register

from rtcsite.vendor import missing_vendor_files


@register()
def vendored_assets(app_configs, **kwargs):  # type: ignore[no-untyped-def]
    missing = missing_vendor_files()
    if not missing:
        return []
    return [
        Warning(
            f"{len(missing)} vendored front-end file(s) missing (e.g. static/vendor/{missing[0]}).",
            hint="Run `npm ci && .venv/bin/python manage.py vendor_assets` (scripts/setup.sh "
            "does both).",
            id="rtcsite.W001",
        )
    ]
