from django.apps import AppConfig


class RtcsiteConfig(AppConfig):
    """Project-wide pieces: management commands (vendor_assets, gencert) and system checks."""

    name = "rtcsite"
    verbose_name = "rtcsite"

    def ready(self) -> None:
        from rtcsite import checks  # noqa: F401  (registers the checks)
