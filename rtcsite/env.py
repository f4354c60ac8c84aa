"""Typed readers for environment variables.

Settings read everything through these helpers so that a malformed value fails at
start-up with a message naming the variable, instead of surfacing later as a
confusing runtime error.
"""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Any

from django.core.exceptions import ImproperlyConfigured

TRUE_VALUES = {"1", "true", "yes", "on"}
FALSE_VALUES = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    """Return the variable as a string (``default`` when unset)."""
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    """Parse 1/0, true/false, yes/no, on/off (case-insensitive)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false).")


def _env_number(name: str, default, parse, label: str, minimum=None):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not {label}.") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be >= {minimum}.")
    return value


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    """Parse an integer, optionally enforcing a lower bound."""
    return _env_number(name, default, int, "an integer", minimum)


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    """Parse a number (seconds, hours, rates), optionally enforcing a lower bound."""
    return _env_number(name, default, float, "a number", minimum)


def env_list(name: str, default: list[str]) -> list[str]:
    """Parse a comma-separated list, dropping blanks."""
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_json(name: str, default: Any) -> Any:
    """Parse a JSON value."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"{name} is not valid JSON: {exc}") from exc


#: Units a rate's window may be written in ("20/h"), in seconds.
RATE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(raw: str) -> tuple[int, int]:
    """``"N/window"`` → ``(N, window seconds)``. The window is seconds (``"20/3600"``) or a
    number and a unit s/m/h/d (``"20/h"``, ``"50/10m"``). N = 0 means no limit."""
    count, sep, window = raw.strip().partition("/")
    if not sep:
        raise ValueError("expected N/window, e.g. 20/h")
    window = window.strip().lower()
    unit = 1
    if window and window[-1] in RATE_UNITS:
        unit = RATE_UNITS[window[-1]]
        window = window[:-1] or "1"
    limit, seconds = int(count), int(window) * unit
    if limit < 0 or seconds < 1:
        raise ValueError("N must be >= 0 and the window at least 1 s")
    return limit, seconds


def env_rate(name: str, default: str) -> tuple[int, int]:
    """A rate limit such as ``"20/h"``: ``(count, window seconds)``; count 0: unlimited."""
    raw = os.environ.get(name)
    try:
        return parse_rate(default if raw is None or raw.strip() == "" else raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a rate ({exc}).") from exc


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def env_networks(name: str, default: list[str]) -> list[Network]:
    """A comma-separated list of networks in CIDR form (a bare address is one host)."""
    values = env_list(name, default)
    try:
        return [ipaddress.ip_network(value, strict=False) for value in values]
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc} (use e.g. 127.0.0.0/8,10.0.0.0/24).") from exc
