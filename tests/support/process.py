"""Child processes started by tests and benchmarks: a Python command run in the repository,
a server stopped by its PID, the tail of a server's log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``python *args`` (this interpreter) in the repository; output captured as text."""
    return subprocess.run(  # no check=: callers read the return code
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def stop_process(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """Stop one of our children by its PID: SIGTERM, then SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def log_tail(path: Path | None, chars: int = 5000) -> str:
    """The last ``chars`` of a log file; empty if there is none (yet)."""
    try:
        return path.read_text(errors="replace")[-chars:] if path else ""
    except OSError:
        return ""
