"""The WHIP/WHEP session base (streaming/sessions.py) with hostile input: offers aiortc only
refuses while answering, and trickled candidates (too many, or out of range)."""

from __future__ import annotations

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from rtcsite.errors import ClientError
from streaming.sessions import MAX_REMOTE_CANDIDATES, WebRtcSession, parse_sdpfrag


class Session(WebRtcSession):
    kind = "whep"


async def client_offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def fragment(candidates: list[str]) -> str:
    lines = ["a=ice-ufrag:x", "a=ice-pwd:y", "m=audio 9 UDP/TLS/RTP/SAVPF 0", "a=mid:0"]
    return "\r\n".join(lines + [f"a={c}" for c in candidates]) + "\r\n"


async def test_an_offer_aiortc_cannot_answer_is_a_400_not_a_traceback():
    client, sdp = await client_offer()
    session = Session("s")
    duplicate_mid = sdp.replace("a=mid:1", "a=mid:0")
    with pytest.raises(ClientError) as refused:
        await session.answer(duplicate_mid)
    assert refused.value.status in (400, 422) and session.closed
    await client.close()


async def test_trickled_candidates_are_checked_and_bounded(settings):
    settings.SERVER_ROOM_ALLOW_PRIVATE_CANDIDATES = True
    client, sdp = await client_offer()
    session = Session("s")
    await session.answer(sdp)
    ufrag = next(x for x in sdp.splitlines() if x.startswith("a=ice-ufrag:")).split(":")[1]
    pwd = next(x for x in sdp.splitlines() if x.startswith("a=ice-pwd:")).split(":")[1]

    def frag(candidates):
        text = fragment(candidates).replace("ice-ufrag:x", f"ice-ufrag:{ufrag}")
        return parse_sdpfrag(text.replace("ice-pwd:y", f"ice-pwd:{pwd}"))

    # a port out of range would close the session's UDP socket; other components are not ours
    await session.add_candidates(frag(["candidate:1 1 udp 1 127.0.0.1 99999 typ host"]))
    await session.add_candidates(frag(["candidate:2 2 udp 1 127.0.0.1 5000 typ host"]))
    assert session.remote_candidates == 0
    for port in range(MAX_REMOTE_CANDIDATES):
        await session.add_candidates(
            frag([f"candidate:{port} 1 udp 1 127.0.0.1 {6000 + port} typ host"])
        )
    with pytest.raises(ClientError) as refused:
        await session.add_candidates(frag(["candidate:99 1 udp 1 127.0.0.1 7000 typ host"]))
    assert (refused.value.code, refused.value.status) == ("too-many-candidates", 422)
    await session.close("test over")
    await client.close()
