"""A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(subject, key, issuer, issuer_key, *, ca=False, sans=None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path, ca_name: str = "protolens test CA") -> dict[str, Path]:
    """Write ca.pem, server.pem/server.key, client.pem/client.key; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert(_name(ca_name), ca_key, _name(ca_name), ca_key, ca=True)
    server_key, client_key = _key(), _key()
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = _cert(_name("localhost"), server_key, ca.subject, ca_key, sans=sans)
    client = _cert(_name("tenant-client"), client_key, ca.subject, ca_key)
    out = {
        "ca": folder / "ca.pem",
        "server_cert": folder / "server.pem",
        "server_key": folder / "server.key",
        "client_cert": folder / "client.pem",
        "client_key": folder / "client.key",
    }
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out["server_cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    out["server_key"].write_bytes(_pem_key(server_key))
    out["client_cert"].write_bytes(client.public_bytes(serialization.Encoding.PEM))
    out["client_key"].write_bytes(_pem_key(client_key))
    return out
