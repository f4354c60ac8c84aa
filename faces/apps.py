from django.apps import AppConfig


class FacesConfig(AppConfig):
    """Face detection: the one OpenCV detector shared by server rooms, pushed frames and
    the live-stream overlay."""

    name = "faces"
    verbose_name = "Face detection"
