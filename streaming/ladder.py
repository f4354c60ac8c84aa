"""The bitrate ladder: which renditions one live stream is encoded to.

``STREAM_LADDER`` (a Django setting, ``"720,360"`` by default) accepts:

* ``"720,360"`` — heights; bitrates come from ``DEFAULT_BITRATES`` (or scale by area);
* ``"720:2500:128,360:800:96"`` — height:video kbps[:audio kbps] per rung;
* JSON text or a Python list of objects
  ``[{"height": 720, "video_kbps": 2500, "audio_kbps": 128, "name": "720p"}, ...]``.

The ladder is the *most* a stream gets: ``renditions_for_source`` never upscales. Rungs
taller than the source are dropped; if any were, the source's own height becomes the top
rung (so a 480p camera with the default ``720,360`` ladder gives 480p + 360p, a 1080p one
gives 720p + 360p, a 360p one gives 360p only).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

MIN_HEIGHT = 32
MAX_HEIGHT = 2160
# Typical live H.264 bitrates (kbps) at 30 fps: (video, audio).
DEFAULT_BITRATES: dict[int, tuple[int, int]] = {
    2160: (12000, 192),
    1440: (7000, 192),
    1080: (4500, 160),
    720: (2500, 128),
    540: (1600, 128),
    480: (1200, 128),
    360: (800, 96),
    240: (400, 64),
    144: (200, 64),
}
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True)
class Rendition:
    name: str
    height: int
    video_kbps: int
    audio_kbps: int

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ImproperlyConfigured(
                f"Rendition name {self.name!r}: use 1-32 letters, digits, '-' or '_'."
            )
        if not MIN_HEIGHT <= self.height <= MAX_HEIGHT or self.height % 2:
            raise ImproperlyConfigured(
                f"Rendition {self.name!r}: height {self.height} must be an even number "
                f"between {MIN_HEIGHT} and {MAX_HEIGHT} (H.264 4:2:0 needs even sizes)."
            )
        if not 50 <= self.video_kbps <= 50_000:
            raise ImproperlyConfigured(
                f"Rendition {self.name!r}: video_kbps {self.video_kbps} is outside 50..50000."
            )
        if not 16 <= self.audio_kbps <= 512:
            raise ImproperlyConfigured(
                f"Rendition {self.name!r}: audio_kbps {self.audio_kbps} is outside 16..512."
            )

    @property
    def bandwidth(self) -> int:
        """Nominal bits per second (video + audio), as a player would see it."""
        return (self.video_kbps + self.audio_kbps) * 1000


def default_bitrates(height: int) -> tuple[int, int]:
    """Bitrates for ``height``: from the table, else scaled by area from the nearest row."""
    if height in DEFAULT_BITRATES:
        return DEFAULT_BITRATES[height]
    nearest = min(DEFAULT_BITRATES, key=lambda h: abs(h - height))
    video, audio = DEFAULT_BITRATES[nearest]
    return max(50, round(video * (height / nearest) ** 2)), audio


def rendition(height: int, video_kbps: int | None = None, audio_kbps: int | None = None, *,
              name: str | None = None) -> Rendition:  # fmt: skip
    video_default, audio_default = default_bitrates(height)
    return Rendition(
        name=name or f"{height}p",
        height=height,
        video_kbps=video_kbps if video_kbps is not None else video_default,
        audio_kbps=audio_kbps if audio_kbps is not None else audio_default,
    )


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ImproperlyConfigured(f"STREAM_LADDER: {what} must be an integer, got {value!r}.")
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"STREAM_LADDER: {what} must be an integer, got {value!r}."
        ) from exc


def _from_mapping(item: Any, index: int) -> Rendition:
    if isinstance(item, Rendition):
        return item
    if not isinstance(item, dict):
        raise ImproperlyConfigured(
            f"STREAM_LADDER[{index}] must be an object with 'height' (and optionally "
            f"'video_kbps', 'audio_kbps', 'name'), got {item!r}."
        )
    unknown = set(item) - {"height", "video_kbps", "audio_kbps", "name"}
    if unknown:
        raise ImproperlyConfigured(f"STREAM_LADDER[{index}]: unknown keys {sorted(unknown)}.")
    if "height" not in item:
        raise ImproperlyConfigured(f"STREAM_LADDER[{index}] has no 'height'.")
    return rendition(
        _as_int(item["height"], f"[{index}].height"),
        _as_int(item["video_kbps"], f"[{index}].video_kbps") if "video_kbps" in item else None,
        _as_int(item["audio_kbps"], f"[{index}].audio_kbps") if "audio_kbps" in item else None,
        name=item.get("name"),
    )


def _from_text(text: str) -> list[Rendition]:
    rungs = []
    for index, part in enumerate(p.strip() for p in text.split(",")):
        if not part:
            raise ImproperlyConfigured(f"STREAM_LADDER={text!r}: empty rung at position {index}.")
        fields = [f.strip().removesuffix("p") for f in part.split(":")]
        if len(fields) > 3:
            raise ImproperlyConfigured(
                f"STREAM_LADDER rung {part!r}: use height[:video_kbps[:audio_kbps]]."
            )
        numbers = [_as_int(f, f"rung {part!r}") for f in fields]
        rungs.append(rendition(*numbers))
    return rungs


def parse_ladder(value: Any) -> tuple[Rendition, ...]:
    """Parse and validate a ladder setting; highest rung first."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ImproperlyConfigured("STREAM_LADDER is empty: give at least one rung.")
        if text[0] in "[{":
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ImproperlyConfigured(f"STREAM_LADDER is not valid JSON: {exc}") from exc
            if isinstance(value, dict):
                value = [value]
        else:
            return _validated(_from_text(text))
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | dict):
        items = list(value)
        rungs = [
            rendition(_as_int(item, f"[{i}]")) if isinstance(item, int) else _from_mapping(item, i)
            for i, item in enumerate(items)
        ]
        return _validated(rungs)
    raise ImproperlyConfigured(
        f"STREAM_LADDER must be text like '720,360', JSON or a list, got {value!r}."
    )


