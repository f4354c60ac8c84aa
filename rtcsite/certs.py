"""Self-signed TLS certificates for serving the site over HTTPS on the LAN.

Browsers allow camera and microphone access (``getUserMedia``) only in a secure context:
``http://localhost`` or HTTPS. A phone on the same Wi-Fi reaches the dev machine by its
LAN address, so Daphne has to speak TLS. ``manage.py gencert`` (the CLI front) calls
:func:`write_certificate` here, in the spirit of Phoenix's ``mix phx.gen.cert``: one EC
P-256 key and one self-signed server certificate whose SubjectAltName lists every name and
address the site is reached by. Development only; see docs/https.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import socket
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DAYS = 365
MIN_DAYS = 1
# Apple platforms reject TLS server certificates valid for longer than 825 days.
MAX_DAYS = 825
KEY_FILENAME = "key.pem"
CERT_FILENAME = "cert.pem"
COMMON_NAME = "rtcsite self-signed development certificate"
# Clock skew allowance: phones whose clock runs a little behind still accept the cert.
BACKDATE = dt.timedelta(hours=1)
# Destinations for the UDP connect() probe: connecting a datagram socket only asks the
# kernel which route (and so which source address) it would use; no packet is sent.
_ROUTE_PROBES = ("10.254.254.254", "172.31.255.254", "192.168.255.254")

Host = x509.DNSName | x509.IPAddress


@dataclass(frozen=True)
class CertificateFiles:
    """What :func:`write_certificate` produced."""

    key_path: Path
    cert_path: Path
    certificate: x509.Certificate
    hosts: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the certificate, as browsers display it."""
        return fingerprint_sha256(self.certificate)


def parse_host(value: str) -> Host:
    """Turn ``value`` into a SubjectAltName entry: an IP address or a DNS name.

    IPv6 addresses may be written in brackets (``[::1]``, as in URLs and ALLOWED_HOSTS).
    DNS names are checked label by label (letters, digits, hyphens; a leading ``*.``
    wildcard is allowed) and lower-cased; internationalised names are IDNA-encoded.

    Raises:
        ValueError: ``value`` is neither a valid IP address nor a valid DNS name.
    """
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        pass
    return x509.DNSName(_normalise_dns_name(text, original=value))


def _normalise_dns_name(text: str, *, original: str) -> str:
    invalid = ValueError(f"{original!r} is neither an IP address nor a valid DNS name.")
    name = text.rstrip(".").lower()
    if not name:
        raise invalid
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise invalid from exc
    labels = name.split(".")
    if labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    if len(name) > 253 or not all(_valid_label(label) for label in labels):
        raise invalid
    if labels[-1].isdigit():  # e.g. "192.168.1" or "1.2.3.999": a mistyped address
        raise invalid
    return name


def _valid_label(label: str) -> bool:
    return (
        0 < len(label) <= 63
        and not label.startswith("-")
        and not label.endswith("-")
        and all(ch.isalnum() or ch == "-" for ch in label)
    )


def host_text(host: Host) -> str:
    """The plain text of a SubjectAltName entry (``192.168.1.10``, ``::1``, ``example``)."""
    return str(host.value)


def url_host(host: Host) -> str:
    """``host`` as it appears in a URL or in ALLOWED_HOSTS (IPv6 in brackets)."""
    if isinstance(host, x509.IPAddress) and host.value.version == 6:
        return f"[{host.value}]"
    return str(host.value)


def is_lan_host(host: Host) -> bool:
    """True for a name or address other devices can use (not localhost, not loopback)."""
    value = host.value
    if isinstance(value, str):
        return value != "localhost" and not value.endswith(".localhost")
    return not value.is_loopback


def lan_ipv4_addresses() -> list[str]:
    """The machine's non-loopback IPv4 addresses, found without sending any packet.

    Two sources, each allowed to fail: the addresses the resolver returns for the host
    name (``/etc/hosts`` or the local name service), and the source address the kernel
    picks for a UDP socket ``connect()`` towards each private range (``connect`` on a
    datagram socket only looks up a route). Link-local, loopback and unspecified
    addresses are left out. Returns an empty list when nothing is found.
    """
    found: list[str] = []
    with contextlib.suppress(OSError, UnicodeError):
        for *_, sockaddr in socket.getaddrinfo(
            socket.gethostname(), None, socket.AF_INET, socket.SOCK_DGRAM
        ):
            found.append(str(sockaddr[0]))
    for destination in _ROUTE_PROBES:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((destination, 9))
                found.append(str(probe.getsockname()[0]))
        except OSError:
            continue
    addresses: list[str] = []
    for text in found:
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError:
            continue
        if address.is_loopback or address.is_unspecified or address.is_link_local:
            continue
        if text not in addresses:
            addresses.append(text)
    return addresses


