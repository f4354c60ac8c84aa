"""Redis presence backend: shared by every process, survives any one of them crashing.

Keys (``P`` = ``settings.PRESENCE_KEY_PREFIX``; ``\\x1f`` = ``SEP``):

* ``P:room:{slug}``             sorted set, ``peer_id`` scored by expiry time
* ``P:peer:{slug}\\x1f{peer_id}`` hash: the presence's fields (``media`` as JSON)
* ``P:expiry``                  sorted set of every presence, ``{slug}\\x1f{peer_id}`` by expiry,
                                so ``expire()`` needs no SCAN
* ``P:rooms``                   set of slugs with members, so ``room_counts()`` is one ZCOUNT
                                per room instead of a walk over every presence
* ``P:lease:{process}``         hash: a process's lease (base module docstring), ``until``
                                (its expiry, on the processes' clock like every score) and
                                ``by`` (``renew`` or ``track``); key TTL ``2 * lease_ttl``
* ``P:proc:{process}``          set of that process's presences, ``{slug}\x1f{peer_id}``
* ``P:procs``                   set of processes with presences, so ``expire()`` finds the
                                presences of dead processes without a SCAN
* ``P:clock``                   the last operation time ``at`` handed out (base module
                                docstring): ``TIME`` in microseconds, raised to last + 1 when
                                not above it, so that operations in one microsecond (or across
                                a step back of Redis' clock) stay ordered

Every key has a TTL of ``2 * ttl`` (renewed by ``track``/``refresh``) and sorted sets vanish when
their last member is removed, so after everyone leaves no key remains and nothing outlives a
dead deployment. Every mutation is one Lua script, hence atomic across processes; the scripts
build some key names from the prefix, so this needs a single Redis (not Redis Cluster).

Expiry scores come from each process's own ``clock``: processes sharing a Redis must have
synchronised clocks (NTP), within a small fraction of ``ttl``.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from presence.backends.base import (
    SEP,
    Clock,
    PeerInfo,
    Presence,
    PresenceBackend,
    RoomFull,
    check_ids,
    clean_media,
)
from rtcsite.batching import Batcher

#: Long-dead presences ``track`` may drop per call (bounds growth when no sweeper runs).
STALE_PURGE_LIMIT = 64
#: Expired presences one ``expire`` script removes; ``expire()`` loops, keeping Redis responsive.
EXPIRE_BATCH = 500

# Shared Lua: split "slug\x1fconn" and remove that presence everywhere, returning its hash.
_REMOVE = """
local function remove(prefix, expiry_key, rooms_key, member)
  local i = string.find(member, '\\31', 1, true)
  local slug = string.sub(member, 1, i - 1)
  local peer = string.sub(member, i + 1)
  local room_key = prefix .. ':room:' .. slug
  local peer_key = prefix .. ':peer:' .. member
  local data = redis.call('HGETALL', peer_key)
  for j = 1, #data, 2 do
    if data[j] == 'process' then
      local proc_key = prefix .. ':proc:' .. data[j + 1]
      redis.call('SREM', proc_key, member)
      if redis.call('EXISTS', proc_key) == 0 then
        redis.call('SREM', prefix .. ':procs', data[j + 1])
      end
    end
  end
  redis.call('DEL', peer_key)
  redis.call('ZREM', room_key, peer)
  redis.call('ZREM', expiry_key, member)
  if redis.call('EXISTS', room_key) == 0 then redis.call('SREM', rooms_key, slug) end
  return data
end
"""

# KEYS: room, peer, expiry, rooms
# ARGV: prefix, slug, peer_id, now, expires_at, capacity (-1 = none), key_ttl_ms,
#       stale_before, user_id, name, process, media_json ('' = keep), stale_limit, channel,
#       lease_until, lease_key_ms
_TRACK = (
    _REMOVE
    + """
local now = tonumber(ARGV[4])
local member = ARGV[2] .. '\\31' .. ARGV[3]
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[8],
                         'LIMIT', 0, tonumber(ARGV[13]))
