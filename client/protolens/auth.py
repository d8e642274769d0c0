"""Connecting with an API key and TLS: keyword arguments for ``Client``/``AsyncClient``.

    from protolens import Client
    from protolens.auth import connection

    with Client("api.example:50051", **connection(api_key="pl_...", tls_ca="ca.pem")) as c:
        ...

``connection()`` also reads ``$PROTOLENS_API_KEY``, ``$PROTOLENS_TLS_CA``,
``$PROTOLENS_TLS_CERT`` and ``$PROTOLENS_TLS_KEY`` for what is not given.
With a client certificate and key it sets up mutual TLS.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc

from protolens.errors import ProtolensError


def auth_metadata(api_key: str) -> list[tuple[str, str]]:
    """The gRPC metadata that carries ``api_key``."""
    return [("authorization", f"Bearer {api_key}")] if api_key else []


def _read(path: str | Path | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ProtolensError(f"{what} {path}: {exc.strerror or exc}") from exc


def channel_credentials(
    tls_ca: str | Path | None = None,
    client_cert: str | Path | None = None,
    client_key: str | Path | None = None,
) -> grpc.ChannelCredentials:
    """TLS credentials: ``tls_ca`` to trust (None: the system roots), client cert/key for mTLS."""
    cert, key = _read(client_cert, "client certificate"), _read(client_key, "client key")
    if (cert is None) != (key is None):
        raise ProtolensError("mutual TLS needs both a client certificate and its key")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls_ca, "TLS CA"), private_key=key, certificate_chain=cert
    )


def connection(
    *,
    api_key: str | None = None,
    tls: bool | None = None,
    tls_ca: str | Path | None = None,
    client_cert: str | Path | None = None,
    client_key: str | Path | None = None,
) -> dict[str, Any]:
    """``credentials``/``metadata`` keyword arguments for ``Client(address, **...)``.

    TLS is used when ``tls`` is true or any TLS file is given (here or in the
    environment); otherwise the channel is plaintext (loopback development).
    """
    env = os.environ
    api_key = api_key if api_key is not None else env.get("PROTOLENS_API_KEY", "")
    tls_ca = tls_ca or env.get("PROTOLENS_TLS_CA") or None
    client_cert = client_cert or env.get("PROTOLENS_TLS_CERT") or None
    client_key = client_key or env.get("PROTOLENS_TLS_KEY") or None
    out: dict[str, Any] = {"metadata": auth_metadata(api_key)}
    if tls or (tls is None and (tls_ca or client_cert or client_key)):
        out["credentials"] = channel_credentials(tls_ca, client_cert, client_key)
    return out
