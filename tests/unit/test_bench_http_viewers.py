"""The low-latency benchmarks' viewers and file watch (bench/http_viewers.py): playlist
reading, the next blocking reload, the HTTP/1.1 client against a real local socket, and
fragment times from growing CMAF files written here byte by byte."""

import asyncio
import os
import struct

import pytest

from bench.http_viewers import (
    FileWatch,
    HttpConnection,
    MediaPlaylist,
    ViewerStats,
    blocking_query,
    lags_ms,
    ll_rendition,
    parse_master,
    parse_media_playlist,
    standard_reload_s,
    standard_rendition,
    summary,
    unit_key,
    watching,
)

LL_PLAYLIST = """#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-PART-INF:PART-TARGET=0.2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6,CAN-SKIP-UNTIL=6
#EXT-X-MEDIA-SEQUENCE:10
#EXT-X-MAP:URI="init-stream0.m4s"
#EXTINF:1.000,
chunk-stream0-00011.m4s
#EXT-X-PART:DURATION=0.2,URI="chunk-stream0-00012.m4s",BYTERANGE="500@0",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.2,URI="chunk-stream0-00012.m4s",BYTERANGE="300"
#EXTINF:0.400,
chunk-stream0-00012.m4s
#EXT-X-PART:DURATION=0.2,URI="chunk-stream0-00013.m4s",BYTERANGE="450@0",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="chunk-stream0-00013.m4s",BYTERANGE-START=450
"""


def test_an_ll_playlist_gives_segments_parts_and_the_next_blocking_reload():
    playlist = parse_media_playlist(LL_PLAYLIST)
    assert [(s.msn, s.uri) for s in playlist.segments] == [
        (10, "chunk-stream0-00011.m4s"),
        (11, "chunk-stream0-00012.m4s"),
    ]
    second = playlist.segments[1].parts
    assert [(p.offset, p.length, p.independent) for p in second] == [
        (0, 500, True),
        (500, 300, False),  # no offset: on from the previous range of the same URI
    ]
    assert [(p.uri, p.offset) for p in playlist.pending_parts] == [("chunk-stream0-00013.m4s", 0)]
    assert playlist.preload_hint == ("chunk-stream0-00013.m4s", 450)
    assert (playlist.part_target, playlist.can_block_reload) == (0.2, True)
    assert (playlist.can_skip_until, playlist.part_hold_back) == (6.0, 0.6)
    assert playlist.next_part() == (12, 1)
    assert blocking_query(playlist) == "_HLS_msn=12&_HLS_part=1&_HLS_skip=YES"
    assert blocking_query(playlist, skip=False) == "_HLS_msn=12&_HLS_part=1"


def test_with_no_part_of_the_next_segment_yet_the_reload_asks_for_its_first():
    text = LL_PLAYLIST.split('#EXT-X-PART:DURATION=0.2,URI="chunk-stream0-00013')[0]
    assert parse_media_playlist(text).next_part() == (12, 0)


def test_a_delta_update_numbers_segments_after_the_skipped_ones():
    text = LL_PLAYLIST.replace(
        '#EXT-X-MAP:URI="init-stream0.m4s"\n', "#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n"
    )
    playlist = parse_media_playlist(text)
    assert [s.msn for s in playlist.segments] == [13, 14]
    assert playlist.next_part() == (15, 1)


def test_a_standard_playlist_has_no_blocking_reload_and_reloads_per_segment():
    text = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:1\n"
    text += "#EXTINF:0.5,\na.m4s\n#EXTINF:0.5,\nb.m4s\n#EXT-X-ENDLIST\n"
    playlist = parse_media_playlist(text)
    assert not playlist.can_block_reload and playlist.ended
    assert standard_reload_s(playlist, changed=True) == 0.5
    assert standard_reload_s(playlist, changed=False) == 0.25
    assert standard_reload_s(MediaPlaylist(), changed=True) == 1.0


def test_the_master_lists_the_top_rung_first_and_the_audio_rendition():
    text = """#EXTM3U
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="group_A1",NAME="audio_2",DEFAULT=YES,URI="media_2.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=320x180,CODECS="avc1.42c00d,mp4a.40.2",AUDIO="group_A1"
media_1.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=640x360,CODECS="avc1.42c01e,mp4a.40.2",AUDIO="group_A1"
media_0.m3u8
"""
    assert parse_master(text) == (["media_0.m3u8", "media_1.m3u8"], ["media_2.m3u8"])


def test_units_are_named_by_file_name_and_offset_and_lags_skip_unknown_ones():
    assert unit_key("run2/chunk-stream0-00003.m4s", 120) == ("chunk-stream0-00003.m4s", 120)
    refs = {("a", 0): 100.0}
    assert lags_ms({("a", 0): 130.0, ("b", 0): 5.0}, refs.get) == [30.0]
    assert lags_ms([(("a", 0), 150.0)], refs.get) == [50.0]
    assert summary([]) == {"n": 0}
    assert summary([10.0, 20.0, 30.0]) == {"n": 3, "p50_ms": 20.0, "p95_ms": 30.0, "max_ms": 30.0}


