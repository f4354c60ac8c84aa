"""bench_whep's pure parts: viewer steps, cost per extra viewer, the full-frame-rate count,
the projection to one process, rows and headlines; and the viewers' own helpers (IDR
detection in Annex B, CPU per process name between /proc snapshots, rate summaries)."""

import pytest

from bench.bench_whep import (
    assemble,
    cost_headline,
    cost_rows,
    full_rate_capacity,
    int_list,
    latency_headline,
    parts,
    per_viewer_cost,
    projected_viewers,
)
from bench.whep_viewers import (
    CountingDecoder,
    Viewer,
    arrival_spread_ms,
    cores_between,
    h264_has_idr,
    h264_rtp_keyframe,
    media_seconds,
    rate_summary,
)


def step(viewers, cores, full=None, **extra):
    return {
        "viewers": viewers,
        "server_pid_cores": cores,
        "server_cores": {"python": cores, **extra.pop("children", {})},
        "full_rate_viewers": viewers if full is None else full,
        "loadavg": [0.5, 0.6],
        **extra,
    }


def test_viewer_steps_and_parts_from_the_environment():
    assert int_list(None, [0, 1, 10]) == [0, 1, 10]
    assert int_list("0, 2,5", [1]) == [0, 2, 5]
    with pytest.raises(ValueError, match="increasing"):
        int_list("10,1", [])
    assert parts(None) == ["latency", "cost"]
    assert parts("cost") == ["cost"]
    with pytest.raises(ValueError, match="unknown"):
        parts("cost,speed")


def test_cost_per_extra_viewer_is_the_slope_from_the_first_viewer_step():
    steps = [step(0, 0.10), step(1, 0.12), step(10, 0.30), step(50, 1.10)]
    cost = per_viewer_cost(steps)
    assert cost["cores_per_extra_viewer"] == pytest.approx((1.10 - 0.12) / 49, abs=1e-4)
    assert [s["cores_per_viewer"] for s in cost["steps"]] == [0.02, 0.02, 0.02]
    assert cost["saturated_from"] is None
    # only one viewer step: the slope from the idle step
    assert per_viewer_cost([step(0, 0.1), step(1, 0.4)])["cores_per_extra_viewer"] == 0.3


def test_full_rate_capacity_counts_only_steps_where_every_viewer_kept_up():
    steps = [step(0, 0.1), step(1, 0.2), step(10, 0.5), step(50, 1.0, full=31)]
    assert full_rate_capacity(steps) == {
        "all_full_rate_up_to": 10,
        "first_short_step": 50,
        "full_rate_at_first_short": 31,
    }
    assert per_viewer_cost(steps)["saturated_from"] == 50
    no_picture = [step(1, 0.2, without_picture=1, full=0)]
    assert full_rate_capacity(no_picture)["all_full_rate_up_to"] == 0


def test_projection_to_one_core_of_one_process():
    steps = [step(0, 0.1), step(1, 0.2), step(10, 0.38)]
    assert projected_viewers(steps, 0.02) == 41  # 1 + (1 - 0.2) / 0.02
    assert projected_viewers(steps, None) is None
    assert projected_viewers([step(0, 0.1)], 0.02) is None


def test_rows_carry_encoder_cores_and_full_rate_and_the_target_for_ours():
    steps = [step(0, 0.1, children={"ffmpeg-linux-x8": 0.6}), step(1, 0.12), step(10, 0.3)]
    rows = cost_rows("ours", "Daphne", steps)
    assert rows[0]["encoder_cores"] == 0.6 and rows[0]["full_rate"] == "0/0"
    assert rows[-1]["metric"] == "cost ours: cores per extra viewer"
    assert rows[-1]["target"] == "<= 0.02"
    assert cost_rows("encode", "bare peer", steps)[-1]["target"] is None


