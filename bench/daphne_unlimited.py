"""Daphne with the room socket's per-connection rate limit lifted: for benchmarks only.

``RoomConsumer.rate_limit`` (bursts of 120, 40 messages/s sustained) is a class attribute
read when a socket connects, so it can only be changed inside the server process. This
wrapper imports the application, replaces the attribute, prints a marker line (which the
benchmark checks in the server log) and then runs Daphne's own command line with the same
arguments as the ``daphne`` script::

    python -m bench.daphne_unlimited -b 127.0.0.1 -p 8123 rtcsite.asgi:application

(``DaphneServer(daphne=UNLIMITED_DAPHNE)`` starts it so.) Nothing else differs from
``daphne``: same ASGI application, same settings from the environment. Never use it to
serve anything but a benchmark.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

#: (messages per second sustained, burst): effectively no limit
LIFTED_RATE_LIMIT = (1e9, 10**9)
MARKER = "bench: RoomConsumer.rate_limit lifted to"
#: the program a ``DaphneServer(daphne=...)`` runs in place of ``daphne``
UNLIMITED_DAPHNE = [sys.executable, "-m", "bench.daphne_unlimited"]


def check_lifted(server: Any, limit_s: float = 10.0) -> None:
    """Fail unless ``server`` (a started ``DaphneServer``) logged the marker line."""
    deadline = time.monotonic() + limit_s
    while MARKER not in server.log():
        if time.monotonic() > deadline:
            raise RuntimeError(f"rate limit not lifted on port {server.port}:\n{server.log()}")
        time.sleep(0.1)


def main() -> None:
    # daphne.cli imports daphne.server, which installs Twisted's asyncio reactor: first.
    from daphne.cli import CommandLineInterface

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtcsite.settings")
    import rtcsite.asgi  # noqa: F401  (sets Django up; Daphne later imports the same module)
    from signaling.consumers import MeshRoomConsumer, RoomConsumer

    RoomConsumer.rate_limit = LIFTED_RATE_LIMIT
    # what the mesh socket really uses: a subclass's own value would hide the base's
    effective = MeshRoomConsumer.rate_limit
    if effective != LIFTED_RATE_LIMIT:
        raise SystemExit(f"MeshRoomConsumer.rate_limit is {effective!r}: not lifted")
    print(f"{MARKER} {effective!r} (was bursts of 120, 40/s)", flush=True)
    sys.argv[0] = "daphne"
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
