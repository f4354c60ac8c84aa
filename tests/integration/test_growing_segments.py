"""Segments served while FFmpeg writes them (streaming/growing.py) and the LL-DASH MPD
(streaming/lldash.py), through a real Daphne, from a folder the real FFmpeg is writing
(tests/support/ll_stream.py).

Folders "as FFmpeg leaves them" (a ``.tmp`` that never grows: the encoder died) cover what
a live encoder cannot show on demand: waits that run out, segments long gone.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import signal
import statistics
import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mpegdash.parser import MPEGDASHParser

from streaming import follow
from streaming.fmp4 import fragments
from streaming.lowlatency import LowLatency, write_mode
from tests.support.daphne import DaphneServer
from tests.support.ll_stream import LLEncoder, ll_encoder
from tests.support.ports import free_port
from tests.support.topology import Nginx, NginxMissing, nginx_path, render_deploy_files

MPD_NS = {"mpd": "urn:mpeg:dash:schema:mpd:2011"}
SLUG = "live"


# --- a raw HTTP/1.1 client: what arrives when, chunk by chunk ----------------------------
@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    pieces: list[tuple[float, bytes]] = field(default_factory=list)  # (arrival, bytes)

    @property
    def body(self) -> bytes:
        return b"".join(piece for _, piece in self.pieces)


async def fetch(
    port: int,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    body: bool = True,
    on_piece=None,
    method: str = "GET",
) -> Reply:
    """GET ``path``; a chunked body is read chunk by chunk, each with its arrival time
    (``on_piece`` called with each)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
        lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        found: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            found[key.strip().lower()] = value.strip()
        reply = Reply(status, found)
        if not body:
            return reply
        if found.get("transfer-encoding") == "chunked":
            while size := int((await reader.readline()).split(b";")[0], 16):
                reply.pieces.append((time.monotonic(), await reader.readexactly(size)))
                await reader.readline()
                if on_piece is not None:
                    on_piece(reply.pieces[-1][1])
        else:
            reply.pieces.append((time.monotonic(), await reader.read()))
        return reply
    finally:
        writer.close()


