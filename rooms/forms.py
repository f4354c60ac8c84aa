from django import forms

from rooms.models import RoomKind
from rooms.services import MAX_TITLE_LENGTH


class JoinRoomForm(forms.Form):
    """Create-or-join a room by name (the lobby's per-tab form)."""

    name = forms.CharField(max_length=MAX_TITLE_LENGTH, label="Room name")
    kind = forms.ChoiceField(choices=RoomKind.choices, widget=forms.HiddenInput)
