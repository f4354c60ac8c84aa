from django.apps import AppConfig


class RoomsConfig(AppConfig):
    """Rooms (mesh, server echo, server relay), the lobby and the room pages."""

    name = "rooms"
    verbose_name = "Rooms"
