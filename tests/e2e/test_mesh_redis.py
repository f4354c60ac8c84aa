"""The mesh story across two Daphne processes that share one real Redis.

Pages are split across the processes (Ada and Dana on the first, Brian and Chen on the
second), so the signaling of two of the three links crosses processes through the
channel layer, capacity is enforced across processes (Dana, on the first, is refused
because two people are in the room on the second), and the leave/rejoin happens on the
second process while Ada watches from the first. Each process serves its own origin
(another port); both allow 127.0.0.1.
"""

from __future__ import annotations

import pytest

from tests.e2e.test_mesh import run_mesh_flow


@pytest.fixture
def two_servers(redis_env, daphne_factory):
    """Two Daphne processes, one SQLite file, one Redis (keys under a unique prefix)."""
    first = daphne_factory(redis_env)
    return first, daphne_factory(redis_env, same_db_as=first)


@pytest.mark.redis
def test_three_browsers_full_mesh_across_two_processes(chromium_browser, two_servers):
    first, second = two_servers
    run_mesh_flow(chromium_browser, [first.url, second.url, second.url, first.url], "Mesh Across")
