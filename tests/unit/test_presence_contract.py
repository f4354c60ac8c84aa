"""One contract for every presence backend: memory, and a real Redis.

Time comes from a fake clock, so expiry is tested without sleeping. The Redis parameter uses
the ``redis_url``/``redis_prefix`` fixtures, which fail (not skip) when Redis is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from presence.backends import MEMORY, REDIS, backend_path, get_backend, reset_backend
from presence.backends.base import PeerInfo, Presence, PresenceBackend, RoomFull
from presence.backends.memory import MemoryPresenceBackend
from presence.backends.redis import RedisPresenceBackend
from presence.sweeper import sweep_forever, sweep_once

TTL = 30.0
T0 = 1_700_000_000.0


class FakeClock:
    """A clock tests move by hand (shared by all 'processes' = synchronised clocks)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Env:
    """A backend under test plus what the contract needs to look inside it."""

    def __init__(self, kind: str, clock: FakeClock, url: str = "", prefix: str = "") -> None:
        self.kind, self.clock, self.url, self.prefix = kind, clock, url, prefix
        self.backends: list[PresenceBackend] = []
        self.backend = self.process()

    def process(self) -> PresenceBackend:
        """Another 'process' on the same store: a new Redis client; memory is per-process,
        so it is the same instance there."""
        if self.kind == "memory":
            if self.backends:
                return self.backends[0]
            backend: PresenceBackend = MemoryPresenceBackend(ttl=TTL, clock=self.clock)
        else:
            backend = RedisPresenceBackend(self.url, prefix=self.prefix, ttl=TTL, clock=self.clock)
        self.backends.append(backend)
        return backend

    def with_lease(self, lease_ttl: float) -> PresenceBackend:
        """A fresh backend on the same store whose process leases last ``lease_ttl``."""
        if self.kind == "memory":
            backend: PresenceBackend = MemoryPresenceBackend(
                ttl=TTL, lease_ttl=lease_ttl, clock=self.clock
            )
        else:
            backend = RedisPresenceBackend(
                self.url, prefix=self.prefix, ttl=TTL, lease_ttl=lease_ttl, clock=self.clock
            )
        self.backends.append(backend)
        return backend

    async def leftovers(self) -> list[str]:
        """Whatever storage is still held (keys / rooms): must be empty once all left.
        Process leases and the operation clock (``P:clock``) are not storage of presences:
        they expire by themselves (``lease_ttl``, ``2 * ttl``)."""
        if self.kind == "memory":
            assert isinstance(self.backend, MemoryPresenceBackend)
            return list(self.backend._rooms)
        client = aioredis.Redis.from_url(self.url, decode_responses=True)
        try:
            keys = [key async for key in client.scan_iter(match=f"{self.prefix}*")]
            return [
                key
                for key in keys
                if not key.startswith(f"{self.prefix}:lease:") and key != f"{self.prefix}:clock"
            ]
        finally:
            await client.aclose()

    async def close(self) -> None:
        for backend in self.backends:
            await backend.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def env(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Env]:
    if request.param == "memory":
        env = Env("memory", clock)
    else:
        url = request.getfixturevalue("redis_url")
        env = Env("redis", clock, url, request.getfixturevalue("redis_prefix"))
    yield env
    await env.close()


async def track(
    backend: PresenceBackend, room: str, conn: str, capacity: int | None = None, **kwargs
) -> Presence:
    kwargs.setdefault("user_id", f"peer-{conn}")
    kwargs.setdefault("name", f"name-{conn}")
    kwargs.setdefault("process", "host:1")
    return await backend.track(room, conn, PeerInfo(**kwargs), capacity=capacity)


def conns(presences: list[Presence]) -> list[str]:
    return [p.peer_id for p in presences]


