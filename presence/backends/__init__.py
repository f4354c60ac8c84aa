"""Presence backends: pick one from settings, share it process-wide.

``settings.PRESENCE_BACKEND`` (dotted path to a ``PresenceBackend`` subclass) wins; otherwise
Redis when ``settings.REDIS_URL`` is set (presence must be shared by every process), else the
in-process memory backend. ``settings.PRESENCE_TTL`` is the expiry window in seconds; the
Redis backend also reads ``settings.PRESENCE_KEY_PREFIX`` (defaults: ``rtcsite/settings.py``).
"""

from __future__ import annotations

import threading
from typing import Any

from django.utils.module_loading import import_string

from presence.backends.base import PeerInfo, Presence, PresenceBackend, RoomFull

__all__ = [
    "PeerInfo",
    "Presence",
    "PresenceBackend",
    "RoomFull",
    "backend_path",
    "get_backend",
    "reset_backend",
]

MEMORY = "presence.backends.memory.MemoryPresenceBackend"
REDIS = "presence.backends.redis.RedisPresenceBackend"

_backend: PresenceBackend | None = None
_lock = threading.Lock()


def backend_path(settings: Any) -> str:
    """Dotted path of the backend class the given settings select."""
    if settings.PRESENCE_BACKEND:
        return settings.PRESENCE_BACKEND
    return REDIS if settings.REDIS_URL else MEMORY


def get_backend() -> PresenceBackend:
    """The process-wide backend, built on first use (so settings are read late)."""
    global _backend
    if _backend is None:
        with _lock:
            if _backend is None:
                from django.conf import settings

                _backend = import_string(backend_path(settings)).from_settings(settings)
    return _backend


def reset_backend() -> PresenceBackend | None:
    """Forget the singleton (tests: after changing settings, or between event loops).

    Returns the old backend so an async caller can ``await old.close()``.
    """
    global _backend
    with _lock:
        old, _backend = _backend, None
    return old
