"""Validation of client signaling messages (offer / answer / candidate).

Every field's type and size is checked before anything is relayed; the result is a new
dict holding only the known fields, so nothing a client adds (``from``, extra keys,
nested junk) ever reaches another peer. Strings arrive here as valid Unicode (the socket
base refuses lone surrogates when it parses a message), so whatever is cleaned here can
cross the channel layer between processes (msgpack encodes strings as UTF-8).
"""

from __future__ import annotations

from typing import Any

from presence.membership import PEER_ID_RE
from rtcsite.errors import ClientError

MAX_SDP_CHARS = 48 * 1024  # a 3-peer audio+video SDP is ~6-10 KB; leave room for codecs
MAX_CANDIDATE_CHARS = 1024
MAX_MID_CHARS = 32


def clean_peer_id(value: Any) -> str:
    if not isinstance(value, str) or not PEER_ID_RE.fullmatch(value):
        raise ClientError("'to' must be a peer id from welcome/peer-joined.")
    return value


def clean_description(content: dict[str, Any], kind: str) -> dict[str, Any]:
    """``offer`` / ``answer``: ``{"to", "sdp"}``; the SDP must look like one."""
    sdp = content.get("sdp")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise ClientError(f"{kind} needs an 'sdp' string starting with 'v=0'.")
    if len(sdp) > MAX_SDP_CHARS:
        raise ClientError(f"SDP is limited to {MAX_SDP_CHARS} characters.", code="too-large")
    cleaned: dict[str, Any] = {"type": kind, "sdp": sdp}
    if "restart" in content:
        if not isinstance(content["restart"], bool):
            raise ClientError("'restart' must be a boolean.")
        cleaned["restart"] = content["restart"]
    return cleaned


def clean_candidate(content: dict[str, Any]) -> dict[str, Any]:
    """``candidate``: an RTCIceCandidateInit, or ``null`` for end-of-candidates."""
    candidate = content.get("candidate", ...)
    if candidate is ...:
        raise ClientError("candidate needs a 'candidate' field (or null).")
    if candidate is None:
        return {"type": "candidate", "candidate": None}
    if not isinstance(candidate, dict):
        raise ClientError("'candidate' must be an object or null.")
    text = candidate.get("candidate")
    if not isinstance(text, str) or len(text) > MAX_CANDIDATE_CHARS:
        raise ClientError("'candidate.candidate' must be a short string.")
    if text and not text.startswith(("candidate:", "a=candidate:")):
        raise ClientError("'candidate.candidate' is not an ICE candidate.")
    mid = candidate.get("sdpMid")
    if mid is not None and (not isinstance(mid, str) or len(mid) > MAX_MID_CHARS):
        raise ClientError("'candidate.sdpMid' must be a short string or null.")
    index = candidate.get("sdpMLineIndex")
    if index is not None and (
        not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 64
    ):
        raise ClientError("'candidate.sdpMLineIndex' must be 0-63 or null.")
    ufrag = candidate.get("usernameFragment")
    if ufrag is not None and (not isinstance(ufrag, str) or len(ufrag) > 256):
        raise ClientError("'candidate.usernameFragment' must be a string.")
    return {
        "type": "candidate",
        "candidate": {
            "candidate": text,
            "sdpMid": mid,
            "sdpMLineIndex": index,
            "usernameFragment": ufrag,
        },
    }
