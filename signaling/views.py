"""Recordings go to staff only: one view, behind nginx an ``internal`` location."""

from __future__ import annotations

from urllib.parse import quote

from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from signaling.models import Recording


def may_download(user) -> bool:
    return user.is_active and user.is_staff and user.has_perm("signaling.view_recording")


@require_safe
def recording_file(request: HttpRequest, pk: int) -> HttpResponse:
    """``/recordings/<pk>/``: the WebM file of a finished recording, as an attachment.

    Anyone else gets the same 404 as for a missing recording (nothing to learn by probing).
    With ``RECORDINGS_X_ACCEL_PREFIX`` set the body is left to nginx (``X-Accel-Redirect``
    to an ``internal`` location over ``RECORDINGS_ROOT``): no Python process streams
    hundreds of megabytes.
    """
    if not may_download(request.user):
        raise Http404("No such recording.")
    recording = Recording.objects.filter(pk=pk).exclude(status=Recording.Status.RECORDING).first()
    if recording is None or not recording.file:
        raise Http404("No such recording.")
    name = recording.file.name
    download = f"recording-{recording.room_slug}-{recording.pk}.webm"
    if settings.RECORDINGS_X_ACCEL_PREFIX:
        if not recording.file.storage.exists(name):
            raise Http404("The file is gone.")
        response = HttpResponse(content_type="video/webm")
        prefix = settings.RECORDINGS_X_ACCEL_PREFIX.rstrip("/")
        response["X-Accel-Redirect"] = f"{prefix}/{quote(name)}"
        response["Content-Disposition"] = f'attachment; filename="{download}"'
        return response
    try:
        handle = recording.file.open("rb")
    except FileNotFoundError as exc:
        raise Http404("The file is gone.") from exc
    return FileResponse(handle, as_attachment=True, filename=download, content_type="video/webm")
