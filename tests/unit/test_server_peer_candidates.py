"""Server peers send no STUN checks to private, loopback or mDNS addresses a client names
(SERVER_ROOM_ALLOW_PRIVATE_CANDIDATES off, the production default), in the offer or trickled.

A real aiortc client offers with its real host candidates (this machine's loopback and
private addresses); the server peer's ICE agent is read for what it would check.
"""

from __future__ import annotations

import pytest
from aiortc import RTCPeerConnection

from signaling.media.peer import ServerPeer, candidate_allowed, drop_private_candidates


def remote_candidates(peer: ServerPeer) -> list[str]:
    transport = peer.pc.getTransceivers()[0].receiver.transport.transport
    return [c.host for c in transport._connection.remote_candidates]  # aioice's agent


def trickled(address: str) -> dict:
    return {
        "candidate": f"candidate:9 1 udp 2122260223 {address} 54321 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }


async def offer_with_candidates() -> tuple[RTCPeerConnection, str]:
    client = RTCPeerConnection()
    client.addTransceiver("video", direction="sendrecv")
    await client.setLocalDescription(await client.createOffer())
    sdp = client.localDescription.sdp
    assert "a=candidate:" in sdp  # gathered host candidates, private or loopback here
    # as a browser that trickles: more candidates may follow the offer
    return client, sdp.replace("a=end-of-candidates\r\n", "")


@pytest.mark.parametrize("allowed", [False, True])
async def test_private_candidates_are_dropped_unless_allowed(settings, allowed):
    settings.SERVER_ROOM_ALLOW_PRIVATE_CANDIDATES = allowed
    client, sdp = await offer_with_candidates()
    server = ServerPeer("candidates-test")
    try:
        await server.answer(sdp)
        for address in ("127.0.0.1", "10.1.2.3", "192.168.1.23", "0123abcd.local"):
            await server.add_candidate(trickled(address))
        hosts = remote_candidates(server)
        if allowed:
            assert {"127.0.0.1", "10.1.2.3", "192.168.1.23"} <= set(hosts)
        else:
            assert hosts == []
    finally:
        await server.close()
        await client.close()


def test_only_global_addresses_pass_by_default(settings):
    settings.SERVER_ROOM_ALLOW_PRIVATE_CANDIDATES = False
    for host in (
        "127.0.0.1",
        "::1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.0.2",
        "169.254.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "fe80::1",
        "fd00::1",
        "x.local",
    ):
        assert not candidate_allowed(host), host
    for host in ("8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8"):
        assert candidate_allowed(host), host
    public = "a=candidate:2 1 udp 1 8.8.8.8 9 typ srflx\r\n"
    offer = f"v=0\r\na=candidate:1 1 udp 1 10.0.0.1 9 typ host\r\n{public}"
    assert drop_private_candidates(offer) == f"v=0\r\n{public}"
