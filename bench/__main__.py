"""``python -m bench [NAME ...] [--quick]``: run benchmarks, print tables, write JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.runner import RESULTS_DIR, discover, run_many


def parse_args(argv: list[str], known: list[str]) -> argparse.Namespace:
    """CLI; the epilog lists discovered benchmarks so ``--help`` is self-documenting."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Run rtcsite benchmarks. Each compares us against a peer or a physical limit in "
            "the same run, prints a table and writes bench/results/<name>.json. "
            "Absolute figures are noisy on shared machines: read the ratios and medians."
        ),
        epilog=f"available benchmarks: {', '.join(known) or '(none found)'}",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (all if none)")
    parser.add_argument(
        "--quick", action="store_true", help="short smoke run (figures not meaningful)"
    )
    parser.add_argument("--list", action="store_true", help="list benchmarks and exit")
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help=f"where to write <name>.json (default: {RESULTS_DIR})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    benches = discover()
    args = parse_args(sys.argv[1:] if argv is None else argv, sorted(benches))
    if args.list:
        print("\n".join(sorted(benches)))
        return 0
    return run_many(benches, args.names, args.quick, args.results_dir)


if __name__ == "__main__":
    sys.exit(main())
