"""The mesh story across two Daphne processes that share one real Redis.

Pages are split across the processes (Ada and Dana on the first, Brian and Chen on the
second), so the signaling of two of the three links crosses processes through the
channel layer, capacity is enforced across processes (Dana, on the first, is refused
because two people are in the room on the second), and the leave/rejoin happens on the
second process while Ada watches from the first. Each process serves its own origin
(another port); both allow 127.0.0.1.
"""

from __future__ import annotations

import uuid

import pytest
import redis

from tests.e2e.test_mesh import run_mesh_flow


@pytest.fixture
def two_servers(redis_url, daphne_factory):
    """Two Daphne processes, one SQLite file, one Redis (keys under a unique prefix)."""
    tag = uuid.uuid4().hex[:8]
    env = {
        "REDIS_URL": redis_url,
        "CHANNEL_LAYER_PREFIX": f"rtcsite-test-{tag}-layer",
        "PRESENCE_KEY_PREFIX": f"rtcsite-test-{tag}-presence",
    }
    first = daphne_factory(env)
    second = daphne_factory({**env, "SQLITE_PATH": first.full_env()["SQLITE_PATH"]}, migrate=False)
    yield first, second
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"rtcsite-test-{tag}*"):
        client.delete(key)


@pytest.mark.redis
def test_three_browsers_full_mesh_across_two_processes(chromium_browser, two_servers):
    first, second = two_servers
    run_mesh_flow(chromium_browser, [first.url, second.url, second.url, first.url], "Mesh Across")