class TestPresenceContract:
    """Every backend must pass all of these."""

    async def test_track_list_untrack(self, env: Env) -> None:
        b = env.backend
        ann = PeerInfo(
            user_id="u1", name="Ann", process="h:1", channel="specific.x!y", media={"audio": True}
        )
        p = await b.track("r1", "c1", ann)
        assert p == Presence(
            room="r1",
            peer_id="c1",
            user_id="u1",
            name="Ann",
            joined_at=T0,
            process="h:1",
            media={"audio": True},
            expires_at=T0 + TTL,
            channel="specific.x!y",
        )
        assert await b.list_room("r1") == [p]
        assert await b.list_room("other") == []
        assert await b.room_counts() == {"r1": 1}
        assert await b.untrack("r1", "c1") == p
        assert await b.list_room("r1") == []
        assert await b.room_counts() == {}

    async def test_two_connections_of_one_user(self, env: Env) -> None:
        b = env.backend
        await track(b, "r1", "tab1", user_id="u1")
        env.clock.advance(1)
        await track(b, "r1", "tab2", user_id="u1")
        listed = await b.list_room("r1")
        assert conns(listed) == ["tab1", "tab2"]
        assert {p.user_id for p in listed} == {"u1"}
        assert await b.room_counts() == {"r1": 2}
        await b.untrack("r1", "tab1")
        assert [(p.peer_id, p.user_id) for p in await b.list_room("r1")] == [("tab2", "u1")]

    async def test_list_ordered_by_joined_at_and_counts_per_room(self, env: Env) -> None:
        b = env.backend
        for i, conn in enumerate(["z", "a", "m"]):
            env.clock.now = T0 + i
            await track(b, "r1", conn)
        await track(b, "r2", "x")
        assert conns(await b.list_room("r1")) == ["z", "a", "m"]
        assert await b.room_counts() == {"r1": 3, "r2": 1}

    async def test_same_conn_in_two_rooms_is_two_presences(self, env: Env) -> None:
        b = env.backend
        await track(b, "r1", "c1", name="one")
        await track(b, "r2", "c1", name="two")
        assert (await b.untrack("r1", "c1")).name == "one"
        assert [p.name for p in await b.list_room("r2")] == ["two"]

    async def test_refresh_extends(self, env: Env) -> None:
        b = env.backend
        await track(b, "r1", "c1")
        env.clock.advance(TTL - 1)
        assert await b.refresh("r1", "c1") is True
        env.clock.advance(TTL - 1)  # past the first expiry, within the refreshed one
        [p] = await b.list_room("r1")
        assert p.expires_at == T0 + 2 * TTL - 1
        assert await b.expire() == []
        assert await b.refresh("r1", "nope") is False

    async def test_expiry_without_untrack(self, env: Env) -> None:
        b = env.backend
        await track(b, "r1", "ghost")
        await track(b, "r1", "alive")
        env.clock.advance(TTL / 2)
        await b.refresh("r1", "alive")
        env.clock.advance(TTL / 2)  # ghost expires exactly now (expires_at <= now)
        assert conns(await b.list_room("r1")) == ["alive"]
        assert await b.room_counts() == {"r1": 1}
        assert await b.refresh("r1", "ghost") is False
        assert await b.update_media("r1", "ghost", {"audio": True}) is None
        [gone] = await b.expire()
        assert gone.key == ("r1", "ghost") and gone.expires_at == T0 + TTL
        assert await b.expire() == []
        env.clock.advance(TTL)
        assert await b.list_room("r1") == [] and await b.room_counts() == {}
        assert conns(await b.expire()) == ["alive"]
        assert await b.expire() == []
        assert await env.leftovers() == []

    async def test_untrack_of_unswept_ghost_reports_it_once(self, env: Env) -> None:
        b = env.backend
        await track(b, "r1", "c1")
        env.clock.advance(TTL + 1)
        assert (await b.untrack("r1", "c1")).peer_id == "c1"
        assert await b.expire() == []
        assert await b.untrack("r1", "c1") is None

    async def test_untrack_returns_none_the_second_time(self, env: Env) -> None:
        b = env.backend
        await track(b, "r1", "c1")
        assert (await b.untrack("r1", "c1")).peer_id == "c1"
        assert await b.untrack("r1", "c1") is None
        assert await b.untrack("never", "c1") is None

    async def test_capacity(self, env: Env) -> None:
        b = env.backend
        for conn in ["c1", "c2", "c3"]:
            await track(b, "r1", conn, capacity=3)
        with pytest.raises(RoomFull) as info:
            await track(b, "r1", "c4", capacity=3)
        assert (info.value.room, info.value.capacity) == ("r1", 3)
        assert conns(await b.list_room("r1")) == ["c1", "c2", "c3"]
        await track(b, "r1", "c4")  # capacity=None: never refused
        await b.untrack("r1", "c4")
        await b.untrack("r1", "c2")
        await track(b, "r1", "c4", capacity=3)
        with pytest.raises(RoomFull):
            await track(b, "r2", "c1", capacity=0)
        assert await b.list_room("r2") == []

    async def test_expired_members_do_not_count_against_capacity(self, env: Env) -> None:
        b = env.backend
        await track(b, "r1", "ghost", capacity=1)
        env.clock.advance(TTL)
        await track(b, "r1", "new", capacity=1)
        assert conns(await b.list_room("r1")) == ["new"]
        assert conns(await b.expire()) == ["ghost"]  # still reported: its leave must fire

    async def test_retrack_same_conn_does_not_count_twice(self, env: Env) -> None:
        b = env.backend
        await track(b, "r1", "c1", capacity=2, media={"video": True})
        await track(b, "r1", "c2", capacity=2)
        env.clock.advance(5)
        again = await track(b, "r1", "c1", capacity=2, name="renamed")
        assert again.joined_at == T0 and again.expires_at == T0 + 5 + TTL
        assert again.media == {"video": True} and again.name == "renamed"
        assert conns(await b.list_room("r1")) == ["c1", "c2"]
        assert await b.room_counts() == {"r1": 2}
        # Re-tracking after expiry is a new join.
        env.clock.advance(TTL + 1)
        fresh = await track(b, "r1", "c1", capacity=2)
        assert fresh.joined_at == env.clock.now and fresh.media == {}

    async def test_concurrent_tracks_for_one_place(self, env: Env) -> None:
        other = env.process()
        for round_ in range(10):
            room = f"race{round_}"
            await track(env.backend, room, "first", capacity=2)
            results = await asyncio.gather(
                track(env.backend, room, "a", capacity=2),
                track(other, room, "b", capacity=2),
                return_exceptions=True,
            )
            won = [r for r in results if isinstance(r, Presence)]
            lost = [r for r in results if isinstance(r, RoomFull)]
            assert len(won) == 1 and len(lost) == 1, results
            assert sorted(conns(await other.list_room(room))) == sorted(["first", won[0].peer_id])

    async def test_update_media(self, env: Env) -> None:
        b = env.backend
        await track(b, "r1", "c1", media={"audio": True, "video": True})
        p = await b.update_media("r1", "c1", {"video": False})
        assert p is not None and p.media == {"audio": True, "video": False}
        assert (await b.list_room("r1"))[0].media == {"audio": True, "video": False}
        assert await b.update_media("r1", "missing", {"audio": True}) is None
        await b.untrack("r1", "c1")
        assert await b.update_media("r1", "c1", {"audio": True}) is None

    async def test_no_key_left_behind(self, env: Env) -> None:
        b = env.backend
        for room in ["r1", "r2", "lobby"]:
            for conn in ["c1", "c2"]:
                await track(b, room, conn, capacity=5)
        await b.refresh("r1", "c1")
        await b.update_media("r1", "c1", {"audio": True})
        assert await env.leftovers() != []
        for conn in ["c1", "c2"]:
            await b.untrack("r1", conn)
        await b.untrack("lobby", "c1")
        env.clock.advance(TTL)
        await b.room_counts()
        await b.list_room("r2")
        assert len(await b.expire()) == 3
        assert await env.leftovers() == []

    async def test_long_dead_presences_are_dropped_when_nobody_sweeps(self, env: Env) -> None:
        """Bounded growth: after a further ttl without a sweeper, track drops them."""
        b = env.backend
        await track(b, "r1", "old")
        env.clock.advance(2 * TTL + 1)
        await track(b, "r2", "new")
        assert await b.expire() == []
        assert await b.untrack("r1", "old") is None
        await b.untrack("r2", "new")
        assert await env.leftovers() == []

    async def test_as_dict_is_json(self, env: Env) -> None:
        p = await track(env.backend, "r1", "c1", media={"audio": True})
        data = json.loads(json.dumps(p.as_dict()))
        assert data == {
            "room": "r1",
            "peer_id": "c1",
            "user_id": "peer-c1",
            "name": "name-c1",
            "joined_at": T0,
            "process": "host:1",
            "media": {"audio": True},
            "expires_at": T0 + TTL,
            "channel": "",
        }

    @pytest.mark.parametrize(("room", "conn"), [("", "c"), ("r", ""), ("a\x1fb", "c")])
    async def test_rejects_ambiguous_ids(self, env: Env, room: str, conn: str) -> None:
        with pytest.raises(ValueError):
            await track(env.backend, room, conn)

    async def test_sweep_once_hands_expired_to_callback(self, env: Env) -> None:
        got: list[list[Presence]] = []

        async def on_expired(presences: list[Presence]) -> None:
            got.append(presences)

        await track(env.backend, "r1", "c1")
        assert await sweep_once(env.backend, on_expired) == []
        assert got == []  # not called when nothing expired
        env.clock.advance(TTL)
        [removed] = await sweep_once(env.backend, on_expired)
        assert removed.peer_id == "c1" and got == [[removed]]

    async def test_combined_operations_match_the_primitives(self, env: Env) -> None:
        """track_and_list / untrack_and_count / snapshot: one round trip on Redis, same
        answers as track + list_room, untrack + list_room, room_counts + list_room."""
        b = env.backend
        a = await track(b, "r1", "a")
        await track(b, "r2", "x")
        env.clock.advance(1)
        await track(b, "r1", "ghost")
        env.clock.advance(TTL - 0.5)  # a and x expire (not swept), ghost is live
        await b.refresh("r1", "ghost")
        me, members, _ = await b.track_and_list(
            "r1", "me", PeerInfo(user_id="u", name="Me", process="h:1"), capacity=2
        )
        assert conns(members) == ["ghost", "me"] and members[1] == me
        with pytest.raises(RoomFull):
            late = PeerInfo(user_id="u", name="L", process="h")
            await b.track_and_list("r1", "late", late, capacity=2)
        assert conns(members) == conns(await b.list_room("r1"))
        snap, _ = await b.snapshot()
        assert {room: conns(people) for room, people in snap.items()} == {"r1": ["ghost", "me"]}
        assert snap["r1"] == await b.list_room("r1")
        assert (await b.untrack_and_count("r1", "me"))[:2] == (me, 1)
        assert (await b.untrack_and_count("r1", "me"))[:2] == (None, 1)  # once only
        assert (await b.untrack_and_count("r1", "a"))[0] == a  # expired, unswept: reported
        assert (await b.count_rooms(["r1", "r2", "r9"]))[0] == {"r1": 1, "r2": 0, "r9": 0}
        ghost, left, _ = await b.untrack_and_count("r1", "ghost")
        assert ghost is not None and ghost.peer_id == "ghost" and left == 0
        await b.untrack("r2", "x")
        assert (await b.snapshot())[0] == {}
        assert await env.leftovers() == []

    async def test_many_concurrent_calls_each_get_their_answer(self, env: Env) -> None:
        """Concurrent calls (batched into pipelines on Redis) are not mixed up."""
        b = env.backend
        tracked = await asyncio.gather(*(track(b, f"r{i % 7}", f"c{i}") for i in range(200)))
        assert [p.peer_id for p in tracked] == [f"c{i}" for i in range(200)]
        refreshed = await asyncio.gather(
            *(b.refresh(f"r{i % 7}", f"c{i}" if i % 2 else "missing") for i in range(200))
        )
        assert refreshed == [bool(i % 2) for i in range(200)]
        counts = await asyncio.gather(
            *(b.untrack_and_count(f"r{i % 7}", f"c{i}") for i in range(200))
        )
        assert [p.peer_id for p, _, _ in counts if p] == [f"c{i}" for i in range(200)]
        assert await env.leftovers() == []

    async def test_operation_times_order_counts_made_by_several_processes(self, env: Env) -> None:
        """The combined operations return their time ``at``, strictly increasing in the
        order the store ran them whatever process made them (the fake clock stands still
        here): sorted by ``at``, the counts two processes read while joining and leaving
        concurrently are exactly 1, 2, 3... and back, and the newest is the room's. Lobby
        pages and viewers keep the newest ``at`` (issue 15: 6-14 of 100 lobby cards stayed
        stale after joins over two processes, each showing whichever delta came last)."""
        one, two = env.backend, env.process()
        peer = PeerInfo(user_id="u", name="n", process="h:1")
        joins = await asyncio.gather(
            *((one, two)[i % 2].track_and_list("r1", f"c{i}", peer) for i in range(40))
        )
        by_time = sorted((at, len(members)) for _, members, at in joins)
        assert [count for _, count in by_time] == list(range(1, 41))
        assert len({at for at, _ in by_time}) == 40  # no two operations share a time
        rooms, snapshot_at = await two.snapshot()
        assert len(rooms["r1"]) == 40 and snapshot_at > by_time[-1][0]
        leaves = await asyncio.gather(
            *((one, two)[i % 2].untrack_and_count("r1", f"c{i}") for i in range(0, 40, 2))
        )
        by_time = sorted((at, count) for _, count, at in leaves)
        assert [count for _, count in by_time] == list(range(39, 19, -1))
        assert by_time[0][0] > snapshot_at
        counts, counted_at = await one.count_rooms(["r1"])
        assert counts == {"r1": 20} and counted_at > by_time[-1][0]


