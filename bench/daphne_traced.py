"""Daphne that records its own stalls: for the soak benchmark's ``--trace`` only.

Runs Daphne's command line unchanged (like ``bench.daphne_unlimited``) after installing two
probes that write JSON lines to ``$SOAK_TRACE_FILE``, timestamped with ``time.time()`` (one
clock for every process on the machine):

* ``{"lag": s, "at": t}``: the event loop ran a callback ``s`` seconds after a watcher
  thread asked for it (``call_soon_threadsafe`` every 5 ms), when that exceeds 2 ms: a stall
  of the loop (a slow handler, a GC pause, the GIL held by another thread);
* ``{"gc": generation, "s": seconds, "collected": n, "at": t}``: a garbage collection that
  took more than 1 ms (``gc.callbacks``).

``SOAK_GC_UNFREEZE=1`` undoes ``rtcsite.asgi``'s ``gc.freeze()`` (the behaviour before it,
for an A/B). Started as ``DaphneServer(daphne=TRACED_DAPHNE)``. Never use it to serve
anything.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from typing import Any

TRACED_DAPHNE = [sys.executable, "-m", "bench.daphne_traced"]
LAG_THRESHOLD_S = 0.002
GC_THRESHOLD_S = 0.001


def install(path: str, loop: Any) -> None:
    out = open(path, "a", buffering=1)  # noqa: SIM115 - the process's lifetime
    lock = threading.Lock()

    pid = os.getpid()

    def write(record: dict[str, Any]) -> None:
        record["pid"] = pid
        with lock:
            out.write(json.dumps(record) + "\n")

    started: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started["t"] = time.perf_counter()
            return
        took = time.perf_counter() - started.get("t", time.perf_counter())
        if took > GC_THRESHOLD_S:
            record = {
                "gc": info["generation"],
                "s": round(took, 4),
                "collected": info["collected"],
                "at": time.time(),
            }
            if info["generation"] == 2:  # what a full collection had to scan
                record["objects"] = len(gc.get_objects(2))
                record["frozen"] = gc.get_freeze_count()
            write(record)

    gc.callbacks.append(on_gc)

    def watch() -> None:
        while True:
            asked = time.perf_counter()
            done = threading.Event()

            def ran(asked: float = asked, done: threading.Event = done) -> None:
                lag = time.perf_counter() - asked
                if lag > LAG_THRESHOLD_S:
                    write({"lag": round(lag, 4), "at": time.time()})
                done.set()

            loop.call_soon_threadsafe(ran)
            done.wait(30)
            time.sleep(0.005)

    threading.Thread(target=watch, name="soak-lag-watch", daemon=True).start()


def main() -> None:
    from daphne.cli import CommandLineInterface
    from daphne.server import twisted_loop

    if os.environ.get("SOAK_GC_UNFREEZE") == "1":  # the A/B: start-up objects scanned again
        import rtcsite.asgi  # noqa: F401  (it freezes them)

        gc.unfreeze()
    install(os.environ["SOAK_TRACE_FILE"], twisted_loop)
    sys.argv[0] = "daphne"
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
