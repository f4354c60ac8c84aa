"""Which files of the npm packages the site serves, and where they land.

A curated copy (not whole ``dist`` folders: dashjs alone is 126 MB) into
``static/vendor/``, done by ``manage.py vendor_assets`` during set-up.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings


@dataclass(frozen=True)
class VendorFile:
    source: str  # relative to node_modules
    target: str  # relative to static/vendor


VENDOR_FILES: tuple[VendorFile, ...] = (
    VendorFile("hls.js/dist/hls.min.mjs", "hls.js/hls.min.mjs"),
    VendorFile("hls.js/LICENSE", "hls.js/LICENSE"),
    VendorFile("dashjs/dist/modern/esm/dash.all.min.js", "dashjs/dash.all.min.js"),
    VendorFile("dashjs/LICENSE.md", "dashjs/LICENSE.md"),
    VendorFile("@vladmandic/face-api/dist/face-api.esm.js", "face-api/face-api.esm.js"),
    VendorFile("@vladmandic/face-api/LICENSE", "face-api/LICENSE"),
    VendorFile(
        "@vladmandic/face-api/model/tiny_face_detector_model-weights_manifest.json",
        "face-api/model/tiny_face_detector_model-weights_manifest.json",
    ),
    VendorFile(
        "@vladmandic/face-api/model/tiny_face_detector_model.bin",
        "face-api/model/tiny_face_detector_model.bin",
    ),
)


def vendor_dir() -> Path:
    return Path(settings.BASE_DIR) / "static" / "vendor"


def missing_vendor_files() -> list[str]:
    return [f.target for f in VENDOR_FILES if not (vendor_dir() / f.target).is_file()]


def copy_vendor_files(node_modules: Path) -> list[Path]:
    """Copy every vendored file; raise FileNotFoundError naming the first one missing."""
    written = []
    for item in VENDOR_FILES:
        src = node_modules / item.source
        if not src.is_file():
            raise FileNotFoundError(f"{src} is missing: run `npm ci` in {node_modules.parent}.")
        dst = vendor_dir() / item.target
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        written.append(dst)
    return written
