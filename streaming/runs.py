"""A stream's encoder runs, and its playlists stitched from them (restart and takeover).

Normally one FFmpeg writes everything in the stream's folder (run 0). When it is killed
(the pipeline restarts it) or the process holding the stream dies (another process takes
the stream over), a new FFmpeg starts: it cannot continue the old one's files (the dash
muxer numbers segments from 1 and rewrites its playlists), so run ``k`` writes into
``run<k>/`` with its own ``clock.json`` (the wall-clock time of its media time 0), and the
stream's top-level playlists become ours, stitched from every run:

* HLS ``media_<n>.m3u8``: the runs' segments in order, numbered on (``MEDIA-SEQUENCE``
  continues), ``#EXT-X-DISCONTINUITY`` plus a new ``#EXT-X-MAP`` where a run starts; while
  live, the last ``window`` segments with ``#EXT-X-DISCONTINUITY-SEQUENCE``.
* DASH ``manifest.mpd``: one Period per run (``id`` = run, ``start`` = its clock minus the
  stream's, ``<BaseURL>run<k>/</BaseURL>``): multi-period live is standard DASH, and
  dash.js plays it (it jumps the small gap a restart leaves between Periods).
* ``master.m3u8`` is unchanged: it names ``media_<n>.m3u8``, which keep their names.

A finished run is *closed*: its full timeline (every segment on disk, from the muxer's
window and the segments' ``tfdt``, as ``finalize_vod`` does) is appended to
``runs.json``. Everything here reads the folder only, so the process that takes over a
dead one's stream closes the runs it finds and continues the numbering from what is on
disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from streaming.clock import iso_ms, read_clock
from streaming.ffmpeg import HLS_MASTER_NAME, MANIFEST_NAME
from streaming.playlists import (
    MPD_NS,
    NS,
    _expand,
    _full_timeline,
    _rle,
    _write_atomic,
    hls_target_duration,
    segment_files,
)

logger = logging.getLogger(__name__)

RUNS_FILE = "runs.json"
HEADER_FILE = "source-header.webm"  # the publisher's WebM header, for a new encoder
RUN_DIR_RE = re.compile(r"^run(\d+)$")


def run_dir(output_dir: Path, run: int) -> Path:
    return output_dir if run == 0 else output_dir / f"run{run}"


def run_prefix(run: int) -> str:
    return "" if run == 0 else f"run{run}/"


def write_header(output_dir: Path, header: bytes) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / (HEADER_FILE + ".tmp")
    tmp.write_bytes(header)
    os.replace(tmp, output_dir / HEADER_FILE)


def read_header(output_dir: Path) -> bytes | None:
    try:
        return (output_dir / HEADER_FILE).read_bytes() or None
    except OSError:
        return None


def load_runs(output_dir: Path) -> list[dict[str, Any]]:
    """The closed runs, in order (empty: none closed, the top-level files are FFmpeg's)."""
    try:
        return json.loads((output_dir / RUNS_FILE).read_text())["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _save_runs(output_dir: Path, records: list[dict[str, Any]]) -> None:
    _write_atomic(output_dir / RUNS_FILE, json.dumps({"runs": records}))


def _offset_ms(output_dir: Path, run: int) -> int:
    """When run ``run``'s media time 0 was, after the stream's (its Period's start)."""
    base, own = read_clock(output_dir), read_clock(run_dir(output_dir, run))
    if run == 0 or base is None or own is None:
        return 0
    return max(0, own.capture_ms - base.capture_ms)


def _read_run(output_dir: Path, run: int, *, full: bool) -> dict[str, Any] | None:
    """A run's Period as its muxer last wrote it; ``full``: every segment on disk listed."""
    folder = run_dir(output_dir, run)
    try:
        root = ET.parse(folder / MANIFEST_NAME).getroot()
    except (OSError, ET.ParseError):
        return None  # killed before its first manifest: nothing of it is playable
    period = root.find("mpd:Period", NS)
    if period is None:
        return None
    files = segment_files(folder) if full else {}
    reps: dict[str, dict[str, Any]] = {}
    for rep in period.iter(f"{{{MPD_NS}}}Representation"):
        rep_id = int(rep.get("id"))
        template = rep.find("mpd:SegmentTemplate", NS)
        if template is None:
            continue
        window = _expand(template)
        start, entries = window.start_number, window.entries
        if full and entries:
            last = window.start_number + len(window.entries) - 1
            # A segment written after the muxer's last manifest (killed in between) is
            # left out: its duration is not known.
            kept = {n: p for n, p in files.get(rep_id, {}).items() if n <= last}
            try:
                start, entries = 1, _full_timeline(rep_id, window, kept)
            except ValueError as exc:  # the muxer's window only
                logger.warning("%s run %d: %s", output_dir, run, exc)
            template.set("startNumber", str(start))
            timeline = template.find("mpd:SegmentTimeline", NS)
            for child in list(timeline):
                timeline.remove(child)
            for attrs in _rle(entries):
                ET.SubElement(timeline, f"{{{MPD_NS}}}S", attrs)
        reps[str(rep_id)] = {"timescale": window.timescale, "start": start, "entries": entries}
    root.remove(period)
    return {
        "run": run,
        "offset_ms": _offset_ms(output_dir, run),
        "reps": reps,
        "period": ET.tostring(period, encoding="unicode"),
        "root": ET.tostring(root, encoding="unicode"),
    }


def close_run(output_dir: Path, run: int) -> dict[str, Any]:
    """Record run ``run`` (finished or killed) with every segment it left; idempotent."""
    records = load_runs(output_dir)
    for record in records:
        if record["run"] == run:
            return record
    _drop_unfinished(run_dir(output_dir, run))
    record = _read_run(output_dir, run, full=True) or {
        "run": run,
        "offset_ms": _offset_ms(output_dir, run),
        "reps": {},
        "period": None,
        "root": None,
    }
    records.append(record)
    _save_runs(output_dir, records)
    return record


def _drop_unfinished(folder: Path) -> None:
    """A killed low-latency encoder leaves the segment it was writing as ``.m4s.tmp``:
    never finished nor listed, it must not look like a segment still being written to
    the origin (which serves parts of growing ``.tmp`` files), so it is deleted."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith("chunk-stream") and name.endswith(".m4s.tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / name)


def next_run(output_dir: Path) -> int:
    """Close every run left on disk (a dead process's too); the number of the next one."""
    last = 0
    for entry in os.scandir(output_dir):
        match = RUN_DIR_RE.match(entry.name)
        if match and entry.is_dir():
            last = max(last, int(match[1]))
    closed = {record["run"] for record in load_runs(output_dir)}
    for run in range(last + 1):
        if run not in closed and (run == 0 or run_dir(output_dir, run).exists()):
            close_run(output_dir, run)
    return last + 1


def segments_closed(output_dir: Path) -> dict[int, int]:
    """Segments of the closed runs per representation. Per representation: a run that
    FFmpeg finalised (a takeover after the owner died) may end with one more audio segment
    than video ones, so a maximum over all of them would overcount the video."""
    counts: dict[int, int] = {}
    for record in load_runs(output_dir):
        for rep_id, rep in record["reps"].items():
            counts[int(rep_id)] = counts.get(int(rep_id), 0) + len(rep["entries"])
    return counts


# --- stitched outputs -----------------------------------------------------------------
def _hls(rep_id: str, runs: list[dict[str, Any]], window: int, final: bool) -> str:
    items: list[tuple[int, str, float, bool]] = []  # (run, uri, seconds, starts a run)
    hidden = 0  # segments and run starts not listed: numbered all the same
    hidden_starts = 0
    for position, record in enumerate(runs):
        rep = record["reps"].get(rep_id)
        if not rep or not rep["entries"]:
            continue
        prefix = run_prefix(record["run"])
        # A live run lists its window only: its first listed segment is number ``start``.
        scrolled = rep["start"] - 1 if not final and position == len(runs) - 1 else 0
        if scrolled:
            had = bool(items) or bool(hidden)
            hidden += scrolled + len(items)
            hidden_starts += sum(starts for *_rest, starts in items) + had
            items = []
        for index, (_t, d) in enumerate(rep["entries"]):
            uri = f"{prefix}chunk-stream{rep_id}-{rep['start'] + index:05d}.m4s"
            starts = index == 0 and not scrolled and (bool(items) or bool(hidden))
            items.append((record["run"], uri, d / rep["timescale"], starts))
    if not final and window and len(items) > window:
        dropped, items = items[:-window], items[-window:]
        hidden += len(dropped)
        hidden_starts += sum(starts for *_rest, starts in dropped)
    first_seq, discontinuities = 1 + hidden, hidden_starts
    target = hls_target_duration([seconds for _r, _u, seconds, _s in items])
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:6",
        f"#EXT-X-TARGETDURATION:{target}",
        f"#EXT-X-MEDIA-SEQUENCE:{first_seq}",
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuities}",
    ]
    if final:
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    current = None
    for run, uri, seconds, starts in items:
        if starts:
            lines.append("#EXT-X-DISCONTINUITY")
        if run != current:
            lines.append(f'#EXT-X-MAP:URI="{run_prefix(run)}init-stream{rep_id}.m4s"')
            current = run
        lines.append(f"#EXTINF:{seconds:.6f},")
        lines.append(uri)
    if final:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _seconds(ms: float) -> str:
    return f"PT{ms / 1000:.3f}S"


def _mpd(output_dir: Path, runs: list[dict[str, Any]], final: bool) -> str | None:
    with_periods = [r for r in runs if r["period"]]
    if not with_periods:
        return None
    root = ET.fromstring(with_periods[-1]["root"])
    base = read_clock(output_dir)
    if base is not None:
        root.set("availabilityStartTime", iso_ms(base.capture_ms))
    end_ms = 0.0
    for record in with_periods:
        period = ET.fromstring(record["period"])
        period.set("id", str(record["run"]))
        period.set("start", _seconds(record["offset_ms"]))
        period.attrib.pop("duration", None)
        if record["run"]:
            url = ET.Element(f"{{{MPD_NS}}}BaseURL")
            url.text = run_prefix(record["run"])
            period.insert(0, url)
        root.append(period)
        longest = max(
            (
                (rep["entries"][-1][0] + rep["entries"][-1][1]) / rep["timescale"] * 1000
                for rep in record["reps"].values()
                if rep["entries"]
            ),
            default=0.0,
        )
        end_ms = record["offset_ms"] + longest
    if final:
        root.set("type", "static")
        for name in ("minimumUpdatePeriod", "timeShiftBufferDepth", "suggestedPresentationDelay"):
            root.attrib.pop(name, None)
        root.set("mediaPresentationDuration", _seconds(end_ms))
    else:
        root.attrib.pop("mediaPresentationDuration", None)
    ET.indent(root, space="\t")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def stitch(output_dir: Path | str, live_run: int | None, *, window: int = 0) -> bool:
    """Write the top-level HLS media playlists and MPD from the closed runs plus the live
    run ``live_run`` (None: all runs closed, the stream is over: VOD outputs). True if
    written."""
    output_dir = Path(output_dir)
    runs = load_runs(output_dir)
    final = live_run is None
    if not final:
        live = _read_run(output_dir, live_run, full=False)
        if live is None:
            return False  # the new run has not written its first manifest yet
        runs = [*runs, live]
        master = output_dir / HLS_MASTER_NAME
        if not master.exists() and (run_dir(output_dir, live_run) / HLS_MASTER_NAME).exists():
            shutil.copyfile(run_dir(output_dir, live_run) / HLS_MASTER_NAME, master)
    mpd = _mpd(output_dir, runs, final)
    if mpd is None:
        return False
    rep_ids = sorted({rep for record in runs for rep in record["reps"]}, key=int)
    for rep_id in rep_ids:
        text = _hls(rep_id, runs, window, final)
        _write_atomic(output_dir / f"media_{rep_id}.m3u8", text)
    _write_atomic(output_dir / MANIFEST_NAME, mpd)
    return True


def end_from_disk(output_dir: Path | str) -> None:
    """A stream whose process died is ended without an encoder: every run left on disk
    closed, the VOD outputs stitched from them."""
    output_dir = Path(output_dir)
    if output_dir.exists():
        finish(output_dir, next_run(output_dir) - 1)


def finish(output_dir: Path | str, run: int) -> None:
    """The stream is over and ``run`` was its last encoder: close it and write VOD outputs."""
    output_dir = Path(output_dir)
    close_run(output_dir, run)
    stitch(output_dir, None)
    logger.info("%s: VOD outputs stitched from %d runs", output_dir, run + 1)
