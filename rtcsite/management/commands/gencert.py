import shlex
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from rtcsite import certs


def _relative_to_base(path: Path) -> Path:
    """``path`` relative to the repo root when it lies under it (for the printed command)."""
    base = Path(settings.BASE_DIR).resolve()
    resolved = path.resolve()
    try:
        return resolved.relative_to(base)
    except ValueError:
        return resolved


class Command(BaseCommand):
    help = (
        "Generate a self-signed TLS certificate and private key (EC P-256) so that phones and "
        "other devices on the LAN can use the site over HTTPS: browsers allow camera access "
        "only on localhost or HTTPS. Writes key.pem (mode 0600) and cert.pem, then prints the "
        "certificate's SHA-256 fingerprint, the environment to set and the daphne command that "
        "serves TLS on all interfaces. For development only; see docs/https.md."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--out-dir",
            type=Path,
            default=Path(settings.BASE_DIR) / "certs",
            help="Directory for key.pem and cert.pem (default: certs/ at the repo root).",
        )
        parser.add_argument(
            "--host",
            action="append",
            dest="hosts",
            metavar="NAME_OR_IP",
            help=(
                "A DNS name or IP address the site is reached by; repeat for several. Default: "
                "localhost, 127.0.0.1, ::1, this machine's host name (and <name>.local) and "
                "its non-loopback IPv4 addresses."
            ),
        )
        parser.add_argument(
            "--days",
            type=int,
            default=certs.DEFAULT_DAYS,
            help=(
                f"Validity in days, {certs.MIN_DAYS} to {certs.MAX_DAYS} (default: "
                f"{certs.DEFAULT_DAYS}; Apple devices reject longer-lived certificates)."
            ),
        )
        parser.add_argument(
            "--port",
            type=int,
            default=8443,
            help="HTTPS port for the printed daphne command and origins (default: 8443).",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Overwrite key.pem and cert.pem if they already exist.",
        )

    def handle(self, *args, **options):
        days = options["days"]
        port = options["port"]
        if not 1 <= port <= 65535:
            raise CommandError(f"--port must be between 1 and 65535 (got {port}).")
        try:
            certs.validate_days(days)
            hosts = certs.dedupe_hosts(options["hosts"] or certs.default_hosts())
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        try:
            result = certs.write_certificate(
                options["out_dir"], hosts, days, force=options["force"]
            )
        except FileExistsError as exc:
            raise CommandError(
                f"{exc}. Refusing to overwrite: pass --force to replace them, or choose "
                "another --out-dir."
            ) from exc
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self._print_instructions(result, port)

    def _print_instructions(self, result: certs.CertificateFiles, port: int) -> None:
        write = self.stdout.write
        key_path = _relative_to_base(result.key_path)
        cert_path = _relative_to_base(result.cert_path)
        names = [certs.parse_host(host) for host in result.hosts]
        allowed_hosts = [certs.url_host(name) for name in names]
        origins = [f"https://{certs.url_host(name)}:{port}" for name in names]
        endpoint = certs.daphne_endpoint(key_path, cert_path, port=port)
        expires = result.certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")

        write(self.style.SUCCESS(f"Wrote {cert_path} and {key_path} (mode 0600)."))
        write(f"  Hosts:   {', '.join(result.hosts)}")
        write(f"  Expires: {expires}")
        write(f"  SHA-256 fingerprint: {result.fingerprint}")
        write("")
        write("Serve HTTPS on all interfaces (from the repo root, in the activated .venv;")
        write("`manage.py serve_lan` does all of this and keeps the key in certs/secret_key):")
        write("")
        new_key = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        write(f'  export DEBUG=0 SECRET_KEY="$({new_key})"')
        write("  python manage.py collectstatic --noinput")
        write(f"  export ALLOWED_HOSTS={shlex.quote(','.join(allowed_hosts))}")
        write(f"  export CSRF_TRUSTED_ORIGINS={shlex.quote(','.join(origins))}")
        write(f"  daphne -e {shlex.quote(endpoint)} rtcsite.asgi:application")
        write("")
        pairs = zip(origins, names, strict=True)
        lan = [origin for origin, name in pairs if certs.is_lan_host(name)]
        if lan:
            write(f"Then open {' or '.join(f'{origin}/' for origin in lan)} on the phone.")
        write(
            "The certificate is self-signed: browsers warn once per device; compare the "
            "fingerprint above and accept, or trust cert.pem (docs/https.md). "
            "Development only: never expose this on the public internet."
        )
