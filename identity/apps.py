from django.apps import AppConfig


class IdentityConfig(AppConfig):
    """Anonymous per-session identities and the signed WebSocket tokens that carry them."""

    name = "identity"
    verbose_name = "Identity"
