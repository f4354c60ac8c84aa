"""Process-local delivery of signaling messages, skipping the channel layer.

Most mesh rooms live on one process (3 peers, usually one load-balancer target). For them a
relayed offer/answer/candidate need not leave the process: the addressed consumer is looked
up by its channel name and handed the message directly. A channel name not registered here
belongs to another process (or to a consumer that has gone) and the caller falls back to
``channel_layer.send``, so cross-process delivery is unchanged.

Semantics match the pub/sub layer's: at most once, per-sender order kept (the sender's
handler awaits each delivery), a message to a consumer that is gone is dropped. Delivery
runs in the *sender's* task without the receiver's dispatch lock (taking it could deadlock
two peers signaling each other at once); the receiver's handler only checks a flag and
sends one frame, which is safe to interleave with its own handlers.
"""

from __future__ import annotations

from typing import Any, Protocol


class LocalTarget(Protocol):
    async def deliver_local(self, message: dict[str, Any]) -> None: ...


_targets: dict[str, LocalTarget] = {}


def register(channel: str, target: LocalTarget) -> None:
    _targets[channel] = target


def unregister(channel: str) -> None:
    _targets.pop(channel, None)


def lookup(channel: str) -> LocalTarget | None:
    return _targets.get(channel)


def registered() -> int:
    """How many consumers can be reached locally (tests, diagnostics)."""
    return len(_targets)
