"""The ll_origin benchmark's pure parts: the standard encoder's command, window order, the
held-request figures, and the summary/headline over windows (no servers, no FFmpeg)."""

from pathlib import Path

from bench.bench_ll_origin import (
    held_figures,
    rows_and_headline,
    server_env,
    standard_command,
    strip_ll_options,
    summarise,
    window_order,
)


def test_the_standard_command_is_the_ll_one_without_its_low_latency_options():
    command = ["ffmpeg", "-f", "dash", "-streaming", "1", "-frag_type", "duration"]
    command += ["-frag_duration", "0.2", "-seg_duration", "1", "out.mpd"]
    assert strip_ll_options(command) == ["ffmpeg", "-f", "dash", "-seg_duration", "1", "out.mpd"]
    standard = standard_command(Path("/tmp/x"))
    assert not {"-streaming", "-frag_type", "-frag_duration"} & set(standard)
    assert standard[standard.index("-seg_duration") + 1] == "0.5"
    assert standard[standard.index("-g") + 1] == "15"  # a keyframe per 0.5 s segment
    assert standard[-1] == "/tmp/x/manifest.mpd"


def test_windows_alternate_abba():
    assert window_order(3) == ["ll", "standard", "standard", "ll", "ll", "standard"]


def test_held_reloads_answered_refused_and_timed_out():
    counts = {
        "statuses": {"held playlist 200": 90, "held playlist 503": 2, "part 206": 80},
        "timeouts": {"held playlist": 1, "part": 3},
    }
    assert held_figures(counts) == {
        "answered": 90,
        "refused": 2,
        "refused_by_status": {"503": 2},
        "timeouts": 1,
    }


def window(mode, daphne, requests, p50=None, viewers=50):
    counts = {
        "requests": {},
        "statuses": {"held playlist 200": 10} if mode == "ll" else {},
        "timeouts": {},
        "errors": {"part ConnectionResetError": 1} if mode == "ll" else {},
        "bytes": 0,
    }
    return {
        "mode": mode,
        "viewers": 0 if mode == "idle" else viewers,
        "cores": {"daphne": daphne, "ffmpeg_ll": 0.3, "ffmpeg_standard": 0.25},
        "client_cores": 0.2,
        "daphne_cpu_us_per_request": round(daphne * 1e6 / requests) if requests else None,
        "requests_per_s": {"part": requests},
        "counts": counts,
        "held": held_figures(counts),
        "listed_after_written": {"n": 1, "p50_ms": p50, "p95_ms": p50} if p50 else {"n": 0},
        "served_after_written": {"n": 1, "p50_ms": p50, "p95_ms": p50} if p50 else {"n": 0},
        "loadavg_1m": 1.0,
    }


def test_medians_per_mode_and_the_headline_compares_them():
    windows = [
        window("idle", 0.01, 0),
        window("ll", 0.6, 2000, p50=5.0),
        window("standard", 0.2, 400, p50=300.0),
        window("standard", 0.3, 400, p50=310.0),
        window("ll", 0.8, 2000, p50=7.0),
    ]
    summary = summarise(windows)
    ll = summary["ll"]["50"]
    assert (ll["daphne_cores"], ll["daphne_cores_per_100"], ll["saturated"]) == (0.7, 1.4, False)
    assert summary["standard"]["50"]["daphne_cores"] == 0.25
    assert (ll["held_answered"], ll["errors"]) == (20, 2)
    assert ll["served_after_written_p50_ms"] == 6.0
    assert ll["daphne_cpu_us_per_request"] == 350  # median of 300 and 400
    rows, compared, headline = rows_and_headline(summary, viewers=50, small=0)
    assert compared == {
        "ratio": 2.8,
        "basis_viewers": 50,
        "ll_cores_per_100": 1.4,
        "standard_cores_per_100": 0.5,
    }
    assert rows[0]["metric"] == "origin CPU, 50 low-latency viewers" and rows[0]["value"] == 0.7
    assert all({"metric", "value", "unit"} <= row.keys() for row in rows)
    assert "per 100 viewers measured" in headline and "LL/standard 2.8x" in headline
    assert "CAUTION" not in headline
    ll["client_cores"] = 0.95
    assert "CAUTION: the clients used 0.95 cores" in rows_and_headline(summary, 50, 0)[2]


def test_a_saturated_origin_is_compared_on_the_few_viewers_extrapolated():
    windows = [
        window("idle", 0.0, 0),
        window("ll", 0.05, 100, viewers=5),
        window("standard", 0.02, 40, viewers=5),
        window("ll", 0.98, 1200, viewers=100),
        window("standard", 0.4, 800, viewers=100),
    ]
    summary = summarise(windows)
    assert summary["ll"]["100"]["saturated"] and not summary["standard"]["100"]["saturated"]
    rows, compared, headline = rows_and_headline(summary, viewers=100, small=5)
    assert compared["basis_viewers"] == 5
    assert (compared["ll_cores_per_100"], compared["standard_cores_per_100"]) == (1.0, 0.4)
    assert compared["ratio"] == 2.5
    assert "low-latency 0.98 cores at 1200 req/s (saturated)" in headline
    assert "extrapolated from 5" in headline
    # Below the core limit, but the viewers fell behind: saturated all the same.
    late = summarise([window("ll", 0.889, 1139, p50=1248.5, viewers=100)])
    assert late["ll"]["100"]["saturated"]
    assert [r["metric"] for r in rows[:4]] == [
        "origin CPU, 100 low-latency viewers",
        "origin CPU, 100 standard viewers",
        "origin CPU, 5 low-latency viewers",
        "origin CPU, 5 standard viewers",
    ]


def test_the_origin_runs_with_production_settings_unless_asked(monkeypatch):
    monkeypatch.delenv("LL_ORIGIN_DEBUG", raising=False)
    env = server_env()
    assert env["DEBUG"] == "0" and len(env["SECRET_KEY"]) > 30
    assert env["STREAM_LL_HELD_PER_CLIENT"] == "0"
    monkeypatch.setenv("LL_ORIGIN_DEBUG", "1")
    assert "DEBUG" not in server_env()  # the harness's DEBUG=1
