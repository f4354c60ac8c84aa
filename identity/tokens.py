"""Signed, expiring WebSocket tokens (Django ``signing``).

Pages embed a token for the visitor's identity; WebSocket consumers accept a
connection only with a valid one. The token is salted so that no other signed value
of the site (cookies, password reset links) can be replayed as a token, and it
expires after ``WS_TOKEN_MAX_AGE`` seconds; clients fetch a fresh one from
``/me/token/`` when they reconnect.
"""

from __future__ import annotations

from django.conf import settings
from django.core import signing

from identity.services import IDENTITY_ID_RE, Identity
from rtcsite.errors import ClientError

TOKEN_SALT = "rtcsite.identity.ws-token.v1"
MAX_TOKEN_LENGTH = 512


class TokenError(ClientError):
    """Why a token was refused (``token-missing``, ``token-invalid``, ``token-expired``)."""

    status = 401


def issue_token(identity: Identity) -> str:
    """Sign the identity into a URL-safe token string."""
    return signing.dumps({"id": identity.id, "name": identity.name}, salt=TOKEN_SALT)


def verify_token(token: str | None, *, max_age: int | None = None) -> Identity:
    """Return the identity in ``token`` or raise ``TokenError`` (missing/invalid/expired)."""
    if not token:
        raise TokenError("A WebSocket token is required.", code="token-missing")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("The WebSocket token is malformed.", code="token-invalid")
    age = settings.WS_TOKEN_MAX_AGE if max_age is None else max_age
    try:
        payload = signing.loads(token, salt=TOKEN_SALT, max_age=age)
    except signing.SignatureExpired as exc:
        raise TokenError("The WebSocket token has expired; reload.", code="token-expired") from exc
    except signing.BadSignature as exc:
        raise TokenError("The WebSocket token is not valid.", code="token-invalid") from exc
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("id"), str)
        or not IDENTITY_ID_RE.match(payload["id"])
        or not isinstance(payload.get("name"), str)
    ):
        raise TokenError("The WebSocket token is not valid.", code="token-invalid")
    return Identity(id=payload["id"], name=payload["name"])