for _, m in ipairs(stale) do remove(ARGV[1], KEYS[3], KEYS[4], m) end

local mine = redis.call('ZSCORE', KEYS[1], ARGV[3])
local mine_live = mine and tonumber(mine) > now
if tonumber(ARGV[6]) >= 0 then
  local live = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[4], '+inf')
  if mine_live then live = live - 1 end
  if live >= tonumber(ARGV[6]) then return {0} end
end

local joined = ARGV[4]
local media = ARGV[12]
if mine_live then
  local old = redis.call('HMGET', KEYS[2], 'joined_at', 'media')
  if old[1] then joined = old[1] end
  if media == '' and old[2] then media = old[2] end
end
if media == '' then media = '{}' end

redis.call('HSET', KEYS[2], 'room', ARGV[2], 'peer_id', ARGV[3], 'user_id', ARGV[9],
           'name', ARGV[10], 'joined_at', joined, 'process', ARGV[11], 'media', media,
           'expires_at', ARGV[5], 'channel', ARGV[14])
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[5], member)
redis.call('SADD', KEYS[4], ARGV[2])
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[7]) end
local proc_key = ARGV[1] .. ':proc:' .. ARGV[11]
local procs_key = ARGV[1] .. ':procs'
redis.call('SADD', proc_key, member)
redis.call('SADD', procs_key, ARGV[11])
redis.call('PEXPIRE', proc_key, ARGV[7])
redis.call('PEXPIRE', procs_key, ARGV[7])
local lease_key = ARGV[1] .. ':lease:' .. ARGV[11]
if tonumber(redis.call('HGET', lease_key, 'until') or '0') <= now then
  redis.call('HSET', lease_key, 'until', ARGV[15], 'by', 'track')
  redis.call('PEXPIRE', lease_key, ARGV[16])
end
return {1, joined, media, {}}
"""
)

# KEYS: room, peer, expiry, rooms
# ARGV: peer_id, member, now, expires_at, key_ttl_ms, prefix, lease_until, lease_key_ms
_REFRESH = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= tonumber(ARGV[3]) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
redis.call('HSET', KEYS[2], 'expires_at', ARGV[4])
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
local process = redis.call('HGET', KEYS[2], 'process')
redis.call('PEXPIRE', ARGV[6] .. ':proc:' .. process, ARGV[5])
redis.call('PEXPIRE', ARGV[6] .. ':procs', ARGV[5])
local lease_key = ARGV[6] .. ':lease:' .. process
if tonumber(redis.call('HGET', lease_key, 'until') or '0') > tonumber(ARGV[3]) then
  redis.call('HSET', lease_key, 'until', ARGV[7])
  redis.call('PEXPIRE', lease_key, ARGV[8])
end
return 1
"""

# KEYS: room, peer   ARGV: peer_id, now, media_json (merged into the stored flags)
_UPDATE_MEDIA = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= tonumber(ARGV[2]) then return false end
local stored = redis.call('HGET', KEYS[2], 'media')
if not stored then return false end
local media = cjson.decode(stored)
for k, v in pairs(cjson.decode(ARGV[3])) do media[k] = v end
redis.call('HSET', KEYS[2], 'media', cjson.encode(media))
return redis.call('HGETALL', KEYS[2])
"""

# KEYS: expiry, rooms   ARGV: prefix, member
_UNTRACK = (
    _REMOVE
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('DEL', ARGV[1] .. ':peer:' .. ARGV[2])
  return false
end
local data = remove(ARGV[1], KEYS[1], KEYS[2], ARGV[2])
if #data == 0 then return false end
return data
"""
)

# KEYS: expiry, rooms   ARGV: prefix, now, batch
# Returns {members examined, hash, hash, ...}; a presence whose hash already expired is
# removed without being returned (nothing is left to announce).
_EXPIRE = (
    _REMOVE
    + """
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2],
                           'LIMIT', 0, tonumber(ARGV[3]))
local out = {#members}
for _, m in ipairs(members) do
  local data = remove(ARGV[1], KEYS[1], KEYS[2], m)
  if #data > 0 then table.insert(out, data) end
end
return out
"""
)

