"""The origin's CPU for 100 low-latency viewers against 100 standard-mode viewers.

One Daphne (the site, embedded setup) serves two stream folders written by the real FFmpeg
at 1x (``-re``, lavfi test pattern and tone, 360p + 180p + AAC like the pipeline's ladder):

* **LL**: ``tests.support.ll_stream.ll_encoder`` (1 s segments written progressively, a
  0.2 s fragment per part, ``low-latency.json`` + ``clock.json``), so the origin serves
  LL-HLS (parts, blocking reloads);
* **standard**: the same command without the low-latency options (no ``-streaming``,
  no fragment duration), 0.5 s segments (``STREAM_SEGMENT_SECONDS``'s default), no mode
  file, ``clock.json`` written: what a standard stream's folder is.

Both encoders run throughout; N viewers (``LL_ORIGIN_VIEWERS``, 100) of one mode at a time
in this process (asyncio, ``bench.http_viewers``), as hls.js loads a stream: top rung +
audio, one keep-alive HTTP/1.1 connection per rendition. LL: blocking reloads with
``_HLS_msn``/``_HLS_part`` (+ ``_HLS_skip=YES`` when offered) and each new part fetched as
its byte range; standard: a reload every average segment duration (half when unchanged)
and each new segment fetched whole. Windows alternate LL / standard (ABBA), after one idle
window (encoders only). Per window: the Daphne process's CPU seconds per wall second from
``/proc/<pid>/stat``, each FFmpeg's likewise, this process's CPU (if the clients were the
limit, the figures say nothing), requests by kind and status, client timeouts and
connection errors, and, against the time each fragment/segment became complete on disk
(``FileWatch`` in a thread of its own, inotify), how late the viewers saw it listed and got
its bytes.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.http_viewers import (
    FileWatch,
    HttpConnection,
    ViewerStats,
    ll_rendition,
    parse_master,
    parse_media_playlist,
    standard_rendition,
    summary,
    watching,
)
from bench.support import EMBEDDED_ENV, HOST, cpu_seconds, daphne_site

NAME = "ll_origin"
STANDARD_SEGMENT_S = 0.5
LL_OPTIONS = {"-streaming": 1, "-frag_type": 1, "-frag_duration": 1, "-ldash": 1, "-lhls": 1}
#: Every viewer is 127.0.0.1: the per-client bound on held requests (32) would refuse
#: most of them. 0 = no per-client bound; the per-process one (4000) stays.
SERVER_ENV = {"STREAM_LL_HELD_PER_CLIENT": "0"}
#: Above this share of a core, this process (the viewers) may be what limits the figures.
CLIENT_BOUND_CORES = 0.8
#: A Daphne process at this many cores is saturated: its one event loop is the limit.
SATURATED_CORES = 0.9
#: ... and so is one whose viewers get the new bytes this late (p50): they fell behind (an
#: LL part is served tens of ms after it is written, a standard segment ~0.3-0.5 s), and
#: the process works below its limit only because the requests come late.
SATURATED_LAG_MS = 1000


def strip_ll_options(command: list[str]) -> list[str]:
    """An FFmpeg command without its low-latency dash muxer options (each with its value)."""
    out: list[str] = []
    skip = 0
    for arg in command:
        if skip:
            skip -= 1
        elif arg in LL_OPTIONS:
            skip = LL_OPTIONS[arg]
        else:
            out.append(arg)
    return out


def standard_command(folder: Path) -> list[str]:
    from streaming.lowlatency import LowLatency
    from tests.support.ll_stream import ll_command

    segment = LowLatency(STANDARD_SEGMENT_S, STANDARD_SEGMENT_S)
    return strip_ll_options(ll_command(folder, segment))


@contextmanager
def standard_encoder(folder: Path) -> Iterator[Any]:
    """FFmpeg writing a standard-mode folder (``ll_encoder``'s twin without the LL options
    and the mode file), stopped with SIGINT as the pipeline stops it."""
    from streaming.clock import StreamClock, now_ms, write_clock
    from streaming.lowlatency import LowLatency
    from tests.support.ll_stream import LLEncoder

    folder.mkdir(parents=True, exist_ok=True)
    write_clock(folder, StreamClock(now_ms(), "server"))
    log = folder.parent / f"{folder.name}.ffmpeg.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            standard_command(folder),
            stdout=subprocess.DEVNULL,
            stderr=sink,
            start_new_session=True,
            env={**os.environ, "MALLOC_ARENA_MAX": "2"},
        )
    encoder = LLEncoder(folder, LowLatency(STANDARD_SEGMENT_S, STANDARD_SEGMENT_S), process, log)
    try:
        yield encoder
    finally:
        encoder.stop()


def window_order(rounds: int) -> list[str]:
    """ABBA: ``ll, standard, standard, ll, ...`` so drift in the machine's load falls on both."""
    order: list[str] = []
    for index in range(rounds):
        order += ["ll", "standard"] if index % 2 == 0 else ["standard", "ll"]
    return order


