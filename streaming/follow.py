"""Waiting for a stream's files to change: inotify on the event loop, no thread, no polling.

Low-latency viewers hold requests until the encoder has written something (a blocking
playlist reload, a preload-hinted part, the rest of a segment being written). The encoder
runs in one process and writes to ``MEDIA_ROOT``; the request may be in any web process.
So the signal is the file system's: each process has one inotify descriptor read by its
event loop (``loop.add_reader``), one watch per stream folder that someone is waiting on,
and every change in that folder wakes that folder's waiters, which check again.

Contract of ``wait_for``: ``check`` is awaited once before any waiting and again after
every change in any of the given folders (writes, renames in, new files, deletions), until
it returns something other than ``None`` (returned) or ``within`` seconds pass (``None``).
Several folders: a restarted stream's live run writes into ``run<k>/`` while its playlists
(and the final one with ``EXT-X-ENDLIST``) are written into the stream folder, and a held
request must wake on either. A change that happens while ``check`` runs is never lost (the
watches exist before the first check, and each folder's change counter is read before each
check). Changes are coalesced: a burst of writes wakes each waiter once per read of the
inotify descriptor. When the kernel's event queue overflowed (``IN_Q_OVERFLOW``: events
were dropped, which ones is unknown) every watched folder counts as changed.

Limits: one inotify instance per event loop (the kernel's ``max_user_instances`` is per
user, usually 128) and one watch per folder with waiters (``max_user_watches``, usually
tens of thousands); watches are removed when their last waiter leaves. Linux only: on
another system ``wait_for`` raises ``FollowUnavailable``, and the low-latency views say so.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

IN_MODIFY = 0x002
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
MASK = (
    (IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE)
    | IN_DELETE_SELF
    | IN_ONLYDIR
)
EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


class FollowUnavailable(RuntimeError):
    """inotify cannot be used here (not Linux, or the kernel's limits are reached)."""


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        raise FollowUnavailable("no C library found for inotify")
    lib = ctypes.CDLL(name, use_errno=True)
    if not hasattr(lib, "inotify_init1"):
        raise FollowUnavailable("this system has no inotify")
    lib.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
    lib.inotify_rm_watch.argtypes = (ctypes.c_int, ctypes.c_int)
    return lib


class _Folder:
    __slots__ = ("changes", "users", "waiters", "wd")

    def __init__(self, wd: int) -> None:
        self.wd = wd
        self.users = 0
        self.changes = 0  # counts changes: a waiter compares it across its check
        self.waiters: set[asyncio.Future] = set()  # woken (and dropped) on the next change

    def wake(self) -> None:
        self.changes += 1
        waiters, self.waiters = self.waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class Follower:
    """One inotify descriptor on one event loop; ``follower()`` gives the loop's own."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._lib = _libc()
        fd = self._lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise FollowUnavailable(f"inotify_init1: {os.strerror(code)}")
        self._fd = fd
        self._loop = loop
        self._folders: dict[str, _Folder] = {}
        self._by_wd: dict[int, str] = {}
        loop.add_reader(fd, self._read)

    @property
    def watched(self) -> int:
        """Folders with at least one waiter (for tests and metrics)."""
        return len(self._folders)

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        for folder in self._folders.values():
            folder.wd = -1
            folder.wake()
        self._folders.clear()
        self._by_wd.clear()

    async def wait_for(
        self,
        directories: Path | str | Iterable[Path | str],
        check: Callable[[], Awaitable[T | None]],
        within: float,
    ) -> T | None:
        if isinstance(directories, (str, os.PathLike)):
            directories = [directories]
        keys = list(dict.fromkeys(os.fspath(d) for d in directories))
        held: list[tuple[str, _Folder]] = []
        try:
            for key in keys:
                held.append((key, self._acquire(key)))
            folders = [folder for _key, folder in held]
            deadline = self._loop.time() + within
            while True:
                seen = [folder.changes for folder in folders]
                result = await check()
                if result is not None:
                    return result
                if all(folder.wd < 0 for folder in folders):
                    return None  # every folder was deleted: nothing more will come
                remaining = deadline - self._loop.time()
                if remaining <= 0:
                    return None
                if seen != [folder.changes for folder in folders]:
                    continue  # changed while ``check`` ran: check again
                waiter = self._loop.create_future()
                for folder in folders:
                    folder.waiters.add(waiter)
                try:
                    await asyncio.wait_for(waiter, remaining)
                except TimeoutError:
                    return await check()
                finally:
                    for folder in folders:
                        folder.waiters.discard(waiter)
        finally:
            for key, folder in held:
                self._release(key, folder)

    def _acquire(self, key: str) -> _Folder:
        folder = self._folders.get(key)
        if folder is None or folder.wd < 0:
            wd = self._lib.inotify_add_watch(self._fd, os.fsencode(key), MASK)
            if wd < 0:
                code = ctypes.get_errno()
                if code in (errno.ENOENT, errno.ENOTDIR):
                    raise FileNotFoundError(code, os.strerror(code), key)
                raise FollowUnavailable(f"inotify_add_watch {key}: {os.strerror(code)}")
            folder = _Folder(wd)
            self._folders[key] = folder
            self._by_wd[wd] = key
        folder.users += 1
        return folder

    def _release(self, key: str, folder: _Folder) -> None:
        folder.users -= 1
        if folder.users > 0 or self._folders.get(key) is not folder:
            return
        del self._folders[key]
        if folder.wd >= 0:
            self._by_wd.pop(folder.wd, None)
            self._lib.inotify_rm_watch(self._fd, folder.wd)

    def _read(self) -> None:
        data = []
        while True:
            try:
                chunk = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                break
            if not chunk:
                break
            data.append(chunk)
        self.dispatch(b"".join(data))

    def dispatch(self, data: bytes) -> None:
        """Wake the folders that ``data`` (inotify events as read) names, once each; all of
        them after a queue overflow (the dropped events may have named any)."""
        touched: set[int] = set()
        gone: set[int] = set()
        overflow = False
        pos = 0
        while pos + EVENT.size <= len(data):
            wd, mask, _cookie, length = EVENT.unpack_from(data, pos)
            pos += EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                overflow = True
            touched.add(wd)
            if mask & (IN_IGNORED | IN_DELETE_SELF):
                gone.add(wd)
        if overflow:
            touched.update(self._by_wd)
        for wd in touched:
            key = self._by_wd.get(wd)
            folder = self._folders.get(key) if key is not None else None
            if folder is None:
                continue
            if wd in gone:
                folder.wd = -1
                self._by_wd.pop(wd, None)
            folder.wake()


_followers: dict[asyncio.AbstractEventLoop, Follower] = {}


def follower() -> Follower:
    """The running loop's follower, created on first use."""
    loop = asyncio.get_running_loop()
    found = _followers.get(loop)
    if found is None or loop.is_closed():
        for old in [known for known in _followers if known.is_closed()]:
            _followers.pop(old, None)
        found = _followers[loop] = Follower(loop)
    return found


async def wait_for(
    directories: Path | str | Iterable[Path | str],
    check: Callable[[], Awaitable[T | None]],
    within: float,
) -> T | None:
    """``check()`` until it returns non-None, re-run on every change in ``directories``
    (one folder or several)."""
    return await follower().wait_for(directories, check, within)
