from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from rtcsite.vendor import copy_vendor_files


class Command(BaseCommand):
    help = (
        "Copy the front-end files the site serves (hls.js, dash.js, face-api and its "
        "TinyFaceDetector weights) from node_modules/ into static/vendor/. Run `npm ci` first."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--node-modules",
            type=Path,
            default=Path(settings.BASE_DIR) / "node_modules",
            help="Where `npm ci` installed the packages (default: ./node_modules).",
        )

    def handle(self, *args, **options):
        try:
            written = copy_vendor_files(options["node_modules"])
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from exc
        for path in written:
            self.stdout.write(f"  {path.relative_to(settings.BASE_DIR)}")
        self.stdout.write(self.style.SUCCESS(f"Vendored {len(written)} files."))
