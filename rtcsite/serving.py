"""Refuse to serve beyond loopback with the public default SECRET_KEY.

Anyone who knows the key (it is in this repository) can sign WebSocket tokens and sessions
for any identity id they see in the lobby. On 127.0.0.1 only the developer reaches the site;
bound to a LAN or public address, everyone on the network could. The bind is decided by the
server's command line (``daphne -b/-e``, ``manage.py runserver ADDR:PORT``), so the check
reads that command line when the server loads the application (rtcsite/asgi.py), before it
listens. Unix sockets and inherited descriptors (systemd, behind nginx) are not judged.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def endpoint_interface(endpoint: str) -> str | None:
    """The interface a Twisted ``tcp:``/``ssl:`` endpoint string listens on ("" = all);
    ``None`` for unix sockets, descriptors and other kinds."""
    parts = re.split(r"(?<!\\):", endpoint)
    if parts[0] not in {"tcp", "tcp6", "ssl"}:
        return None
    for part in parts[1:]:
        if part.startswith("interface="):
            return _unescape(part.removeprefix("interface=")).strip("[]")
    return ""  # Twisted's default: every interface


def is_loopback(interface: str) -> bool:
    if interface.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False  # "" (all interfaces), 0.0.0.0, ::, or a host name that may be public


def daphne_endpoints(argv: Sequence[str]) -> list[str]:
    """The endpoints ``daphne`` will listen on, from its command line (as its CLI builds them)."""
    from daphne.cli import DEFAULT_HOST, DEFAULT_PORT, CommandLineInterface
    from daphne.endpoints import build_endpoint_description_strings

    args, _ = CommandLineInterface().parser.parse_known_args(list(argv[1:]))
    host, port = args.host, args.port
    if not any([host, port is not None, args.unix_socket, args.file_descriptor is not None]):
        if not args.socket_strings:
            host, port = DEFAULT_HOST, DEFAULT_PORT
    elif host and port is None:
        port = DEFAULT_PORT
    elif port is not None and not host:
        host = DEFAULT_HOST
    return [
        *(args.socket_strings or []),
        *build_endpoint_description_strings(
            host=host, port=port, unix_socket=args.unix_socket, file_descriptor=args.file_descriptor
        ),
    ]


def runserver_interface(argv: Sequence[str]) -> str:
    """The address ``manage.py runserver [ADDR:]PORT`` binds (Django's default 127.0.0.1)."""
    positional = [arg for arg in argv[2:] if not arg.startswith("-")]
    if not positional or ":" not in positional[0].lstrip("["):
        return "127.0.0.1" if not any(a in ("-6", "--ipv6") for a in argv) else "::1"
    address = positional[0].rsplit(":", 1)[0]
    return address.strip("[]")


def public_interfaces(argv: Sequence[str]) -> list[str]:
    """Non-loopback interfaces the server started by ``argv`` will listen on ([] if none or
    if ``argv`` is not a server command this module knows)."""
    program = Path(argv[0]).name if argv else ""
    if program == "daphne":
        interfaces = [endpoint_interface(endpoint) for endpoint in daphne_endpoints(argv)]
    elif program == "manage.py" and len(argv) > 1 and argv[1] == "runserver":
        interfaces = [runserver_interface(argv)]
    else:
        return []
    return [i or "all interfaces" for i in interfaces if i is not None and not is_loopback(i)]


def refuse_public_listen_with_default_key(argv: Sequence[str] | None = None) -> None:
    """Exit with a clear message (no traceback) when the default key would face a network."""
    if settings.SECRET_KEY != settings.DEFAULT_SECRET_KEY:
        return
    exposed = public_interfaces(sys.argv if argv is None else argv)
    if exposed:
        raise SystemExit(
            f"Refusing to listen on {', '.join(exposed)} with the default SECRET_KEY: anyone "
            "who can reach the site could sign tokens for any identity. Serve to the LAN with "
            "`manage.py serve_lan` (it keeps a random key), or set SECRET_KEY, or bind "
            "127.0.0.1."
        )
