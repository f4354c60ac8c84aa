"""Lobby page ``/`` vs a static file of the same byte size, both from the embedded Daphne.

The static file is the floor of what this server stack can do per request for that many
bytes (ASGI + WhiteNoise, no template, no DB); the ratio lobby/static says how much of the
budget page rendering (session read, room queries, template, token signing) costs. Both run
in the same process, alternately, so machine noise hits both alike; we report medians.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from bench.support import EMBEDDED_ENV, HOST, REPO, daphne_site, percentile

NAME = "lobby_http"

STATIC_FILE = REPO / "static" / "bench" / "lobby-size.html"
TARGETS = {"static": "/static/bench/lobby-size.html", "lobby": "/"}


@dataclass(frozen=True)
class Params:
    """Load shape; ``rounds`` alternations of static then lobby after one warm-up each."""

    concurrency: int = 8
    duration_s: float = 5.0
    warmup_s: float = 1.0
    rounds: int = 3


FULL = Params()
QUICK = Params(duration_s=1.0, warmup_s=0.5, rounds=2)


@dataclass(frozen=True)
class Measurement:
    """One timed load run against one URL."""

    requests: int
    elapsed_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    body_bytes_min: int | None = None
    body_bytes_max: int | None = None
    client_cpu_s: float | None = None  # near elapsed_s would mean the client is the limit


# --- static twin ----------------------------------------------------------------------------


def filler_html(size: int) -> bytes:
    """Exactly ``size`` bytes of plain HTML, so only the byte count matches the lobby."""
    head = b"<!doctype html><title>bench</title><p>"
    if size <= len(head):
        return b"x" * size
    return head + b"x" * (size - len(head))


@contextmanager
def static_twin() -> Iterator[Path]:
    """Create the static file before Daphne starts (so finders see it), remove it after.

    It starts as a placeholder; the caller resizes it to the lobby's size once known. With
    DEBUG, WhiteNoise re-reads files per request (autorefresh), so the resize is served.
    """
    created_dir = not STATIC_FILE.parent.exists()
    STATIC_FILE.parent.mkdir(parents=True, exist_ok=True)
    STATIC_FILE.write_bytes(filler_html(1024))
    try:
        yield STATIC_FILE
    finally:
        STATIC_FILE.unlink(missing_ok=True)
        if created_dir and not any(STATIC_FILE.parent.iterdir()):
            STATIC_FILE.parent.rmdir()


# --- setup requests -------------------------------------------------------------------------


def fetch(port: int, path: str, cookie: str = "") -> tuple[int, list[tuple[str, str]], bytes]:
    """One plain GET for setup and checks (not for load): status, headers, body."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def cookies_from(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Name -> value of every Set-Cookie in a response."""
    jar: SimpleCookie = SimpleCookie()
    for name, value in headers:
        if name.lower() == "set-cookie":
            jar.load(value)
    return {key: morsel.value for key, morsel in jar.items()}


def session_cookie(port: int) -> str:
    """Visit ``/`` once and keep its cookies, so load requests reuse one session."""
    status, headers, _ = fetch(port, "/")
    cookies = cookies_from(headers)
    if status != 200 or "sessionid" not in cookies:
        raise RuntimeError(f"lobby gave {status} and cookies {sorted(cookies)}; no sessionid")
    return "; ".join(f"{k}={v}" for k, v in sorted(cookies.items()))


# --- python load generator ----------------------------------------------------------------


def build_request(port: int, path: str, cookie: str) -> bytes:
    """The one request each connection repeats (keep-alive, same cookie for both targets)."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {HOST}:{port}",
        "User-Agent: rtcsite-bench",
        "Accept: */*",
        f"Cookie: {cookie}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_chunked(reader: asyncio.StreamReader) -> int:
    """Consume a chunked body; return its decoded size."""
    total = 0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers expected: the final CRLF
            return total
        await reader.readexactly(size + 2)
        total += size


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool, int]:
    """Read one response; return (status, keep_alive, body bytes)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
    if "content-length" in headers:
        size = int(headers["content-length"])
        await reader.readexactly(size)
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        size = await read_chunked(reader)
    else:
        raise RuntimeError(f"response without length framing: {head[0]!r}")
    return status, headers.get("connection", "").lower() != "close", size


