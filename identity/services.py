"""Session identities: a random id and an editable display name, no signup.

The identity lives in the Django session, so it follows the visitor across pages and
tabs of one browser; WebSocket consumers never read the session directly, they trust
only the signed token issued from it (see ``identity.tokens``).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase

from rtcsite import quotas
from rtcsite.text import clean_title

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


def clean_display_name(raw: object) -> str:
    """Normalise a user-chosen display name or raise ``ValidationError``: the rules of every
    name shown to others (``rtcsite.text.clean_title``), 1..DISPLAY_NAME_MAX_LENGTH long."""
    return clean_title(
        raw,
        limit=settings.DISPLAY_NAME_MAX_LENGTH,
        required="Display name cannot be empty.",
        plural="Display names",
    )


def get_or_create_identity(session: SessionBase, *, address: str | None = None) -> Identity:
    """Return the session's identity, creating (and persisting) one on first use.

    A new one (a cookie-less request: a session row each) counts towards
    ``IDENTITY_MINT_RATE_PER_ADDRESS`` for the client ``address``; over it,
    ``rtcsite.errors.RateLimited`` (the middleware answers 429).
    """
    data = session.get(SESSION_KEY)
    if (
        isinstance(data, dict)
        and isinstance(data.get("id"), str)
        and IDENTITY_ID_RE.match(data["id"])
        and isinstance(data.get("name"), str)
    ):
        return Identity(id=data["id"], name=data["name"])
    quotas.check(quotas.IDENTITY_MINT, address=address)
    identity = Identity(id=new_identity_id(), name=random_display_name())
    session[SESSION_KEY] = identity.as_dict()
    return identity


def set_display_name(
    session: SessionBase, raw_name: str, *, address: str | None = None
) -> Identity:
    """Validate and store a new display name; the id never changes."""
    current = get_or_create_identity(session, address=address)
    identity = Identity(id=current.id, name=clean_display_name(raw_name))
    session[SESSION_KEY] = identity.as_dict()
    return identity
