"""Discover ``bench/bench_*.py`` modules, run them, print a table and write JSON results.

A benchmark module exposes ``NAME: str`` and ``run(quick: bool) -> dict``; the dict holds
``name``, ``rows`` (each a dict with at least ``metric``, ``value``, ``unit``) and optionally
``ratio``, ``headline``, ``parameters`` and any other JSON-serialisable detail. The runner
adds what makes a figure comparable later: machine, Python, timestamp and parameters.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import platform
import sys
import time
import traceback
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TextIO, cast

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
MODULE_PREFIX = "bench_"
REQUIRED_ROW_KEYS = ("metric", "value", "unit")


class Benchmark(Protocol):
    """What a ``bench_*.py`` module must provide (a module, or any object in tests)."""

    NAME: str

    def run(self, quick: bool) -> dict[str, Any]: ...


def discover(package: str = "bench") -> dict[str, Benchmark]:
    """Import every ``bench_*`` module of ``package`` and index it by its ``NAME``."""
    pkg = importlib.import_module(package)
    found: dict[str, Benchmark] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if not info.name.startswith(MODULE_PREFIX):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        if not _is_benchmark(module):
            raise TypeError(f"{module.__name__} must define NAME: str and run(quick) -> dict")
        found[module.NAME] = cast(Benchmark, module)
    return found


def _is_benchmark(module: ModuleType) -> bool:
    return isinstance(getattr(module, "NAME", None), str) and callable(getattr(module, "run", None))


def result(
    name: str,
    rows: list[dict[str, Any]],
    ratio: Any,
    headline: str | None,
    parameters: Mapping[str, Any],
    detail: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a benchmark's ``run`` returns: its table ``rows``, the ratio to its peer, a
    one-line headline, the parameters that make the run comparable, and any further
    JSON-serialisable ``detail`` (each key becomes a key of the result file)."""
    return {
        **dict(detail or {}),
        "name": name,
        "rows": rows,
        "ratio": ratio,
        "headline": headline,
        "parameters": dict(parameters),
    }


def machine_info() -> dict[str, Any]:
    """Enough about the host to tell whether two result files are comparable."""
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
    }


def validate_result(name: str, result: Mapping[str, Any]) -> None:
    """Fail early and clearly on a malformed result, rather than write a half-useful file."""
    if result.get("name") != name:
        raise ValueError(f"benchmark {name!r} returned name {result.get('name')!r}")
    rows = result.get("rows")
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"benchmark {name!r} returned no rows")
    for row in rows:
        missing = [key for key in REQUIRED_ROW_KEYS if key not in row]
        if missing:
            raise ValueError(f"benchmark {name!r}: row {row!r} lacks {missing}")


def build_record(
    result: Mapping[str, Any], quick: bool, elapsed_s: float, now: datetime | None = None
) -> dict[str, Any]:
    """The JSON document: the benchmark's figures plus context for comparing runs later."""
    record: dict[str, Any] = {
        "name": result["name"],
        "timestamp": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "quick": quick,
        "elapsed_s": round(elapsed_s, 3),
        "machine": machine_info(),
        "parameters": {"quick": quick, **dict(result.get("parameters", {}))},
        "rows": list(result["rows"]),
        "ratio": result.get("ratio"),
        "headline": result.get("headline"),
    }
    for key, value in result.items():
        record.setdefault(key, value)
    return record


def write_record(record: Mapping[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    """Write ``<results_dir>/<name>.json`` (overwritten: the latest run is the result)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{record['name']}.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=False, default=str) + "\n")
    return path


def _cell(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " / ".join(_cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return "" if value is None else str(value)


def format_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """Plain-text table: metric, value, unit first, then any extra row keys in first-seen order."""
    rows = list(rows)
    columns = list(REQUIRED_ROW_KEYS)
    for row in rows:
        columns += [key for key in row if key not in columns]
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(line[i]) for line in cells)) for i, col in enumerate(columns)]
    numeric = {"value"}

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if col in numeric else v.ljust(w)
            for v, w, col in zip(values, widths, columns, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(columns), rule, *(line(c) for c in cells)])


def report(record: Mapping[str, Any]) -> str:
    """The human-readable block printed after a benchmark: title, table, headline."""
    title = f"== {record['name']} ({'quick' if record['quick'] else 'full'}) =="
    parts = [title, format_table(record["rows"])]
    if record.get("ratio") is not None:
        parts.append(f"ratio: {_cell(record['ratio'])}")
    if record.get("headline"):
        parts.append(str(record["headline"]))
    return "\n".join(parts)


def run_one(
    bench: Benchmark, quick: bool, results_dir: Path = RESULTS_DIR, out: TextIO = sys.stdout
) -> Path:
    """Run one benchmark, print its table, write its JSON; return the JSON path."""
    start = time.perf_counter()
    result = bench.run(quick)
    elapsed = time.perf_counter() - start
    validate_result(bench.NAME, result)
    record = build_record(result, quick, elapsed)
    path = write_record(record, results_dir)
    print(report(record), file=out)
    print(f"wrote {path}", file=out)
    return path


def run_many(
    benches: Mapping[str, Benchmark],
    names: Iterable[str],
    quick: bool,
    results_dir: Path = RESULTS_DIR,
    out: TextIO = sys.stdout,
) -> int:
    """Run the named benchmarks (all if none); one failing does not stop the others.

    Returns a process exit code: 0 if all ran, 2 for an unknown name, 1 if any failed.
    """
    selected = list(names) or sorted(benches)
    unknown = [n for n in selected if n not in benches]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(benches)}", file=out)
        return 2
    failed = 0
    for name in selected:
        try:
            run_one(benches[name], quick, results_dir, out)
        except Exception:
            failed += 1
            print(f"== {name}: FAILED ==\n{traceback.format_exc()}", file=out)
        print(file=out)
    return 1 if failed else 0
