"""WebRTC sessions over HTTP (WHIP ingest, WHEP playback): the contract both follow, the
per-process registry their resource URLs are looked up in, and the SDP pieces both need.

A session is created by ``POST /streams/<slug>/whip/`` (or ``whep/``) and lives at
``…/<id>/`` until ``DELETE``, ICE failure or its own end (streaming/webrtc_http.py). Its id
is ``secrets.token_urlsafe``: the resource URL is the only capability PATCH and DELETE need
besides the bearer token (RFC 9725 §6: unguessable, or anyone could end any session). The
server is always the answerer; aiortc gathers all of its candidates before answering, so
only the client trickles (PATCH ``application/trickle-ice-sdpfrag``). aiortc cannot restart
ICE: a restart (``If-Match: "*"``) is answered 422, as RFC 9725 §4.3.1 asks of a server that
trickles but does not restart.

Sessions live in the process whose event loop runs their peer: a lookup that misses (unknown
id, another stream's or another kind's id) is a 404, the same answer for each, so a resource
URL reveals nothing about the others. Registering and removing never await.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from dataclasses import dataclass, field
from typing import ClassVar

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.exceptions import OperationError
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp
from django.urls import reverse

from rtcsite.errors import ClientError, NotFound
from signaling.media.peer import (
    candidate_allowed,
    check_offer,
    drop_private_candidates,
    rtc_configuration,
)

logger = logging.getLogger(__name__)

KINDS = ("whip", "whep")
SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"

_sessions: dict[str, WebRtcSession] = {}


# --- SDP pieces ----------------------------------------------------------------------------
def check_stream_offer(
    sdp: str,
    *,
    where: str,
    client_sends: bool,
    codecs: dict[str, tuple[frozenset[str], str]],
    no_video: str,
) -> aiortc_sdp.SessionDescription:
    """Refuse an offer a WHIP publication or a WHEP viewer cannot use: malformed (400, as
    ``check_offer``), no video, a section going the wrong way, or none of the codecs the
    server takes for its kind (422). ``codecs``: per kind, the codec names taken (lower
    case, e.g. ``h264``) and how to say them in the refusal."""
    check_offer(sdp, where=where)
    parsed = aiortc_sdp.SessionDescription.parse(sdp)
    active = [m for m in parsed.media if m.port != 0]
    if not any(m.kind == "video" for m in active):
        raise ClientError(f"The offer has no video: {no_video}", code="no-video", status=422)
    wrong, who = ("recvonly", "a WHIP publisher sends (sendonly or sendrecv)")
    if not client_sends:
        wrong, who = ("sendonly", "a WHEP viewer receives (recvonly or sendrecv)")
    for media in active:
        if media.direction in (wrong, "inactive"):
            raise ClientError(
                f"The offer's {media.kind} is {media.direction}: {who}.",
                code="bad-direction",
                status=422,
            )
        taken, said = codecs[media.kind]
        names = {codec.mimeType.split("/")[-1].lower() for codec in media.rtp.codecs}
        names.discard("rtx")
        if not names & taken:
            raise ClientError(
                f"The offer's {media.kind} is {', '.join(sorted(names)) or 'no codec'}: "
                f"this server {said}.",
                code="unsupported-codec",
                status=422,
            )
    return parsed


@dataclass
class IceFragment:
    """An ``application/trickle-ice-sdpfrag`` body (RFC 8840) as a session uses it."""

    ufrag: str | None = None
    pwd: str | None = None
    candidates: list[str] = field(default_factory=list)  # "candidate:…" attribute values
    end: bool = False


MAX_FRAGMENT_CANDIDATES = 64
#: trickled candidates a session takes in all (every one is paired and STUN-checked)
MAX_REMOTE_CANDIDATES = 32
#: seconds from the answer for ICE to connect before the session is closed
CONNECT_TIMEOUT = 30.0


def parse_sdpfrag(text: str) -> IceFragment:
    """Parse a trickle fragment; ``ClientError`` (400) for anything that is not one.

    Candidates of every ``m=`` section are kept together: a WHIP/WHEP session is one
    BUNDLE (RFC 9725 §4.5.1), so they all belong to its one ICE transport.
    """
    fragment = IceFragment()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("a=ice-ufrag:"):
            fragment.ufrag = line.split(":", 1)[1].strip()
        elif line.startswith("a=ice-pwd:"):
            fragment.pwd = line.split(":", 1)[1].strip()
        elif line.startswith("a=candidate:"):
            fragment.candidates.append(line[2:])
        elif line == "a=end-of-candidates":
            fragment.end = True
        elif line.startswith(("m=", "a=", "c=")) and "=" in line[:2]:
            continue  # a=mid, a=ice-options, the m= line: nothing to do with them
        else:
            raise ClientError(
                f"Line {number} of the fragment is not SDP ({line[:40]!r}).", code="bad-sdpfrag"
            )
    if len(fragment.candidates) > MAX_FRAGMENT_CANDIDATES:
        raise ClientError(
            f"At most {MAX_FRAGMENT_CANDIDATES} candidates per PATCH.", code="bad-sdpfrag"
        )
    return fragment


def ice_credentials(sdp: str) -> tuple[str | None, str | None]:
    """The first ``a=ice-ufrag`` / ``a=ice-pwd`` of a description (BUNDLE: one pair)."""
    ufrag = pwd = None
    for line in sdp.splitlines():
        if ufrag is None and line.startswith("a=ice-ufrag:"):
            ufrag = line.split(":", 1)[1].strip()
        elif pwd is None and line.startswith("a=ice-pwd:"):
            pwd = line.split(":", 1)[1].strip()
    return ufrag, pwd


def _candidate_rank(line: str, client_loopback: bool) -> int:
    fields = line.split()
    try:
        address = ipaddress.ip_address(fields[4])
    except (IndexError, ValueError):
        return 3
    if fields[2].lower() != "udp":
        return 3
    if client_loopback:
        return 0 if address.is_loopback else 1
    if address.is_loopback:
        return 2
    return 0 if address.is_global else 1


def order_candidates(sdp: str, client: str) -> str:
    """The answer with its candidates reordered for clients that try only the first one.

    FFmpeg's WHIP muxer (and other minimal clients) use the first UDP host candidate of
    the answer and no other. aiortc lists interfaces in the system's order (the machine's
    LAN address before 127.0.0.1); a client on this machine (HTTP from loopback) gets the
    loopback candidate first, anyone else the public ones first. Full ICE clients try all
    of them anyway; the order only changes which pair is checked first.
    """
    try:
        client_loopback = ipaddress.ip_address(client).is_loopback
    except ValueError:
        client_loopback = False
    lines = sdp.split("\r\n")
    out: list[str] = []
    run: list[str] = []
    for line in [*lines, ""]:
        if line.startswith("a=candidate:"):
            run.append(line)
            continue
        if run:
            out.extend(sorted(run, key=lambda c: _candidate_rank(c[2:], client_loopback)))
            run = []
        out.append(line)
    return "\r\n".join(out[:-1])


# --- the contract --------------------------------------------------------------------------
class WebRtcSession:
    """One WHIP publication or WHEP viewer: an aiortc peer answering one HTTP client.

    Subclasses set ``kind`` and implement ``check(offer)`` (refuse what they cannot serve,
    before any peer work), ``accept()`` (called between taking the offer and answering:
    go live, attach tracks, take a place under a cap; may raise ``ClientError``) and
    ``ended(reason)`` (release what ``accept`` took; called once, by ``close``). The base
    does the rest: answer (candidates ordered for ``address``), trickle, teardown on
    ICE failure, registration.
    """

    kind: ClassVar[str] = ""

    def __init__(self, slug: str, address: str = "") -> None:
        self.id = secrets.token_urlsafe(24)
        self.slug = slug
        self.address = address
        self.etag = f'"{secrets.token_urlsafe(12)}"'
        self.closed = False
        self.remote_candidates = 0
        self.reason = ""
        self.pc = RTCPeerConnection(configuration=rtc_configuration())
        self._tasks: set[asyncio.Task] = set()
        self._close_lock = asyncio.Lock()
        self.pc.on("connectionstatechange", self._on_connection_state)

    # --- for subclasses ----------------------------------------------------------------
    def check(self, offer: str) -> str:
        """Refuse an offer this kind cannot serve; return the offer aiortc should read."""
        return offer

    async def accept(self) -> None:
        """The offer is set (transceivers exist); take what the session needs."""

    async def ended(self, reason: str) -> None:
        """Release what ``accept`` took."""

    def restore(self, answer: str) -> str:
        """The answer as the client should read it (undo what ``check`` rewrote)."""
        return answer

    # --- the contract ------------------------------------------------------------------
    @property
    def location(self) -> str:
        return reverse(f"streaming:{self.kind}-session", args=[self.slug, self.id])

    async def answer(self, offer: str) -> str:
        """Take the client's offer; the answer SDP (all server candidates in it). The
        session is registered once answered; any refusal closes it first."""
        try:
            sdp = drop_private_candidates(self.check(offer))
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except OperationError as exc:
                raise ClientError(
                    f"No codec in common ({exc}).", code="unsupported-codec", status=422
                ) from exc
            except ClientError:
                raise
            except Exception as exc:  # aiortc raises ValueError/KeyError/... on odd offers
                raise ClientError(f"The offer was refused ({exc!s:.120}).", code="bad-sdp") from exc
            await self.accept()
            try:
                await self.pc.setLocalDescription(await self.pc.createAnswer())
            except Exception as exc:  # e.g. two sections with one mid: aiortc's ValueError
                raise ClientError(f"The offer was refused ({exc!s:.120}).", code="bad-sdp") from exc
            self.spawn(self._connect_deadline(), "connect deadline")
        except BaseException:
            await self.close("refused")
            raise
        if self.closed:  # ICE or the stream ended while answering
            raise ClientError(f"The session ended: {self.reason}.", code="closed", status=409)
        register(self)
        return order_candidates(self.restore(self.pc.localDescription.sdp), self.address)

    async def add_candidates(self, fragment: IceFragment) -> None:
        """Trickled client candidates (RFC 8840). Candidates of addresses the server may
        not probe (``candidate_allowed``) or that do not parse are dropped silently, as
        RFC 9725 §4.3.1 asks; a fragment for other ICE credentials is an ICE restart."""
        ufrag, pwd = ice_credentials(self.pc.remoteDescription.sdp)
        if (fragment.ufrag and fragment.ufrag != ufrag) or (fragment.pwd and fragment.pwd != pwd):
            raise ClientError(
                "ICE restarts are not supported: DELETE this session and POST a new offer.",
                code="ice-restart",
                status=422,
            )
        for text in fragment.candidates:
            try:
                candidate: RTCIceCandidate = candidate_from_sdp(text.removeprefix("candidate:"))
            except Exception:
                continue
            usable = (
                0 < candidate.port < 65536
                and candidate.component == 1
                and candidate.protocol.lower() in ("udp", "tcp")
            )
            if not usable or not candidate_allowed(candidate.ip):
                continue  # a port out of range would close the session's UDP socket
            if self.remote_candidates >= MAX_REMOTE_CANDIDATES:
                raise ClientError(
                    f"At most {MAX_REMOTE_CANDIDATES} candidates per session.",
                    code="too-many-candidates",
                    status=422,
                )
            self.remote_candidates += 1
            candidate.sdpMLineIndex = 0  # BUNDLE: the first m= section owns the transport
            await self.pc.addIceCandidate(candidate)
        if fragment.end:
            await self.pc.addIceCandidate(None)

    async def _connect_deadline(self) -> None:
        """ICE never connected (a client that posted an offer and went, or trickles no end
        of candidates): aiortc would keep checking, and the session its places, forever."""
        await asyncio.sleep(CONNECT_TIMEOUT)
        if self.pc.connectionState != "connected" and not self.closed:
            await self.close(f"ICE did not connect within {CONNECT_TIMEOUT:g} s")

    async def close(self, reason: str) -> None:
        """End the session: its peer (ICE/DTLS, sockets, codec threads), its tasks, and
        whatever ``accept`` took (``ended``). Idempotent."""
        async with self._close_lock:
            if self.closed:
                return
            self.closed = True
            self.reason = reason
            discard(self)
        logger.info("%s %s of %s: closed (%s)", self.kind, self.id[:8], self.slug, reason)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        try:
            await self.pc.close()
        except Exception:  # a half-negotiated connection must still be released
            logger.exception("%s %s: error while closing its peer", self.kind, self.id[:8])
        await self.ended(reason)

    # --- internals ---------------------------------------------------------------------
    def spawn(self, coro, what: str) -> asyncio.Task:
        """Every task of a session starts here: referenced until done, cancelled by close."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.kind} {self.slug} {what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        logger.info("%s %s of %s: connection %s", self.kind, self.id[:8], self.slug, state)
        if state in ("failed", "closed") and not self.closed:
            self.spawn(self.close(f"the WebRTC connection {state}"), "close")


# --- registry ------------------------------------------------------------------------------
def register(session: WebRtcSession) -> None:
    _sessions[session.id] = session


def discard(session: WebRtcSession) -> None:
    if _sessions.get(session.id) is session:
        del _sessions[session.id]


def lookup(kind: str, slug: str, session_id: str) -> WebRtcSession:
    """The open session at ``/streams/<slug>/<kind>/<session_id>/``; ``NotFound`` for an
    unknown id and for an id of another stream or kind alike."""
    session = _sessions.get(session_id)
    if session is None or session.kind != kind or session.slug != slug or session.closed:
        raise NotFound(f"No such {kind.upper()} session (it ended, or never existed here).")
    return session


def sessions(kind: str | None = None, slug: str | None = None) -> list[WebRtcSession]:
    """This process's open sessions, of one kind and stream if given."""
    return [
        s
        for s in _sessions.values()
        if (kind is None or s.kind == kind) and (slug is None or s.slug == slug)
    ]