class TestProcessLeases:
    """A dead process's presences go with its lease, long before their own ttl."""

    async def test_presences_of_a_process_whose_lease_lapsed_are_expired(self, env: Env) -> None:
        b = env.with_lease(5)
        await track(b, "r1", "a1", process="host:A")
        await track(b, "r1", "b1", process="host:B")
        await track(b, "r2", "b2", process="host:B")
        env.clock.advance(3)
        await b.renew_lease("host:A")  # B stopped renewing: killed
        env.clock.advance(3)  # B's lease lapsed at +5; A's lasts until +8; ttl is 30
        assert await b.process_alive("host:A") and not await b.process_alive("host:B")
        assert sorted(conns(await b.expire())) == ["b1", "b2"]
        assert conns(await b.list_room("r1")) == ["a1"]
        assert await b.room_counts() == {"r1": 1}
        assert await b.expire() == []
        assert await b.untrack("r2", "b2") is None  # gone, announced once (by expire)

    async def test_renew_lease_says_whether_the_lease_was_still_its_own(self, env: Env) -> None:
        b = env.with_lease(5)
        assert await b.renew_lease("host:A") is False  # first ever
        assert await b.renew_lease("host:A") is True
        env.clock.advance(6)
        assert not await b.process_alive("host:A")
        assert await b.renew_lease("host:A") is False  # lapsed meanwhile: re-track
        await track(b, "r1", "c1", process="host:B")  # track creates a missing lease
        assert await b.process_alive("host:B")
        assert await b.renew_lease("host:B") is False  # ...but not one renew_lease made
        await track(b, "r1", "c2", process="host:A")  # nor does it replace a renewed one
        assert await b.renew_lease("host:A") is True

    async def test_refresh_extends_a_live_lease_and_never_revives_a_lapsed_one(
        self, env: Env
    ) -> None:
        b = env.with_lease(5)
        await track(b, "r1", "c1", process="host:A")
        env.clock.advance(4)
        assert await b.refresh("r1", "c1")
        env.clock.advance(4)  # +8: past the lease track made, within the refreshed one
        assert await b.process_alive("host:A")
        env.clock.advance(2)  # +10: lapsed
        assert await b.refresh("r1", "c1")  # the presence itself is live (ttl 30)...
        assert not await b.process_alive("host:A")  # ...its process is not
        assert conns(await b.expire()) == ["c1"]