def test_headlines_say_whether_targets_are_met():
    ours_steps = [step(0, 0.1), step(1, 0.12), step(10, 0.21)]
    cost = {
        "ours": {
            "steps": ours_steps,
            "per_viewer": per_viewer_cost(ours_steps),
            "capacity": full_rate_capacity(ours_steps),
            "projected_viewers": 89,
        },
        "encode": {"error": "RuntimeError: boom"},
    }
    text = cost_headline(cost)
    assert "0.01 cores per extra viewer (meets the 0.02 target)" in text
    assert "full frame rate up to 10 viewers" in text and "per-viewer encode" not in text

    def g2g(p50):
        return {"glass_to_glass": {"p50_s": p50, "p95_s": p50 + 0.1}}

    assert "misses the 0.4 s target" in latency_headline(
        {"whip": {"whep": g2g(0.55), "hls": g2g(2.0), "dash": g2g(2.1)}}
    )
    assert "(meets the 0.4 s target)" in latency_headline({"whip": {"whep": g2g(0.3)}})
    page = {**g2g(0.35), "readout_minus_measured_ms": {"p50": -40}}
    side = {"whep": g2g(0.8), "whep_video": g2g(0.25), "webrtc": page}
    text = latency_headline({"whip": {"whep": g2g(0.3)}, "whip_webrtc": side})
    assert "viewer page p50 0.35 s, its readout off by -40 ms" in text
    assert "audio+video 0.8 s, video only (no lip sync) 0.25 s" in text
    assert latency_headline({"whip": {"error": "x"}}).startswith("glass to glass: no")


def test_idr_found_in_annex_b_access_units():
    sps, pps = b"\x00\x00\x00\x01\x67\x42", b"\x00\x00\x00\x01\x68\xce"
    idr, non_idr = b"\x00\x00\x01\x65\x88\x84", b"\x00\x00\x01\x41\x9a"
    assert h264_has_idr(sps + pps + idr)
    assert not h264_has_idr(non_idr + non_idr)
    assert not h264_has_idr(b"\x00\x00\x01")  # truncated: no NAL header
    assert not h264_has_idr(b"")


def test_counting_decoder_makes_one_tiny_frame_per_encoded_frame():
    class Encoded:
        data = b"\x00\x00\x01\x65\x00"
        timestamp = 3000

    video = CountingDecoder("video").decode(Encoded())
    assert len(video) == 1 and video[0].width == 2 and video[0].pts == 3000
    assert video[0].opaque == (5, True)
    audio = CountingDecoder("audio").decode(Encoded())
    assert audio[0].opaque == (5, False)


def test_cores_per_process_name_between_snapshots():
    before = {1: ("python", 10.0), 2: ("ffmpeg", 5.0), 3: ("gone", 1.0)}
    after = {1: ("python", 12.0), 2: ("ffmpeg", 9.0), 4: ("new", 3.0)}
    assert cores_between(before, after, 4.0) == {"python": 0.5, "ffmpeg": 1.0}


def test_full_rate_is_29_of_30_frames_per_media_second_at_real_time_pace():
    summary = rate_summary(
        fps=[30.0, 28.5, 28.9, 15.0],  # wall clock: the source's own jitter shows here
        media_fps=[30.0, 30.0, 28.9, 15.0],  # frames skipped by the server show here
        pace=[1.0, 0.96, 1.0, 1.0],
        audio_fps=[50, 50, 50, 50],
        kbps=[900, 950, 1000, 400],
        source_fps=30,
    )
    assert summary["viewers"] == 4 and summary["full_rate_viewers"] == 2
    assert summary["video_fps_min"] == 15.0 and summary["media_fps_median"] == 30.0
    lagging = rate_summary([30.0], [30.0], [0.9], [50], [900], 30)
    assert lagging["full_rate_viewers"] == 0 and lagging["pace_min"] == 0.9
    assert rate_summary([], [], [], [], [], 30)["full_rate_viewers"] == 0


def test_media_seconds_from_rtp_timestamps_across_the_wrap():
    assert media_seconds(0, 90_000) == 1.0
    assert media_seconds(2**32 - 45_000, 45_000) == 1.0
    assert media_seconds(None, 90_000) == 0.0


