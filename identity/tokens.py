"""Signed, expiring WebSocket tokens (Django ``signing``).

Pages embed a token for the visitor's identity; WebSocket consumers accept a
connection only with a valid one. The token is salted so that no other signed value
of the site (cookies, password reset links) can be replayed as a token, and it
expires after ``WS_TOKEN_MAX_AGE`` seconds; clients fetch a fresh one from
``/me/token/`` when they reconnect.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core import signing

from identity.services import IDENTITY_ID_RE, Identity

TOKEN_SALT = "rtcsite.identity.ws-token.v1"
MAX_TOKEN_LENGTH = 512


class TokenError(Exception):
    """Why a token was refused; ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TokenInfo:
    identity: Identity
    max_age: int


def issue_token(identity: Identity) -> str:
    """Sign the identity into a URL-safe token string."""
    return signing.dumps({"id": identity.id, "name": identity.name}, salt=TOKEN_SALT)


def verify_token(token: str | None, *, max_age: int | None = None) -> Identity:
    """Return the identity in ``token`` or raise ``TokenError`` (missing/invalid/expired)."""
    if not token:
        raise TokenError("token-missing", "A WebSocket token is required.")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("token-invalid", "The WebSocket token is malformed.")
    age = settings.WS_TOKEN_MAX_AGE if max_age is None else max_age
    try:
        payload = signing.loads(token, salt=TOKEN_SALT, max_age=age)
    except signing.SignatureExpired as exc:
        raise TokenError("token-expired", "The WebSocket token has expired; reload.") from exc
    except signing.BadSignature as exc:
        raise TokenError("token-invalid", "The WebSocket token is not valid.") from exc
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("id"), str)
        or not IDENTITY_ID_RE.match(payload["id"])
        or not isinstance(payload.get("name"), str)
    ):
        raise TokenError("token-invalid", "The WebSocket token is not valid.")
    return Identity(id=payload["id"], name=payload["name"])
