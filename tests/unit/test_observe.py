"""rtcsite.observe: the probes and /metrics answered before Django, who may scrape, and what
a socket leaves in the metrics and the log context."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY

from rtcsite import logctx
from rtcsite.observe import Observe
from tests.support.ports import free_port


async def never_called(scope, receive, send):
    raise AssertionError(f"{scope['path']} reached the application")


async def call(app, path: str, *, client="127.0.0.1", headers=(), method="GET"):
    """One HTTP request through ``app``; returns (status, headers, body)."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": (client, 40000),
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body


async def test_healthz_answers_without_the_application():
    status, headers, body = await call(Observe(never_called), "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert headers[b"cache-control"] == b"no-store"
    status, _, _ = await call(Observe(never_called), "/healthz", method="POST")
    assert status == 405


@pytest.mark.django_db(transaction=True)
async def test_readyz_fails_when_redis_is_unreachable_and_names_only_the_check(settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings.HEALTH_CHECK_TIMEOUT = 0.5
    status, _, body = await call(Observe(never_called), "/readyz")
    assert status == 503
    assert json.loads(body) == {
        "status": "failing",
        "checks": {"database": "ok", "redis": "failing"},
    }


@pytest.mark.parametrize(
    ("client", "headers", "token", "allowed"),
    [
        ("127.0.0.1", (), "", True),
        ("::1", (), "", True),
        ("203.0.113.5", (), "", False),
        # through a local proxy: the address the proxy forwarded (the last entry) counts
        ("127.0.0.1", (("X-Forwarded-For", "203.0.113.5"),), "", False),
        ("127.0.0.1", (("X-Forwarded-For", "127.0.0.1, 203.0.113.5"),), "", False),
        ("203.0.113.5", (("Authorization", "Bearer s3cret"),), "s3cret", True),
        ("203.0.113.5", (("Authorization", "Bearer wrong"),), "s3cret", False),
        ("203.0.113.5", (("Authorization", "Bearer "),), "", False),
    ],
)
async def test_metrics_are_served_to_allowed_scrapers_only(
    settings, client, headers, token, allowed
):
    settings.METRICS_TOKEN = token
    status, response_headers, body = await call(
        Observe(never_called), "/metrics", client=client, headers=headers
    )
    if allowed:
        assert status == 200
        assert response_headers[b"content-type"].startswith(b"text/plain")
        assert b"rtcsite_sockets" in body
    else:
        assert (status, body) == (404, b"Not Found")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_socket_is_counted_by_kind_with_its_close_code_and_log_context():
    seen_while_open, fields = [], {}

    async def room_socket(scope, receive, send):
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        seen_while_open.append(sample("rtcsite_sockets", kind="mesh"))
        logctx.bind(peer="0123456789ab")
        fields.update(logctx.current())
        await send({"type": "websocket.close", "code": 4004})

    before = sample("rtcsite_sockets", kind="mesh")
    closes = sample("rtcsite_socket_closes_total", kind="mesh", code="4004", by="server")
    messages = iter([{"type": "websocket.connect"}])

    async def receive():
        return next(messages)

    async def send(message):
        pass

    scope = {"type": "websocket", "path": "/ws/rooms/lounge/", "headers": [], "client": None}
    await Observe(room_socket)(scope, receive, send)

    assert seen_while_open == [before + 1]
    assert sample("rtcsite_sockets", kind="mesh") == before
    after = sample("rtcsite_socket_closes_total", kind="mesh", code="4004", by="server")
    assert after == closes + 1
    assert (fields["room"], fields["peer"], len(fields["conn"])) == ("lounge", "0123456789ab", 8)
