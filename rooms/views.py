"""Lobby and room pages: parse the request, call rooms.services, render."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from rooms import services
from rooms.forms import JoinRoomForm
from rooms.modes import MODES, mode_for_kind
from rtcsite.errors import ClientError
from rtcsite.http import client_address, refusal_page


def lobby_context() -> dict:
    tabs = []
    for mode in MODES:
        rooms = services.list_rooms(mode.room_kind) if mode.room_kind else []
        tabs.append({"mode": mode, "rooms": rooms})
    return {"tabs": tabs}


def lobby(request: HttpRequest) -> HttpResponse:
    """``/``: one tab per mode, each listing its open rooms with a create/join form."""
    return render(request, "rooms/lobby.html", lobby_context())


@require_POST
def join(request: HttpRequest) -> HttpResponse:
    """Create-or-join by name, then go to the room page (errors back to the lobby tab; over a
    quota: the lobby again with the message, 429 and ``Retry-After``)."""
    form = JoinRoomForm(request.POST)
    kind = request.POST.get("kind", "mesh")
    if form.is_valid():
        try:
            result = services.get_or_create_room(
                form.cleaned_data["name"],
                form.cleaned_data["kind"],
                request.identity,
                address=client_address(request),
            )
        except ClientError as exc:
            return refusal_page(request, "rooms/lobby.html", lobby_context(), exc)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            return redirect(result.room)
    else:
        for errors in form.errors.values():
            messages.error(request, " ".join(errors))
    return redirect(f"/#{kind}")


def detail(request: HttpRequest, slug: str) -> HttpResponse:
    """``/rooms/<slug>/``: the page of one room, by kind."""
    room = services.get_room(slug)
    if room is None:
        raise Http404("No such room.")
    mode = mode_for_kind(room.kind)
    status = 200 if room.is_open else 403
    # rooms/room_<kind>.html extends rooms/room.html (the part every kind shares)
    return render(
        request, f"rooms/room_{room.kind}.html", {"room": room, "mode": mode}, status=status
    )
