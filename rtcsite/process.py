"""Which server process this is: ``host:pid``, recorded wherever a row or a presence must
say which process holds a socket or runs a pipeline (admin, affinity, stale checks)."""

from __future__ import annotations

import os
import socket

PROCESS_ID = f"{socket.gethostname()[:60]}:{os.getpid()}"
#: set by rtcsite/asgi.py, first thing: this process is a server (Daphne), not a management
#: command; only servers write multi-process metrics files (rtcsite/metrics.py)
SERVING = False
