"""Launch Debian's Chromium through Playwright, with fake media and no network.

Playwright cannot download browsers here, so tests drive ``/usr/bin/chromium`` (or
``CHROMIUM_PATH``). Chromium obeys only the LAST ``--disable-features`` switch and
Playwright passes its own, so ours repeats Playwright's list and adds
``WebRtcHideLocalIpsWithMdns`` (real host candidates on loopback instead of mDNS names).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PLAYWRIGHT_DISABLED_FEATURES = [
    "AvoidUnnecessaryBeforeUnloadCheckSync",
    "DestroyProfileOnBrowserClose",
    "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable",
    "LensOverlay",
    "MediaRouter",
    "PaintHolding",
    "ThirdPartyStoragePartitioning",
    "AvoidCorsURLLoaderRestartOnRedirect",
    "OptimizationHints",
    "NetworkTimeServiceQuerying",
    "AimEnabled",
    "PreconnectToSearch",
]
DISABLED_FEATURES = [*PLAYWRIGHT_DISABLED_FEATURES, "WebRtcHideLocalIpsWithMdns"]


class ChromiumMissing(RuntimeError):
    pass


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        raise ChromiumMissing(
            f"Chromium not found at {path}. Install Debian's browser with "
            "'apt-get install chromium' (scripts/run-tests does this as root) or set CHROMIUM_PATH."
        )
    return path


def chromium_args(fake_video: Path | None = None) -> list[str]:
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--disable-features=" + ",".join(DISABLED_FEATURES),
        "--autoplay-policy=no-user-gesture-required",
    ]
    if fake_video is not None:
        args.append(f"--use-file-for-fake-video-capture={fake_video}")
    return args


@contextmanager
def launched_chromium(fake_video: Path | None = None) -> Iterator[Any]:
    """A headless Playwright ``Browser`` on Debian's Chromium (the fixtures' one launcher).

    Raises ``ChromiumMissing`` with the install hint when the browser is not there.
    """
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=chromium_args(fake_video)
        )
        try:
            yield browser
        finally:
            browser.close()
