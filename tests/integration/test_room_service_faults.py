"""Faults of the room service with real parts: two Daphne processes sharing a Redis.

* Redis restarted for 1-5 s (a private ``redis-server`` stopped and started again on its
  port; it keeps nothing on disk, so it comes back empty): no socket closes, no traceback,
  clients
  are told ``service`` ``reconnecting`` then ``ok``, signaling sent meanwhile is answered
  ``service-unavailable``, and peer lists and lobby counts converge to the truth (a socket
  that went away while Redis was down included) without waiting for any expiry.
* One Daphne killed with ``kill -9``: its presences go with its lease, long before their
  ``PRESENCE_TTL``, and a relay room's partner on the dead process does not send newcomers
  away (``media-elsewhere``) meanwhile.

``PRESENCE_TTL`` is 60 s (heartbeat interval 20 s): nothing here can become right by a
presence expiring, and convergence is awaited for one heartbeat interval at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest
import websockets

from tests.integration.test_ws_auth_daphne import page_token
from tests.support.redis_server import RedisServer

TTL = 60
HEARTBEAT = TTL // 3
#: clients ping more often than the heartbeat interval, so an outage is met by their pings
#: too (a heartbeat loop, not a wait: the test waits on conditions)
PING_EVERY = 2
SDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


class Client:
    """One socket kept as a page keeps it: a reader applying every message to the peer
    list (room) or the room counts (lobby), and a heartbeat every 2 s."""

    def __init__(self, server: Any, path: str) -> None:
        self.server, self.path = server, path
        self.peer = ""
        self.peers: set[str] = set()
        self.rooms: dict[str, int] = {}
        self.states: list[str] = []
        self.errors: list[dict[str, Any]] = []
        self.signals: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.ready = asyncio.Event()

    async def open(self) -> Client:
        token, _ = page_token(self.server)
        self.ws = await websockets.connect(
            f"{self.server.ws_url}{self.path}?token={token}", origin=self.server.url
        )
        self.tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._ping())]
        await asyncio.wait_for(self.ready.wait(), 30)
        return self

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.apply(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        self.close_code = self.ws.close_code

    async def _ping(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await self.ws.send(json.dumps({"type": "ping"}))
                await asyncio.sleep(PING_EVERY)

    def apply(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "welcome":
            self.peer = msg["you"]["peer"]
            self.peers = {p["peer"] for p in msg["peers"]}
            self.ready.set()
        elif kind == "peer-joined":
            self.peers.add(msg["peer"])
        elif kind == "peer-left":
            self.peers.discard(msg["peer"])
        elif kind == "peers":
            self.peers = {p["peer"] for p in msg["peers"]}
        elif kind == "lobby-state":
            self.rooms = {slug: room["count"] for slug, room in msg["rooms"].items()}
            self.ready.set()
        elif kind == "presence":
            self.rooms[msg["room"]] = msg["count"]
            if not msg["count"]:
                del self.rooms[msg["room"]]
        elif kind == "service":
            self.states.append(msg["state"])
        elif kind == "error":
            self.errors.append(msg)
        elif kind in ("offer", "answer", "candidate"):
            self.signals.append(msg)

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(msg))

    async def close(self) -> None:
        for task in self.tasks[1:]:
            task.cancel()
        await self.ws.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def until(predicate, within: float, what: str) -> float:
    """Wait for ``predicate()``; the seconds it took (fails after ``within``)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def full_log(server: Any) -> str:
    return server.log_path.read_text(errors="replace")


