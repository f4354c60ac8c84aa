"""Token buckets: the one rate limiter of the site (sockets, offers, chunks, frames, and
budgets of costs measured after the fact: ``ready``/``spend``)."""

from __future__ import annotations

import time


class TokenBucket:
    """``burst`` actions at once, refilled at ``rate`` per second; a few bytes each (slots:
    every socket holds one)."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def ready(self) -> bool:
        """Whether the bucket is out of debt: for a cost known only afterwards (``spend``),
        an action is allowed while anything is left, and pays in full when done."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return self.tokens > 0

    def spend(self, amount: float) -> None:
        """Take ``amount``, going into debt if needed (repaid at ``rate``)."""
        self.tokens -= amount

    def seconds_to_ready(self) -> float:
        """How long until ``ready`` (0 when it is)."""
        return max(0.0, -self.tokens / self.rate) if self.rate > 0 else 0.0

    def full(self) -> bool:
        """Refilled to ``burst``: as good as a new bucket (callers may forget it)."""
        return self.tokens + (time.monotonic() - self.updated) * self.rate >= self.burst