# KEYS: expiry, rooms   ARGV: prefix, now  -> {hash, ...}: every presence of a process whose
# lease is gone, removed; forgets processes that hold none
_EXPIRE_ORPHANS = (
    _REMOVE
    + """
local out = {}
local procs_key = ARGV[1] .. ':procs'
for _, proc in ipairs(redis.call('SMEMBERS', procs_key)) do
  local proc_key = ARGV[1] .. ':proc:' .. proc
  local lease_until = redis.call('HGET', ARGV[1] .. ':lease:' .. proc, 'until')
  if tonumber(lease_until or '0') <= tonumber(ARGV[2]) then
    for _, m in ipairs(redis.call('SMEMBERS', proc_key)) do
      local data = remove(ARGV[1], KEYS[1], KEYS[2], m)
      if #data > 0 then table.insert(out, data) end
    end
    redis.call('DEL', proc_key)
    redis.call('SREM', procs_key, proc)
  elseif redis.call('EXISTS', proc_key) == 0 then
    redis.call('SREM', procs_key, proc)
  end
end
return out
"""
)

# KEYS: lease   ARGV: now, until, key_ms  -> 1 if the lease was live and set by a renewal
_RENEW_LEASE = """
local old = redis.call('HMGET', KEYS[1], 'until', 'by')
redis.call('HSET', KEYS[1], 'until', ARGV[2], 'by', 'renew')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if old[1] and tonumber(old[1]) > tonumber(ARGV[1]) and old[2] == 'renew' then return 1 end
return 0
"""

# Shared Lua: this operation's time ``at`` (``P:clock`` in the module docstring).
_STAMP = """
local function stamp(prefix, key_ms)
  local t = redis.call('TIME')
  local at = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local key = prefix .. ':clock'
  local last = tonumber(redis.call('GET', key) or '0')
  if at <= last then at = last + 1 end
  redis.call('SET', key, string.format('%.0f', at), 'PX', key_ms)
  return at
end
"""

# Shared Lua: the live members of one room, as HGETALL replies, in ZSET order.
_MEMBERS = """
local function members(prefix, slug, room_key, now)
  local out = {}
  for _, c in ipairs(redis.call('ZRANGEBYSCORE', room_key, '(' .. now, '+inf')) do
    local data = redis.call('HGETALL', prefix .. ':peer:' .. slug .. '\\31' .. c)
    if #data > 0 then table.insert(out, data) end
  end
  return out
end
"""

# KEYS: room   ARGV: prefix, slug, now
_LIST_ROOM = _MEMBERS + "return members(ARGV[1], ARGV[2], KEYS[1], ARGV[3])\n"

# Shared Lua: {slug, found, slug, found, ...} for every room where ``found(slug, room_key)``
# is not nil; forgets slugs whose room key is gone.
_ROOMS = """
local function rooms(rooms_key, prefix, found)
  local out = {}
  for _, slug in ipairs(redis.call('SMEMBERS', rooms_key)) do
    local room_key = prefix .. ':room:' .. slug
    local value = found(slug, room_key)
    if value then
      table.insert(out, slug)
      table.insert(out, value)
    elseif redis.call('EXISTS', room_key) == 0 then
      redis.call('SREM', rooms_key, slug)
    end
  end
  return out
end
"""

# KEYS: rooms   ARGV: prefix, now  -> {slug, count, slug, count, ...}
_ROOM_COUNTS = (
    _ROOMS
    + """
return rooms(KEYS[1], ARGV[1], function(slug, room_key)
  local n = redis.call('ZCOUNT', room_key, '(' .. ARGV[2], '+inf')
  if n > 0 then return n end
end)
"""
)

# _TRACK, then the room's live members (as _LIST_ROOM) and the time:
# {1, joined, media, {hash, ...}, at}
_TRACK_LIST = (
    _STAMP
    + _MEMBERS
    + _TRACK.replace(
        "return {1, joined, media, {}}\n",
        "return {1, joined, media, members(ARGV[1], ARGV[2], KEYS[1], ARGV[4]),"
        " stamp(ARGV[1], ARGV[7])}\n",
    )
)

