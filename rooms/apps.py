from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save


class RoomsConfig(AppConfig):
    """Rooms (mesh, server echo, server relay), the lobby and the room pages."""

    name = "rooms"
    verbose_name = "Rooms"

    def ready(self) -> None:
        from rooms.models import Room

        post_save.connect(_room_changed, sender=Room, dispatch_uid="rooms-cache-save")
        post_delete.connect(_room_changed, sender=Room, dispatch_uid="rooms-cache-delete")
        # a flush (tests) or migration may change every room without a save signal
        post_migrate.connect(_forget_all, dispatch_uid="rooms-cache-migrate")


def _room_changed(sender, instance, **kwargs) -> None:
    from rooms.services import forget_room

    forget_room(instance.slug)


def _forget_all(sender, **kwargs) -> None:
    from rooms.services import forget_room

    forget_room()
