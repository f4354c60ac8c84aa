"""Sequence numbers of uploaded chunks: duplicates, reordering, gaps (no I/O, no clock).

Chunks of one WebM stream arrive over HTTP (possibly in parallel, retried) or a
WebSocket, each with a sequence number. ``ReorderBuffer`` releases them strictly in
order: a duplicate is ignored, an early chunk is held until the missing ones arrive, and
a gap that is not filled within ``gap_timeout`` seconds is skipped so the stream carries
on. Memory is bounded: when the held chunks exceed ``max_held_bytes`` (or
``max_held_chunks``) the oldest gap is skipped at once.

The very first sequence number is special: it carries the WebM header, without which
nothing after it can be decoded, so a gap *before* it is never skipped (``push`` raises
``HeldBufferFull`` instead when the bound is reached).

The caller passes the current time (``time.monotonic()``), which keeps this module
deterministic and testable without sleeping.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    seq: int
    data: bytes


@dataclass(frozen=True)
class Gap:
    """Sequence numbers ``first``..``last`` (inclusive) were given up on."""

    first: int
    last: int
    reason: str  # "timeout" or "overflow"

    @property
    def count(self) -> int:
        return self.last - self.first + 1


Released = Chunk | Gap


class HeldBufferFull(Exception):
    """Too much held data while waiting for the stream's first chunk."""


@dataclass
class ReorderStats:
    accepted: int = 0  # chunks released in order
    duplicates: int = 0
    reordered: int = 0  # chunks that arrived early and were held
    gaps: int = 0  # gaps skipped
    missing: int = 0  # sequence numbers skipped in total
    late: int = 0  # chunks that arrived after their gap had been skipped (ignored)


@dataclass
class ReorderBuffer:
    first_seq: int = 0
    gap_timeout: float = 2.0
    max_held_bytes: int = 8 << 20
    max_held_chunks: int = 256
    next_seq: int = field(init=False)
    stats: ReorderStats = field(default_factory=ReorderStats, init=False)
    _held: dict[int, bytes] = field(default_factory=dict, init=False)
    _held_bytes: int = field(default=0, init=False)
    _gap_since: float | None = field(default=None, init=False)
    _skipped: deque[Gap] = field(default_factory=lambda: deque(maxlen=64), init=False)

    def __post_init__(self) -> None:
        if self.gap_timeout < 0:
            raise ValueError("gap_timeout must be >= 0")
        self.next_seq = self.first_seq

    # --- queries -----------------------------------------------------------------------
    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    @property
    def held_count(self) -> int:
        return len(self._held)

    def seen(self, seq: int) -> bool:
        """Already released, skipped or held: feeding it again is a duplicate."""
        return seq < self.next_seq or seq in self._held

    def deadline(self) -> float | None:
        """When the current gap will be skipped (``None``: no gap, or waiting for the first)."""
        if self._gap_since is None or self.next_seq == self.first_seq:
            return None
        return self._gap_since + self.gap_timeout

    # --- updates -----------------------------------------------------------------------
    def push(self, seq: int, data: bytes, now: float) -> list[Released]:
        """Add one chunk; return what can now be released, in order."""
        if seq < self.first_seq:
            raise ValueError(f"sequence number {seq} is below the first ({self.first_seq})")
        if self.seen(seq):
            if any(gap.first <= seq <= gap.last for gap in self._skipped):
                self.stats.late += 1
                logger.info("chunk seq=%d: arrived after its gap was skipped, ignored", seq)
            else:
                self.stats.duplicates += 1
                logger.info("chunk seq=%d: duplicate, ignored", seq)
            return []
        if seq == self.next_seq:
            out: list[Released] = [Chunk(seq, data)]
            self.next_seq += 1
            self.stats.accepted += 1
            out.extend(self._drain())
            if self._held:  # the next gap starts now
                self._gap_since = now
            return out
        # Early: hold it and start (or keep) the gap clock.
        if self.next_seq == self.first_seq and self._would_overflow(len(data)):
            raise HeldBufferFull(
                f"waiting for the first chunk (seq={self.first_seq}) with "
                f"{len(self._held)} chunks / {self._held_bytes} bytes held"
            )
        self._held[seq] = data
        self._held_bytes += len(data)
        self.stats.reordered += 1
        if self._gap_since is None:
            self._gap_since = now
        logger.info(
            "chunk seq=%d: early (waiting for seq=%d), held (%d held)",
            seq,
            self.next_seq,
            len(self._held),
        )
        out = []
        while self._held and self._overflowing() and self.next_seq != self.first_seq:
            out.extend(self._skip_gap(now, "overflow"))
        return out

    def poll(self, now: float) -> list[Released]:
        """Skip the current gap if it has waited ``gap_timeout``; return what is released."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return []
        return self._skip_gap(now, "timeout")

    def flush(self) -> list[Released]:
        """End of stream: give up on every gap and release everything held."""
        out: list[Released] = []
        while self._held:
            out.extend(self._skip_gap(None, "end of stream"))
        return out

    # --- internals ---------------------------------------------------------------------
    def _would_overflow(self, extra: int) -> bool:
        return (
            self._held_bytes + extra > self.max_held_bytes
            or len(self._held) + 1 > self.max_held_chunks
        )

    def _overflowing(self) -> bool:
        return self._held_bytes > self.max_held_bytes or len(self._held) > self.max_held_chunks

    def _skip_gap(self, now: float | None, reason: str) -> list[Released]:
        first_held = min(self._held)
        gap = Gap(self.next_seq, first_held - 1, reason)
        self.stats.gaps += 1
        self.stats.missing += gap.count
        logger.warning(
            "chunks seq=%d..%d missing (%s): skipped, the stream carries on",
            gap.first,
            gap.last,
            reason,
        )
        self.next_seq = first_held
        self._skipped.append(gap)
        out: list[Released] = [gap]
        out.extend(self._drain())
        self._gap_since = now if self._held else None
        return out

    def _drain(self) -> list[Released]:
        released: list[Released] = []
        while self.next_seq in self._held:
            data = self._held.pop(self.next_seq)
            self._held_bytes -= len(data)
            released.append(Chunk(self.next_seq, data))
            self.next_seq += 1
            self.stats.accepted += 1
        if not self._held:
            self._gap_since = None
        return released