def _validated(rungs: Sequence[Rendition]) -> tuple[Rendition, ...]:
    if not rungs:
        raise ImproperlyConfigured("STREAM_LADDER is empty: give at least one rung.")
    heights = [r.height for r in rungs]
    if len(set(heights)) != len(heights):
        raise ImproperlyConfigured(f"STREAM_LADDER has duplicate heights: {heights}.")
    names = [r.name for r in rungs]
    if len(set(names)) != len(names):
        raise ImproperlyConfigured(f"STREAM_LADDER has duplicate names: {names}.")
    return tuple(sorted(rungs, key=lambda r: r.height, reverse=True))


def configured_ladder() -> tuple[Rendition, ...]:
    from django.conf import settings

    return parse_ladder(settings.STREAM_LADDER)


def renditions_for_source(
    ladder: Sequence[Rendition], source_height: int | None
) -> tuple[Rendition, ...]:
    """The rungs a source of ``source_height`` gets: never upscaled, highest first.

    Rungs taller than the source are dropped; if any were, a rung at the source's own
    (even) height replaces them, with the dropped rung's bitrate scaled by area.
    Unknown source height: the ladder as is (FFmpeg scales to each rung's height).
    """
    ladder = sorted(ladder, key=lambda r: r.height, reverse=True)
    if not source_height:
        return tuple(ladder)
    source = max(MIN_HEIGHT, source_height - source_height % 2)
    kept = [r for r in ladder if r.height <= source]
    dropped = [r for r in ladder if r.height > source]
    if dropped and not any(r.height == source for r in kept):
        nearest = dropped[-1]  # the smallest rung above the source
        video = round(nearest.video_kbps * (source / nearest.height) ** 2)
        if kept:
            video = max(video, kept[0].video_kbps)
        kept.insert(
            0,
            Rendition(
                name=f"{source}p" if f"{source}p" not in {r.name for r in kept} else "source",
                height=source,
                video_kbps=max(50, video),
                audio_kbps=nearest.audio_kbps,
            ),
        )
    return tuple(kept)
