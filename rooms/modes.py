"""The lobby's tabs: one list, read by the lobby and the room pages (label, blurb, and the
room kind a tab lists)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    key: str
    label: str
    blurb: str
    room_kind: str | None  # the Room.kind it lists, or None for non-room tabs


MODES: tuple[Mode, ...] = (
    Mode(
        "mesh",
        "Mesh rooms",
        "Up to three browsers connect directly to each other (full mesh).",
        "mesh",
    ),
    Mode(
        "echo",
        "Server echo",
        "A server-side WebRTC peer sends your own video back, "
        "optionally with face boxes drawn by OpenCV.",
        "echo",
    ),
    Mode(
        "relay",
        "Server relay",
        "Two people whose media is relayed through the server.",
        "relay",
    ),
    Mode(
        "streams",
        "Live streams",
        "Publish your camera from the browser; anyone watches it as HLS or MPEG-DASH.",
        None,
    ),
    Mode(
        "faces",
        "Face detection",
        "Face boxes found in the browser (face-api) or on the server (OpenCV), and streamed live.",
        None,
    ),
)

MODES_BY_KEY = {mode.key: mode for mode in MODES}


def mode_for_kind(kind: str) -> Mode:
    return next(mode for mode in MODES if mode.room_kind == kind)
