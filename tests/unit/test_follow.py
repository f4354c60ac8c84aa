"""streaming.follow: waiting on a folder's changes with inotify (real files, real kernel)."""

import asyncio
import os

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
