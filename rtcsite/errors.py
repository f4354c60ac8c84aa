"""The one family of errors a client is told about, over a socket or HTTP.

Services raise a ``ClientError`` (or one of the few subclasses below) when a request is
refused for a reason the client must hear: bad input, a limit, a state that does not allow
it. Each carries a stable ``code`` (documented in docs/protocol.md), a human ``message``,
the HTTP ``status`` an HTTP endpoint answers with, and ``details`` (extra JSON fields such
as ``seq`` or ``retry_after``). Sockets turn it into an ``error`` message
(``rtcsite.ws.consumer``) and views into a JSON response (``http_response``); neither
re-wraps it. Anything else a service raises is a bug, not a client error.
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """A refusal to report to the client: ``code``, ``message``, ``status``, ``details``."""

    code: str = "bad-message"
    status: int = 400
    #: False for refusals caused by the server's state (load), which a socket reports
    #: without counting them towards closing a misbehaving client
    client_fault: bool = True

    def __init__(
        self, message: str, *, code: str | None = None, status: int | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"

    def payload(self) -> dict[str, Any]:
        """The fields every transport sends: ``code``, ``message`` and the details."""
        return {"code": self.code, "message": self.message, **self.details}

    @property
    def retry_after(self) -> int | None:
        """Seconds to wait before retrying, for refusals that are about load or rate."""
        value = self.details.get("retry_after")
        return int(value) if isinstance(value, (int, float)) else None


class NotFound(ClientError):
    code, status = "not-found", 404


class Forbidden(ClientError):
    code, status = "forbidden", 403


class Conflict(ClientError):
    """The thing exists but its state does not allow this (closed, elsewhere, taken)."""

    code, status = "conflict", 409


class TooLarge(ClientError):
    """Over a size limit (message, chunk, frame); ``limit`` in the details where useful."""

    code, status = "too-large", 413


class RateLimited(ClientError):
    """The client sent too much too fast; it may retry after ``retry_after`` seconds."""

    code, status = "rate-limited", 429

    def __init__(self, message: str, **details: Any) -> None:
        details.setdefault("retry_after", 1)
        super().__init__(message, **details)


class Busy(ClientError):
    """The server is at a limit that is not this client's fault; retry later."""

    code, status = "busy", 503
    client_fault = False

    def __init__(self, message: str, **details: Any) -> None:
        details.setdefault("retry_after", 1)
        super().__init__(message, **details)


def http_response(exc: ClientError):
    """The JSON response for ``exc``: ``{"error": code, "message": ..., **details}``, its
    status, and ``Retry-After`` on 429/503."""
    from django.http import JsonResponse

    body = {"error": exc.code, "message": exc.message, **exc.details}
    return with_retry_after(JsonResponse(body, status=exc.status), exc)


def with_retry_after(response, exc: ClientError):
    """``response`` with ``Retry-After`` when ``exc`` asks the client to come back (429/503):
    JSON errors, re-rendered forms and the identity refusal page all say it the same way."""
    if exc.status in (429, 503):
        response["Retry-After"] = str(exc.retry_after or 1)
    return response
