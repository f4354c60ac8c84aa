"""No tables: presence lives in the presence backend (memory or Redis), not the database.

``LivePresence`` is an unmanaged model only so that Django admin can list the current
presence under its own entry (with the usual staff permissions); its admin reads the
backend, never this table.
"""

from django.db import models


class LivePresence(models.Model):
    room = models.CharField(max_length=48)
    peer = models.CharField(max_length=32)

    class Meta:
        managed = False
        verbose_name = "live presence"
        verbose_name_plural = "live presence"
        default_permissions = ("view",)

    def __str__(self) -> str:
        return f"{self.peer} in {self.room}"
