"""WHIP/WHEP's pure parts: trickle fragments, the answer's candidate order, what a WHIP offer
must carry, the H.264 profile round trip, the ICE servers as Link headers."""

from __future__ import annotations

import pytest

from rtcsite.errors import ClientError
from streaming import webrtc_http
from streaming.sessions import order_candidates, parse_sdpfrag
from streaming.whip import check_whip_offer, h264_profiles, set_h264_profiles

ICE = (
    "a=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\n"
    "a=fingerprint:sha-256 DA:7B:57:DC:28:CE:04:4F:31:79:85:C4:31:67:EB:27:58:29:ED:77:2A:0D:"
    "24:AE:ED:AD:30:BC:BD:F1:9C:02\r\na=setup:actpass\r\n"
)


def section(kind: str, codecs: dict[int, str], mid: int, direction: str = "sendonly") -> str:
    pts = " ".join(str(pt) for pt in codecs)
    lines = [f"m={kind} 9 UDP/TLS/RTP/SAVPF {pts}", "c=IN IP4 0.0.0.0"]
    text = "\r\n".join(lines) + "\r\n" + ICE + f"a=mid:{mid}\r\na={direction}\r\na=rtcp-mux\r\n"
    for pt, codec in codecs.items():
        text += f"a=rtpmap:{pt} {codec}\r\n"
        if codec.startswith("H264"):
            text += f"a=fmtp:{pt} packetization-mode=1;profile-level-id=640c1f\r\n"
    return text


def offer(*sections: str) -> str:
    mids = " ".join(str(i) for i in range(len(sections)))
    head = f"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {mids}\r\n"
    return head + "".join(sections)


OPUS = {111: "opus/48000/2"}
H264 = {106: "H264/90000"}


def test_a_usable_offer_passes_with_or_without_audio():
    check_whip_offer(offer(section("audio", OPUS, 0), section("video", H264, 1)))
    check_whip_offer(offer(section("video", {96: "VP8/90000"}, 0)))


@pytest.mark.parametrize(
    ("sdp", "status", "code"),
    [
        ("hello", 400, "no-media"),
        ("v=0\r\nm=video nine UDP/TLS/RTP/SAVPF 96\r\n", 400, "bad-sdp"),
        (offer(section("audio", OPUS, 0)), 422, "no-video"),
        (offer(section("video", {98: "VP9/90000"}, 0)), 422, "unsupported-codec"),
        (offer(section("audio", {0: "PCMU/8000"}, 0), section("video", H264, 1)), 422, None),
        (offer(section("video", H264, 0, "recvonly")), 422, "bad-direction"),
        (offer(section("video", H264, 0), section("video", H264, 1)), 400, "too-many-tracks"),
        (offer(section("video", H264, 0).replace("a=ice-pwd", "a=x-pwd")), 400, "bad-sdp"),
    ],
)
def test_unusable_offers_are_refused_with_their_reason(sdp, status, code):
    with pytest.raises(ClientError) as caught:
        check_whip_offer(sdp)
    assert caught.value.status == status, caught.value
    assert code is None or caught.value.code == code
    assert caught.value.message


def test_h264_profiles_are_read_as_aiortcs_and_given_back_in_the_answer():
    sdp = offer(section("video", {106: "H264/90000", 96: "VP8/90000"}, 0))
    profiles = h264_profiles(sdp)
    assert profiles == {"106": "640c1f"}
    seen = set_h264_profiles(sdp, dict.fromkeys(profiles, "42e01f"))
    assert "profile-level-id=42e01f" in seen and "640c1f" not in seen
    assert set_h264_profiles(seen, profiles) == sdp


def test_trickle_fragment_parsing():
    fragment = parse_sdpfrag(
        "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\n"
        "a=mid:0\r\na=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host\r\n"
        "a=end-of-candidates\r\n"
    )
    assert (fragment.ufrag, fragment.pwd, fragment.end) == (
        "EsAw",
        "P2uYro0UCOQ4zxjKXaWCBui1",
        True,
    )
    assert fragment.candidates == ["candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host"]
    with pytest.raises(ClientError) as caught:
        parse_sdpfrag("GET / HTTP/1.1\r\n")
    assert caught.value.status == 400
    with pytest.raises(ClientError):
        parse_sdpfrag("a=candidate:1 1 udp 1 192.0.2.1 1 typ host\r\n" * 65)


def test_answer_candidates_lead_with_what_the_client_can_reach():
    answer = (
        "m=video 9 X 96\r\na=mid:0\r\n"
        "a=candidate:a 1 udp 2130706431 192.168.1.5 4000 typ host\r\n"
        "a=candidate:b 1 udp 2130706431 127.0.0.1 4001 typ host\r\n"
        "a=candidate:c 1 udp 2130706431 93.184.216.34 4002 typ host\r\n"
        "a=end-of-candidates\r\n"
    )

    def hosts(text):
        return [line.split()[4] for line in text.split("\r\n") if line.startswith("a=candidate")]

    assert hosts(order_candidates(answer, "127.0.0.1")) == [
        "127.0.0.1",
        "192.168.1.5",
        "93.184.216.34",
    ]
    assert hosts(order_candidates(answer, "198.51.100.9")) == [
        "93.184.216.34",
        "192.168.1.5",
        "127.0.0.1",
    ]
    assert order_candidates(answer, "").endswith("a=end-of-candidates\r\n")


def test_ice_servers_become_link_headers_with_derived_credentials(settings):
    from django.http import HttpResponse

    settings.ICE_SERVERS = [
        {"urls": ["stun:stun.example.org"]},
        {"urls": ["turn:turn.example.org?transport=udp"], "secret": "s3cret", "ttl": 60},
    ]
    response = HttpResponse()
    webrtc_http._link_ice_servers(response, "session-1")
    link = response["Link"]
    assert link.startswith('<stun:stun.example.org>; rel="ice-server", ')
    assert '<turn:turn.example.org?transport=udp>; rel="ice-server"; username="' in link
    assert ':session-1"; credential="' in link and 'credential-type="password"' in link
    assert "s3cret" not in link
