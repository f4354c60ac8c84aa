"""Fixtures shared by the end-to-end tests: the e2e marker, and a Chromium whose fake camera
plays the astronaut (one face; tests/support/media.py), used by the face page, face streams and
the echo room tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.support.chromium import ChromiumMissing, chromium_path, launched_chromium
from tests.support.media import astronaut_y4m


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module")
def astronaut_clip(tmp_path_factory) -> tuple[Path, tuple[int, int, int, int]]:
    """A .y4m of the astronaut for ``--use-file-for-fake-video-capture``, and the face box."""
    return astronaut_y4m(tmp_path_factory.mktemp("faces") / "astronaut.y4m")


@pytest.fixture(scope="module")
def face_browser(astronaut_clip) -> Iterator[Browser]:
    """Chromium whose fake camera shows the astronaut (module scope: see tests/conftest.py)."""
    try:
        chromium_path()
    except ChromiumMissing as exc:
        pytest.fail(str(exc))
    with launched_chromium(astronaut_clip[0]) as browser:
        yield browser