async def connection_loop(
    port: int, request: bytes, deadline: float, latencies: list[float], sizes: list[int]
) -> int:
    """One keep-alive connection firing requests back to back; returns its error count."""
    errors = 0
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            status, keep_alive, size = await read_response(reader)
            latencies.append(time.perf_counter() - start)
            sizes.append(size)
            errors += status != 200
            if not keep_alive:
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
    finally:
        writer.close()
    return errors


async def python_load(
    port: int, request: bytes, duration_s: float, concurrency: int
) -> Measurement:
    """Fixed concurrency for a fixed time from one asyncio loop (cheaper than threads)."""
    latencies: list[float] = []
    sizes: list[int] = []
    cpu_start = time.process_time()
    start = time.perf_counter()
    deadline = start + duration_s
    errors = await asyncio.gather(
        *(connection_loop(port, request, deadline, latencies, sizes) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    ordered = sorted(latencies)
    return Measurement(
        requests=len(ordered),
        elapsed_s=round(elapsed, 3),
        rps=len(ordered) / elapsed,
        p50_ms=percentile(ordered, 50) * 1000,
        p99_ms=percentile(ordered, 99) * 1000,
        errors=sum(errors),
        body_bytes_min=min(sizes, default=None),
        body_bytes_max=max(sizes, default=None),
        client_cpu_s=round(cpu, 3),
    )


# --- wrk ------------------------------------------------------------------------------------

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _to_ms(number: str, unit: str) -> float:
    return float(number) * _UNIT_MS[unit]


def parse_wrk(output: str) -> Measurement:
    """Figures from ``wrk --latency`` output (requests/s, p50, p99, errors)."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", output)
    pcts = dict(re.findall(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+(?:us|ms|s|m))\s*$", output, re.M))
    if not (rps and total and "50" in pcts and "99" in pcts):
        raise RuntimeError(f"cannot parse wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(r"Socket errors:(.*)", output)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(int(n) for n in re.findall(r"\d+", sock.group(1))) if sock else 0
    p50 = re.fullmatch(r"([\d.]+)(us|ms|s|m)", pcts["50"])
    p99 = re.fullmatch(r"([\d.]+)(us|ms|s|m)", pcts["99"])
    assert p50 and p99  # guaranteed by the findall pattern
    return Measurement(
        requests=int(total.group(1)),
        elapsed_s=round(_to_ms(total.group(2), total.group(3)) / 1000, 3),
        rps=float(rps.group(1)),
        p50_ms=_to_ms(*p50.groups()),
        p99_ms=_to_ms(*p99.groups()),
        errors=errors,
    )


def wrk_load(
    wrk: str, port: int, path: str, cookie: str, duration_s: float, conns: int
) -> Measurement:
    """Same load shape through wrk (whole seconds only: wrk's -d takes integers)."""
    threads = max(1, min(conns, os.cpu_count() or 1))
    seconds = max(1, round(duration_s))
    cmd = [wrk, f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency"]
    cmd += ["-H", f"Cookie: {cookie}", f"http://{HOST}:{port}{path}"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60)
    return parse_wrk(done.stdout)


# --- the benchmark --------------------------------------------------------------------------


def measure(
    client: str, port: int, path: str, cookie: str, duration_s: float, conns: int
) -> Measurement:
    """One load run with whichever client was chosen."""
    if client == "python-asyncio":
        request = build_request(port, path, cookie)
        return asyncio.run(python_load(port, request, duration_s, conns))
    return wrk_load(client, port, path, cookie, duration_s, conns)


def match_static_to_lobby(port: int, cookie: str, static_file: Path) -> dict[str, Any]:
    """Resize the static twin to the lobby's byte count and check the server agrees."""
    status, headers, body = fetch(port, TARGETS["lobby"], cookie)
    if status != 200:
        raise RuntimeError(f"lobby returned {status}")
    static_file.write_bytes(filler_html(len(body)))
    s_status, _, s_body = fetch(port, TARGETS["static"], cookie)
    if s_status != 200 or len(s_body) != len(body):
        raise RuntimeError(f"static twin gave {s_status}, {len(s_body)} bytes, want {len(body)}")
    return {
        "page_bytes": len(body),
        "static_bytes": len(s_body),
        "lobby_set_cookie_names": sorted(cookies_from(headers)),
    }


def run_rounds(client: str, port: int, cookie: str, p: Params) -> dict[str, list[Measurement]]:
    """Warm up both targets, then alternate static, lobby, static, lobby..."""
    for path in TARGETS.values():
        measure(client, port, path, cookie, p.warmup_s, p.concurrency)
    samples: dict[str, list[Measurement]] = {name: [] for name in TARGETS}
    for _ in range(p.rounds):
        for name, path in TARGETS.items():
            samples[name].append(measure(client, port, path, cookie, p.duration_s, p.concurrency))
    return samples


def median_of(samples: list[Measurement], field: str) -> float:
    return statistics.median(getattr(m, field) for m in samples)


def target_rows(name: str, samples: list[Measurement], size: int) -> list[dict[str, Any]]:
    """Median req/s, p50, p99 (with per-round values) and the response size for one target."""
    rows = []
    for metric, field, unit in (
        ("requests/s", "rps", "req/s"),
        ("latency p50", "p50_ms", "ms"),
        ("latency p99", "p99_ms", "ms"),
    ):
        per_round = [round(getattr(m, field), 3) for m in samples]
        value = round(median_of(samples, field), 3)
        rows.append(
            {"metric": metric, "value": value, "unit": unit, "target": name, "rounds": per_round}
        )
    rows.append({"metric": "response size", "value": size, "unit": "bytes", "target": name})
    return rows


def run(quick: bool) -> dict[str, Any]:
    """Start Daphne, match a static file to the lobby's size, load both alternately."""
    p = QUICK if quick else FULL
    wrk = shutil.which("wrk")
    client = wrk or "python-asyncio"
    with static_twin() as twin, daphne_site(dict(EMBEDDED_ENV)) as server:
        port, cmd = server.port, server.command()
        cookie = session_cookie(port)
        checks = match_static_to_lobby(port, cookie, twin)
        samples = run_rounds(client, port, cookie, p)
    lobby_rps = median_of(samples["lobby"], "rps")
    static_rps = median_of(samples["static"], "rps")
    ratio = round(lobby_rps / static_rps, 3)
    client_name = "wrk" if wrk else client
    rows = target_rows("lobby", samples["lobby"], checks["page_bytes"])
    rows += target_rows("static", samples["static"], checks["static_bytes"])
    rows.append(
        {"metric": "lobby/static requests/s", "value": ratio, "unit": "x", "target": "ratio"}
    )
    errors = {name: sum(m.errors for m in ms) for name, ms in samples.items()}
    return {
        "name": NAME,
        "rows": rows,
        "ratio": ratio,
        "headline": (
            f"lobby page: {lobby_rps:.0f} req/s vs same-size static file {static_rps:.0f} req/s "
            f"-> {ratio:.2f}x (client {client_name}, {p.concurrency} connections, "
            f"median of {p.rounds} rounds of {p.duration_s:g} s)"
        ),
        "parameters": {
            **asdict(p),
            "client": client_name,
            "client_path": wrk,
            "server_command": " ".join(cmd[1:]),
            "env": {"DEBUG": "1", "SQLITE_PATH": "<temp>", "MEDIA_ROOT": "<temp>"},
            "targets": TARGETS,
            "order": "warm-up each, then alternate static, lobby per round",
        },
        "checks": {**checks, "errors": errors},
        "samples": {name: [asdict(m) for m in ms] for name, ms in samples.items()},
    }
