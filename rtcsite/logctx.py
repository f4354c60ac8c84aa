"""Who a log line is about: the room, peer, connection, stream and user of the code running.

A context variable holds one small dict per connection (``rtcsite.observe`` sets it where a
socket or request starts; the consumer adds the peer and user once it knows them). Tasks
started by a connection copy the context, so their lines carry it too; a stream pipeline's
tasks get their own (``task_context``), not the request that happened to start them. A
logging filter copies the fields onto every record: the plain format prints them, the JSON
format (``LOG_FORMAT=json``, python-json-logger) emits them as keys for log shippers.

Imported by settings (``LOGGING``), so nothing here imports Django.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections import deque
from typing import Any

#: the fields a record may carry, in the order the plain format prints them
FIELDS = ("room", "stream", "peer", "user", "conn")

_fields: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "rtcsite_log_fields", default=None
)


def start(**fields: str) -> None:
    """A new connection or request: fresh fields for this task (and what it starts)."""
    _fields.set(dict(fields))


def bind(**fields: Any) -> None:
    """Add fields to the current connection's set: seen by its tasks already running too
    (they share the dict), so a socket's channel-layer task names the peer once joined."""
    current = _fields.get()
    if current is None:
        current = {}
        _fields.set(current)
    current.update((key, str(value)) for key, value in fields.items() if value is not None)


def current() -> dict[str, str]:
    return dict(_fields.get() or {})


def task_context(**fields: str) -> contextvars.Context:
    """A context for a long-lived task about one thing (a stream's pipeline): its own fields,
    not those of whichever request started it (``create_task(..., context=...)``)."""
    context = contextvars.copy_context()
    context.run(_fields.set, dict(fields))
    return context


def stream_context() -> contextvars.Context:
    """``task_context`` keeping only the stream the current request names (a pipeline's
    tasks are started by whichever ingest request comes first: its ``conn`` is not theirs)."""
    stream = (_fields.get() or {}).get("stream")
    return task_context(stream=stream) if stream else task_context()


class ContextFilter(logging.Filter):
    """Copies the context's fields onto each record (``record.room`` ...). On handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _fields.get()
        if fields:
            for key, value in fields.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        return True


class PlainFormatter(logging.Formatter):
    """``time LEVEL logger [room=... peer=... conn=...]: message``."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [f"{key}={getattr(record, key)}" for key in FIELDS if hasattr(record, key)]
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return super().format(record)


#: records at WARNING and above kept per process for the admin health page
RECENT_ERRORS: deque[dict[str, Any]] = deque(maxlen=20)


class RecentErrorsHandler(logging.Handler):
    """Keeps this process's latest warnings and errors (one line each) for the staff health
    page (rtcsite.health), so a failing stream or Redis blip is seen without the log."""

    def __init__(self, level: int = logging.WARNING) -> None:
        super().__init__(level)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the template
            message = str(record.msg)
        RECENT_ERRORS.append(
            {
                "at": record.created or time.time(),
                "level": record.levelname,
                "logger": record.name,
                "message": message.splitlines()[0][:300] if message else "",
                **{key: getattr(record, key) for key in FIELDS if hasattr(record, key)},
            }
        )