# --- Redis-specific ------------------------------------------------------------------------
@pytest.mark.redis
async def test_redis_keys_have_ttls(redis_url: str, redis_prefix: str, clock: FakeClock) -> None:
    backend = RedisPresenceBackend(redis_url, prefix=redis_prefix, ttl=TTL, clock=clock)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await track(backend, "r1", "c1")
        await track(backend, "r1", "c2")
        await backend.refresh("r1", "c1")
        keys = sorted([key async for key in client.scan_iter(match=f"{redis_prefix}*")])
        assert keys == sorted(
            [
                f"{redis_prefix}:room:r1",
                f"{redis_prefix}:peer:r1\x1fc1",
                f"{redis_prefix}:peer:r1\x1fc2",
                f"{redis_prefix}:expiry",
                f"{redis_prefix}:rooms",
                f"{redis_prefix}:procs",
                f"{redis_prefix}:proc:host:1",
                f"{redis_prefix}:lease:host:1",
            ]
        )
        for key in keys:
            assert 0 < await client.pttl(key) <= 2 * TTL * 1000, key
        assert await client.zscore(f"{redis_prefix}:room:r1", "c1") == T0 + TTL
        assert await client.zscore(f"{redis_prefix}:expiry", "r1\x1fc1") == T0 + TTL
    finally:
        await backend.close()
        await client.aclose()


