"""Bounds on requests held open for low-latency viewers (blocking playlist reloads,
preload-hinted parts, segments still being written).

A held request costs a socket and a coroutine, no thread; still, one client must not be
able to hold thousands, and one process must not hold more than it can wake. Counted per
process, per client address (IPv6: per /64, as the quotas count), in memory: a client
spread over several processes gets the per-client limit in each (the proxy's connection
limits bound the rest, docs/security.md).

``hold`` yields ``None`` when the request may wait, else why not: ``"client"`` (answer 429)
or ``"process"`` (answer 503). The count is released on every exit path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from rtcsite.quotas import address_key


class HeldRequests:
    def __init__(self, per_client: int, total: int) -> None:
        self.per_client = per_client
        self.total = total
        self._by_client: Counter[str] = Counter()
        self._held = 0

    @property
    def held(self) -> int:
        return self._held

    @contextmanager
    def hold(self, address: str) -> Iterator[str | None]:
        key = address_key(address)
        if self.total and self._held >= self.total:
            yield "process"
            return
        if self.per_client and self._by_client[key] >= self.per_client:
            yield "client"
            return
        self._held += 1
        self._by_client[key] += 1
        try:
            yield None
        finally:
            self._held -= 1
            self._by_client[key] -= 1
            if self._by_client[key] <= 0:
                del self._by_client[key]


_held: HeldRequests | None = None


def held_requests() -> HeldRequests:
    """This process's counter, sized by ``STREAM_LL_HELD_PER_CLIENT`` / ``STREAM_LL_HELD_MAX``."""
    global _held
    wanted = (settings.STREAM_LL_HELD_PER_CLIENT, settings.STREAM_LL_HELD_MAX)
    resized = _held is not None and (_held.per_client, _held.total) != wanted
    if _held is None or (resized and not _held.held):  # settings changed (tests): resize
        _held = HeldRequests(*wanted)
    return _held
