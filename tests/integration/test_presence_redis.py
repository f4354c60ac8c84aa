"""Two 'processes' (two backend instances, two Redis clients) sharing one real Redis.

Their clocks are one shared fake clock: the backend requires synchronised clocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import presence.backends.redis as redis_backend
from presence.backends.base import PeerInfo, Presence
from presence.backends.redis import RedisPresenceBackend
from presence.sweeper import sweep_forever

pytestmark = pytest.mark.redis

TTL = 30.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def two(
    redis_url: str, redis_prefix: str, clock: FakeClock
) -> AsyncIterator[tuple[RedisPresenceBackend, RedisPresenceBackend]]:
    a = RedisPresenceBackend(redis_url, prefix=redis_prefix, ttl=TTL, clock=clock)
    b = RedisPresenceBackend(redis_url, prefix=redis_prefix, ttl=TTL, clock=clock)
    yield a, b
    await a.close()
    await b.close()


async def track(backend: RedisPresenceBackend, room: str, conn: str, process: str) -> Presence:
    return await backend.track(
        room, conn, PeerInfo(user_id=f"u-{conn}", name=conn, process=process)
    )


async def test_both_processes_see_the_same_presence(two) -> None:
    a, b = two
    await track(a, "r1", "on-a", "host:1")
    await track(b, "r1", "on-b", "host:2")
    await track(b, "r2", "other", "host:2")
    for backend in (a, b):
        listed = await backend.list_room("r1")
        assert [(p.peer_id, p.process) for p in listed] == [("on-a", "host:1"), ("on-b", "host:2")]
        assert await backend.room_counts() == {"r1": 2, "r2": 1}
    await b.update_media("r1", "on-a", {"audio": True})
    assert (await a.list_room("r1"))[0].media == {"audio": True}
    assert (await b.untrack("r1", "on-a")).process == "host:1"  # removed by the other process
    assert await a.untrack("r1", "on-a") is None
    assert await a.refresh("r1", "on-a") is False


async def test_concurrent_expire_hands_each_ghost_to_exactly_one(
    two, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two
    monkeypatch.setattr(redis_backend, "EXPIRE_BATCH", 7)  # many small scripts interleave
    expected = set()
    for i in range(300):
        room, conn = f"room{i % 5}", f"conn{i}"
        await track(a if i % 2 else b, room, conn, f"host:{i % 2}")
        expected.add((room, conn))
    await track(a, "room0", "survivor", "host:1")
    clock.now += TTL - 1
    await a.refresh("room0", "survivor")
    clock.now += 1

    got_a, got_b = await asyncio.gather(a.expire(), b.expire())
    keys_a = [p.key for p in got_a]
    keys_b = [p.key for p in got_b]
    assert len(keys_a) == len(set(keys_a)) and len(keys_b) == len(set(keys_b))
    assert not set(keys_a) & set(keys_b)
    assert set(keys_a) | set(keys_b) == expected
    assert await a.expire() == [] and await b.expire() == []
    assert await b.room_counts() == {"room0": 1}


async def test_crashed_process_ghosts_leave_via_the_other_sweeper(
    redis_url: str, redis_prefix: str, two, clock: FakeClock
) -> None:
    """Process A dies without untracking; both survivors sweep; each leave fires once."""
    a, b = two
    crashed = RedisPresenceBackend(redis_url, prefix=redis_prefix, ttl=TTL, clock=clock)
    for i in range(20):
        await track(crashed, "r1", f"ghost{i}", "dead:1")
    await track(a, "r1", "alive", "host:1")
    await crashed.close()  # no untrack: the process is gone

    left: list[Presence] = []

    async def on_expired(presences: list[Presence]) -> None:
        left.extend(presences)

    sweepers = [asyncio.create_task(sweep_forever(x, on_expired, 0.005)) for x in (a, b)]
    try:
        await asyncio.sleep(0.05)
        assert left == []
        clock.now += TTL / 2
        await a.refresh("r1", "alive")  # the live process heartbeats
        clock.now += TTL / 2
        for _ in range(400):
            if len(left) >= 20:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # time for any duplicate to show up
    finally:
        for task in sweepers:
            task.cancel()
        await asyncio.gather(*sweepers, return_exceptions=True)
    assert sorted(p.peer_id for p in left) == sorted(f"ghost{i}" for i in range(20))
    assert {p.process for p in left} == {"dead:1"}
    assert [p.peer_id for p in await b.list_room("r1")] == ["alive"]


async def test_a_script_missing_on_the_server_is_loaded_and_its_calls_rerun(
    two, redis_prefix: str
) -> None:
    """After a SCRIPT FLUSH (or a Redis restart) the batched EVALSHAs fail with NOSCRIPT:
    the backend loads the scripts again and reruns those calls. Simulated with a script no
    server has seen (a real flush would hit every other user of this Redis)."""
    a, _ = two
    await track(a, "r1", "c1", "host:1")
    a._refresh = a.redis.register_script(f"{redis_backend._REFRESH}\n-- {redis_prefix}\n")
    results = await asyncio.gather(
        a.refresh("r1", "c1"), a.list_room("r1"), a.refresh("r1", "nobody"), a.refresh("r1", "c1")
    )
    assert results[0] is True and results[2] is False and results[3] is True
    assert [p.peer_id for p in results[1]] == ["c1"]