# --- the sweeper loop ----------------------------------------------------------------------
class FlakyBackend(MemoryPresenceBackend):
    """Memory backend whose first ``expire()`` fails (e.g. Redis briefly unreachable)."""

    failures = 1

    async def expire(self) -> list[Presence]:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis went away")
        return await super().expire()


async def test_sweep_forever_survives_errors_and_is_cancellable(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FlakyBackend(ttl=TTL, clock=clock)
    calls: list[list[str]] = []
    done = asyncio.Event()

    async def on_expired(presences: list[Presence]) -> None:
        calls.append(conns(presences))
        if len(calls) == 1:
            raise RuntimeError("callback bug")
        done.set()

    await track(backend, "r1", "c1")
    clock.advance(TTL)
    task = asyncio.create_task(sweep_forever(backend, on_expired, interval=0.01))
    for _ in range(200):  # the failing expire() and the failing callback are both survived
        if calls:
            break
        await asyncio.sleep(0.01)
    assert calls == [["c1"]]
    await track(backend, "r1", "c2")
    clock.advance(TTL)
    await asyncio.wait_for(done.wait(), 5)
    assert calls == [["c1"], ["c2"]]
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    messages = [r.getMessage() for r in caplog.records if r.name == "presence.sweeper"]
    assert len(messages) == 2 and all("presence sweep failed" in m for m in messages)


async def test_sweep_forever_renews_the_lease_and_reports_it_lost(clock: FakeClock) -> None:
    """A lease found not the one the sweeper renewed (Redis restarted empty without any call
    failing) is reported, so the process re-tracks what it holds; a lease created by the
    process's first track is not."""
    backend = MemoryPresenceBackend(ttl=TTL, lease_ttl=5, clock=clock)
    await track(backend, "r1", "c1", process="me")  # the first track creates the lease
    lost: list[bool] = []

    async def on_expired(presences: list[Presence]) -> None:
        pass

    def on_lost() -> None:
        lost.append(True)

    task = asyncio.create_task(
        sweep_forever(backend, on_expired, interval=0.01, process="me", on_lease_lost=on_lost)
    )
    try:
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert lost == [] and await backend.process_alive("me")
        backend._leases.clear()  # the store lost everything
        for _ in range(200):
            if lost:
                break
            await asyncio.sleep(0.01)
        assert lost == [True]
        await asyncio.sleep(0.1)
        assert lost == [True]  # renewed since: reported once
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class SwallowingBackend(MemoryPresenceBackend):
    """``expire()`` that eats a cancellation, as Python 3.11's ``asyncio.wait_for`` (inside
    redis-py) does when the awaited call completes at the same moment."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(ttl=TTL, clock=clock)
        self.entered = asyncio.Event()
        self.swallow = True

    async def expire(self) -> list[Presence]:
        self.entered.set()
        with contextlib.suppress(asyncio.CancelledError if self.swallow else ()):
            await asyncio.sleep(10)
        return await super().expire()


async def test_sweep_forever_honours_a_swallowed_cancellation(clock: FakeClock) -> None:
    backend = SwallowingBackend(clock)

    async def on_expired(presences: list[Presence]) -> None:
        pass

    task = asyncio.create_task(sweep_forever(backend, on_expired, interval=0.01))
    await asyncio.wait_for(backend.entered.wait(), 5)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    if task not in done:  # stop it for real before failing, or the loop's teardown hangs
        backend.swallow = False
        task.cancel()
    assert task in done, "sweep_forever kept running after cancel()"
    assert task.cancelled()


async def test_sweep_forever_rejects_bad_interval(clock: FakeClock) -> None:
    async def on_expired(presences: list[Presence]) -> None:
        pass

    with pytest.raises(ValueError):
        await sweep_forever(MemoryPresenceBackend(ttl=TTL, clock=clock), on_expired, interval=0)


# --- choosing a backend from settings -------------------------------------------------------
@pytest.fixture
def fresh_backend() -> Iterator[None]:
    reset_backend()
    yield
    reset_backend()


def test_backend_selection(settings, fresh_backend: None) -> None:
    settings.REDIS_URL = ""
    settings.PRESENCE_TTL = 12
    settings.PRESENCE_BACKEND = ""  # the default: chosen by REDIS_URL
    assert backend_path(settings) == MEMORY
    backend = get_backend()
    assert isinstance(backend, MemoryPresenceBackend) and backend.ttl == 12.0
    assert get_backend() is backend  # process-wide singleton
    assert reset_backend() is backend and get_backend() is not backend

    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    settings.PRESENCE_KEY_PREFIX = "elsewhere"
    reset_backend()
    backend = get_backend()
    assert backend_path(settings) == REDIS
    assert isinstance(backend, RedisPresenceBackend)
    assert (backend.prefix, backend.ttl, backend.key_ttl_ms) == ("elsewhere", 12.0, 24_000)

    settings.PRESENCE_BACKEND = MEMORY  # an explicit choice beats REDIS_URL
    reset_backend()
    assert isinstance(get_backend(), MemoryPresenceBackend)
