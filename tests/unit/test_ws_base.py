"""The shared consumer base, in-process (full ASGI stack through WebsocketCommunicator)."""

import json

import pytest

from identity.services import Identity
from rtcsite.ws.codes import CloseCode
from tests.support.ws import communicator

CAROL = Identity(id="c0ffee00c0ffee00", name="carol")
pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_valid_token_gets_hello_and_pong():
    comm = communicator("/ws/lobby/", identity=CAROL)
    connected, _ = await comm.connect()
    assert connected
    hello = await comm.receive_json_from()
    assert hello == {"type": "hello", "protocol": 1, "you": CAROL.as_dict()}
    assert (await comm.receive_json_from())["type"] == "lobby-state"
    await comm.send_json_to({"type": "ping", "t": 42})
    assert await comm.receive_json_from() == {"type": "pong", "t": 42}
    await comm.disconnect()


@pytest.mark.parametrize(
    ("token", "code", "close"),
    [
        (None, "token-missing", CloseCode.TOKEN_MISSING),
        ("nope", "token-invalid", CloseCode.TOKEN_INVALID),
    ],
)
async def test_bad_tokens_closed_with_code(token, code, close):
    comm = communicator("/ws/lobby/", token=token)
    connected, _ = await comm.connect()
    assert connected  # accepted so the reason can be told
    error = await comm.receive_json_from()
    assert error["type"] == "error"
    assert error["code"] == code
    closed = await comm.receive_output()
    assert closed == {"type": "websocket.close", "code": int(close), "reason": code}


async def test_foreign_origin_refused_at_handshake():
    comm = communicator("/ws/lobby/", identity=CAROL, origin=b"https://evil.example")
    connected, _ = await comm.connect()
    assert not connected


async def test_missing_origin_refused_at_handshake():
    comm = communicator("/ws/lobby/", identity=CAROL, origin=None)
    connected, _ = await comm.connect()
    assert not connected


async def test_unknown_path_closed_not_found():
    comm = communicator("/ws/nowhere/", identity=CAROL)
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from())["code"] == "not-found"
    assert (await comm.receive_output())["code"] == CloseCode.NOT_FOUND


async def test_bad_messages_answered_and_connection_survives():
    comm = communicator("/ws/lobby/", identity=CAROL)
    await comm.connect()
    await comm.receive_json_from()  # hello
    await comm.receive_json_from()  # lobby-state
    cases = [
        ("not json", "bad-message"),
        ("[1, 2]", "bad-message"),
        ('{"type": 7}', "bad-message"),
        ('{"type": "launch-missiles"}', "unknown-type"),
        ('{"type": "__class__"}', "unknown-type"),
        (json.dumps({"type": "ping", "pad": "x" * 70_000}), "too-large"),
        ("[" * 5000 + "]" * 5000, "bad-message"),
    ]
    for raw, code in cases:
        await comm.send_to(text_data=raw)
        reply = await comm.receive_json_from()
        assert reply["type"] == "error", raw[:30]
        assert reply["code"] == code, raw[:30]
    await comm.send_to(bytes_data=b"\x00\x01")
    assert (await comm.receive_json_from())["code"] == "bad-message"
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from() == {"type": "pong"}
    await comm.disconnect()


async def test_rate_limit_then_close_after_flood():
    comm = communicator("/ws/lobby/", identity=CAROL)
    await comm.connect()
    await comm.receive_json_from()
    await comm.receive_json_from()
    for _ in range(100):
        await comm.send_json_to({"type": "ping"})
    replies = []
    while True:
        out = await comm.receive_output(timeout=2)
        if out["type"] == "websocket.close":
            break
        replies.append(json.loads(out["text"]))
    codes = [r.get("code") for r in replies]
    assert codes.count(None) >= 30  # the burst went through as pongs
    assert "rate-limited" in codes
    assert out["code"] == CloseCode.TOO_MANY_ERRORS
