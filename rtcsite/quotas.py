"""Quotas: how often one visitor may do something that costs the site (a room, a stream, an
identity), counted across processes.

Contract: ``check(action, identity=..., address=...)`` counts one ``action`` for the
identity and for the client address, each in a fixed window of its own rate (settings
``*_RATE``: ``(count, seconds)``), and raises ``rtcsite.errors.RateLimited`` (429, with
``retry_after`` = seconds until the window that refused ends) when either is over. Counters
are Django cache keys ``quota:<action>:<id|ip>:<value>:<window number>``: an atomic
``add`` + ``incr`` with an expiry, which RedisCache (shared by every process when
``REDIS_URL`` is set) and LocMemCache (one process) both provide. A cache that cannot be
reached lets the action through (logged): quotas bound abuse, they must not take the site
down with Redis. ``decide`` and ``address_key`` are the pure parts.

``rtcsite.ratelimit.TokenBucket`` stays the per-socket, in-process limiter (messages,
chunks, frames): it costs nothing and needs no sharing.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings

from rtcsite.errors import RateLimited

logger = logging.getLogger(__name__)

IPV6_PREFIX = 64  # one household or host gets a /64: counting single IPv6 addresses is moot


@dataclass(frozen=True)
class Action:
    """Something a visitor does that is counted: ``what`` names it in refusals."""

    name: str
    what: str
    identity_rate: str | None  # the setting: (count, seconds) per identity
    address_rate: str | None  # the setting: (count, seconds) per client address


ROOM_CREATE = Action("room-create", "new rooms", "ROOM_CREATE_RATE", "ROOM_CREATE_RATE_PER_ADDRESS")
STREAM_CREATE = Action(
    "stream-create", "new streams", "STREAM_CREATE_RATE", "STREAM_CREATE_RATE_PER_ADDRESS"
)
IDENTITY_MINT = Action("identity-mint", "new visitors", None, "IDENTITY_MINT_RATE_PER_ADDRESS")


# --- pure parts ----------------------------------------------------------------------------
def window_number(now: float, seconds: int) -> int:
    """The fixed window ``now`` falls in (windows are aligned to the epoch: every process
    agrees on them without talking)."""
    return int(now // seconds)


def decide(count: int, limit: int, now: float, seconds: int) -> int | None:
    """``None`` if the ``count``-th action of this window is allowed (``limit`` 0: always);
    else the whole seconds (>= 1) until the window ends."""
    if limit <= 0 or count <= limit:
        return None
    end = (window_number(now, seconds) + 1) * seconds
    return max(1, math.ceil(end - now))


def address_key(address: str | None) -> str:
    """The client address as counted: IPv4 as is, IPv6 as its /64 ("" if none or not an
    address, e.g. a Unix socket without ``--proxy-headers``)."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return str(ip)


def describe_window(seconds: int) -> str:
    for unit, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % unit == 0:
            n = seconds // unit
            return name if n == 1 else f"{n} {name}s"
    return f"{seconds} s"


def describe_wait(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    return f"{math.ceil(seconds / 60)} min"


# --- counting (I/O: the cache) -------------------------------------------------------------
def bump(key: str, seconds: int) -> int:
    """One more for ``key`` (the count after it); the key lives ``seconds`` from its first
    count (and a second of slack). The one shared counter: quotas and the admin throttle."""
    from django.core.cache import cache

    if cache.add(key, 1, timeout=seconds + 1):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr: this is the first of a new window
        cache.add(key, 1, timeout=seconds + 1)
        return 1


def check(action: Action, *, identity: str | None = None, address: str | None = None) -> None:
    """Count one ``action`` by ``identity`` and from ``address``; raise ``RateLimited``
    (details: ``retry_after``, ``quota``: the action's name, ``scope``: "identity" or
    "address") when either is over its rate."""
    now = time.time()
    refusal: tuple[int, str, int, int] | None = None  # retry_after, scope, limit, seconds
    for scope, setting, value in (
        ("identity", action.identity_rate, identity or ""),
        ("address", action.address_rate, address_key(address)),
    ):
        if setting is None or not value:
            continue
        limit, seconds = getattr(settings, setting)
        if limit <= 0:
            continue
        key = f"quota:{action.name}:{scope}:{value}:{window_number(now, seconds)}"
        try:
            count = bump(key, seconds)
        except Exception:  # the cache is down: let it through rather than refuse everyone
            logger.warning("quota %s: cache unavailable; not counted", action.name, exc_info=True)
            continue
        wait = decide(count, limit, now, seconds)
        if wait is not None and (refusal is None or wait > refusal[0]):
            refusal = (wait, scope, limit, seconds)
    if refusal is not None:
        wait, scope, limit, seconds = refusal
        who = "you" if scope == "identity" else "your network address"
        raise RateLimited(
            f"Too many {action.what} from {who}: at most {limit} per "
            f"{describe_window(seconds)}. Try again in {describe_wait(wait)}.",
            retry_after=wait,
            quota=action.name,
            scope=scope,
        )
