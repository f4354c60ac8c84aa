"""Session identities: a random id and an editable display name, no signup.

The identity lives in the Django session, so it follows the visitor across pages and
tabs of one browser; WebSocket consumers never read the session directly, they trust
only the signed token issued from it (see ``identity.tokens``).
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.core.exceptions import ValidationError

SESSION_KEY = "rtcsite_identity"
IDENTITY_ID_RE = re.compile(r"^[0-9a-f]{16}$")

_ADJECTIVES = (
    "amber",
    "brisk",
    "calm",
    "deft",
    "eager",
    "fair",
    "gentle",
    "hazel",
    "ivory",
    "jolly",
    "keen",
    "lucid",
    "mellow",
    "noble",
    "opal",
    "plucky",
    "quiet",
    "rapid",
    "sunny",
    "tidy",
)
_ANIMALS = (
    "otter",
    "heron",
    "lynx",
    "finch",
    "badger",
    "koala",
    "panda",
    "raven",
    "tapir",
    "wren",
    "gecko",
    "ibis",
    "marten",
    "newt",
    "okapi",
    "puffin",
    "quail",
    "seal",
    "vole",
    "yak",
)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a visitor is to the rest of the site: a stable random id and a display name.
    (Slots: every socket holds one.)"""

    id: str
    name: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name}


def new_identity_id() -> str:
    """64 random bits, hex: unguessable and short enough for logs and peer lists."""
    return secrets.token_hex(8)


def random_display_name() -> str:
    """A friendly default such as ``calm-otter-42`` so tiles are distinguishable."""
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_ANIMALS)}-{secrets.randbelow(100)}"


def clean_display_name(raw: str) -> str:
    """Normalise a user-chosen display name or raise ``ValidationError``.

    NFC-normalised, whitespace collapsed, no control/format characters (they can hide
    or reorder text in other people's UIs), 1..DISPLAY_NAME_MAX_LENGTH characters.
    """
    if not isinstance(raw, str):
        raise ValidationError("Display name must be text.", code="invalid")
    name = " ".join(unicodedata.normalize("NFC", raw).split())
    if not name:
        raise ValidationError("Display name cannot be empty.", code="required")
    if any(unicodedata.category(ch) in {"Cc", "Cf", "Co", "Cs"} for ch in name):
        raise ValidationError(
            "Display name contains invisible or control characters.", code="invalid"
        )
    limit = settings.DISPLAY_NAME_MAX_LENGTH
    if len(name) > limit:
        raise ValidationError(f"Display name is limited to {limit} characters.", code="max_length")
    return name


def get_or_create_identity(session: SessionBase) -> Identity:
    """Return the session's identity, creating (and persisting) one on first use."""
    data = session.get(SESSION_KEY)
    if (
        isinstance(data, dict)
        and isinstance(data.get("id"), str)
        and IDENTITY_ID_RE.match(data["id"])
        and isinstance(data.get("name"), str)
    ):
        return Identity(id=data["id"], name=data["name"])
    identity = Identity(id=new_identity_id(), name=random_display_name())
    session[SESSION_KEY] = identity.as_dict()
    return identity


def set_display_name(session: SessionBase, raw_name: str) -> Identity:
    """Validate and store a new display name; the id never changes."""
    current = get_or_create_identity(session)
    identity = Identity(id=current.id, name=clean_display_name(raw_name))
    session[SESSION_KEY] = identity.as_dict()
    return identity
