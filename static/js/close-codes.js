// Application close codes of every socket: the mirror of rtcsite/ws/codes.py's CloseCode
// (docs/protocol.md, "Close codes"; tests/unit/test_close_codes.py keeps the two equal).
// Pages and modules name these; no bare 40xx number elsewhere.

export const CloseCode = Object.freeze({
  TOKEN_MISSING: 4001,
  TOKEN_INVALID: 4002,
  TOKEN_EXPIRED: 4003,
  NOT_FOUND: 4004,
  FORBIDDEN: 4005,
  TOO_MANY_ERRORS: 4008,
  ROOM_FULL: 4009,
  PROTOCOL_VERSION: 4010,
  SERVER_SHUTDOWN: 4011,
  WRONG_PROCESS: 4012,
  WRONG_PATH: 4013,
  SERVICE_UNAVAILABLE: 4014,
});

// Reconnecting cannot help: no such room, closed room, room full, page too old for the
// server, a room of the other kind on this path.
export const FINAL_CLOSE_CODES = new Set([
  CloseCode.NOT_FOUND,
  CloseCode.FORBIDDEN,
  CloseCode.ROOM_FULL,
  CloseCode.PROTOCOL_VERSION,
  CloseCode.WRONG_PATH,
]);

// Fetch a fresh token before the next attempt.
export const TOKEN_CLOSE_CODES = new Set([
  CloseCode.TOKEN_MISSING,
  CloseCode.TOKEN_INVALID,
  CloseCode.TOKEN_EXPIRED,
]);
