"""Fan-out costs with real Daphne, real Redis and real WebSocket clients.

* N viewers joining a stream: each viewer socket receives O(N) bytes in all (small
  ``viewers`` counts, never member lists), the counts end right, and the server reads the
  audience's member list O(N) times, not once per viewer per join (O(N²)): counted on the
  real Redis with MONITOR (the presence backend's ``list_room`` script calls).
* The lobby snapshot stays bounded with many viewers and many people in rooms: counts, at
  most ``LOBBY_NAMES_PER_CARD`` names per room, no identity ids.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import uuid

import redis
import websockets

from presence.backends.redis import _LIST_ROOM
from tests.integration.test_presence_processes import recv_until
from tests.integration.test_ws_auth_daphne import page_token

N = 24  # viewers
WAIT = 60


class ListRoomCalls:
    """Counts EVALSHA calls of the presence backend's ``list_room`` script on a room key
    under ``prefix`` (the shared Redis runs other tests too: only our keys count)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.sha = hashlib.sha1(_LIST_ROOM.encode()).hexdigest()
        self.prefix = prefix
        self.stop_word = f"stop-{uuid.uuid4().hex}"
        self.calls = 0
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.client.monitor() as monitor:
            self.ready.set()
            for command in monitor.listen():
                text = command["command"]
                if self.stop_word in text:
                    return
                if text.upper().startswith("EVALSHA") and self.sha in text and self.prefix in text:
                    self.calls += 1

    def __enter__(self) -> ListRoomCalls:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc_info) -> None:
        self.client.echo(self.stop_word)
        self.thread.join(30)


def test_viewers_joining_cost_each_viewer_o_n_and_the_server_o_n_reads(
    daphne_factory, redis_env, redis_url
):
    server = daphne_factory(redis_env)
    server.manage(
        "shell",
        "-c",
        "from streaming.models import Stream; Stream.objects.create(slug='show', title='Show')",
    )
    token, _ = page_token(server)
    url = f"{server.ws_url}/ws/streams/show/watch/?token={token}"

    async def scenario():
        viewers = []
        received: list[list[str]] = []
        try:
            with ListRoomCalls(redis_url, redis_env["PRESENCE_KEY_PREFIX"]) as reads:
                for _ in range(N):
                    ws = await websockets.connect(url, origin=server.url)
                    welcome = await recv_until(ws, lambda m: m["type"] == "welcome", WAIT)
                    assert welcome["viewers"] >= 1
                    viewers.append(ws)
                    received.append([])

                # everyone ends on N; keep every frame each one got after its welcome
                async def drain(ws, frames):
                    while True:
                        frame = await asyncio.wait_for(ws.recv(), WAIT)
                        frames.append(frame)
                        message = json.loads(frame)
                        if message["type"] == "viewers" and message["count"] == N:
                            return

                await asyncio.gather(
                    *(drain(ws, frames) for ws, frames in zip(viewers, received, strict=True))
                )
            # joins tracked N times (track_and_list) and nothing re-lists per viewer
            assert reads.calls <= 2 * N, f"{reads.calls} member-list reads for {N} joins"
        finally:
            for ws in viewers:
                await ws.close()

        for frames in received:
            messages = [json.loads(f) for f in frames]
            assert {m["type"] for m in messages} == {"viewers"}, messages
            assert set(messages[0]) == {"type", "count"}  # a count, never a list
            assert len(messages) <= N  # at most one per join after ours: O(N)
            assert sum(len(f) for f in frames) <= N * 40  # bytes: O(N), ~30 per count

    asyncio.run(scenario())


def test_lobby_snapshot_is_bounded_however_many_viewers_and_people(daphne_factory, redis_env):
    server = daphne_factory(redis_env)
    server.manage(
        "shell",
        "-c",
        "from streaming.models import Stream; from rooms.models import Room; "
        "Stream.objects.create(slug='show', title='Show'); "
        "Room.objects.create(slug='big', title='Big', kind='mesh', capacity=8)",
    )

    async def scenario():
        sockets = []
        identities = []
        try:
            for _ in range(N):
                token, ident = page_token(server)
                identities.append(ident)
                ws = await websockets.connect(
                    f"{server.ws_url}/ws/streams/show/watch/?token={token}", origin=server.url
                )
                await recv_until(ws, lambda m: m["type"] == "welcome", WAIT)
                sockets.append(ws)
            for _ in range(6):
                token, ident = page_token(server)
                identities.append(ident)
                ws = await websockets.connect(
                    f"{server.ws_url}/ws/rooms/big/?token={token}", origin=server.url
                )
                await recv_until(ws, lambda m: m["type"] == "welcome", WAIT)
                sockets.append(ws)

            token, _ = page_token(server)
            async with websockets.connect(
                f"{server.ws_url}/ws/lobby/?token={token}", origin=server.url
            ) as lobby:
                frame = None
                while True:
                    frame = await asyncio.wait_for(lobby.recv(), WAIT)
                    if json.loads(frame)["type"] == "lobby-state":
                        break
            state = json.loads(frame)
            assert state["rooms"]["stream.show"] == {"count": N}
            big = state["rooms"]["big"]
            assert big["count"] == 6
            assert len(big["participants"]) == state["names_per_card"] == 3
            assert all(set(p) == {"peer", "name"} for p in big["participants"])
            assert not any(ident in frame for ident in identities)
            assert len(frame) < 600, len(frame)  # two rooms: counts and three names
        finally:
            for ws in sockets:
                await ws.close()

    asyncio.run(scenario())
