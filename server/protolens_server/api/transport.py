"""How the gRPC port listens: TLS / mutual TLS from files, or plaintext, and the insecure rule.

- ``tls_cert_file`` + ``tls_key_file``: TLS; with ``tls_client_ca_file`` too,
  mutual TLS (clients must present a certificate that CA signed).
- ``insecure`` (development): callers without a key are let in as the
  ``default`` tenant. Refused unless the bind address is loopback.
- Neither: plaintext with API keys required; fine on loopback or behind a
  TLS-terminating proxy/mesh, warned about otherwise.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import grpc

from protolens_server.config import Settings
from protolens_server.errors import InvalidArgument
from protolens_server.logging import get_logger

log = get_logger(__name__)


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: Path | None, field: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(field, f"cannot read {path}: {exc.strerror or exc}") from exc


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' files, or None for plaintext (checks the rules)."""
    cert = _read(settings.tls_cert_file, "tls_cert_file")
    key = _read(settings.tls_key_file, "tls_key_file")
    client_ca = _read(settings.tls_client_ca_file, "tls_client_ca_file")
    if (cert is None) != (key is None):
        raise InvalidArgument("tls_cert_file", "set both tls_cert_file and tls_key_file or neither")
    if client_ca is not None and cert is None:
        raise InvalidArgument("tls_client_ca_file", "mutual TLS needs tls_cert_file/tls_key_file")
    host = settings.grpc_host
    if settings.insecure and not is_loopback(host):
        raise InvalidArgument(
            "insecure",
            f"refusing to serve in insecure mode (no API keys) on {host}: insecure mode is for"
            " development on loopback (127.0.0.1) only; bind to loopback or turn insecure off"
            " and give callers API keys",
        )
    if cert is None:
        if not is_loopback(host):
            log.warning(
                "api.plaintext",
                extra={"address": host, "hint": "set tls_cert_file/tls_key_file unless a proxy"
                       " or mesh terminates TLS in front of the API"},
            )  # fmt: skip
        return None
    assert key is not None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
