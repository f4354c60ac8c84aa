"""Token and Origin checks over a real WebSocket to a real Daphne process."""

import asyncio
import json
import re
import urllib.request
from http.cookiejar import CookieJar

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rtcsite.ws.codes import CloseCode
from tests.unit.test_identity import old_token


def page_token(server) -> tuple[str, str]:
    """Load the lobby like a browser and read the token and identity it embeds."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    html = opener.open(server.url + "/").read().decode()
    token = re.search(r'name="rtc-ws-token" content="([^"]+)"', html).group(1)
    ident = re.search(r'name="rtc-identity" content="([0-9a-f]{16})"', html).group(1)
    return token, ident


async def open_and_read(url: str, origin: str | None):
    """Connect; return (messages received, close code)."""
    messages = []
    async with websockets.connect(url, origin=origin, open_timeout=10) as ws:
        try:
            while True:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
                if messages[-1]["type"] == "hello":
                    await ws.close()
        except ConnectionClosed:
            pass
        return messages, ws.close_code


def test_page_token_opens_lobby_socket(live_server_proc):
    token, ident = page_token(live_server_proc)
    url = f"{live_server_proc.ws_url}/ws/lobby/?token={token}&v=1"
    messages, _ = asyncio.run(open_and_read(url, live_server_proc.url))
    assert messages[0]["type"] == "hello"
    assert messages[0]["you"]["id"] == ident


@pytest.mark.parametrize(
    ("make_token", "code", "close"),
    [
        (lambda t: "", "token-missing", CloseCode.TOKEN_MISSING),
        (lambda t: t[:-3] + "abc", "token-invalid", CloseCode.TOKEN_INVALID),
        (
            lambda t: old_token({"id": "0123456789abcdef", "name": "x"}),
            "token-expired",
            CloseCode.TOKEN_EXPIRED,
        ),
    ],
)
def test_refused_tokens(live_server_proc, make_token, code, close):
    token, _ = page_token(live_server_proc)
    url = f"{live_server_proc.ws_url}/ws/lobby/?token={make_token(token)}"
    messages, close_code = asyncio.run(open_and_read(url, live_server_proc.url))
    assert messages == [{"type": "error", "code": code, "message": messages[0]["message"]}]
    assert close_code == close


@pytest.mark.parametrize("origin", ["https://evil.example", "http://127.0.0.1.evil.example"])
def test_foreign_origin_gets_403(live_server_proc, origin):
    token, _ = page_token(live_server_proc)
    url = f"{live_server_proc.ws_url}/ws/lobby/?token={token}"
    with pytest.raises(InvalidStatus) as exc:
        asyncio.run(open_and_read(url, origin))
    assert exc.value.response.status_code == 403


@pytest.mark.parametrize(
    "make_origin",
    [
        lambda url: url.replace("http://", "https://"),  # same host and port, other scheme
        lambda url: f"{url[: url.rindex(':')]}:{int(url.rsplit(':', 1)[1]) + 1}",  # other port
        lambda url: url[: url.rindex(":")],  # no port: http's 80, not the server's
    ],
    ids=["scheme", "port", "default-port"],
)
def test_origin_of_another_scheme_or_port_gets_403(live_server_proc, make_origin):
    """The host alone is not the origin: another service of the same machine, or an http://
    page of a TLS site, must not open sockets with the visitor's identity."""
    token, _ = page_token(live_server_proc)
    url = f"{live_server_proc.ws_url}/ws/lobby/?token={token}"
    with pytest.raises(InvalidStatus) as exc:
        asyncio.run(open_and_read(url, make_origin(live_server_proc.url)))
    assert exc.value.response.status_code == 403


def test_bad_protocol_version_closed(live_server_proc):
    token, _ = page_token(live_server_proc)
    url = f"{live_server_proc.ws_url}/ws/lobby/?token={token}&v=99"
    messages, close_code = asyncio.run(open_and_read(url, live_server_proc.url))
    assert messages[0]["code"] == "protocol-version"
    assert close_code == CloseCode.PROTOCOL_VERSION


def test_refreshed_token_endpoint(live_server_proc):
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    first = json.loads(opener.open(live_server_proc.url + "/me/token/").read())
    second = json.loads(opener.open(live_server_proc.url + "/me/token/").read())
    assert first["identity"] == second["identity"]  # same session, same identity
    assert first["max_age"] > 0
    url = f"{live_server_proc.ws_url}/ws/lobby/?token={second['token']}"
    messages, _ = asyncio.run(open_and_read(url, live_server_proc.url))
    assert messages[0]["you"] == first["identity"]