def machine_hostnames() -> list[str]:
    """The machine's host name, plus ``<name>.local`` (mDNS) when it has no dot.

    Names that are not valid DNS names (or are ``localhost``) are skipped.
    """
    try:
        name = socket.gethostname()
    except OSError:
        return []
    candidates = [name] if "." in name else [name, f"{name}.local"]
    names: list[str] = []
    for candidate in candidates:
        try:
            host = parse_host(candidate)
        except ValueError:
            continue
        if isinstance(host, x509.DNSName) and host.value != "localhost":
            names.append(host.value)
    return names


def default_hosts() -> list[str]:
    """localhost, 127.0.0.1, ::1, the host name(s) and the LAN IPv4 addresses."""
    return dedupe_hosts(
        ["localhost", "127.0.0.1", "::1", *machine_hostnames(), *lan_ipv4_addresses()]
    )


def dedupe_hosts(values: Iterable[str]) -> list[str]:
    """Parse ``values`` and drop duplicates, keeping the first spelling and the order.

    Raises:
        ValueError: one of the values is not a valid IP address or DNS name.
    """
    seen: set[Host] = set()
    hosts: list[str] = []
    for value in values:
        host = parse_host(value)
        if host not in seen:
            seen.add(host)
            hosts.append(host_text(host))
    return hosts


def validate_days(days: int) -> int:
    """Return ``days`` if it is within [MIN_DAYS, MAX_DAYS], else raise ValueError."""
    if not MIN_DAYS <= days <= MAX_DAYS:
        raise ValueError(
            f"--days must be between {MIN_DAYS} and {MAX_DAYS} (got {days}); Apple devices "
            f"reject server certificates valid for more than {MAX_DAYS} days."
        )
    return days


def build_certificate(
    hosts: Sequence[str],
    days: int = DEFAULT_DAYS,
    *,
    now: dt.datetime | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Generate an EC P-256 key and a self-signed TLS server certificate for ``hosts``.

    The certificate is an end-entity certificate (CA:FALSE, like ``mix phx.gen.cert``)
    usable for ``serverAuth``, signed with SHA-256, valid from one hour before ``now``
    for ``days`` days, with every host in its SubjectAltName (DNS or IP entries).

    Raises:
        ValueError: no hosts, an invalid host, or ``days`` out of bounds.
    """
    validate_days(days)
    names = [parse_host(value) for value in dedupe_hosts(hosts)]
    if not names:
        raise ValueError("At least one host name or IP address is required.")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rtcsite"),
            x509.NameAttribute(NameOID.COMMON_NAME, COMMON_NAME),
        ]
    )
    not_before = (now or dt.datetime.now(dt.UTC)) - BACKDATE
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def fingerprint_sha256(certificate: x509.Certificate) -> str:
    """The SHA-256 fingerprint as colon-separated upper-case hex (``AB:CD:...``)."""
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def write_certificate(
    out_dir: Path,
    hosts: Sequence[str],
    days: int = DEFAULT_DAYS,
    *,
    force: bool = False,
) -> CertificateFiles:
    """Generate a key and certificate and write ``key.pem`` / ``cert.pem`` into ``out_dir``.

    The key file gets mode 0600, the certificate 0644. Each file is written to a
    temporary file next to it and renamed into place, so an existing file is never left
    half-written.

    Raises:
        FileExistsError: a target file exists and ``force`` is false.
        ValueError: invalid hosts or ``days`` (see :func:`build_certificate`).
    """
    out_dir = Path(out_dir)
    key_path = out_dir / KEY_FILENAME
    cert_path = out_dir / CERT_FILENAME
    existing = [path for path in (key_path, cert_path) if path.exists() or path.is_symlink()]
    if existing and not force:
        raise FileExistsError(
            f"{', '.join(str(path) for path in existing)} already exist"
            if len(existing) > 1
            else f"{existing[0]} already exists"
        )
    key, certificate = build_certificate(hosts, days)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(key_path, key_pem, 0o600)
    _write_atomically(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return CertificateFiles(
        key_path=key_path,
        cert_path=cert_path,
        certificate=certificate,
        hosts=tuple(host_text(name) for name in san),
    )


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 (never readable by others, even briefly)."""
    _write_atomically(path, data, 0o600)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    # mkstemp creates the file with mode 0600 whatever the umask, so the key is never
    # readable by others, not even for a moment; os.replace swaps it in atomically.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def _escape_endpoint_value(value: str) -> str:
    # Twisted endpoint strings separate parameters with ":"; a backslash escapes.
    return value.replace("\\", "\\\\").replace(":", "\\:")


def daphne_endpoint(
    key_path: Path | str,
    cert_path: Path | str,
    *,
    port: int = 8443,
    interface: str = "0.0.0.0",
) -> str:
    """The Twisted endpoint string for ``daphne -e``: TLS on ``interface:port``.

    ``ssl:PORT:interface=IP:privateKey=KEY:certKey=CERT``, with ``:`` and ``\\`` in the
    values backslash-escaped (as an IPv6 interface or a Windows path needs).
    """
    return ":".join(
        [
            "ssl",
            str(port),
            f"interface={_escape_endpoint_value(interface)}",
            f"privateKey={_escape_endpoint_value(str(key_path))}",
            f"certKey={_escape_endpoint_value(str(cert_path))}",
        ]
    )
