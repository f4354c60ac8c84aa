"""The bench runner's table and JSON output, driven by fake in-memory benchmarks (no server)."""

from __future__ import annotations

import io
import json
import os
import platform
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench import runner
from bench.bench_lobby_http import parse_wrk


def fake_bench(name: str = "fake", calls: list[bool] | None = None) -> SimpleNamespace:
    """A stand-in module: NAME plus run(quick) returning fixed figures (as benchmarks do,
    through ``runner.result``)."""

    def run(quick: bool) -> dict[str, Any]:
        if calls is not None:
            calls.append(quick)
        rows = [
            {"metric": "requests/s", "value": 1234.5, "unit": "req/s", "target": "ours"},
            {"metric": "requests/s", "value": 2469.0, "unit": "req/s", "target": "peer"},
        ]
        samples = {"samples": {"ours": [1200.0, 1234.5, 1300.0]}}
        return runner.result(name, rows, 0.5, "ours is half the peer", {"concurrency": 8}, samples)

    return SimpleNamespace(NAME=name, run=run)


def broken_bench(name: str = "broken") -> SimpleNamespace:
    def run(quick: bool) -> dict[str, Any]:
        raise RuntimeError("server did not start")

    return SimpleNamespace(NAME=name, run=run)


def test_run_one_writes_json_with_figures_machine_and_parameters(tmp_path: Path) -> None:
    calls: list[bool] = []
    out = io.StringIO()
    before = datetime.now(UTC).replace(microsecond=0)

    path = runner.run_one(fake_bench(calls=calls), quick=True, results_dir=tmp_path, out=out)

    assert calls == [True]
    assert path == tmp_path / "fake.json"
    data = json.loads(path.read_text())
    assert data["name"] == "fake"
    assert data["quick"] is True
    assert data["rows"] == [
        {"metric": "requests/s", "value": 1234.5, "unit": "req/s", "target": "ours"},
        {"metric": "requests/s", "value": 2469.0, "unit": "req/s", "target": "peer"},
    ]
    assert data["ratio"] == 0.5
    assert data["headline"] == "ours is half the peer"
    assert data["parameters"] == {"quick": True, "concurrency": 8}
    assert data["samples"] == {"ours": [1200.0, 1234.5, 1300.0]}
    assert data["machine"]["cpu_count"] == os.cpu_count()
    assert data["machine"]["python"] == platform.python_version()
    assert data["machine"]["platform"] == platform.platform()
    stamp = datetime.fromisoformat(data["timestamp"])
    assert before <= stamp <= datetime.now(UTC) + timedelta(seconds=1)
    assert data["elapsed_s"] >= 0


def test_run_one_prints_aligned_table_and_headline(tmp_path: Path) -> None:
    out = io.StringIO()
    runner.run_one(fake_bench(), quick=False, results_dir=tmp_path, out=out)

    lines = out.getvalue().splitlines()
    assert lines[0] == "== fake (full) =="
    assert lines[1].split() == ["metric", "value", "unit", "target"]
    assert lines[3] == "requests/s  1,234.5  req/s  ours"
    assert lines[4] == "requests/s  2,469.0  req/s  peer"
    assert "ratio: 0.500" in lines
    assert "ours is half the peer" in lines
    assert lines[-1] == f"wrote {tmp_path / 'fake.json'}"


def test_format_table_joins_list_cells_and_right_aligns_values() -> None:
    table = runner.format_table(
        [
            {"metric": "p50", "value": 12.0, "unit": "ms", "rounds": [11.0, 13.0]},
            {"metric": "size", "value": 6516, "unit": "bytes"},
        ]
    )
    assert table.splitlines() == [
        "metric  value  unit   rounds",
        "------  -----  -----  -----------",
        "p50      12.0  ms     11.0 / 13.0",
        "size     6516  bytes",
    ]


def test_run_many_keeps_going_after_a_failure_and_reports_it(tmp_path: Path) -> None:
    benches = {"broken": broken_bench(), "fake": fake_bench()}
    out = io.StringIO()

    code = runner.run_many(benches, [], quick=True, results_dir=tmp_path, out=out)

    assert code == 1
    assert "== broken: FAILED ==" in out.getvalue()
    assert "server did not start" in out.getvalue()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.json"]


def test_run_many_rejects_unknown_names_without_running(tmp_path: Path) -> None:
    calls: list[bool] = []
    code = runner.run_many(
        {"fake": fake_bench(calls=calls)}, ["nope"], False, tmp_path, out=io.StringIO()
    )
    assert code == 2
    assert calls == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"name": "other", "rows": [{"metric": "m", "value": 1, "unit": "u"}]}, "returned name"),
        ({"name": "fake", "rows": []}, "no rows"),
        ({"name": "fake", "rows": [{"metric": "m", "value": 1}]}, "lacks ['unit']"),
    ],
)
def test_malformed_results_are_refused_before_writing(
    tmp_path: Path, result: dict[str, Any], message: str
) -> None:
    bench = SimpleNamespace(NAME="fake", run=lambda quick: result)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        runner.run_one(bench, quick=True, results_dir=tmp_path, out=io.StringIO())
    assert list(tmp_path.iterdir()) == []


def test_discover_finds_the_lobby_benchmark() -> None:
    benches = runner.discover()
    assert benches["lobby_http"].NAME == "lobby_http"
    assert all(callable(b.run) for b in benches.values())


WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:40000/
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.52ms    2.10ms  40.11ms   90.00%
    Req/Sec   380.12     40.00   450.00     70.00%
  Latency Distribution
     50%   10.10ms
     75%   11.00ms
     90%   12.50ms
     99%  850.00us
  3801 requests in 5.00s, 25.10MB read
  Non-2xx or 3xx responses: 3
Requests/sec:    760.20
Transfer/sec:      5.02MB
"""


def test_parse_wrk_reads_rate_percentiles_and_errors() -> None:
    m = parse_wrk(WRK_OUTPUT)
    assert m.requests == 3801
    assert m.elapsed_s == 5.0
    assert m.rps == 760.2
    assert m.p50_ms == pytest.approx(10.1)
    assert m.p99_ms == pytest.approx(0.85)  # "us" converted to ms
    assert m.errors == 3