def per_100(cores: float, viewers: int) -> float | None:
    """Cores scaled linearly to 100 viewers."""
    return round(cores * 100 / viewers, 3) if viewers else None


def held_figures(counts: dict[str, Any]) -> dict[str, int]:
    """Blocking reloads of a window: answered (200), refused by status, client timeouts."""
    statuses = counts["statuses"]
    refused = {
        key.split()[-1]: n
        for key, n in statuses.items()
        if key.startswith("held playlist ") and key.split()[-1] != "200"
    }
    return {
        "answered": statuses.get("held playlist 200", 0),
        "refused": sum(refused.values()),
        "refused_by_status": refused,
        "timeouts": counts["timeouts"].get("held playlist", 0),
    }


async def _renditions(conn: HttpConnection, base: str) -> list[str]:
    """Top rung and audio playlist paths of the folder served at ``base``."""
    response = await conn.request(f"{base}/master.m3u8")
    if response.status != 200:
        raise RuntimeError(f"{base}/master.m3u8: HTTP {response.status}")
    variants, audio = parse_master(response.body.decode())
    return [f"{base}/{uri}" for uri in [variants[0], *audio[:1]]]


async def _window(
    port: int,
    mode: str,
    paths: list[str],
    viewers: int,
    warm_s: float,
    sample_s: float,
    watches: dict[str, FileWatch],
    pids: dict[str, int],
) -> dict[str, Any]:
    stats = ViewerStats()
    conns: list[HttpConnection] = []
    tasks: list[asyncio.Task] = []
    for _ in range(viewers):
        for path in paths:
            conn = HttpConnection(HOST, port)
            conns.append(conn)
            if mode == "ll":
                tasks.append(asyncio.create_task(ll_rendition(conn, path, stats)))
            else:
                tasks.append(asyncio.create_task(standard_rendition(conn, path, stats)))
    try:
        await asyncio.sleep(warm_s)  # viewers reach the live edge and their steady pace
        failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
        if failed:
            raise failed[0].exception()  # e.g. the LL folder is not served as LL-HLS
        stats.reset()
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        client0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(sample_s)
        wall = time.monotonic() - wall0
        cpu = {name: (cpu_seconds(pid) - cpu0[name]) / wall for name, pid in pids.items()}
        client = (time.process_time() - client0) / wall
        counts = stats.counts()
        seen = list(stats.seen)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in conns:
            conn.close()
    units = watches[mode].units if mode in watches else {}
    listed = [at - units[key].written_ms for key, at, _ in seen if key in units]
    served = [at - units[key].written_ms for key, _, at in seen if key in units and at]
    answered = sum(counts["requests"].values()) / wall
    return {
        "mode": mode,
        "viewers": viewers,
        "wall_s": round(wall, 3),
        # what one answer costs the origin (the idle window's share included)
        "daphne_cpu_us_per_request": round(cpu["daphne"] * 1e6 / answered) if answered else None,
        "cores": {name: round(value, 3) for name, value in cpu.items()},
        "client_cores": round(client, 3),
        "requests_per_s": {k: round(n / wall, 1) for k, n in counts["requests"].items()},
        "counts": counts,
        "held": held_figures(counts),
        "connections_opened": sum(c.opened for c in conns),
        "listed_after_written": summary(listed),
        "served_after_written": summary(served),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


async def _measure(
    server: Any,
    folders: dict[str, Path],
    pids: dict[str, int],
    scales: list[int],
    rounds: int,
    warm_s: float,
    sample_s: float,
) -> dict[str, Any]:
    with (
        watching(folders["ll"], reps=(0, 2)) as ll_watch,
        watching(folders["standard"], reps=(0, 2)) as standard_watch,
    ):
        watches = {"ll": ll_watch, "standard": standard_watch}
        probe = HttpConnection(HOST, server.port)
        paths = {
            mode: await _renditions(probe, f"/media/streams/{folder.name}")
            for mode, folder in folders.items()
        }
        first = await probe.request(paths["ll"][0])
        probe.close()
        if not parse_media_playlist(first.body.decode()).can_block_reload:
            raise RuntimeError(
                "the origin serves the LL folder's media playlist without "
                "CAN-BLOCK-RELOAD=YES: no LL-HLS here (streaming/llhls.py not merged?)"
            )
        windows = [
            await _window(server.port, "idle", [], 0, 0.0, sample_s, watches, pids),
        ]
        for viewers in scales:
            for mode in window_order(rounds):
                windows.append(
                    await _window(
                        server.port, mode, paths[mode], viewers, warm_s, sample_s, watches, pids
                    )
                )
                print(
                    f"  {viewers} {mode}: daphne {windows[-1]['cores']['daphne']} cores, "
                    f"{windows[-1]['requests_per_s']} req/s, held {windows[-1]['held']}",
                    flush=True,
                )
        return {"paths": paths, "windows": windows}


def _median(windows: list[dict[str, Any]], pick) -> float | None:
    values = [pick(w) for w in windows]
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def summarise(windows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Medians over the windows of each mode and number of viewers (``summary[mode][n]``),
    and the held-request totals; ``saturated`` when Daphne's median reached
    ``SATURATED_CORES`` (one process: its event loop cannot use much more than a core) or
    its viewers got new bytes ``SATURATED_LAG_MS`` late (they fell behind)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for window in windows:
        out.setdefault(window["mode"], {}).setdefault(str(window["viewers"]), {})
    for mode, by_scale in out.items():
        for scale in by_scale:
            mine = [w for w in windows if w["mode"] == mode and str(w["viewers"]) == scale]
            s = {
                "windows": len(mine),
                "daphne_cores": _median(mine, lambda w: w["cores"]["daphne"]),
                "ffmpeg_ll_cores": _median(mine, lambda w: w["cores"].get("ffmpeg_ll")),
                "ffmpeg_standard_cores": _median(mine, lambda w: w["cores"].get("ffmpeg_standard")),
                "client_cores": _median(mine, lambda w: w["client_cores"]),
                "requests_per_s": _median(mine, lambda w: sum(w["requests_per_s"].values())),
                "daphne_cpu_us_per_request": _median(
                    mine, lambda w: w.get("daphne_cpu_us_per_request")
                ),
                "listed_after_written_p50_ms": _median(
                    mine, lambda w: w["listed_after_written"].get("p50_ms")
                ),
                "listed_after_written_p95_ms": _median(
                    mine, lambda w: w["listed_after_written"].get("p95_ms")
                ),
                "served_after_written_p50_ms": _median(
                    mine, lambda w: w["served_after_written"].get("p50_ms")
                ),
                "served_after_written_p95_ms": _median(
                    mine, lambda w: w["served_after_written"].get("p95_ms")
                ),
                "held_answered": sum(w["held"]["answered"] for w in mine),
                "held_refused": sum(w["held"]["refused"] for w in mine),
                "timeouts": sum(sum(w["counts"]["timeouts"].values()) for w in mine),
                "errors": sum(sum(w["counts"]["errors"].values()) for w in mine),
                "loadavg_1m": _median(mine, lambda w: w["loadavg_1m"]),
            }
            viewers = int(scale)
            if mode != "idle" and viewers:
                s["daphne_cores_per_100"] = per_100(s["daphne_cores"] or 0, viewers)
                s["saturated"] = (s["daphne_cores"] or 0) >= SATURATED_CORES or (
                    s["served_after_written_p50_ms"] or 0
                ) >= SATURATED_LAG_MS
            by_scale[scale] = s
    return out


def comparison(summary_: dict[str, Any], viewers: int, small: int) -> dict[str, Any]:
    """LL / standard Daphne CPU: at ``viewers`` when neither mode saturated the process,
    else per 100 viewers extrapolated from ``small`` viewers (linear: what 100 would need)."""
    at = {mode: summary_[mode].get(str(viewers), {}) for mode in ("ll", "standard")}
    unsaturated = all(s and not s.get("saturated") for s in at.values())
    basis = viewers if unsaturated or not small else small
    ll = summary_["ll"].get(str(basis), {})
    std = summary_["standard"].get(str(basis), {})
    ll_cores, std_cores = ll.get("daphne_cores_per_100"), std.get("daphne_cores_per_100")
    ratio = round(ll_cores / std_cores, 2) if ll_cores and std_cores else None
    return {
        "ratio": ratio,
        "basis_viewers": basis,
        "ll_cores_per_100": ll_cores,
        "standard_cores_per_100": std_cores,
    }


def rows_and_headline(summary_: dict[str, Any], viewers: int, small: int) -> tuple[list, Any, str]:
    rows = []
    for scale in dict.fromkeys([viewers, small]):
        if not scale:
            continue
        for mode, label in (("ll", "low-latency"), ("standard", "standard")):
            s = summary_[mode].get(str(scale))
            if not s:
                continue
            rows.append(
                {
                    "metric": f"origin CPU, {scale} {label} viewers",
                    "value": s["daphne_cores"],
                    "unit": "cores",
                    "per_100_viewers": s["daphne_cores_per_100"],
                    "saturated": s["saturated"],
                    "req_per_s": s["requests_per_s"],
                    "cpu_us_per_req": s["daphne_cpu_us_per_request"],
                    "listed_after_written_p50_ms": s["listed_after_written_p50_ms"],
                    "served_after_written_p50_ms": s["served_after_written_p50_ms"],
                    "served_after_written_p95_ms": s["served_after_written_p95_ms"],
                    "held_answered": s["held_answered"],
                    "held_refused": s["held_refused"],
                    "timeouts": s["timeouts"],
                    "errors": s["errors"],
                    "client_cores": s["client_cores"],
                    "loadavg_1m": s["loadavg_1m"],
                }
            )
    idle = summary_.get("idle", {}).get("0", {})
    ll = summary_["ll"][str(viewers)]
    std = summary_["standard"][str(viewers)]
    rows.append(
        {"metric": "origin CPU, no viewers", "value": idle.get("daphne_cores"), "unit": "cores"}
    )
    rows.append(
        {"metric": "FFmpeg CPU, LL encoder", "value": ll["ffmpeg_ll_cores"], "unit": "cores"}
    )
    rows.append(
        {
            "metric": "FFmpeg CPU, standard encoder",
            "value": std["ffmpeg_standard_cores"],
            "unit": "cores",
        }
    )
    compared = comparison(summary_, viewers, small)
    basis = compared["basis_viewers"]
    headline = (
        f"origin (one Daphne), {viewers} viewers: low-latency {ll['daphne_cores']} cores at "
        f"{ll['requests_per_s']} req/s{' (saturated)' if ll['saturated'] else ''} vs standard "
        f"{std['daphne_cores']} cores at {std['requests_per_s']} req/s"
        f"{' (saturated)' if std['saturated'] else ''}; per 100 viewers "
        f"{'measured' if basis == viewers else f'extrapolated from {basis}'}: LL "
        f"{compared['ll_cores_per_100']} vs standard {compared['standard_cores_per_100']} "
        f"cores (LL/standard {compared['ratio']}x); held reloads answered "
        f"{ll['held_answered']}, refused {ll['held_refused']}, timeouts {ll['timeouts']}, "
        f"errors {ll['errors']}; LL parts served {ll['served_after_written_p50_ms']} ms p50 "
        f"after written; FFmpeg LL {ll['ffmpeg_ll_cores']} / standard "
        f"{std['ffmpeg_standard_cores']} cores; load {ll['loadavg_1m']}"
    )
    busy_client = max(ll["client_cores"] or 0, std["client_cores"] or 0)
    if busy_client > CLIENT_BOUND_CORES:
        headline += f"; CAUTION: the clients used {busy_client} cores, they may be the limit"
    return rows, compared, headline


def server_env() -> dict[str, str]:
    """The Daphne's settings: ``SERVER_ENV`` with production's ``DEBUG=0`` (and a
    throwaway ``SECRET_KEY``, which DEBUG=0 requires); ``LL_ORIGIN_DEBUG=1`` keeps the test
    harness's ``DEBUG=1`` instead (as the other benchmarks run)."""
    env = {**EMBEDDED_ENV, **SERVER_ENV}
    if os.environ.get("LL_ORIGIN_DEBUG", "0") != "1":
        env |= {"DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(32)}
    return env


def run(quick: bool) -> dict[str, Any]:
    from bench.runner import result
    from bench.support import exit_cleanly_on_sigterm
    from tests.support.ll_stream import ll_encoder

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtcsite.settings")
    import django

    django.setup()  # the encoders' FFmpeg binary is a setting
    viewers = int(os.environ.get("LL_ORIGIN_VIEWERS", "100"))
    small = int(os.environ.get("LL_ORIGIN_SMALL", "5"))
    small = small if 0 < small < viewers else 0
    scales = [n for n in (small, viewers) if n]
    rounds, warm_s, sample_s = (1, 3.0, 4.0) if quick else (2, 4.0, 15.0)
    env = server_env()
    load_start = os.getloadavg()
    with exit_cleanly_on_sigterm(), daphne_site(env) as server:
        streams = server.workdir / "media" / "streams"
        folders = {"ll": streams / "bench-ll", "standard": streams / "bench-standard"}
        try:
            with (
                ll_encoder(folders["ll"]) as ll_enc,
                standard_encoder(folders["standard"]) as std_enc,
            ):
                ll_enc.wait_for_segments(3)
                std_enc.wait_for_segments(3)
                pids = {
                    "daphne": server.pid,
                    "ffmpeg_ll": ll_enc.process.pid,
                    "ffmpeg_standard": std_enc.process.pid,
                }
                measured = asyncio.run(
                    _measure(server, folders, pids, scales, rounds, warm_s, sample_s)
                )
        finally:
            shutil.rmtree(streams, ignore_errors=True)
    load_end = os.getloadavg()
    summary_ = summarise(measured["windows"])
    rows, compared, headline = rows_and_headline(summary_, viewers, small)
    headline += f" ({load_start[0]:.1f}->{load_end[0]:.1f} on a shared 2-core machine)"
    parameters = {
        "viewers": viewers,
        "small_viewers": small,
        "rounds": rounds,
        "order": ["idle", *(f"{n} {m}" for n in scales for m in window_order(rounds))],
        "warm_s": warm_s,
        "sample_s": sample_s,
        "renditions": measured["paths"],
        "connections": "one keep-alive HTTP/1.1 connection per rendition per viewer",
        "ll_encoder": "tests.support.ll_stream.ll_command: 1 s segments, 0.2 s parts",
        "standard_encoder": f"the same without the LL options, {STANDARD_SEGMENT_S} s segments",
        "server_env": {k: ("<random>" if k == "SECRET_KEY" else v) for k, v in env.items()},
        "debug": env.get("DEBUG", "1"),
        "ll_client": "blocking reload _HLS_msn/_HLS_part (+_HLS_skip=YES), parts by byte range",
        "standard_client": "reload every average segment duration (half if unchanged)",
        "ratio_basis_viewers": compared["basis_viewers"],
    }
    detail = {
        "summary": summary_,
        "comparison": compared,
        "windows": measured["windows"],
        "loadavg": {"start": list(load_start), "end": list(load_end)},
    }
    return result(NAME, rows, compared["ratio"], headline, parameters, detail)