# KEYS: expiry, rooms   ARGV: prefix, member, now, key_ttl_ms
# -> {hash or {}, live count left, at}
_UNTRACK_COUNT = (
    _REMOVE
    + _STAMP
    + """
local i = string.find(ARGV[2], '\\31', 1, true)
local room_key = ARGV[1] .. ':room:' .. string.sub(ARGV[2], 1, i - 1)
local data = {}
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  data = remove(ARGV[1], KEYS[1], KEYS[2], ARGV[2])
else
  redis.call('DEL', ARGV[1] .. ':peer:' .. ARGV[2])
end
return {data, redis.call('ZCOUNT', room_key, '(' .. ARGV[3], '+inf'), stamp(ARGV[1], ARGV[4])}
"""
)

# KEYS: rooms   ARGV: prefix, now, key_ttl_ms
# -> {at, {slug, {hash, ...}, slug, {hash, ...}, ...}}
_SNAPSHOT = (
    _ROOMS
    + _MEMBERS
    + _STAMP
    + """
return {stamp(ARGV[1], ARGV[3]), rooms(KEYS[1], ARGV[1], function(slug, room_key)
  local rows = members(ARGV[1], slug, room_key, ARGV[2])
  if #rows > 0 then return rows end
end)}
"""
)

# ARGV: prefix, now, key_ttl_ms, slug...  -> {at, {live count of each slug}}
_COUNT_ROOMS = (
    _STAMP
    + """
local out = {}
for i = 4, #ARGV do
  table.insert(out, redis.call('ZCOUNT', ARGV[1] .. ':room:' .. ARGV[i], '(' .. ARGV[2], '+inf'))
end
return {stamp(ARGV[1], ARGV[3]), out}
"""
)


#: A script call: one EVALSHA in a pipeline.
Call = tuple[AsyncScript, list[Any], list[Any]]


