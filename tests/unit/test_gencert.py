"""`manage.py gencert` and rtcsite.certs: a self-signed certificate for HTTPS on the LAN."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import socket
import stat
import sys
from io import StringIO
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from django.core.management import call_command
from django.core.management.base import CommandError

from rtcsite import certs
from rtcsite.management.commands.gencert import Command

HOSTS = ["localhost", "127.0.0.1", "::1", "devbox.lan", "192.168.1.23"]


def gencert(*args: str, **options) -> str:
    out = StringIO()
    call_command("gencert", *args, stdout=out, **options)
    return out.getvalue()


def load(out_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((out_dir / "cert.pem").read_bytes())
    key = serialization.load_pem_private_key((out_dir / "key.pem").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def host_args(hosts: list[str]) -> list[str]:
    return [arg for host in hosts for arg in ("--host", host)]


def test_generates_cert_with_requested_sans(tmp_path):
    output = gencert("--out-dir", str(tmp_path), *host_args(HOSTS))
    cert, _ = load(tmp_path)

    names = san(cert)
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "devbox.lan"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("192.168.1.23"),
    ]
    assert "localhost, 127.0.0.1, ::1, devbox.lan, 192.168.1.23" in output


def test_key_is_p256_and_matches_self_signed_cert(tmp_path):
    gencert(out_dir=tmp_path, hosts=["127.0.0.1"])
    cert, key = load(tmp_path)

    assert isinstance(key.curve, ec.SECP256R1)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)  # raises if the self-signature is wrong


def test_certificate_is_a_tls_server_certificate(tmp_path):
    gencert(out_dir=tmp_path, hosts=["localhost"], days=30)
    cert, _ = load(tmp_path)

    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc <= now
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == dt.timedelta(days=30)
    assert cert.not_valid_after_utc - now > dt.timedelta(days=29)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_key_file_mode_is_0600(tmp_path):
    old_umask = os.umask(0)  # a permissive umask must not leak into the key's mode
    try:
        gencert(out_dir=tmp_path, hosts=["localhost"])
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "cert.pem").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cert.pem", "key.pem"]  # no temp files


def test_prints_fingerprint_env_and_daphne_command(tmp_path):
    output = gencert(out_dir=tmp_path, hosts=["localhost", "192.168.1.23"], port=8443)
    cert, _ = load(tmp_path)

    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    assert f"SHA-256 fingerprint: {fingerprint}" in output
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fingerprint)
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    assert (
        f"daphne -e ssl:8443:interface=0.0.0.0:privateKey={key}:certKey={crt} "
        "rtcsite.asgi:application"
    ) in output
    assert "export ALLOWED_HOSTS=localhost,192.168.1.23" in output
    assert "export CSRF_TRUSTED_ORIGINS=https://localhost:8443,https://192.168.1.23:8443" in output
    assert "https://192.168.1.23:8443/" in output


def test_default_out_dir_is_repo_certs_and_command_is_relative(settings):
    defaults = Command().create_parser("manage.py", "gencert").parse_args([])
    assert defaults.out_dir == Path(settings.BASE_DIR) / "certs"
    assert defaults.days == 365
    endpoint = certs.daphne_endpoint(Path("certs/key.pem"), Path("certs/cert.pem"))
    assert endpoint == "ssl:8443:interface=0.0.0.0:privateKey=certs/key.pem:certKey=certs/cert.pem"


def test_endpoint_escapes_colons_and_backslashes():
    endpoint = certs.daphne_endpoint(
        r"C:\certs\key.pem", "/a:b/cert.pem", port=9443, interface="::"
    )
    assert endpoint == (
        r"ssl:9443:interface=\:\::privateKey=C\:\\certs\\key.pem:certKey=/a\:b/cert.pem"
    )


def test_refuses_to_overwrite_without_force(tmp_path):
    gencert(out_dir=tmp_path, hosts=["localhost"])
    before = {name: (tmp_path / name).read_bytes() for name in ("key.pem", "cert.pem")}

    with pytest.raises(CommandError, match="--force"):
        gencert(out_dir=tmp_path, hosts=["localhost"])
    assert {name: (tmp_path / name).read_bytes() for name in before} == before

    (tmp_path / "key.pem").unlink()  # one file left over is enough to refuse
    with pytest.raises(CommandError, match=r"cert\.pem already exists"):
        gencert(out_dir=tmp_path, hosts=["localhost"])


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_force_replaces_both_files_and_keeps_key_private(tmp_path):
    gencert(out_dir=tmp_path, hosts=["localhost"])
    old_cert, old_key = load(tmp_path)
    (tmp_path / "key.pem").chmod(0o644)

    gencert("--force", out_dir=tmp_path, hosts=["10.0.0.5"])
    new_cert, new_key = load(tmp_path)
    assert new_cert.serial_number != old_cert.serial_number
    assert new_key.private_numbers() != old_key.private_numbers()
    assert san(new_cert).get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600


@pytest.mark.parametrize("days", ["0", "-5", "826", "100000"])
def test_rejects_days_out_of_bounds(tmp_path, days):
    with pytest.raises(CommandError, match="--days must be between 1 and 825"):
        gencert("--out-dir", str(tmp_path), "--host", "localhost", f"--days={days}")
    assert not (tmp_path / "key.pem").exists()


def test_rejects_non_integer_days(tmp_path):
    with pytest.raises(CommandError, match="invalid int value"):
        gencert("--out-dir", str(tmp_path), "--days", "a year")


def test_accepts_bounds(tmp_path):
    gencert(out_dir=tmp_path / "one", hosts=["localhost"], days=1)
    gencert(out_dir=tmp_path / "max", hosts=["localhost"], days=825)
    cert, _ = load(tmp_path / "max")
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=825)


@pytest.mark.parametrize("host", ["", "bad host", "-lead.example", "under_score", "1.2.3.999"])
def test_rejects_invalid_hosts(tmp_path, host):
    with pytest.raises(CommandError, match="neither an IP address nor a valid DNS name"):
        gencert(out_dir=tmp_path, hosts=["localhost", host])
    assert not tmp_path.joinpath("cert.pem").exists()


def test_host_parsing_normalises_and_dedupes():
    assert certs.dedupe_hosts(["LocalHost.", "[::1]", "::1", "localhost", "*.Dev.Example"]) == [
        "localhost",
        "::1",
        "*.dev.example",
    ]
    assert certs.parse_host("bücher.example") == x509.DNSName("xn--bcher-kva.example")


def test_defaults_include_loopback_hostname_and_lan_ip(tmp_path, monkeypatch):
    monkeypatch.setattr(certs.socket, "gethostname", lambda: "devbox")
    monkeypatch.setattr(certs, "lan_ipv4_addresses", lambda: ["192.168.1.23"])

    assert certs.default_hosts() == [
        "localhost",
        "127.0.0.1",
        "::1",
        "devbox",
        "devbox.local",
        "192.168.1.23",
    ]
    output = gencert(out_dir=tmp_path)
    cert, _ = load(tmp_path)
    assert "devbox" in san(cert).get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("192.168.1.23") in san(cert).get_values_for_type(x509.IPAddress)
    assert "https://192.168.1.23:8443/" in output


def test_lan_discovery_survives_failures(monkeypatch):
    def no_resolver(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "unknown host")

    class NoRouteSocket(socket.socket):
        def connect(self, address):
            raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(certs.socket, "getaddrinfo", no_resolver)
    monkeypatch.setattr(certs.socket, "socket", NoRouteSocket)
    assert certs.lan_ipv4_addresses() == []

    monkeypatch.setattr(certs.socket, "gethostname", lambda: "not a valid_name")
    assert certs.default_hosts() == ["localhost", "127.0.0.1", "::1"]


def test_lan_discovery_keeps_only_usable_ipv4(monkeypatch):
    def fake_getaddrinfo(host, port, family=0, type=0, *args):
        return [
            (socket.AF_INET, socket.SOCK_DGRAM, 17, "", (address, 0))
            for address in ("127.0.1.1", "169.254.3.4", "192.168.1.23", "10.1.2.3")
        ]

    class NoRouteSocket(socket.socket):
        def connect(self, address):
            raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(certs.socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(certs.socket, "socket", NoRouteSocket)
    assert certs.lan_ipv4_addresses() == ["192.168.1.23", "10.1.2.3"]


def test_lan_discovery_real_machine_returns_valid_addresses():
    for address in certs.lan_ipv4_addresses():
        parsed = ipaddress.IPv4Address(address)
        assert not parsed.is_loopback and not parsed.is_link_local


def test_help_text_describes_the_options():
    text = Command().create_parser("manage.py", "gencert").format_help()
    for option in ("--out-dir", "--host", "--days", "--force", "--port"):
        assert option in text
    assert "camera" in text and "825" in text
