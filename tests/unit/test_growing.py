"""streaming/growing.py: which segment names may be waited for, from the files on disk only."""

from __future__ import annotations

import os
import time

from streaming.growing import Segment, locate, segment_name, state
from streaming.lowlatency import LowLatency, write_mode

MODE = LowLatency(part_target=0.2, segment_target=1.0)


def touch(path, age: float = 0.0) -> None:
    path.write_bytes(b"x")
    when = time.time() - age
    os.utime(path, (when, when))


def test_states(tmp_path):
    for number in (1, 2):
        touch(tmp_path / segment_name("0", number), age=5)
    touch(tmp_path / f"{segment_name('0', 3)}.tmp")

    def at(number: int, rep: str = "0"):
        return state(Segment(tmp_path, rep, number, MODE))

    assert at(2) == "final"
    assert at(3) == "writing"
    assert at(4) == "next"  # opens when 3 closes
    assert at(5) is None  # two ahead: 404 at once
    assert at(0) is None
    assert at(1, rep="1") == "next"  # a rung with nothing yet: its first segment may come
    (tmp_path / segment_name("0", 1)).unlink()
    assert at(1) is None  # long gone (2 exists)

    # 3 closed just now, 4's .tmp not created yet: 4 is next.
    os.rename(tmp_path / f"{segment_name('0', 3)}.tmp", tmp_path / segment_name("0", 3))
    assert at(4) == "next"
    # ... and long ago: the encoder stopped, nothing more comes.
    touch(tmp_path / segment_name("0", 3), age=5)
    assert at(4) is None


def test_locate_only_in_low_latency_folders(tmp_path):
    assert locate(tmp_path, tmp_path, "chunk-stream0-00003.m4s") is None  # standard folder
    write_mode(tmp_path, MODE)
    run = tmp_path / "run1"
    found = locate(tmp_path, run, "chunk-stream2-00003.m4s")
    assert found == Segment(run, "2", 3, MODE)
    for name in ("chunk-stream0-3.m4s", "init-stream0.m4s", "chunk-stream0-00003.m4s.tmp"):
        assert locate(tmp_path, tmp_path, name) is None, name
