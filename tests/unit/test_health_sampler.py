"""rtcsite.health's sampler: the status record a process publishes, from real objects."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from rtcsite import health, logctx
from rtcsite.process import PROCESS_ID
from signaling.media.peer import ServerPeer


@pytest.mark.django_db(transaction=True)
async def test_record_counts_server_peers_and_carries_recent_errors_with_their_context():
    peer = ServerPeer("sampled")  # a real aiortc peer connection, never connected
    try:
        logctx.start(conn="c0ffee00", room="lounge")
        logging.getLogger("rtcsite.test").error("relay failed")
        record = await health.Sampler().sample()
    finally:
        await peer.close()
    assert record["id"] == PROCESS_ID
    assert record["server_peers"] == 1
    assert REGISTRY.get_sample_value("rtcsite_server_peers") == 1
    assert record["checks"] == {"database": "ok"}  # no REDIS_URL: no Redis check
    assert record["streams"] == []
    error = record["errors"][-1]
    assert (error["message"], error["room"]) == ("relay failed", "lounge")
    assert error["conn"] == "c0ffee00"
    await health.publish(record, ttl=15)  # no Redis: kept in this process
    assert [r["id"] for r in await health.records()] == [PROCESS_ID]
