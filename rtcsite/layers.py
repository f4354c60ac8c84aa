"""The embedded channel layer: Channels' in-memory layer without its O(connections) sweep
on every receive.

``InMemoryChannelLayer._clean_expired`` walks every channel queue and every group member;
Channels calls it on each ``receive`` and ``group_send``. Each socket calls ``receive`` for
every message it gets, so with N sockets every message costs O(N) and filling a process
with sockets costs O(N²): `bench_ws_capacity` saw the embedded site accept 27 connects/s
at 6,600 sockets with one core saturated, against 1,244/s for a raw `websockets` server.

Expiry only needs to be roughly on time (messages expire after ``expiry`` = 60 s, group
membership after a day), so the sweep runs at most once per ``clean_interval`` seconds.
"""

from __future__ import annotations

import time

from channels.layers import InMemoryChannelLayer


class EmbeddedChannelLayer(InMemoryChannelLayer):
    """``InMemoryChannelLayer`` whose expiry sweep runs at most once per ``clean_interval``."""

    def __init__(self, *args, clean_interval: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clean_interval = clean_interval
        self._next_clean = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now < self._next_clean:
            return
        self._next_clean = now + self.clean_interval
        super()._clean_expired()
