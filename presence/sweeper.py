"""The expiry sweeper: turns ghosts of crashed processes and vanished clients into leaves.

Every process runs one. ``backend.expire()`` is atomic, so with several processes sweeping the
same Redis each expired presence is handed to exactly one of them, which announces the leave.
Before each sweep it renews its process's lease (``PresenceBackend.renew_lease``): a process
that dies (kill -9) stops renewing, and the others' sweeps expire its presences once its
lease lapses (``PRESENCE_LEASE_TTL``), long before their own ``ttl``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

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


async def sweep_forever(
    backend: PresenceBackend,
    on_expired: OnExpired,
    interval: float,
    *,
    process: str | None = None,
    on_unavailable: Callable[[BaseException], Any] | None = None,
    on_lease_lost: Callable[[], Any] | None = None,
) -> None:
    """Renew ``process``'s lease and ``sweep_once``, every ``interval`` seconds until
    cancelled.

    Errors (Redis down, a failing callback) are logged and the loop carries on: one bad
    sweep must not stop leave events for the life of the process. A Redis connection error
    goes to ``on_unavailable`` instead (the room service logs an outage once, not a
    traceback per sweep). ``on_lease_lost`` is called when a renewal finds the lease was
    not the one renewed last time (Redis restarted empty, or this process stalled past its
    lease): what the process holds must be re-tracked. ``interval`` should be well under
    the backend's ttl so ghosts leave within about ``ttl + interval``, and under its lease
    ttl.
    """
    from rtcsite.ws.service import SERVICE_ERRORS

    if interval <= 0:
        raise ValueError("interval must be positive")
    task = asyncio.current_task()
    held = False  # renewed once: from then on a lease found new was lost
    while True:
        try:
            if process is not None:
                renewed = await backend.renew_lease(process)
                if held and not renewed and on_lease_lost is not None:
                    on_lease_lost()
                held = True
            await sweep_once(backend, on_expired)
        except asyncio.CancelledError:
            raise
        except SERVICE_ERRORS as exc:
            if on_unavailable is not None:
                on_unavailable(exc)
            else:
                logger.warning("presence sweep: Redis unreachable (%s)", exc)
        except Exception:
            metrics.PRESENCE_SWEEP_ERRORS.inc()
            logger.exception("presence sweep failed; retrying in %.1fs", interval)
        if task is not None and task.cancelling():
            # The cancellation was swallowed below us (Python 3.11's asyncio.wait_for, used by
            # redis-py, drops it when the awaited call completes at the same moment): honour it.
            raise asyncio.CancelledError
        await asyncio.sleep(interval)
