"""The constant-rate schedule a WebRTC publisher's decoded frames are written on
(streaming/rawpace.py): exactly fps frames per second of wall time whatever the sender does,
audio kept within a window of the video written."""

from __future__ import annotations

import pytest

from streaming.rawpace import (
    AUDIO_HIGH_SECONDS,
    AUDIO_LOW_SECONDS,
    MAX_BURST_SECONDS,
    AudioLevel,
    VideoSlots,
)


def test_slots_are_due_on_the_schedule_and_only_once():
    slots = VideoSlots(fps=30, origin=100.0)
    assert slots.due(100.0) == 1  # slot 0 is due at the origin
    assert slots.due(100.0) == 0
    assert slots.due(100.0 + 0.5 / 30) == 0
    assert slots.next_at() == pytest.approx(100.0 + 1 / 30)
    assert slots.due(100.0 + 1 / 30) == 1
    assert slots.due(101.0) == 29  # a late tick writes every slot it missed (frame repeats)
    assert slots.written == 31 and slots.media_seconds == pytest.approx(31 / 30)


@pytest.mark.parametrize("ticks_per_second", [7, 30, 240])
def test_any_tick_rate_writes_exactly_fps_frames_per_second(ticks_per_second):
    slots = VideoSlots(fps=30, origin=0.0)
    total = sum(slots.due(i / ticks_per_second) for i in range(10 * ticks_per_second + 1))
    assert total == 301  # slots 0..300 of 10 s: not one more, however often it is asked
    assert slots.deferred == 0


def test_a_long_stall_is_deferred_not_burst_into_the_encoder():
    slots = VideoSlots(fps=30, origin=0.0)
    slots.due(0.0)
    burst = round(MAX_BURST_SECONDS * 30)
    assert slots.due(10.0) == burst
    assert slots.deferred == 300 - burst
    assert slots.due(10.0) == 0  # the schedule moved on: no second burst
    assert slots.next_at() == pytest.approx(10.0 + 1 / 30)


def test_slots_the_encoder_could_not_take_are_deferred():
    slots = VideoSlots(fps=10, origin=0.0)
    assert slots.due(0.45) == 5
    slots.undo(3)  # queue full after two
    assert slots.written == 2 and slots.deferred == 3
    assert slots.due(0.45) == 0
    assert slots.next_at() == pytest.approx(0.5)  # 0.2 s of media time, origin 0.3 s later


def test_first_audio_frame_is_placed_at_the_video_time():
    audio = AudioLevel(rate=48000)
    assert audio.admit(960, video_seconds=0.1) == (4800, True)  # 100 ms of silence first
    assert audio.written == 4800 + 960 and audio.silence == 4800


def test_audio_slightly_late_gets_no_silence_a_gap_gets_filled():
    audio = AudioLevel(rate=48000)
    audio.admit(960, 0.0)
    assert audio.pad(0.02 + AUDIO_LOW_SECONDS - 0.01) == 0  # jitter: no filler
    filled = audio.pad(2.0)  # lost packets or a muted sender: filled to the video's time
    assert audio.written == 96000 and filled == 96000 - 960


def test_audio_running_ahead_of_the_video_is_dropped():
    audio = AudioLevel(rate=48000)
    kept = 0
    for _ in range(100):  # 2 s of audio arriving while the video has 0.5 s
        gap, keep = audio.admit(960, 0.5)
        assert gap == 0 or kept == 0
        kept += keep
    assert audio.seconds <= 0.5 + AUDIO_HIGH_SECONDS
    assert audio.dropped == (100 - kept) * 960 > 0
