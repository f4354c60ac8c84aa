"""Which FFmpeg binary the site runs."""

from __future__ import annotations

import shutil

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def ffmpeg_binary() -> str:
    """``FFMPEG_BINARY`` if set (a path or a name on PATH), else imageio-ffmpeg's bundled one.

    The bundled build (ffmpeg 9 with libx264, libvpx, libopus and the hls/dash muxers)
    makes a fresh machine work without Debian's ffmpeg package.
    """
    configured = settings.FFMPEG_BINARY
    if configured:
        found = shutil.which(configured)
        if not found:
            raise ImproperlyConfigured(f"FFMPEG_BINARY={configured!r} is not an executable.")
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()
