"""Limits over a real Daphne socket: the app's size limit (error, socket stays), Daphne's
own frame limit (1 MiB: that socket alone is dropped), numbers JSON cannot carry, and a
socket closed for too many errors that must not log tracebacks."""

import asyncio
import json
import time

import websockets
from websockets.exceptions import ConnectionClosed

from tests.integration.test_ws_auth_daphne import page_token


async def _scenario(server):
    token, _ = page_token(server)
    url = f"{server.ws_url}/ws/lobby/?token={token}"
    async with (
        websockets.connect(url, origin=server.url, max_size=None) as victim,
        websockets.connect(url, origin=server.url) as bystander,
    ):
        for ws in (victim, bystander):
            assert json.loads(await ws.recv())["type"] == "hello"
            assert json.loads(await ws.recv())["type"] == "lobby-state"
        await victim.send(json.dumps({"type": "ping", "pad": "x" * 100_000}))
        assert json.loads(await asyncio.wait_for(victim.recv(), 10))["code"] == "too-large"
        await victim.send(json.dumps({"type": "ping", "t": 1}))
        assert json.loads(await asyncio.wait_for(victim.recv(), 10)) == {"type": "pong", "t": 1}

        await victim.send("x" * (1024 * 1024 + 1))
        try:
            await asyncio.wait_for(victim.recv(), 10)
            raise AssertionError("a 1 MB frame was accepted")
        except ConnectionClosed:
            pass
        code = victim.close_code
        await bystander.send(json.dumps({"type": "ping", "t": 2}))
        pong = json.loads(await asyncio.wait_for(bystander.recv(), 10))
        return code, pong


def test_oversized_messages(live_server_proc):
    code, pong = asyncio.run(_scenario(live_server_proc))
    # Daphne (Autobahn) fails the connection over its 1 MiB limit: 1009, or 1006 when it
    # drops the TCP connection before the close frame is read
    assert code in (1006, 1009)
    assert pong == {"type": "pong", "t": 2}  # the other client carries on


def strict_json(text: str):
    """``json.loads`` that refuses what Python accepts beyond JSON (NaN, Infinity)."""

    def refuse(name):
        raise AssertionError(f"the server sent {name}, which is not JSON: {text[:80]}")

    return json.loads(text, parse_constant=refuse)


async def _lobby(server):
    token, _ = page_token(server)
    ws = await websockets.connect(f"{server.ws_url}/ws/lobby/?token={token}", origin=server.url)
    assert json.loads(await ws.recv())["type"] == "hello"
    assert json.loads(await ws.recv())["type"] == "lobby-state"
    return ws


def test_numbers_json_cannot_carry_get_an_error_and_the_socket_stays(live_server_proc):
    """A 5,000-digit integer (past Python's int parsing limit), NaN/Infinity literals and a
    float out of range: each an ``error``, never a 1011 close nor a non-JSON reply."""
    frames = [
        '{"type": "ping", "t": ' + "7" * 5000 + "}",
        '{"type": "ping", "t": NaN}',
        '{"type": "ping", "t": Infinity}',
        '{"type": "ping", "t": -Infinity}',
        '{"type": "ping", "t": 1e999}',
        '{"type": "ping", "t": -1e999}',
    ]

    async def scenario():
        replies = []
        async with await _lobby(live_server_proc) as ws:
            for frame in frames:
                await ws.send(frame)
                replies.append(strict_json(await asyncio.wait_for(ws.recv(), 10)))
            await ws.send(json.dumps({"type": "ping", "t": 1.5}))
            pong = strict_json(await asyncio.wait_for(ws.recv(), 10))
        return replies, pong

    replies, pong = asyncio.run(scenario())
    for frame, reply in zip(frames, replies, strict=True):
        assert reply["type"] == "error" and reply["code"] == "bad-message", (frame[:40], reply)
    assert pong == {"type": "pong", "t": 1.5}  # the socket is still up


def test_frames_and_events_after_a_close_leave_no_traceback(live_server_proc):
    """25 bad messages in one burst and more after: the 20th closes the socket (4008); the
    frames already received after it, and the ``peer-left`` of a peer leaving meanwhile,
    must not make the server send on the closed socket (Autobahn's ``Disconnected``, a
    traceback in the server's log for every such client)."""
    server = live_server_proc
    server.manage(
        "shell",
        "-c",
        "from rooms.models import Room; "
        "Room.objects.create(slug='noisy', title='Noisy', kind='mesh', capacity=8)",
    )
    log_start = server.log_path.stat().st_size
    url = server.ws_url + "/ws/rooms/noisy/?token={}"

    async def join():
        token, _ = page_token(server)
        ws = await websockets.connect(url.format(token), origin=server.url)
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert welcome["type"] == "welcome", welcome
        return ws, welcome["you"]["peer"]

    async def recv_until(ws, predicate):
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if predicate(message):
                return message

    async def scenario():
        observer, _ = await join()
        noisy, noisy_peer = await join()
        leaver, leaver_peer = await join()
        await recv_until(noisy, lambda m: m.get("peer") == leaver_peer)  # its peer-joined
        # the leaver goes while the noisy socket's burst is being refused: its peer-left
        # reaches a socket that is closing
        await asyncio.gather(leaver.close(), *(noisy.send("not json") for _ in range(25 + 15)))
        replies = []
        try:
            while True:
                replies.append(json.loads(await asyncio.wait_for(noisy.recv(), 30)))
        except ConnectionClosed:
            pass
        # the noisy consumer has finished (handled every frame it will) once its peer-left
        # reaches the observer
        await recv_until(observer, lambda m: m == {"type": "peer-left", "peer": noisy_peer})
        await observer.close()
        return noisy.close_code, replies

    code, replies = asyncio.run(scenario())
    assert code == 4008
    errors = [r for r in replies if r["type"] == "error"]
    assert len(errors) == 20 and {e["code"] for e in errors} == {"bad-message"}
    # Daphne logs an application's exception on its next check (once a second): give it a
    # few, then read everything logged since this test started
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        time.sleep(0.5)
        with open(server.log_path, "rb") as log:
            log.seek(log_start)
            logged = log.read().decode(errors="replace")
        assert "Traceback" not in logged and "Disconnected" not in logged, logged[-3000:]
