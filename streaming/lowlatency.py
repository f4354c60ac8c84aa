"""A stream folder's low-latency mode, as the origin sees it.

The pipeline decides per stream (``Stream.low_latency``) and writes ``low-latency.json``
into the stream's folder before its first encoder starts; the media views in every web
process read it from there (no database query per playlist request). No file: a
standard-mode stream, served exactly as before.

``part_target``: the encoder's fragment duration (an LL-HLS part, an LL-DASH chunk), s.
``segment_target``: its segment duration, s.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

MODE_FILE = "low-latency.json"


@dataclass(frozen=True)
class LowLatency:
    part_target: float
    segment_target: float

    def __post_init__(self) -> None:
        if not 0 < self.part_target <= self.segment_target:
            raise ValueError(
                f"part target {self.part_target} s must be within the segment's "
                f"{self.segment_target} s"
            )


def write_mode(output_dir: Path, mode: LowLatency) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / (MODE_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(mode)))
    os.replace(tmp, output_dir / MODE_FILE)


_cache: dict[str, tuple[float, LowLatency | None]] = {}


def read_mode(output_dir: Path) -> LowLatency | None:
    """The folder's mode, or None (standard). Cached by the file's mtime: it is written once."""
    path = output_dir / MODE_FILE
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    key = os.fspath(path)
    cached = _cache.get(key)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        values = json.loads(path.read_text())
        mode = LowLatency(float(values["part_target"]), float(values["segment_target"]))
    except (OSError, ValueError, KeyError, TypeError):
        mode = None
    if len(_cache) > 4096:
        _cache.clear()
    _cache[key] = (mtime, mode)
    return mode
