"""stream_latency's pure parts: which configurations run, the ingest and part stages from
recorded times, frames shown "of how many", and the headline with low-latency rows."""

import pytest

from bench.bench_stream_latency import (
    CONFIGS,
    chunk_stages,
    frames_of,
    headline_for,
    low_latency_box_js,
    part_stages,
    player_row,
    rate_off_share,
    select_configs,
    stage_rows,
)
from bench.http_viewers import Unit


def test_configs_selected_by_name_or_group_with_standard_first():
    assert select_configs(None, quick=False) == list(CONFIGS)
    assert select_configs("", quick=True) == ["standard", "players_default", "low_latency"]
    assert select_configs("ll", quick=False) == [
        "standard",
        "low_latency",
        "low_latency_http",
        "low_latency_standard_players",
    ]
    assert select_configs("low_latency, standard,low_latency", quick=False) == [
        "standard",
        "low_latency",
    ]
    assert select_configs("whip", quick=False) == [
        "standard",
        "whip",
        "whip_webrtc",
        "whip_low_latency",
    ]
    with pytest.raises(ValueError, match="unknown 'short_sync'"):
        select_configs("standard,short_sync", quick=False)


def test_only_the_low_latency_configs_tick_the_checkbox_and_ask_for_the_ll_players():
    ll = {name for name, config in CONFIGS.items() if config.get("low_latency")}
    assert ll == {
        "low_latency",
        "low_latency_http",
        "low_latency_standard_players",
        "whip_low_latency",
    }
    assert CONFIGS["low_latency"]["latency"] == "low"
    assert CONFIGS["low_latency_standard_players"]["latency"] == "standard"
    assert "box.checked = true" in low_latency_box_js(True)
    assert "box.checked = false" in low_latency_box_js(False)


def test_chunk_stages_from_the_publisher_pages_trace():
    # JSON object keys arrive as strings; chunk 3 was sent after the window
    trace = {
        "ready": [1000, 1100, 1200, 1300],
        "sent": {"0": 1004, "1": 1102, "2": 1210, "3": 9000},
        "acked": {"0": 1020, "1": 1110},
    }
    stages = chunk_stages(trace, start_ms=1000, end_ms=2000)
    assert stages["chunk_ready_to_sent"]["n"] == 3
    assert stages["chunk_ready_to_sent"]["max_ms"] == 10
    assert stages["chunk_sent_to_acked"]["n"] == 2 and stages["chunk_sent_to_acked"]["max_ms"] == 16
    assert stages["chunk_span"]["p50_ms"] == 100


def test_part_stages_are_cumulative_from_the_capture_of_the_parts_last_frame():
    key = ("chunk-stream0-00004.m4s", 0)
    late = ("chunk-stream0-00004.m4s", 900)
    units = {key: Unit(5_300, 0, 0, 200, 900), late: Unit(5_500, 0, 200, 200, 800)}
    listed = {key: 5_320.0, late: 9_999.0, ("chunk-stream0-00004.m4s", None): 5_400.0}
    served = {key: 5_335.0}
    ends = {key: 5_000.0, late: 5_200.0}
    stages = part_stages(units, listed, served, ends.get, start_ms=5_000, end_ms=6_000)
    assert stages["capture_to_fragment_written"]["p50_ms"] == 300
    assert stages["capture_to_part_listed"]["p50_ms"] == 320
    assert stages["capture_to_part_served"]["p50_ms"] == 335
    assert stages["written_to_listed"]["n"] == 1  # the late part: outside the window
    rows = stage_rows("low_latency", {"stages": stages, "ingest": {}})
    assert [r["value"] for r in rows][-3:] == [300, 320, 335]
    assert rows[0]["value"] is None and rows[0]["n"] == 0


def test_frames_of_how_many_and_time_off_1x():
    assert frames_of(40.0, 29.97) == 1199
    assert frames_of(0, 30) is None and frames_of(10, None) is None
    assert rate_off_share([1.0, 1.0, 1.1, 0.95]) == 0.5
    assert rate_off_share([]) is None


def player(p50, stalls, shown=1190, of=1200):
    return {
        "glass_to_glass": {"p50_s": p50, "p95_s": p50 + 0.2},
        "stalls": stalls,
        "frames_shown": shown,
        "frames_of": of,
    }


def test_the_low_latency_player_rows_carry_the_target():
    result = {
        "watch_query": "?latency=low",
        "segment_on_disk_after_capture": {"p50_s": 0.4},
        "hls": {
            **player(0.8, 0),
            "readout_minus_measured_ms": {"p50": 12},
            "player_estimate": {"p50_s": 0.7},
            "playback_rate_off_1_share": 0.1,
        },
    }
    row = player_row("low_latency", "hls", result)
    figures = (row["value"], row["stalls"], row["frames_shown"], row["frames_of"])
    assert figures == (0.8, 0, 1190, 1200)
    assert row["target"] == "<= 1.0 s p50, 0 stalls"
    assert player_row("standard", "hls", {**result, "watch_query": ""})["target"] is None


def test_the_headline_says_whether_low_latency_meets_its_target():
    results = {"standard": {"hls": player(2.1, 0), "dash": player(2.2, 0)}}
    assert "low latency" not in headline_for(results, (1.0, 1.5))
    results["low_latency"] = {"hls": player(0.9, 0), "dash": player(0.95, 0)}
    assert "meets the 1.0 s p50, 0 stalls target" in headline_for(results, (1.0, 1.5))
    results["low_latency"]["dash"]["stalls"] = 1
    assert "misses the 1.0 s p50, 0 stalls target" in headline_for(results, (1.0, 1.5))
