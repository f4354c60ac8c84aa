"""Application close codes of every socket (docs/protocol.md, "Close codes").

RFC 6455 reserves 4000-4999 for applications. ``static/js/close-codes.js`` mirrors this
enum for the pages (a unit test compares them): no page or module uses a bare number.
"""

from __future__ import annotations

from enum import IntEnum

PROTOCOL_VERSION = 1


class CloseCode(IntEnum):
    TOKEN_MISSING = 4001
    TOKEN_INVALID = 4002
    TOKEN_EXPIRED = 4003
    NOT_FOUND = 4004
    FORBIDDEN = 4005
    TOO_MANY_ERRORS = 4008
    ROOM_FULL = 4009
    PROTOCOL_VERSION = 4010
    SERVER_SHUTDOWN = 4011
    WRONG_PROCESS = 4012
    #: a room of one kind opened on the other kind's path (mesh vs media)
    WRONG_PATH = 4013
    #: the room service (Redis) is away: reconnect with backoff (docs/protocol.md)
    SERVICE_UNAVAILABLE = 4014


TOKEN_CLOSE_CODES = {
    "token-missing": CloseCode.TOKEN_MISSING,
    "token-invalid": CloseCode.TOKEN_INVALID,
    "token-expired": CloseCode.TOKEN_EXPIRED,
}
