"""The relayed payload of the signaling benchmarks: a Chrome-like audio+video offer (~5 KB)
numbered by its ``o=`` session version, so the receiver can tell order, losses and
duplicates after the clock stops."""

from __future__ import annotations

import json
import re

OFFER_PREFIX = '{"type":"offer"'  # how both our server and the raw relay serialise an offer
SIGNAL_TYPES = ("offer", "answer", "candidate")
SEQ_RE = re.compile(r"\no=- \d+ (\d+) IN ")

_AUDIO = [
    (111, "opus/48000/2", "minptime=10;useinbandfec=1"),
    (63, "red/48000/2", "111/111"),
    (9, "G722/8000", None),
    (0, "PCMU/8000", None),
    (8, "PCMA/8000", None),
    (13, "CN/8000", None),
    (110, "telephone-event/48000", None),
    (126, "telephone-event/8000", None),
]
_H264 = "level-asymmetry-allowed=1;packetization-mode={};profile-level-id={}"
_VIDEO = [
    (96, "VP8/90000", None),
    (98, "VP9/90000", "profile-id=0"),
    (100, "VP9/90000", "profile-id=2"),
    (102, "H264/90000", _H264.format(1, "42001f")),
    (104, "H264/90000", _H264.format(0, "42001f")),
    (106, "H264/90000", _H264.format(1, "42e01f")),
    (108, "H264/90000", _H264.format(0, "42e01f")),
    (112, "H264/90000", _H264.format(1, "4d001f")),
    (114, "H264/90000", _H264.format(1, "64001f")),
    (35, "AV1/90000", "level-idx=5;profile=0;tier=0"),
    (116, "red/90000", None),
]
_MSID = "2b5a1f0e-6c3d-4f8e-9a7b-1c2d3e4f5a6b"
_EXTMAPS = {
    "audio": [
        "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        "urn:ietf:params:rtp-hdrext:sdes:mid",
    ],
    "video": [
        "urn:ietf:params:rtp-hdrext:toffset",
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "urn:3gpp:video-orientation",
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
        "http://www.webrtc.org/experiments/rtp-hdrext/video-content-type",
        "http://www.webrtc.org/experiments/rtp-hdrext/video-timing",
        "http://www.webrtc.org/experiments/rtp-hdrext/color-space",
        "urn:ietf:params:rtp-hdrext:sdes:mid",
    ],
}


def _media(kind: str, mid: int, ssrc: int) -> list[str]:
    codecs = _AUDIO if kind == "audio" else _VIDEO
    payload_types: list[int] = []
    body: list[str] = []
    for pt, name, fmtp in codecs:
        payload_types.append(pt)
        body.append(f"a=rtpmap:{pt} {name}")
        if kind == "video":
            fbs = ("goog-remb", "transport-cc", "ccm fir", "nack", "nack pli")
            body += [f"a=rtcp-fb:{pt} {fb}" for fb in fbs]
        elif pt == 111:
            body.append(f"a=rtcp-fb:{pt} transport-cc")
        if fmtp:
            body.append(f"a=fmtp:{pt} {fmtp}")
        if kind == "video":
            payload_types.append(pt + 1)
            body += [f"a=rtpmap:{pt + 1} rtx/90000", f"a=fmtp:{pt + 1} apt={pt}"]
    lines = [
        f"m={kind} 9 UDP/TLS/RTP/SAVPF {' '.join(map(str, payload_types))}",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:Xk3f",
        "a=ice-pwd:9pJ1s0Hk2aQ8vZr4nT6yW3eB",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 4C:1F:83:2A:9E:57:D0:6B:FA:31:8C:E2:47:05:B9:6D:"
        "13:A8:72:C4:5E:F0:29:8B:D6:34:1A:E7:90:5C:B3:6F",
        "a=setup:actpass",
        f"a=mid:{mid}",
        *(f"a=extmap:{i} {uri}" for i, uri in enumerate(_EXTMAPS[kind], start=1)),
        "a=sendrecv",
        f"a=msid:{_MSID} {kind}-7d1e2f3a",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        *body,
    ]
    if kind == "video":
        lines.append(f"a=ssrc-group:FID {ssrc} {ssrc + 1}")
    for s in (ssrc, ssrc + 1) if kind == "video" else (ssrc,):
        lines += [f"a=ssrc:{s} cname:Zx7vQ2mN8pL4kR1t", f"a=ssrc:{s} msid:{_MSID} {kind}-7d1e2f3a"]
    return lines


def make_sdp(seq: int) -> str:
    """A Chrome-like audio+video offer (~5 KB); ``seq`` is the o= line's session version."""
    lines = [
        "v=0",
        f"o=- 4611731400430051336 {seq} IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=extmap-allow-mixed",
        f"a=msid-semantic: WMS {_MSID}",
        *_media("audio", 0, 3735928559),
        *_media("video", 1, 2882400001),
    ]
    return "\r\n".join(lines) + "\r\n"


def sdp_seq(text: str) -> int | None:
    found = SEQ_RE.search(text, 0, 200)
    return int(found.group(1)) if found else None


def offer_text(to: str, seq: int) -> str:
    """One client frame, serialised ahead of time (not timed)."""
    return json.dumps({"type": "offer", "to": to, "sdp": make_sdp(seq)}, separators=(",", ":"))