# --- HTTP/1.1 against a real socket ----------------------------------------------------------


async def serve(handler):
    """A local asyncio server answering each request with ``handler(path, headers)``'s
    raw bytes (or closing when it returns None)."""

    async def connection(reader, writer):
        while True:
            line = await reader.readline()
            if not line:
                break
            headers = {}
            while (header := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = header.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            answer = await handler(line.decode().split()[1], headers)
            if answer is None:
                break
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_keep_alive_content_length_chunked_and_a_reopen_after_close():
    async def main():
        async def handler(path, headers):
            if path == "/chunked":
                head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                return head + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            if path == "/close":
                return b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"
            body = headers.get("range", "plain").encode()
            return b"HTTP/1.1 206 Partial\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

        server, port = await serve(handler)
        conn = HttpConnection("127.0.0.1", port)
        first = await conn.request("/a", {"Range": "bytes=0-9"})
        second = await conn.request("/chunked")
        assert (first.status, first.body, second.body) == (206, b"bytes=0-9", b"abcde")
        assert conn.opened == 1  # kept alive
        assert (await conn.request("/close")).body == b"x"
        assert (await conn.request("/b")).body == b"plain"
        assert conn.opened == 2  # the server closed the first: a new connection
        conn.close()
        server.close()

    asyncio.run(main())


def test_a_request_over_its_time_limit_raises_and_drops_the_connection():
    async def main():
        release = asyncio.Event()

        async def handler(path, headers):
            if path == "/slow":
                await release.wait()
            return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

        server, port = await serve(handler)
        conn = HttpConnection("127.0.0.1", port)
        with pytest.raises(TimeoutError):
            await conn.request("/slow", limit_s=0.05)
        release.set()
        assert (await conn.request("/fast")).body == b"ok"
        assert conn.opened == 2  # the late answer to /slow is never read as /fast's
        conn.close()
        server.close()

    asyncio.run(main())


def test_an_ll_viewer_refuses_a_playlist_without_blocking_reload():
    async def main():
        async def handler(path, headers):
            body = b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:0.5,\na.m4s\n"
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

        server, port = await serve(handler)
        with pytest.raises(RuntimeError, match="CAN-BLOCK-RELOAD"):
            await ll_rendition(HttpConnection("127.0.0.1", port), "/m.m3u8", ViewerStats())
        server.close()

    asyncio.run(main())


# --- fragments on disk -------------------------------------------------------------------------


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def full_box(kind: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return box(kind, bytes([version]) + flags.to_bytes(3, "big") + payload)


def fragment(decode_time: int, durations: list[int]) -> bytes:
    """A moof (tfhd, tfdt v1, trun with sample durations) + mdat, as FFmpeg writes per part."""
    trun = full_box(
        b"trun",
        0,
        0x100,
        struct.pack(">I", len(durations)) + b"".join(struct.pack(">I", d) for d in durations),
    )
    traf = box(
        b"traf",
        full_box(b"tfhd", 0, 0, struct.pack(">I", 1))
        + full_box(b"tfdt", 1, 0, struct.pack(">Q", decode_time))
        + trun,
    )
    return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", 1)) + traf) + box(
        b"mdat", bytes(40)
    )


def init_segment(timescale: int) -> bytes:
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIII", 0, 0, timescale, 0) + bytes(4))
    return box(b"moov", box(b"trak", box(b"mdia", mdhd)))


def test_fragments_are_timed_as_they_complete_and_the_segment_when_renamed(tmp_path):
    (tmp_path / "init-stream0.m4s").write_bytes(init_segment(1000))
    tmp = tmp_path / "chunk-stream0-00001.m4s.tmp"
    first = box(b"styp", b"msdh\0\0\0\0") + fragment(0, [100, 100])
    second = fragment(200, [100, 100])
    watch = FileWatch(tmp_path, reps=(0,))
    tmp.write_bytes(first + second[:30])  # the second fragment only begun
    watch.scan()
    assert list(watch.units) == [("chunk-stream0-00001.m4s", 0)]
    with tmp.open("ab") as handle:
        handle.write(second[30:])
    watch.scan()
    key = ("chunk-stream0-00001.m4s", len(first))
    assert watch.units[key].decode_time == 200 and watch.units[key].duration == 200
    assert watch.units[key].written_ms >= watch.units[("chunk-stream0-00001.m4s", 0)].written_ms
    assert watch.capture_end_ms(key, capture_ms=1_000_000) == 1_000_400  # tfdt + duration
    os.replace(tmp, tmp_path / "chunk-stream0-00001.m4s")
    (tmp_path / "chunk-stream1-00001.m4s").write_bytes(first)  # another rep: not watched
    watch.scan()
    segment = watch.units[("chunk-stream0-00001.m4s", None)]
    assert (segment.decode_time, segment.duration) == (0, 400)
    assert not any(name.startswith("chunk-stream1") for name, _ in watch.units)
    assert watch.capture_end_ms(("nothing", 0), 0) is None


def test_the_watch_wakes_on_the_folders_changes(tmp_path):
    async def main():
        (tmp_path / "init-stream0.m4s").write_bytes(init_segment(1000))
        watch = FileWatch(tmp_path)
        task = asyncio.create_task(watch.run())
        await asyncio.sleep(0)
        (tmp_path / "chunk-stream0-00002.m4s.tmp").write_bytes(fragment(0, [200]))
        assert await watch.until(("chunk-stream0-00002.m4s", 0), within=10)
        watch.stop()
        await task

    asyncio.run(main())


# --- the viewer loops against a scripted origin ------------------------------------------------


def ll_text(parts: int) -> bytes:
    """Segment msn 10 complete, msn 11 being written with ``parts`` parts of 100 bytes."""
    lines = [
        "#EXTM3U",
        "#EXT-X-TARGETDURATION:1",
        "#EXT-X-PART-INF:PART-TARGET=0.2",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6",
        "#EXT-X-MEDIA-SEQUENCE:10",
        "#EXTINF:1.0,",
        "s10.m4s",
    ]
    lines += [
        f'#EXT-X-PART:DURATION=0.2,URI="s11.m4s",BYTERANGE="100@{100 * i}"' for i in range(parts)
    ]
    return ("\n".join(lines) + "\n").encode()


def test_an_ll_viewer_blocks_for_the_next_part_then_fetches_its_byte_range():
    async def main():
        seen = []
        enough = asyncio.Event()

        async def handler(path, headers):
            seen.append((path, headers.get("range")))
            if path.startswith("/s/m.m3u8"):
                wanted = int(path.split("_HLS_part=")[1]) + 1 if "_HLS_part=" in path else 1
                body = ll_text(wanted)
            else:
                body = bytes(100)
            if len(seen) >= 7:
                enough.set()
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

        server, port = await serve(handler)
        stats = ViewerStats()
        conn = HttpConnection("127.0.0.1", port)
        task = asyncio.create_task(ll_rendition(conn, "/s/m.m3u8", stats))
        await asyncio.wait_for(enough.wait(), 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        conn.close()
        server.close()
        await server.wait_closed()
        assert seen[:5] == [
            ("/s/m.m3u8", None),  # the live edge: part 0 of msn 11 is not fetched
            ("/s/m.m3u8?_HLS_msn=11&_HLS_part=1", None),
            ("/s/s11.m4s", "bytes=100-199"),
            ("/s/m.m3u8?_HLS_msn=11&_HLS_part=2", None),
            ("/s/s11.m4s", "bytes=200-299"),
        ]
        assert stats.requests["held playlist"] >= 2 and stats.requests["part"] >= 2
        assert ("s11.m4s", 100) in stats.listed and ("s11.m4s", 100) in stats.served
        assert ("s11.m4s", 0) not in stats.listed

    asyncio.run(main())


def test_a_standard_viewer_fetches_each_new_segment_whole():
    async def main():
        seen = []
        enough = asyncio.Event()

        async def handler(path, headers):
            seen.append(path)
            playlists = sum(1 for p in seen if p.endswith(".m3u8"))
            if path.endswith(".m3u8"):
                segments = [f"#EXTINF:0.05,\nseg{i}.m4s" for i in range(min(playlists, 4))]
                body = ("#EXTM3U\n#EXT-X-TARGETDURATION:1\n" + "\n".join(segments)).encode()
            else:
                body = b"media"
            if playlists >= 5:
                enough.set()
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

        server, port = await serve(handler)
        stats = ViewerStats()
        conn = HttpConnection("127.0.0.1", port)
        task = asyncio.create_task(standard_rendition(conn, "/s/m.m3u8", stats))
        await asyncio.wait_for(enough.wait(), 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        conn.close()
        server.close()
        await server.wait_closed()
        assert [p for p in seen if not p.endswith(".m3u8")] == [
            "/s/seg1.m4s",  # seg0 was listed at the start: the edge
            "/s/seg2.m4s",
            "/s/seg3.m4s",
        ]
        assert set(stats.served) == {("seg1.m4s", None), ("seg2.m4s", None), ("seg3.m4s", None)}
        assert conn.opened == 1

    asyncio.run(main())


def test_a_watch_in_its_own_thread_sees_what_is_written_meanwhile(tmp_path):
    (tmp_path / "init-stream0.m4s").write_bytes(init_segment(1000))
    key = ("chunk-stream0-00003.m4s", 0)
    with watching(tmp_path) as watch:
        (tmp_path / "chunk-stream0-00003.m4s.tmp").write_bytes(fragment(0, [200]))
        waited = asyncio.run_coroutine_threadsafe(watch.until(key, within=10), watch.loop)
        assert waited.result(timeout=15)
    assert key in watch.units
