from django.apps import AppConfig


class PresenceConfig(AppConfig):
    """Who is in which room (the lobby socket lives here)."""

    name = "presence"
    verbose_name = "Presence"
