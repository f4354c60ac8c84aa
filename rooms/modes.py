"""The lobby's tabs and whether each mode works yet.

One list, read by the lobby and the room pages, so a mode that is not built yet says
so plainly everywhere instead of pretending. Each feature flips ``available`` when it
lands.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    key: str
    label: str
    blurb: str
    room_kind: str | None  # the Room.kind it lists, or None for non-room tabs
    available: bool


MODES: tuple[Mode, ...] = (
    Mode(
        "mesh",
        "Mesh rooms",
        "Up to three browsers connect directly to each other (full mesh).",
        "mesh",
        True,
    ),
    Mode(
        "echo",
        "Server echo",
        "A server-side WebRTC peer sends your own video back, "
        "optionally with face boxes drawn by OpenCV.",
        "echo",
        True,
    ),
    Mode(
        "relay",
        "Server relay",
        "Two people whose media is relayed through the server.",
        "relay",
        True,
    ),
    Mode(
        "streams",
        "Live streams",
        "Publish your camera from the browser; anyone watches it as HLS or MPEG-DASH.",
        None,
        True,
    ),
    Mode(
        "faces",
        "Face detection",
        "Face boxes found in the browser (face-api) or on the server (OpenCV), and streamed live.",
        None,
        True,
    ),
)

MODES_BY_KEY = {mode.key: mode for mode in MODES}


def mode_for_kind(kind: str) -> Mode:
    return next(mode for mode in MODES if mode.room_kind == kind)
