"""streaming.follow: waiting on a folder's changes with inotify (real files, real kernel)."""

import asyncio
import os
from pathlib import Path

import pytest

from streaming import follow


async def test_check_first_then_on_each_change(tmp_path):
    seen = []

    async def check():
        seen.append(sorted(os.listdir(tmp_path)))
        return "found" if (tmp_path / "b").exists() else None

    async def writer():
        await asyncio.sleep(0.05)
        (tmp_path / "a").write_bytes(b"1")
        await asyncio.sleep(0.05)
        (tmp_path / "b.tmp").write_bytes(b"2")
        os.replace(tmp_path / "b.tmp", tmp_path / "b")

    task = asyncio.create_task(writer())
    assert await follow.wait_for(tmp_path, check, within=5) == "found"
    await task
    assert seen[0] == []  # checked before any change
    assert len(seen) >= 2
    assert follow.follower().watched == 0  # the watch is gone with its last waiter


async def test_timeout_returns_none_after_a_last_check(tmp_path):
    calls = 0

    async def check():
        nonlocal calls
        calls += 1
        return None

    assert await follow.wait_for(tmp_path, check, within=0.1) is None
    assert calls == 2


async def test_many_waiters_share_one_watch_and_all_wake(tmp_path):
    target = tmp_path / "seg.tmp"

    async def check():
        try:
            return target.stat().st_size if target.stat().st_size >= 10 else None
        except FileNotFoundError:
            return None

    waiters = [asyncio.create_task(follow.wait_for(tmp_path, check, 5)) for _ in range(50)]
    await asyncio.sleep(0.05)
    assert follow.follower().watched == 1
    with target.open("ab") as handle:
        for _ in range(10):
            handle.write(b"x")
            handle.flush()
            await asyncio.sleep(0.005)
    assert await asyncio.gather(*waiters) == [10] * 50
    assert follow.follower().watched == 0


async def test_deleted_folder_ends_the_wait(tmp_path):
    folder = tmp_path / "stream"
    folder.mkdir()

    async def check():
        return "gone" if not folder.exists() else None

    task = asyncio.create_task(follow.wait_for(folder, check, 5))
    await asyncio.sleep(0.05)
    folder.rmdir()
    assert await asyncio.wait_for(task, 2) == "gone"


async def test_missing_folder_is_file_not_found(tmp_path):
    async def check():
        return None

    with pytest.raises(FileNotFoundError):
        await follow.wait_for(tmp_path / "nope", check, 1)


async def test_one_wait_on_several_folders_wakes_on_a_change_in_any(tmp_path):
    """A restarted stream: parts in ``run1/``, the playlists in the stream folder."""
    run = tmp_path / "run1"
    run.mkdir()
    target = tmp_path / "media_0.m3u8"

    async def check():
        return "listed" if target.exists() else None

    task = asyncio.create_task(follow.wait_for([tmp_path, run, tmp_path], check, 60))
    while follow.follower().watched < 2 and not task.done():  # both watches in place  # noqa: ASYNC110
        await asyncio.sleep(0)
    (run / "chunk.m4s.tmp").write_bytes(b"x")  # wakes it: nothing yet, it waits on
    target.write_text("#EXTM3U\n")  # the stream folder's change answers it
    assert await task == "listed"
    assert follow.follower().watched == 0


def overflow_event() -> bytes:
    return follow.EVENT.pack(-1, follow.IN_Q_OVERFLOW, 0, 0)


async def test_queue_overflow_wakes_every_folder(tmp_path):
    """An overflow event (wd -1) names no folder: every waiter checks again."""
    ready = False

    async def check():
        return "seen" if ready else None

    folders = [tmp_path / name for name in ("a", "b")]
    for folder in folders:
        folder.mkdir()
    tasks = [asyncio.create_task(follow.wait_for(f, check, 60)) for f in folders]
    while follow.follower().watched < 2 and not any(t.done() for t in tasks):  # noqa: ASYNC110
        await asyncio.sleep(0)
    ready = True  # a change whose event the kernel dropped
    follow.follower().dispatch(overflow_event())
    assert await asyncio.gather(*tasks) == ["seen", "seen"]


def queue_limit() -> int:
    """The kernel's inotify queue length (events per instance)."""
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


async def test_a_real_queue_overflow_wakes_the_folder_whose_events_were_dropped(tmp_path):
    """The kernel's queue filled by one folder's events (the loop busy meanwhile): the
    event for the other folder is dropped, and only the overflow event says so."""
    limit = queue_limit()
    quiet, busy = tmp_path / "quiet", tmp_path / "busy"
    quiet.mkdir()
    busy.mkdir()
    busy_checks = 0

    async def quiet_check():
        return "found" if (quiet / "x").exists() else None

    async def busy_check():
        nonlocal busy_checks
        busy_checks += 1
        return None

    waiting = asyncio.create_task(follow.wait_for(quiet, quiet_check, 600))
    flooded = asyncio.create_task(follow.wait_for(busy, busy_check, 600))
    while follow.follower().watched < 2 or busy_checks < 1:  # noqa: ASYNC110
        await asyncio.sleep(0)
    for number in range(limit // 2 + 100):  # IN_CREATE + IN_CLOSE_WRITE each: past the limit
        os.close(os.open(busy / str(number), os.O_CREAT | os.O_WRONLY))
    (quiet / "x").write_bytes(b"1")  # its events are dropped: the queue is full
    while busy_checks < 2:  # the follower has read the queue and woken the busy folder  # noqa: ASYNC110
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    # Woken in the same read: done by now (before the fix, it slept until its bound).
    assert waiting.done() and waiting.result() == "found"
    flooded.cancel()
    await asyncio.gather(flooded, return_exceptions=True)
