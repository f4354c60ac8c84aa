"""The channel layers: the embedded one (one process) and the Redis pub/sub one (several).

**Embedded**: Channels' in-memory layer, leaner per socket and per message.

Same API and semantics as ``channels.layers.InMemoryChannelLayer`` (messages deep-copied,
expiring after ``expiry`` seconds, per-channel ``capacity`` raising ``ChannelFull``, group
membership expiring after ``group_expiry``), with three costs removed:

* ``_clean_expired`` walks every channel queue and every group member; Channels calls it on
  each ``receive`` and ``group_send``, so with N sockets every message cost O(N) and filling
  a process with sockets O(N²) (docs/decisions.md, "Embedded channel layer"). The
  sweep runs at most once per ``clean_interval`` seconds: expiry only needs to be roughly on
  time.
* Each channel had an ``asyncio.Queue`` (three deques and an Event, ~1.5 KB, held by every
  idle socket waiting in ``receive``) and ``send``/``receive`` built a throwaway Queue on
  every call (``setdefault``'s default). Here a channel is an ``_Inbox``: two slots, its
  deque and waiter list made only while needed.
* ``group_send`` started a task per member per message; here members are filled in a loop
  (``send`` never waits: a full channel raises at once).

**Redis pub/sub** (``RedisPubSubLayer``): channels_redis' ``RedisPubSubChannelLayer`` with
what surviving a Redis restart needs (the room service, ``rtcsite.ws.service``, handles the
rest). Checked against channels_redis 4.3; re-check ``RedisPubSubChannelLayer._get_layer``,
``RedisPubSubLoopLayer.__init__``/``new_channel`` and ``RedisSingleShardConnection.
_do_receiving`` on every upgrade:

* its reader task logged a traceback every second while Redis was away; here it reports the
  outage to the room service (one line per outage) and retries;
* ``new_channel`` raised while Redis was away, ending a connecting socket with a traceback;
  here the channel exists at once and is subscribed on recovery (``resubscribe``);
* unsubscribing (a socket closed, a group emptied) while Redis was away logged a traceback
  and left the channel to be subscribed again on reconnect; here it is forgotten.

redis-py's ``PubSub`` subscribes its channels again by itself when it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from copy import deepcopy
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer
from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import _wrap_close, decode_hosts

from rtcsite.waiters import Waiters
from rtcsite.ws.service import SERVICE_ERRORS, service

logger = logging.getLogger(__name__)


class _Inbox(Waiters):
    """One channel's pending messages, ``(expires_at, message)``, and waiting receivers.

    Like ``asyncio.Queue`` (a put wakes one waiter, who takes the message when it runs, so a
    receiver cancelled after being woken passes the wake-up on and nothing is lost) without
    its fixed cost: an idle channel with one receiver holds a list of one future.
    """

    __slots__ = ("items",)

    def __init__(self) -> None:
        super().__init__()
        self.items: deque[tuple[float, dict[str, Any]]] | None = None

    def qsize(self) -> int:
        return len(self.items) if self.items else 0

    def empty(self) -> bool:
        return not self.items

    def put(self, item: tuple[float, dict[str, Any]]) -> None:
        if self.items is None:
            self.items = deque()
        self.items.append(item)
        self.wake_one()

    def pass_on(self) -> None:
        if self.items:
            self.wake_one()

    def popleft(self) -> tuple[float, dict[str, Any]]:
        assert self.items
        item = self.items.popleft()
        if not self.items:
            self.items = None
        return item

    async def get(self) -> tuple[float, dict[str, Any]]:
        while not self.items:
            await self.wait()
        return self.popleft()


class EmbeddedChannelLayer(InMemoryChannelLayer):
    """``InMemoryChannelLayer`` with slim channels, direct group fan-out and a throttled
    expiry sweep (see the module docstring)."""

    def __init__(self, *args, clean_interval: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.channels: dict[str, _Inbox] = {}
        self.clean_interval = clean_interval
        self._next_clean = 0.0

    def _put(self, channel: str, message: dict[str, Any]) -> None:
        inbox = self.channels.get(channel)
        if inbox is None:
            inbox = self.channels[channel] = _Inbox()
        elif inbox.qsize() >= self.get_capacity(channel):
            raise ChannelFull(channel)
        inbox.put((time.time() + self.expiry, deepcopy(message)))

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        self._put(channel, message)

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        self._clean_expired()
        inbox = self.channels.get(channel)
        if inbox is None:
            inbox = self.channels[channel] = _Inbox()
        try:
            _, message = await inbox.get()
        finally:
            if inbox.empty() and not inbox.waiters and self.channels.get(channel) is inbox:
                del self.channels[channel]
        return message

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            with contextlib.suppress(ChannelFull):  # as Channels: a full member misses it
                self._put(channel, message)

    async def flush(self) -> None:
        self.channels = {}
        self.groups = {}

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now < self._next_clean:
            return
        self._next_clean = now + self.clean_interval
        wall = time.time()
        for channel, inbox in list(self.channels.items()):
            expired = False
            while inbox.items and inbox.items[0][0] < wall:
                inbox.popleft()
                expired = True
            if expired:
                self._remove_from_groups(channel)
                if inbox.empty() and not inbox.waiters:
                    self.channels.pop(channel, None)
        timeout = int(wall) - self.group_expiry
        for members in self.groups.values():
            for name, joined in list(members.items()):
                if joined and joined < timeout:
                    members.pop(name, None)


class _Shard(RedisSingleShardConnection):
    """One Redis connection of the pub/sub layer; its reader survives Redis going away."""

    async def _do_receiving(self) -> None:
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=0.1
                    )
                    self._receive_message(message)
                else:
                    await asyncio.sleep(0.1)
            except (TimeoutError, asyncio.CancelledError, GeneratorExit):
                raise
            except SERVICE_ERRORS as exc:  # Redis away: one line per outage, not per second
                service().failed(exc, "layer reader")
                await asyncio.sleep(0.25)
            except Exception:
                logger.exception("channel layer reader failed; retrying")
                await asyncio.sleep(1)

    async def unsubscribe(self, channel: str) -> None:
        """Unsubscribe; while Redis is away (a socket closing, a group emptied) forget the
        channel instead, so that redis-py does not subscribe it again on reconnect."""
        try:
            await super().unsubscribe(channel)
        except SERVICE_ERRORS as exc:
            service().failed(exc, "unsubscribe")
            self._subscribed_to.discard(channel)
            if self._pubsub is not None:
                self._pubsub.channels.pop(channel, None)
                self._pubsub.channels.pop(channel.encode(), None)


class _LoopLayer(RedisPubSubLoopLayer):
    def __init__(self, hosts=None, *args: Any, **kwargs: Any) -> None:
        super().__init__(hosts, *args, **kwargs)
        self._shards = [_Shard(host, self) for host in decode_hosts(hosts)]

    async def new_channel(self, prefix: str = "specific.") -> str:
        channel = f"{self.prefix}{prefix}{uuid.uuid4().hex}"
        try:
            await self._subscribe_to_channel(channel)
        except SERVICE_ERRORS as exc:  # the queue exists: subscribed on recovery
            service().failed(exc, "new channel")
        return channel

    async def resubscribe(self, channel: str) -> None:
        """Subscribe ``channel`` if a failed attempt left it unsubscribed (a no-op else)."""
        if channel in self.channels:
            await self._get_shard(channel).subscribe(channel)


class RedisPubSubLayer(RedisPubSubChannelLayer):
    """``RedisPubSubChannelLayer`` across Redis restarts (see the module docstring)."""

    def _get_layer(self) -> _LoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = self._layers[loop] = _LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)
        return layer
