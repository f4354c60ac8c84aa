"""The publisher page survives the death of the process running its stream.

The browser publishes (HTTP or WebSocket ingest) to a Daphne that is then killed with
``kill -9`` and replaced by a new process on the same port (as systemd restarts a crashed
unit; same database and MEDIA_ROOT). The page's retries (network errors, then
``wrong-process`` with ``retry_after`` while the dead process's lease runs) reach the new
process, which takes the stream over: the page stays live, the stream goes on in
``run1/``, and stopping it from the page ends it as a valid VOD of both runs.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.support.daphne import DaphneServer
from tests.support.ingest import start_publishing_in_page, stream_status
from tests.support.media import check_stitched_vod

pytestmark = pytest.mark.timeout(600)

WAIT_MS = 120_000
LEASE = 4


@pytest.mark.parametrize("transport", ["http", "ws"])
def test_publisher_page_carries_on_after_its_process_is_killed(page, tmp_path, transport):
    env = {"STREAM_OWNER_LEASE": str(LEASE), "MEDIA_ROOT": str(tmp_path / "media")}
    first = DaphneServer(env=env).start()
    second = None
    try:
        slug = start_publishing_in_page(page, first, f"Crash {transport}", transport)
        out = tmp_path / "media" / "streams" / slug
        expect(page.get_by_test_id("pub-segments")).to_have_text(
            re.compile(r"^[3-9]|\d\d"), timeout=WAIT_MS
        )
        first.kill()
        shared = {**env, "SQLITE_PATH": first.full_env()["SQLITE_PATH"]}
        second = DaphneServer(env=shared, port=first.port).start(migrate=False)
        deadline = time.monotonic() + WAIT_MS / 1000
        while not list(out.glob("run1/chunk-stream0-*.m4s")):
            assert time.monotonic() < deadline, "the stream was not taken over"
            assert page.locator("#publisher").get_attribute("data-pub-state") == "live"
            time.sleep(0.1)
        assert stream_status(second, slug)["status"] == "live"
        page.get_by_test_id("stop").click()
        expect(page.locator("#publisher")).to_have_attribute(
            "data-pub-state", "ended", timeout=WAIT_MS
        )
        assert stream_status(second, slug)["status"] == "ended"
        check_stitched_vod(out, runs=2)
    finally:
        first.stop()
        if second is not None:
            second.stop()