@pytest.fixture
def private_redis():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.mark.parametrize(("layer", "away"), [("pubsub", 1), ("pubsub", 5), ("core", 2)])
def test_redis_restart_keeps_sockets_and_converges_to_the_truth(
    private_redis, daphne_factory, layer, away
):
    """Redis away ``away`` seconds (at least: the steps taken meanwhile may last longer).
    ``core`` keeps group memberships in Redis (gone after the restart: re-added on
    recovery); ``pubsub`` in each process (redis-py subscribes them again)."""
    env = {
        "CHANNEL_LAYER_BACKEND": layer,
        "REDIS_URL": private_redis.url,
        "PRESENCE_TTL": str(TTL),
        "PRESENCE_SWEEP_INTERVAL": "1",
    }
    first = daphne_factory(env)
    second = daphne_factory(env, same_db_as=first)
    first.create_rooms(("alpha", "mesh"), ("beta", "mesh"))

    async def scenario() -> dict[str, float]:
        a1 = await Client(first, "/ws/rooms/alpha/").open()
        a2 = await Client(first, "/ws/rooms/alpha/").open()
        b1 = await Client(second, "/ws/rooms/alpha/").open()
        b2 = await Client(second, "/ws/rooms/beta/").open()
        gone = await Client(second, "/ws/rooms/beta/").open()  # leaves while Redis is down
        lobbies = [await Client(server, "/ws/lobby/").open() for server in (first, second)]
        rooms = {"alpha": [a1, a2, b1], "beta": [b2, gone]}

        def converged() -> bool:
            for members in rooms.values():
                ids = {c.peer for c in members}
                if any(c.peers != ids - {c.peer} for c in members):
                    return False
            counts = {slug: len(members) for slug, members in rooms.items()}
            return all(lobby.rooms == counts for lobby in lobbies)

        await until(converged, 30, "everyone sees everyone before the fault")
        sockets = [a1, a2, b1, b2, gone, *lobbies]

        private_redis.stop()
        down_at = time.monotonic()
        told = await until(
            lambda: all("reconnecting" in c.states for c in sockets), 30, "told reconnecting"
        )
        await gone.close()
        rooms["beta"].remove(gone)
        await a1.send({"type": "offer", "to": b1.peer, "sdp": SDP})
        await until(
            lambda: any(e["code"] == "service-unavailable" for e in a1.errors),
            30,
            "offer while down answered service-unavailable",
        )
        assert [e.get("ref") for e in a1.errors] == ["offer"], a1.errors
        await asyncio.sleep(max(0.0, down_at + away - time.monotonic()))
        private_redis.start()
        up_at = time.monotonic()
        converge = await until(
            lambda: converged() and all(c.states[-1:] == ["ok"] for c in sockets if c is not gone),
            HEARTBEAT,
            "peer lists and lobby counts equal the truth, service ok",
        )

        # signaling across the processes works again
        await a1.send({"type": "offer", "to": b1.peer, "sdp": SDP})
        await until(lambda: b1.signals, 30, "offer delivered after recovery")
        assert b1.signals[0]["from"] == a1.peer and b1.signals[0]["type"] == "offer"
        await b1.send({"type": "answer", "to": a1.peer, "sdp": SDP})
        await until(lambda: a1.signals, 30, "answer delivered after recovery")

        # a newcomer's lobby reads the rebuilt presence: the truth
        fresh = await Client(second, "/ws/lobby/").open()
        assert fresh.rooms == {"alpha": 3, "beta": 1}
        for client in [*sockets, fresh]:
            if client is not gone:
                assert client.close_code is None, client.close_code
        for client in [*sockets, fresh]:
            if client is not gone:
                await client.close()
        return {"told": told, "down": up_at - down_at, "converge": converge}

    figures = asyncio.run(scenario())
    print(
        f"told reconnecting in {figures['told']:.2f} s; Redis away {figures['down']:.1f} s; "
        f"converged {figures['converge']:.2f} s after it came back"
    )
    for server in (first, second):
        log = full_log(server)
        assert "Traceback" not in log, log[-5000:]
        assert log.count("room service down") == 1, log[-5000:]


def test_kill_9_ghosts_go_with_the_lease_and_relay_partners_are_not_sent_away(
    redis_env, daphne_factory
):
    env = {**redis_env, "PRESENCE_TTL": str(TTL), "PRESENCE_SWEEP_INTERVAL": "1"}
    first = daphne_factory(env)
    second = daphne_factory(env, same_db_as=first)
    first.create_rooms(("crash", "mesh"), ("pair", "relay"))

    async def scenario() -> tuple[float, float]:
        lobby = await Client(first, "/ws/lobby/").open()
        stays = await Client(first, "/ws/rooms/crash/").open()
        await Client(second, "/ws/rooms/crash/").open()
        await Client(second, "/ws/media/pair/").open()  # the relay partner, doomed
        await until(lambda: lobby.rooms == {"crash": 2, "pair": 1}, 30, "all joined")

        second.kill()
        killed_at = time.monotonic()
        # a newcomer of the relay room: refused (4012) only while the partner's process
        # still holds its lease, then welcome on this process
        while True:
            token, _ = page_token(first)
            ws = await websockets.connect(
                f"{first.ws_url}/ws/media/pair/?token={token}", origin=first.url
            )
            reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if reply["type"] == "welcome":
                break
            assert reply["code"] == "media-elsewhere", reply
            await ws.wait_closed()
            assert ws.close_code == 4012
            assert time.monotonic() - killed_at < TTL / 2, "media-elsewhere for half a TTL"
            await asyncio.sleep(0.5)
        relay_ok = time.monotonic() - killed_at
        await until(
            lambda: not stays.peers and lobby.rooms == {"crash": 1, "pair": 1},
            TTL / 2,
            "the dead process's presences left well before their TTL",
        )
        ghosts_gone = time.monotonic() - killed_at
        await ws.close()
        return ghosts_gone, relay_ok

    ghosts_gone, relay_ok = asyncio.run(scenario())
    print(
        f"after kill -9: relay newcomer welcome after {relay_ok:.1f} s, ghosts gone after "
        f"{ghosts_gone:.1f} s (TTL {TTL} s)"
    )
    assert "Traceback" not in full_log(first)
