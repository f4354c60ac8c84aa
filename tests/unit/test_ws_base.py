"""The shared consumer base, in-process (full ASGI stack through WebsocketCommunicator)."""

import asyncio
import json

import pytest
from autobahn.exception import Disconnected

from identity.services import Identity
from identity.tokens import issue_token
from rtcsite.ws.codes import CloseCode
from rtcsite.ws.consumer import JsonSocketConsumer
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


async def lobby():
    comm = communicator("/ws/lobby/", identity=CAROL)
    await comm.connect()
    await comm.receive_json_from()  # hello
    await comm.receive_json_from()  # lobby-state
    return comm


def strict_json(text):
    def refuse(name):
        raise AssertionError(f"{name} is not JSON: {text[:80]}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "ping", "t": NaN}',
        '{"type": "ping", "t": Infinity}',
        '{"type": "ping", "t": -Infinity}',
        '{"type": "ping", "t": 1e999}',
        '{"type": "ping", "t": [-2e400]}',
        '{"type": "ping", "t": ' + "9" * 5000 + "}",
    ],
)
async def test_numbers_json_cannot_carry_are_refused(raw):
    comm = await lobby()
    await comm.send_to(text_data=raw)
    reply = strict_json((await comm.receive_output())["text"])
    assert reply["type"] == "error" and reply["code"] == "bad-message"
    await comm.send_to(text_data='{"type": "ping", "t": -0.5e3}')
    assert strict_json((await comm.receive_output())["text"]) == {"type": "pong", "t": -500.0}
    await comm.disconnect()


async def test_encoder_refuses_non_finite_numbers():
    """A bug must not put NaN or Infinity on the wire (not JSON: clients fail to parse)."""
    for number in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError):
            await JsonSocketConsumer.encode_json({"type": "pong", "t": number})


@pytest.mark.parametrize(
    "raw",
    [
        r'{"type": "ping", "note": "\ud800"}',
        r'{"type": "ping", "note": "x\udfffy"}',
        r'{"type": "ping", "note": "\ude00\ud83d"}',  # a pair in the wrong order
        r'{"type": "ping", "deep": [{"a": ["\udc00"]}]}',
        r'{"type": "ping", "\ud800": 1}',  # in a key
    ],
)
async def test_lone_surrogates_are_refused(raw):
    """Strings that cannot be encoded as UTF-8 cannot cross the channel layer (msgpack)."""
    comm = await lobby()
    await comm.send_to(text_data=raw)
    reply = await comm.receive_json_from()
    assert reply["code"] == "bad-message" and "surrogate" in reply["message"]
    # an escaped surrogate pair is one valid character; a literal backslash-u is text
    await comm.send_to(text_data=r'{"type": "ping", "note": "\ud83d\ude00 \\ud800", "t": 3}')
    assert await comm.receive_json_from() == {"type": "pong", "t": 3}
    await comm.disconnect()


async def test_nothing_handled_or_sent_after_the_close_for_too_many_errors():
    """Frames already received when the socket closes (4008) are dropped, not answered."""
    comm = await lobby()
    for _ in range(25):
        await comm.send_to(text_data="not json")
    for _ in range(20):
        assert (await comm.receive_json_from())["code"] == "bad-message"
    closed = await comm.receive_output()
    assert closed["type"] == "websocket.close"
    assert closed["code"] == CloseCode.TOO_MANY_ERRORS
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


async def test_send_on_a_socket_the_peer_closed_is_dropped():
    """Between the peer's close frame and ``websocket.disconnect``, Daphne's ``send`` raises
    Autobahn's ``Disconnected``: a reply (or an event) due then is dropped, and the frames
    still queued are not handled, instead of the consumer dying with a traceback."""
    inbox: asyncio.Queue = asyncio.Queue()
    sent = []
    pong_sent = asyncio.Event()
    peer_closed = False

    async def send(message):
        if peer_closed:
            raise Disconnected("Attempt to send on a closed protocol")
        sent.append(message)
        if message["type"] == "websocket.send":
            pong_sent.set()

    scope = {
        "type": "websocket",
        "path": "/ws/test/",
        "query_string": f"token={issue_token(CAROL)}".encode(),
        "headers": [],
    }
    task = asyncio.ensure_future(JsonSocketConsumer.as_asgi()(scope, inbox.get, send))
    await inbox.put({"type": "websocket.connect"})
    await inbox.put({"type": "websocket.receive", "text": '{"type": "ping", "t": 1}'})
    await asyncio.wait_for(pong_sent.wait(), 5)
    peer_closed = True
    for t in (2, 3):
        await inbox.put({"type": "websocket.receive", "text": f'{{"type": "ping", "t": {t}}}'})
    await inbox.put({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(task, 5)  # ends cleanly: no exception
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send"]
