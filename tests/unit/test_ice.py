"""TURN REST credentials derived from a shared secret (coturn's use-auth-secret)."""

import base64
import hashlib
import hmac

from rtcsite.ice import client_ice_servers, validate_ice_servers


def test_secret_entries_get_time_limited_credentials():
    servers = validate_ice_servers(
        [
            {"urls": "stun:127.0.0.1:3478"},
            {"urls": "turn:127.0.0.1:3478", "secret": "s3cret", "ttl": 600},
        ]
    )
    out = client_ice_servers(servers, "abcdef0123456789", now=1_000_000)
    assert out[0] == {"urls": ["stun:127.0.0.1:3478"]}
    turn = out[1]
    assert "secret" not in turn and "ttl" not in turn
    assert turn["username"] == "1000600:abcdef0123456789"
    expected = base64.b64encode(
        hmac.new(b"s3cret", b"1000600:abcdef0123456789", hashlib.sha1).digest()
    ).decode()
    assert turn["credential"] == expected


def test_static_credentials_pass_through():
    servers = validate_ice_servers([{"urls": "turn:h", "username": "u", "credential": "c"}])
    assert client_ice_servers(servers, "x", now=0) == [
        {"urls": ["turn:h"], "username": "u", "credential": "c"}
    ]
