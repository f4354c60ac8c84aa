"""``manage.py serve_lan``: serve the site to phones and laptops on the LAN, safely.

One command instead of gencert + environment + daphne: it keeps a random SECRET_KEY in a
file (mode 0600, made once and reused), a self-signed certificate for this machine's names
and LAN addresses (rtcsite.certs; remade when the addresses change), collects the static
files, migrates, and replaces itself with Daphne serving HTTPS with DEBUG=0, ALLOWED_HOSTS
and CSRF_TRUSTED_ORIGINS set to those names. See docs/https.md.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from rtcsite import certs

SECRET_FILENAME = "secret_key"


def load_or_create_secret(path: Path) -> str:
    """The key in ``path``, or a new random one written there with mode 0600."""
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise CommandError(
                f"{path} is readable by other users (mode {path.stat().st_mode & 0o777:o}): "
                f"chmod 600 {path}, or delete it to make a new key."
            )
        key = path.read_text().strip()
        if len(key) >= 50:
            return key
        raise CommandError(f"{path} does not hold a key of 50 characters or more: delete it.")
    key = secrets.token_urlsafe(50)
    path.parent.mkdir(parents=True, exist_ok=True)
    certs.write_private_file(path, key.encode() + b"\n")
    return key


def certificate_hosts(cert_path: Path) -> set[str]:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return set()
    return {certs.host_text(name) for name in san}


class Command(BaseCommand):
    help = (
        "Serve the site over HTTPS to devices on the LAN with production settings: a random "
        "SECRET_KEY kept in <state-dir>/secret_key (mode 0600), a self-signed certificate, "
        "DEBUG=0, ALLOWED_HOSTS and CSRF_TRUSTED_ORIGINS for this machine's names and "
        "addresses. Runs Daphne in the foreground (Ctrl-C stops it). See docs/https.md."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8443, help="HTTPS port (default 8443).")
        parser.add_argument(
            "--interface",
            default="0.0.0.0",
            help="Address to listen on (default 0.0.0.0: every IPv4 interface).",
        )
        parser.add_argument(
            "--host",
            action="append",
            dest="hosts",
            metavar="NAME_OR_IP",
            help="A name or address devices use (repeat); default: localhost, this machine's "
            "host name and LAN IPv4 addresses.",
        )
        parser.add_argument(
            "--state-dir",
            type=Path,
            default=Path(settings.BASE_DIR) / "certs",
            help="Where the key, certificate and secret key are kept (default: certs/).",
        )

    def handle(self, *args, **options):
        port = options["port"]
        if not 1 <= port <= 65535:
            raise CommandError(f"--port must be between 1 and 65535 (got {port}).")
        try:
            hosts = certs.dedupe_hosts(options["hosts"] or certs.default_hosts())
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        state: Path = options["state_dir"]
        secret = load_or_create_secret(state / SECRET_FILENAME)
        key_path, cert_path = state / certs.KEY_FILENAME, state / certs.CERT_FILENAME
        if not set(hosts) <= certificate_hosts(cert_path) or not key_path.exists():
            certs.write_certificate(state, hosts, force=True)  # new addresses (DHCP): remade
            self.stdout.write(f"New certificate for {', '.join(hosts)} in {cert_path}.")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        names = [certs.parse_host(host) for host in hosts]
        env = {
            **os.environ,
            "DEBUG": "0",
            "SECRET_KEY": secret,
            "ALLOWED_HOSTS": ",".join(certs.url_host(name) for name in names),
            "CSRF_TRUSTED_ORIGINS": ",".join(
                f"https://{certs.url_host(name)}:{port}" for name in names
            ),
            "SECURE_COOKIES": "1",
            # phones on the same Wi-Fi offer private addresses to the server rooms' peers
            "SERVER_ROOM_ALLOW_PRIVATE_CANDIDATES": "1",
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        for step in (["migrate", "--noinput", "-v0"], ["collectstatic", "--noinput", "-v0"]):
            if subprocess.run([*manage, *step], env=env, cwd=settings.BASE_DIR).returncode:
                raise CommandError(f"manage.py {' '.join(step)} failed (see above).")
        lan = [name for name in names if certs.is_lan_host(name)]
        self.stdout.write(
            f"Serving https on {options['interface']}:{port} with DEBUG=0. Open "
            + (" or ".join(f"https://{certs.url_host(n)}:{port}/" for n in lan) or "it")
            + f" on the phone; certificate SHA-256 {certs.fingerprint_sha256(cert)}."
        )
        self.stdout.flush()
        daphne = str(Path(sys.executable).parent / "daphne")
        endpoint = certs.daphne_endpoint(
            key_path, cert_path, port=port, interface=options["interface"]
        )
        # exec: Daphne takes this process's place (same PID, Ctrl-C and SIGTERM reach it)
        os.execve(daphne, [daphne, "-e", endpoint, "rtcsite.asgi:application"], env)