def test_keyframes_found_in_h264_rtp_payloads():
    assert h264_rtp_keyframe(b"\x65\x88")  # single NAL: IDR
    assert not h264_rtp_keyframe(b"\x41\x9a")  # single NAL: non-IDR slice
    assert h264_rtp_keyframe(b"\x7c\x85\x00")  # FU-A start of an IDR
    assert not h264_rtp_keyframe(b"\x7c\x81\x00")  # FU-A of a non-IDR slice
    stap = b"\x78" + b"\x00\x02\x67\x42" + b"\x00\x02\x68\xce"  # STAP-A: SPS + PPS
    assert h264_rtp_keyframe(stap)
    assert not h264_rtp_keyframe(b"\x78" + b"\x00\x02\x68\xce")
    assert not h264_rtp_keyframe(b"")


def test_a_light_viewer_counts_frames_at_the_marker_and_its_first_picture_at_a_keyframe():
    class Packet:
        def __init__(self, payload, marker, timestamp=3000):
            self.payload, self.marker, self.timestamp = payload, marker, timestamp

    viewer = Viewer(1, "http://x/")
    viewer.count_video(Packet(b"\x41\x9a", True))  # joined mid-GOP: not a picture yet
    assert viewer.video == 1 and viewer.first_frame_idr is False
    assert viewer.first_video_s is None
    viewer.count_video(Packet(b"\x7c\x85\x00", False))
    viewer.count_video(Packet(b"\x7c\x45\x00", True, timestamp=6000))
    assert viewer.video == 2 and viewer.idr == 1 and viewer.first_video_s is not None
    assert viewer.counts() == (2, 0, 8, 6000)  # payload bytes
    viewer.count_audio(Packet(b"\xfc", True))
    assert viewer.audio == 1


def test_steps_where_viewers_failed_or_had_no_picture_are_left_out_of_the_cost():
    failed = step(10, 0.05, full=0, error_count=10)
    steps = [step(0, 0.05), step(1, 0.06), failed]
    cost = per_viewer_cost(steps)
    assert cost["invalid_steps"] == [10]
    assert cost["cores_per_extra_viewer"] == 0.01  # 0 -> 1 only
    assert per_viewer_cost([step(0, 0.05), failed])["cores_per_extra_viewer"] is None


def test_arrival_spread_is_the_p95_lateness_against_media_time():
    on_time = [10.0 + 0.0 for _ in range(20)]
    assert arrival_spread_ms(on_time) == 0.0
    late = [10.0] * 18 + [10.25] * 2  # two frames in twenty 250 ms late
    assert arrival_spread_ms(late) == 250.0
    assert arrival_spread_ms([1.0]) is None


def test_the_slope_ends_at_the_last_step_where_every_viewer_kept_the_full_rate():
    steps = [step(0, 0.05), step(1, 0.43), step(2, 0.83), step(4, 1.33), step(10, 1.8, full=0)]
    cost = per_viewer_cost(steps)
    assert cost["cores_per_extra_viewer"] == 0.3  # 1 -> 4, not 1 -> 10 (machine full)
    assert cost["saturated_from"] == 10


def test_assemble_summarises_each_target_and_the_ratio_to_the_baseline():
    ours = [step(0, 0.07), step(1, 0.09), step(10, 0.2), step(50, 0.6)]
    encode = [step(0, 0.05), step(1, 0.45), step(2, 0.85), step(4, 1.0, full=1)]
    result = assemble(
        ["cost"], {}, {"ours": {"steps": ours}, "encode": {"steps": encode}}, [1.0], [2.0]
    )
    assert result["cost"]["ours"]["per_viewer"]["cores_per_extra_viewer"] == 0.0104
    assert result["ratio"] == round(0.4 / 0.0104, 1)
    assert result["headline"].endswith("load 1.0->2.0 on a shared 2-core machine")
    assert any(row["metric"] == "cost encode: cores per extra viewer" for row in result["rows"])
