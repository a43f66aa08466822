"""`inspector gateway-cert`: the OPC UA server's self-signed application-instance certificate.

OPC UA (Part 6 §6.2.2) wants the application URI in the certificate's subjectAltName, with the DNS
names / IP addresses a client uses to reach the server; the server reads its application URI back from
the certificate (`certificate_uri`), so the two always match. Built with asyncua's own helper
(asyncua.crypto.cert_gen.generate_self_signed_app_certificate: key usages and SAN per OPC 10000-4 6.1),
DER certificate and PEM PKCS#8 key, the key readable by its owner only.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from pathlib import Path

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from inspector.errors import InspectorError

CERT_NAME = "gateway-cert.der"
KEY_NAME = "gateway-key.pem"
URI_PREFIX = "urn:bigan-inspect:gateway:"
MAX_DAYS = 3650 * 3
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]*|\[?[0-9A-Fa-f:.]+\]?")


def application_uri(host: str) -> str:
    return URI_PREFIX + host


def _san(hosts: list[str], uri: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_certificate(out_dir: Path | str, hosts: list[str] | None = None, days: int = 730) -> tuple[Path, Path]:
    """Write OUT_DIR/gateway-cert.der and OUT_DIR/gateway-key.pem (mode 0600) for the hosts a client uses
    to reach the gateway (default: this machine's name); returns (certificate, key). Refuses to overwrite
    an existing key or certificate (a PLC that trusts the old one would stop connecting)."""
    out = Path(out_dir)
    hosts = [h for h in (hosts or []) if h] or [socket.gethostname()]
    if not 1 <= days <= MAX_DAYS:
        raise InspectorError(f"gateway-cert: --days must be 1..{MAX_DAYS}, not {days}")
    for host in hosts:
        if not _HOST.fullmatch(host):
            raise InspectorError(f"gateway-cert: {host!r} is not a host name or IP address")
    cert_path, key_path = out / CERT_NAME, out / KEY_NAME
    for p in (cert_path, key_path):
        if p.exists():
            raise InspectorError(f"gateway-cert: {p} exists; remove it first to make a new certificate "
                                 "(clients that trust the old one must then trust the new one)")
    out.mkdir(parents=True, exist_ok=True)
    key = cert_gen.generate_private_key()
    uri = application_uri(hosts[0].strip("[]"))
    cert = cert_gen.generate_self_signed_app_certificate(
        key, f"bigan-inspect gateway {hosts[0]}", {"organizationName": "bigan-inspect"}, _san(hosts, uri),
        extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], days=days)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cert_gen.dump_private_key_as_pem(key))
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    return cert_path, key_path


def load_certificate(path: Path) -> x509.Certificate:
    """A DER or PEM certificate; InspectorError (one line) when it cannot be read."""
    try:
        data = path.read_bytes()
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except (OSError, ValueError) as e:
        raise InspectorError(f"gateway.opcua.certificate {path}: cannot read it ({e}); "
                             "make one with `inspector gateway-cert --out DIR --host NAME`") from e


def certificate_uri(cert: x509.Certificate) -> str | None:
    """The application URI in a certificate's subjectAltName (None when it has none)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None
