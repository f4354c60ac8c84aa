"""The expiry sweeper: turns ghosts of crashed processes and vanished clients into leaves.

Every process runs one. ``backend.expire()`` is atomic, so with several processes sweeping the
same Redis each expired presence is handed to exactly one of them, which announces the leave.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from presence.backends.base import Presence, PresenceBackend
from rtcsite import metrics

logger = logging.getLogger(__name__)

OnExpired = Callable[[list[Presence]], Awaitable[None]]


async def sweep_once(backend: PresenceBackend, on_expired: OnExpired) -> list[Presence]:
    """Expire what is due and pass it to ``on_expired`` (not called when nothing expired).

    The presences are already removed when the callback runs; if it raises they are not
    offered again.
    """
    removed = await backend.expire()
    metrics.swept(len(removed))
    if removed:
        await on_expired(removed)
    return removed


async def sweep_forever(backend: PresenceBackend, on_expired: OnExpired, interval: float) -> None:
    """``sweep_once`` every ``interval`` seconds until cancelled.

    Errors (Redis down, a failing callback) are logged and the loop carries on: one bad
    sweep must not stop leave events for the life of the process. ``interval`` should be
    well under the backend's ttl so ghosts leave within about ``ttl + interval``.
    """
    if interval <= 0:
        raise ValueError("interval must be positive")
    task = asyncio.current_task()
    while True:
        try:
            await sweep_once(backend, on_expired)
        except asyncio.CancelledError:
            raise
        except Exception:
            metrics.PRESENCE_SWEEP_ERRORS.inc()
            logger.exception("presence sweep failed; retrying in %.1fs", interval)
        if task is not None and task.cancelling():
            # The cancellation was swallowed below us (Python 3.11's asyncio.wait_for, used by
            # redis-py, drops it when the awaited call completes at the same moment): honour it.
            raise asyncio.CancelledError
        await asyncio.sleep(interval)