def get(server: DaphneServer, path: str, headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def media(name: str, slug: str = SLUG) -> str:
    return f"/media/streams/{slug}/{name}"


def seg(rep: int, number: int) -> str:
    return f"chunk-stream{rep}-{number:05d}.m4s"


def writing_number(folder: Path, rep: int = 0) -> int:
    """The number of the segment FFmpeg is writing now (its .tmp exists)."""
    numbers = [int(p.name.split("-")[2][:5]) for p in folder.glob(f"chunk-stream{rep}-*.m4s.tmp")]
    assert numbers, sorted(os.listdir(folder))
    return max(numbers)


async def wait_final(folder: Path, name: str, within: float = 30) -> bytes:
    async def done():
        return (folder / name).read_bytes() if (folder / name).exists() else None

    data = await follow.wait_for(folder, done, within)
    assert data is not None, f"{name} never completed"
    return data


class DiskWrites:
    """When each size of a growing file was first seen on disk (inotify in this process,
    as the server sees it): for the write → client delay."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name
        self.seen: list[tuple[float, int]] = []

    async def run(self) -> None:
        tmp, final = self.folder / f"{self.name}.tmp", self.folder / self.name

        async def changed():
            for path in (tmp, final):
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                if not self.seen or size > self.seen[-1][1]:
                    self.seen.append((time.monotonic(), size))
                if path == final:
                    return True
                break
            return None

        while await follow.wait_for(self.folder, changed, 30) is None:
            pass

    def written_at(self, end: int) -> float:
        return next(when for when, size in self.seen if size >= end)

    def mid_fragment(self, final: bytes) -> int:
        """Sizes seen that end inside a fragment: reads a whole-fragment body held back
        (the lone ``styp`` FFmpeg writes on opening a segment not counted)."""
        ends = {f.offset + f.length for f in fragments(final)[0]}
        return sum(1 for _, size in self.seen if size not in ends and size > 24)


def delays_per_fragment(final: bytes, writes: DiskWrites, reply: Reply) -> list[float]:
    """For each fragment: when its last byte reached the client minus when it was on disk."""
    found, _ = fragments(final)
    received, arrivals = 0, []
    for when, piece in reply.pieces:
        received += len(piece)
        arrivals.append((when, received))
    return [
        next(when for when, size in arrivals if size >= f.offset + f.length)
        - writes.written_at(f.offset + f.length)
        for f in found
    ]


# --- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server():
    # held-request limits off here (every request comes from 127.0.0.1); their own test below
    server = DaphneServer(env={"STREAM_LL_HELD_PER_CLIENT": "0"}).start()
    yield server
    server.stop()


def streams(server: DaphneServer) -> Path:
    return Path(server.full_env()["MEDIA_ROOT"]) / "streams"


@pytest.fixture(scope="module")
def encoder(server):
    with ll_encoder(streams(server) / SLUG) as enc:
        enc.wait_for_segments(2)
        yield enc


def stalled_folder(root: Path, slug: str, *, segment: float = 0.5, part: float = 0.2) -> Path:
    """A low-latency folder as a dead encoder leaves it: segments 1-2 complete (long ago),
    segment 3's .tmp holding its styp and never growing."""
    folder = root / slug
    shutil.rmtree(folder, ignore_errors=True)
    write_mode(folder, LowLatency(part_target=part, segment_target=segment))
    for number in (1, 2):
        path = folder / seg(0, number)
        path.write_bytes(b"\0\0\0\x18stypmsdh\0\0\0\0msdhmsix")
        os.utime(path, (time.time() - 60, time.time() - 60))
    (folder / f"{seg(0, 3)}.tmp").write_bytes(b"\0\0\0\x18stypmsdh\0\0\0\0msdhmsix")
    return folder


# --- segments being written --------------------------------------------------------------
async def test_a_segment_being_written_arrives_in_pieces_and_equals_the_final_file(
    server, encoder: LLEncoder, capsys
):
    folder = encoder.folder
    number = writing_number(folder) + 1  # the next one: followed from its first byte
    writes = DiskWrites(folder, seg(0, number))
    watcher = asyncio.create_task(writes.run())
    try:
        reply = await fetch(server.port, media(seg(0, number)))
        final = await wait_final(folder, seg(0, number))
        await watcher
    finally:
        watcher.cancel()
    assert reply.status == 200, (number, reply, sorted(os.listdir(folder)))
    assert reply.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in reply.headers
    assert reply.headers["content-type"] == "video/iso.segment"
    assert reply.headers["cache-control"] == "no-cache"
    assert reply.headers["access-control-allow-origin"] == "*"
    assert reply.body == final
    found, complete = fragments(final)
    assert complete == len(final) and len(found) >= 3
    # In more than one piece, spread over the segment's writing: fragment by fragment.
    assert len(reply.pieces) >= len(found) - 1, [len(p) for _, p in reply.pieces]
    assert reply.pieces[-1][0] > reply.pieces[0][0]
    delays = delays_per_fragment(final, writes, reply)
    with capsys.disabled():
        print(
            f"\n[growing] fragment on disk → at the client (ms), idle: "
            f"{[round(d * 1000, 1) for d in delays]}; sizes seen mid-fragment: "
            f"{writes.mid_fragment(final)} of {len(writes.seen)}"
        )

    # The complete segment: today's path (a file with its length).
    status, headers, body = get(server, media(seg(0, number)))
    assert status == 200 and body == final and headers["Content-Length"] == str(len(final))


async def test_part_ranges_are_held_until_their_bytes_are_written(server, encoder: LLEncoder):
    folder = encoder.folder
    number = writing_number(folder, rep=1) + 1
    name = seg(1, number)
    first = await fetch(server.port, media(name), {"Range": "bytes=0-"})  # a preload hint
    assert first.status == 206, first
    assert first.headers["cache-control"] == "no-cache"  # later: bytes 0 to the end
    assert first.headers["content-range"] == f"bytes 0-{len(first.body) - 1}/*"
    second = await fetch(server.port, media(name), {"Range": f"bytes={len(first.body)}-"})
    assert second.status == 206, second
    start = len(first.body)
    assert second.headers["content-range"] == f"bytes {start}-{start + len(second.body) - 1}/*"
    explicit = await fetch(server.port, media(name), {"Range": f"bytes=10-{start + 99}"})
    assert explicit.status == 206, explicit
    assert explicit.headers["content-range"] == f"bytes 10-{start + 99}/*"
    assert explicit.headers["cache-control"] == "public, max-age=31536000, immutable"

    final = await wait_final(folder, name)
    found, _ = fragments(final)
    # exactly one fragment each: the parts LL-HLS lists, their bytes the segment's
    assert (0, len(first.body)) == (found[0].offset, found[0].length)
    assert (start, len(second.body)) == (found[1].offset, found[1].length)
    assert first.body + second.body == final[: found[1].offset + found[1].length]
    assert explicit.body == final[10 : start + 100]

    # Complete now: ranges as for any file.
    status, headers, body = get(server, media(name), {"Range": "bytes=0-99"})
    assert status == 206 and headers["Content-Range"] == f"bytes 0-99/{len(final)}"
    assert body == final[:100]


async def test_chunk_delay_with_load(server, encoder: LLEncoder, capsys):
    """One measured follower among 60 others (every rung, the next segments, part ranges
    and MPD reloads): the delay each fragment takes from disk to the client."""
    folder = encoder.folder
    number = writing_number(folder) + 1
    writes = DiskWrites(folder, seg(0, number))
    load = []
    for k in range(60):
        rep = k % 3
        if k % 4 == 3:
            load.append(fetch(server.port, media("manifest.mpd")))
        elif k % 4 == 2:
            load.append(fetch(server.port, media(seg(rep, number)), {"Range": "bytes=0-"}))
        else:
            load.append(fetch(server.port, media(seg(rep, number - k % 2))))
    watcher = asyncio.create_task(writes.run())
    others = asyncio.gather(*load)
    try:
        reply = await fetch(server.port, media(seg(0, number)))
        final = await wait_final(folder, seg(0, number))
        await watcher
        replies = await others
    finally:
        watcher.cancel()
    assert reply.status == 200 and reply.body == final
    assert all(r.status in (200, 206) for r in replies), [r.status for r in replies]
    delays = sorted(delays_per_fragment(final, writes, reply))
    with capsys.disabled():
        print(
            f"\n[growing] fragment on disk → at the client with 60 other requests (ms): "
            f"median {statistics.median(delays) * 1000:.1f}, max {delays[-1] * 1000:.1f}, "
            f"all {[round(d * 1000, 1) for d in delays]}"
        )


# --- bounds --------------------------------------------------------------------------------
def test_a_segment_that_stops_growing_times_out(server):
    folder = stalled_folder(streams(server), "stalled")
    started = time.monotonic()
    status, headers, body = get(server, media(seg(0, 3), "stalled"), {"Range": "bytes=0-9999"})
    assert status == 503 and headers["Retry-After"] == "1", (status, body)
    assert b"not written in time" in body
    assert time.monotonic() - started >= 1.5  # the bound: 3 x 0.5 s segments
    status, headers, body = get(server, media(seg(0, 3), "stalled"), {"Range": "bytes=24-"})
    assert status == 503, (status, body)
    # The next segment, which a dead encoder never opens: the same bound.
    status, _, body = get(server, media(seg(0, 4), "stalled"))
    assert status == 503, (status, body)
    # Followed whole: the body ends after the bound, at its last whole fragment (none:
    # the styp alone is no fragment).
    status, headers, body = get(server, media(seg(0, 3), "stalled"))
    assert status == 200 and body == b"", body
    assert (folder / f"{seg(0, 3)}.tmp").stat().st_size > 0


def test_far_future_past_and_standard_folders_are_404_at_once(server):
    folder = stalled_folder(streams(server), "gone")
    (folder / seg(0, 1)).unlink()
    for name in (seg(0, 1), seg(0, 5), seg(0, 99999), seg(0, 0), seg(4, 3)):
        status, headers, body = get(server, media(name, "gone"), {"Range": "bytes=0-"})
        assert status == 404, (name, status, body)
        assert headers["Content-Type"].startswith("text/plain")
    # A standard stream (no low-latency.json): a .tmp is never served.
    (folder / "low-latency.json").unlink()
    status, _, _ = get(server, media(seg(0, 3), "gone"))
    assert status == 404
    # Bad ranges on a growing segment: treated as no range, or answered.
    write_mode(folder, LowLatency(part_target=0.2, segment_target=0.5))
    status, _, body = get(server, media(seg(0, 3), "gone"), {"Range": "bytes=9-2"})
    assert status == 200  # an invalid range is ignored: the whole segment, followed
    status, _, body = get(server, media(seg(0, 3), "gone"), {"Range": "bytes=-10"})
    assert status == 503  # a suffix needs the end: held for the complete file


async def test_head_of_a_segment_being_written_answers_when_it_is_complete(
    server, encoder: LLEncoder
):
    """static/js/viewer-page.js waits for a finished segment with HEAD: not 200 before."""
    folder = encoder.folder
    number = writing_number(folder) + 1
    head = asyncio.ensure_future(
        fetch(server.port, media(seg(0, number)), method="HEAD", body=False)
    )
    final = await wait_final(folder, seg(0, number))
    reply = await head
    assert reply.status == 200, reply
    assert reply.headers["content-length"] == str(len(final))  # the complete file's


async def test_an_encoder_dying_mid_segment_leaves_whole_fragments(server):
    """The real encoder killed while a followed segment is being written (and a write cut
    short after it, as a dying writer may leave): the body ends, after the bound, with
    whole fragments only, a prefix of what is on disk."""
    with ll_encoder(streams(server) / "dies") as enc:
        enc.wait_for_segments(1)
        number = writing_number(enc.folder) + 1
        name = seg(0, number)

        def kill(_piece: bytes) -> None:  # on the first piece received
            if enc.process.poll() is None:
                os.killpg(enc.process.pid, signal.SIGKILL)
                enc.process.wait()
                done = (enc.folder / seg(0, 1)).read_bytes()
                first = fragments(done)[0][0]  # the styp, then a moof and its mdat
                with (enc.folder / f"{name}.tmp").open("ab") as out:  # half a fragment more
                    out.write(done[24 : first.length // 2])

        reply = await fetch(server.port, media(name, "dies"), on_piece=kill)
        on_disk = (enc.folder / f"{name}.tmp").read_bytes()
    assert reply.status == 200 and reply.headers.get("transfer-encoding") == "chunked"
    assert not (enc.folder / name).exists()  # never completed
    found, complete = fragments(reply.body)
    assert found and complete == len(reply.body), [len(p) for _, p in reply.pieces]
    assert on_disk.startswith(reply.body) and len(on_disk) > len(reply.body)
    assert fragments(on_disk)[1] == len(reply.body)  # every whole fragment was sent


async def test_held_requests_per_client_are_limited(daphne_factory):
    small = daphne_factory({"STREAM_LL_HELD_PER_CLIENT": "2"})
    stalled_folder(streams(small), "held", segment=10.0, part=0.2)
    path = media(seg(0, 3), "held")

    async def follower():
        reader, writer = await asyncio.open_connection("127.0.0.1", small.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return (await reader.readline()).split()[1], writer

    held = [await follower(), await follower()]
    assert [status for status, _ in held] == [b"200", b"200"]  # headers sent, bodies held
    refused = await fetch(small.port, path)
    assert refused.status == 429 and refused.headers["retry-after"] == "1"
    assert b"held open" in refused.body
    # Part requests count too.
    refused = await fetch(small.port, path, {"Range": "bytes=0-99999"})
    assert refused.status == 429
    # One leaves: its place is given back (when the server sees the disconnect).
    held[0][1].close()
    deadline = time.monotonic() + 30
    while (again := await follower())[0] != b"200":
        again[1].close()
        assert time.monotonic() < deadline, "the closed request's hold was never released"
    again[1].close()
    held[1][1].close()


# --- the LL-DASH MPD -------------------------------------------------------------------------
def test_low_latency_mpd(server, encoder: LLEncoder):
    status, headers, body = get(server, media("manifest.mpd"))
    assert status == 200 and headers["Content-Type"] == "application/dash+xml"
    assert headers["Cache-Control"] == "no-cache"
    root = ET.fromstring(body)
    assert root.get("type") == "dynamic"
    described = root.find("mpd:ServiceDescription", MPD_NS)
    latency = described.find("mpd:Latency", MPD_NS)
    assert int(latency.get("min")) < int(latency.get("target")) < int(latency.get("max"))
    assert int(latency.get("target")) == 800  # 4 parts of 0.2 s
    rate = described.find("mpd:PlaybackRate", MPD_NS)
    assert float(rate.get("min")) < 1 < float(rate.get("max"))
    timings = root.findall("mpd:UTCTiming", MPD_NS)
    assert len(timings) == 1
    assert timings[0].get("schemeIdUri") == "urn:mpeg:dash:utc:http-xsdate:2014"
    assert timings[0].get("value") == f"{server.url}/streams/time/"
    time_status, _, now = get(server, urllib.parse.urlsplit(timings[0].get("value")).path)
    assert time_status == 200 and now.decode().endswith("Z")  # ISO 8601, what Date.parse reads

    folder = encoder.folder
    for rep in root.iter("{urn:mpeg:dash:schema:mpd:2011}Representation"):
        template = rep.find("mpd:SegmentTemplate", MPD_NS)
        assert template.get("availabilityTimeOffset") == "0.8"
        assert template.get("availabilityTimeComplete") == "false"
        listed = sum(
            int(s.get("r", "0")) + 1 for s in template.findall("mpd:SegmentTimeline/mpd:S", MPD_NS)
        )
        last = int(template.get("startNumber")) + listed - 1
        # The last two listed: the one being written when the MPD was served (written or
        # complete now) and the next one (not complete yet).
        name = seg(int(rep.get("id")), last - 1)
        assert (folder / name).exists() or (folder / f"{name}.tmp").exists(), name
        assert not (folder / seg(int(rep.get("id")), last)).exists()

    # The repo's DASH checks (tests/integration/test_pipeline.py) read it as before.
    mpd = MPEGDASHParser.parse(body.decode())
    video, audio = mpd.periods[0].adaptation_sets
    assert [(r.width, r.height) for r in video.representations] == [(640, 360), (320, 180)]
    assert len(audio.representations) == 1
    for rep in [*video.representations, audio.representations[0]]:
        template = rep.segment_templates[0]
        assert int(template.start_number) >= 1  # a live window of the last 10
        assert template.segment_timelines[0].Ss


def test_ended_and_standard_mpds_are_served_as_written(server):
    folder = stalled_folder(streams(server), "ended")
    static = '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"/>\n'
    (folder / "manifest.mpd").write_text(static)
    assert get(server, media("manifest.mpd", "ended"))[2].decode() == static
    (folder / "low-latency.json").unlink()
    dynamic = static.replace("static", "dynamic")
    (folder / "manifest.mpd").write_text(dynamic)
    assert get(server, media("manifest.mpd", "ended"))[2].decode() == dynamic


# --- behind nginx (the shipped site file) -----------------------------------------------------
def test_behind_nginx_complete_segments_from_disk_growing_ones_from_the_app(tmp_path, capsys):
    """deploy/'s nginx site: a complete segment is nginx's own file answer, a segment being
    written reaches the app and comes back chunk by chunk (proxy_buffering off), a part of
    it (closed range) is nginx's from the .tmp while its preload hint is the app's, the MPD
    is the app's."""
    try:
        nginx_path()
    except NginxMissing as exc:
        pytest.fail(str(exc))
    port = free_port()
    deploy = render_deploy_files(
        tmp_path / "deploy",
        *("--server-name", "127.0.0.1", "--http", f"127.0.0.1:{port}"),
        *("--monitor", f"127.0.0.1:{free_port()}", "--web", "1", "--media", "1"),
        *("--data-dir", str(tmp_path), "--run-dir", str(tmp_path / "run")),
    )
    (tmp_path / "run").mkdir()
    app = DaphneServer(
        env={"MEDIA_ROOT": str(tmp_path / "media"), "STREAM_LL_HELD_PER_CLIENT": "0"},
        unix_socket=tmp_path / "run" / "web-1.sock",
        daphne=[str(Path(os.sys.executable).parent / "daphne"), "--proxy-headers"],
    )
    nginx = Nginx(deploy / "nginx" / "rtcsite.conf", tmp_path / "nginx", port=port)
    try:
        app.start()
        nginx.start()
        with ll_encoder(tmp_path / "media" / "streams" / SLUG) as enc:
            enc.wait_for_segments(1)
            number = writing_number(enc.folder) + 1
            writes = DiskWrites(enc.folder, seg(0, number))

            async def measured():
                watcher = asyncio.create_task(writes.run())
                try:
                    reply = await fetch(port, media(seg(0, number)))
                    await watcher
                finally:
                    watcher.cancel()
                return reply

            reply = asyncio.run(measured())
            final = (enc.folder / seg(0, number)).read_bytes()
            delays = delays_per_fragment(final, writes, reply)
            with capsys.disabled():
                print(
                    f"\n[growing] fragment on disk → at the client through nginx (ms): "
                    f"{[round(d * 1000, 1) for d in delays]}"
                )
            assert reply.status == 200 and reply.body == final, reply.headers
            assert reply.headers.get("transfer-encoding") == "chunked"
            assert "etag" not in reply.headers  # the app's answer
            assert len(reply.pieces) >= 2, [len(p) for _, p in reply.pieces]

            # A part (closed range) of the segment being written: nginx's own answer from
            # its .tmp; the preload hint's open range: the app's, held for its fragment.
            deadline = time.monotonic() + 10
            while True:  # a segment with a written part, as a playlist would list it
                number = writing_number(enc.folder)
                tmp = enc.folder / (seg(0, number) + ".tmp")
                try:
                    written, _ = fragments(tmp.read_bytes())
                except FileNotFoundError:
                    written = []
                if written or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            assert written, "no complete fragment in the segment being written within 10 s"
            first = written[0]
            last_byte = first.offset + first.length - 1
            part = asyncio.run(
                fetch(port, media(seg(0, number)), {"Range": f"bytes={first.offset}-{last_byte}"})
            )
            assert part.status == 206 and "etag" in part.headers  # nginx, from disk
            assert part.headers["content-type"] == "video/iso.segment"
            assert part.headers["cache-control"] == "no-cache"  # from the growing .tmp
            guarded = asyncio.run(
                fetch(
                    port,
                    media(seg(0, number)),
                    {"Range": f"bytes={first.offset}-{last_byte}", "If-Range": '"x"'},
                )
            )
            assert guarded.status == 206 and "etag" not in guarded.headers  # the app's
            assert guarded.body == part.body
            hint_start = written[-1].offset + written[-1].length
            hint = asyncio.run(
                fetch(port, media(seg(0, number)), {"Range": f"bytes={hint_start}-"})
            )
            assert hint.status == 206 and "etag" not in hint.headers  # the app's
            segment = asyncio.run(wait_final(enc.folder, seg(0, number)))
            assert part.body == segment[first.offset : last_byte + 1]
            assert hint.body == segment[hint_start : hint_start + len(hint.body)] and hint.body

            number = writing_number(enc.folder) - 1
            final = (enc.folder / seg(0, number)).read_bytes()
            complete = asyncio.run(fetch(port, media(seg(0, number))))
            assert complete.status == 200 and complete.body == final
            assert "etag" in complete.headers  # nginx's own static answer
            assert complete.headers["content-length"] == str(len(final))

            mpd = asyncio.run(fetch(port, media("manifest.mpd")))
            root = ET.fromstring(mpd.body)
            timing = root.find("mpd:UTCTiming", MPD_NS).get("value")
            assert timing == f"http://127.0.0.1:{port}/streams/time/"  # the origin's address
    finally:
        nginx.stop()
        app.stop()
