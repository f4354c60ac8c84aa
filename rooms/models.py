"""The Room model: a named place where participants meet, of one kind."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

SLUG_RE = r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$"
slug_validator = RegexValidator(
    SLUG_RE,
    "Use 1-48 lowercase letters, digits or dashes, starting and ending with a letter or digit.",
    code="invalid_slug",
)


class RoomKind(models.TextChoices):
    MESH = "mesh", "Mesh (browser to browser)"
    ECHO = "echo", "Server echo"
    RELAY = "relay", "Server relay"


#: (default, minimum, maximum) participants per kind. A full mesh grows as n*(n-1)/2
#: connections, so it stays small; echo is one person and the server; relay is a pair.
CAPACITY_RULES: dict[str, tuple[int, int, int]] = {
    RoomKind.MESH: (3, 2, 4),
    RoomKind.ECHO: (1, 1, 1),
    RoomKind.RELAY: (2, 2, 2),
}


class Room(models.Model):
    slug = models.SlugField(max_length=48, unique=True, validators=[slug_validator])
    title = models.CharField(max_length=80)
    kind = models.CharField(max_length=8, choices=RoomKind.choices, default=RoomKind.MESH)
    capacity = models.PositiveSmallIntegerField(
        blank=True, help_text="Leave empty for the default of the kind (mesh 3, relay 2, echo 1)."
    )
    is_open = models.BooleanField("open", default=True, help_text="Closed rooms refuse joins.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(
        max_length=16, blank=True, help_text="Identity id of the visitor who created it."
    )
    created_by_name = models.CharField(max_length=40, blank=True)
    pinned = models.BooleanField(
        default=False,
        help_text="Stays in the lobby however long it is idle. Rooms made in admin (no "
        "creator) always stay; this keeps a visitor's room too.",
    )
    last_active_at = models.DateTimeField(
        default=timezone.now,
        help_text="Last join (written at most every ROOM_ACTIVITY_WRITE_SECONDS). Idle "
        "visitor rooms leave the lobby after ROOM_IDLE_HIDE_HOURS.",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["kind", "is_open"]),
            models.Index(fields=["last_active_at"], name="rooms_room_last_active_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.kind})"

    def save(self, *args, **kwargs) -> None:
        if self.capacity is None and self.kind in CAPACITY_RULES:
            self.capacity = CAPACITY_RULES[self.kind][0]
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("rooms:detail", args=[self.slug])

    @property
    def expires(self) -> bool:
        """A visitor's room that nobody pinned: it leaves the lobby when idle (rooms made
        in admin or the shell have no creator and stay)."""
        return bool(self.created_by) and not self.pinned

    def clean(self) -> None:
        super().clean()
        if self.kind not in CAPACITY_RULES:
            return  # the field's own choices validation reports it
        default, low, high = CAPACITY_RULES[self.kind]
        if self.capacity is None:
            self.capacity = default
        if not low <= self.capacity <= high:
            raise ValidationError(
                {
                    "capacity": f"A {self.kind} room holds {low}-{high} participants."
                    if low != high
                    else f"A {self.kind} room holds exactly {low}."
                }
            )
