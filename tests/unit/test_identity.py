"""Identities, display names and signed WebSocket tokens."""

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.core import signing
from django.core.exceptions import ValidationError

from identity.services import (
    SESSION_KEY,
    Identity,
    clean_display_name,
    get_or_create_identity,
    set_display_name,
)
from identity.tokens import TOKEN_SALT, TokenError, issue_token, verify_token

BOB = Identity(id="0123456789abcdef", name="bob")


class OldSigner(signing.TimestampSigner):
    """Signs with a timestamp one hour in the past (a token issued long ago)."""

    def timestamp(self):
        import time

        return signing.b62_encode(int(time.time()) - 3600)


def old_token(payload) -> str:
    return OldSigner(salt=TOKEN_SALT).sign_object(payload)


def test_new_session_gets_a_stable_identity():
    session = SessionStore()
    first = get_or_create_identity(session)
    assert len(first.id) == 16
    assert first.name
    assert get_or_create_identity(session) == first


def test_corrupt_session_identity_is_replaced():
    session = SessionStore()
    session[SESSION_KEY] = {"id": "../../etc", "name": 3}
    identity = get_or_create_identity(session)
    assert identity.id != "../../etc"
    assert session[SESSION_KEY]["id"] == identity.id


def test_rename_keeps_id():
    session = SessionStore()
    before = get_or_create_identity(session)
    after = set_display_name(session, "  Ada   Lovelace ")
    assert after.id == before.id
    assert after.name == "Ada Lovelace"
    assert get_or_create_identity(session).name == "Ada Lovelace"


@pytest.mark.parametrize(
    "bad", ["", "   ", "x" * 41, "evil\u202eeman", "bell\x07", "zero\u200bwidth", None]
)
def test_bad_display_names(bad):
    with pytest.raises(ValidationError):
        clean_display_name(bad)


def test_display_name_unicode_normalised():
    assert clean_display_name("Zoe\u0301") == "Zoé"


def test_token_roundtrip():
    assert verify_token(issue_token(BOB)) == BOB


def test_token_missing():
    with pytest.raises(TokenError) as exc:
        verify_token(None)
    assert exc.value.code == "token-missing"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # bad signature
        lambda t: "x" + t,  # payload changed
        lambda t: "garbage",
        lambda t: t * 10,  # oversized
    ],
)
def test_token_tampered(mangle):
    with pytest.raises(TokenError) as exc:
        verify_token(mangle(issue_token(BOB)))
    assert exc.value.code == "token-invalid"


def test_token_from_other_salt_rejected():
    forged = signing.dumps(BOB.as_dict(), salt="another.purpose")
    with pytest.raises(TokenError) as exc:
        verify_token(forged)
    assert exc.value.code == "token-invalid"


def test_token_expired():
    with pytest.raises(TokenError) as exc:
        verify_token(old_token(BOB.as_dict()), max_age=60)
    assert exc.value.code == "token-expired"
    assert verify_token(old_token(BOB.as_dict()), max_age=7200) == BOB


def test_token_with_bad_payload_rejected():
    token = signing.dumps({"id": "not-hex", "name": "x"}, salt=TOKEN_SALT)
    with pytest.raises(TokenError) as exc:
        verify_token(token)
    assert exc.value.code == "token-invalid"