class RedisPresenceBackend(PresenceBackend):
    """Presence in Redis (selected when ``REDIS_URL`` is set)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        ttl: float,
        lease_ttl: float | None = None,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(ttl=ttl, lease_ttl=lease_ttl, clock=clock)
        self.prefix = prefix
        self.expiry_key = f"{prefix}:expiry"
        self.rooms_key = f"{prefix}:rooms"
        self.key_ttl_ms = max(1000, math.ceil(2 * self.ttl * 1000))
        self.lease_key_ms = max(1000, math.ceil(2 * self.lease_ttl * 1000))
        self.redis = aioredis.Redis.from_url(url, decode_responses=True)
        self._track = self.redis.register_script(_TRACK)
        self._refresh = self.redis.register_script(_REFRESH)
        self._update_media = self.redis.register_script(_UPDATE_MEDIA)
        self._untrack = self.redis.register_script(_UNTRACK)
        self._expire = self.redis.register_script(_EXPIRE)
        self._expire_orphans = self.redis.register_script(_EXPIRE_ORPHANS)
        self._renew_lease = self.redis.register_script(_RENEW_LEASE)
        self._list_room = self.redis.register_script(_LIST_ROOM)
        self._room_counts = self.redis.register_script(_ROOM_COUNTS)
        self._track_list = self.redis.register_script(_TRACK_LIST)
        self._untrack_count = self.redis.register_script(_UNTRACK_COUNT)
        self._snapshot = self.redis.register_script(_SNAPSHOT)
        self._count_rooms = self.redis.register_script(_COUNT_ROOMS)
        self._loaded = False
        # One presence operation is one EVALSHA, and redis-py's per-command cost (pool
        # checkout, encode, parse) dominates, not Redis: under load (heartbeats of thousands
        # of sockets, joins in bursts) the calls made during a round trip share the next one.
        self._calls: Batcher[Call, Any] = Batcher(self._execute)

    @classmethod
    def from_settings(cls, settings: Any) -> RedisPresenceBackend:
        if not settings.REDIS_URL:
            raise ValueError("RedisPresenceBackend needs settings.REDIS_URL")
        return cls(
            settings.REDIS_URL,
            prefix=settings.PRESENCE_KEY_PREFIX,
            ttl=settings.PRESENCE_TTL,
            lease_ttl=settings.PRESENCE_LEASE_TTL,
        )

    async def _eval(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        """Run one script (batched with the calls made while a batch is in flight)."""
        return await self._calls.call((script, keys, args))

    async def _execute(self, calls: list[Call]) -> list[Any]:
        """One batch of script calls as one pipeline; each keeps its own result or error."""
        if not self._loaded:  # EVALSHA needs the scripts on the server
            await self._load_scripts()
        results = await self._pipe(calls)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:  # SCRIPT FLUSH since: load them again and rerun those calls
            await self._load_scripts()
            retried = await self._pipe([calls[i] for i in missing])
            for i, result in zip(missing, retried, strict=True):
                results[i] = result
        return results

    async def _load_scripts(self) -> None:
        """Load every script up front, so that no call of a batch waits for a load while the
        calls queued behind it have run (a leave overtaking its join)."""
        for script in vars(self).values():
            if isinstance(script, AsyncScript):
                await self.redis.script_load(script.script)
        self._loaded = True

    async def _pipe(self, calls: list[Call]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=False)

    # --- keys ----------------------------------------------------------------------------
    def room_key(self, room: str) -> str:
        return f"{self.prefix}:room:{room}"

    def peer_key(self, room: str, peer_id: str) -> str:
        return f"{self.prefix}:peer:{room}{SEP}{peer_id}"

    def _keys(self, room: str, peer_id: str) -> list[str]:
        return [self.room_key(room), self.peer_key(room, peer_id), self.expiry_key, self.rooms_key]

    # --- interface -----------------------------------------------------------------------
    async def track(
        self, room: str, peer_id: str, peer: PeerInfo, *, capacity: int | None = None
    ) -> Presence:
        presence, _, _ = await self._track_call(self._track, room, peer_id, peer, capacity)
        return presence

    async def track_and_list(
        self, room: str, peer_id: str, peer: PeerInfo, *, capacity: int | None = None
    ) -> tuple[Presence, list[Presence], int]:
        presence, members, at = await self._track_call(
            self._track_list, room, peer_id, peer, capacity
        )
        return presence, members, int(at)

    async def _track_call(
        self, script: AsyncScript, room: str, peer_id: str, peer: PeerInfo, capacity: int | None
    ) -> tuple[Presence, list[Presence], int | None]:
        check_ids(room, peer_id)
        now = self.clock()
        expires = now + self.ttl
        args = [
            self.prefix,
            room,
            peer_id,
            repr(now),
            repr(expires),
            -1 if capacity is None else int(capacity),
            self.key_ttl_ms,
            repr(now - self.ttl),
            peer.user_id,
            peer.name,
            peer.process,
            "" if peer.media is None else json.dumps(clean_media(peer.media)),
            STALE_PURGE_LIMIT,
            peer.channel,
            repr(now + self.lease_ttl),
            self.lease_key_ms,
        ]
        result = await self._eval(script, self._keys(room, peer_id), args)
        if int(result[0]) == 0:
            raise RoomFull(room, int(capacity or 0))
        presence = peer.presence(
            room,
            peer_id,
            joined_at=float(result[1]),
            media=json.loads(result[2]),
            expires_at=expires,
        )
        at = int(result[4]) if len(result) > 4 else None  # _TRACK has no time
        return presence, _ordered(map(_presence, result[3])), at

    async def refresh(self, room: str, peer_id: str) -> bool:
        now = self.clock()
        result = await self._eval(
            self._refresh,
            self._keys(room, peer_id),
            [
                peer_id,
                f"{room}{SEP}{peer_id}",
                repr(now),
                repr(now + self.ttl),
                self.key_ttl_ms,
                self.prefix,
                repr(now + self.lease_ttl),
                self.lease_key_ms,
            ],
        )
        return bool(int(result))

    async def update_media(
        self, room: str, peer_id: str, media: dict[str, bool]
    ) -> Presence | None:
        data = await self._eval(
            self._update_media,
            [self.room_key(room), self.peer_key(room, peer_id)],
            [peer_id, repr(self.clock()), json.dumps(clean_media(media))],
        )
        return _presence(data) if data else None

    async def untrack(self, room: str, peer_id: str) -> Presence | None:
        data = await self._eval(
            self._untrack,
            [self.expiry_key, self.rooms_key],
            [self.prefix, f"{room}{SEP}{peer_id}"],
        )
        return _presence(data) if data else None

    async def untrack_and_count(self, room: str, peer_id: str) -> tuple[Presence | None, int, int]:
        data, count, at = await self._eval(
            self._untrack_count,
            [self.expiry_key, self.rooms_key],
            [self.prefix, f"{room}{SEP}{peer_id}", repr(self.clock()), self.key_ttl_ms],
        )
        return (_presence(data) if data else None), int(count), int(at)

    async def count_rooms(self, rooms: list[str]) -> tuple[dict[str, int], int]:
        at, counts = await self._eval(
            self._count_rooms, [], [self.prefix, repr(self.clock()), self.key_ttl_ms, *rooms]
        )
        return {room: int(n) for room, n in zip(rooms, counts, strict=True)}, int(at)

    async def list_room(self, room: str) -> list[Presence]:
        rows = await self._eval(
            self._list_room, [self.room_key(room)], [self.prefix, room, repr(self.clock())]
        )
        return _ordered(map(_presence, rows))

    async def room_counts(self) -> dict[str, int]:
        flat = await self._eval(
            self._room_counts, [self.rooms_key], [self.prefix, repr(self.clock())]
        )
        return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def snapshot(self) -> tuple[dict[str, list[Presence]], int]:
        at, flat = await self._eval(
            self._snapshot, [self.rooms_key], [self.prefix, repr(self.clock()), self.key_ttl_ms]
        )
        rooms = {flat[i]: _ordered(map(_presence, flat[i + 1])) for i in range(0, len(flat), 2)}
        return rooms, int(at)

    async def expire(self) -> list[Presence]:
        now = repr(self.clock())
        removed: list[Presence] = []
        while True:
            result = await self._eval(
                self._expire, [self.expiry_key, self.rooms_key], [self.prefix, now, EXPIRE_BATCH]
            )
            removed.extend(_presence(row) for row in result[1:])
            if int(result[0]) < EXPIRE_BATCH:
                break
        keys = [self.expiry_key, self.rooms_key]
        rows = await self._eval(self._expire_orphans, keys, [self.prefix, now])
        removed.extend(_presence(row) for row in rows)
        return removed

    def lease_key(self, process: str) -> str:
        return f"{self.prefix}:lease:{process}"

    async def renew_lease(self, process: str) -> bool:
        now = self.clock()
        held = await self._eval(
            self._renew_lease,
            [self.lease_key(process)],
            [repr(now), repr(now + self.lease_ttl), self.lease_key_ms],
        )
        return bool(int(held))

    async def process_alive(self, process: str) -> bool:
        until = await self.redis.hget(self.lease_key(process), "until")
        return until is not None and float(until) > self.clock()

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()


def _ordered(presences: Any) -> list[Presence]:
    return sorted(presences, key=lambda p: (p.joined_at, p.peer_id))


def _presence(flat: list[str]) -> Presence:
    """A Presence from HGETALL's flat ``[field, value, ...]`` reply."""
    data = dict(zip(flat[::2], flat[1::2], strict=True))
    return Presence(
        room=data["room"],
        peer_id=data["peer_id"],
        user_id=data["user_id"],
        name=data["name"],
        joined_at=float(data["joined_at"]),
        process=data["process"],
        media={str(k): bool(v) for k, v in json.loads(data["media"]).items()},
        expires_at=float(data["expires_at"]),
        channel=data.get("channel", ""),
    )
