"""How a viewer's API key reaches the gallery, and how its forms resist cross-site requests.

Sign-in: the viewer pastes an API key into the form at ``/login`` (a POST body, never
a URL). The gallery checks it with one API call, then sets the cookie
``protolens_session``: the key and an expiry sealed with AES-GCM under a key derived
from ``Settings.web_secret`` (so the cookie is opaque, tamper-evident, and any replica
with the same secret can open it). The cookie is ``HttpOnly`` (no script reads it),
``SameSite=Strict`` (no other site's page sends it), ``Path=/`` and ``Secure`` when
``web_secure_cookies`` is set. Each request opens it and forwards the key to the API
as ``authorization: Bearer <key>`` gRPC metadata; the gallery stores no key anywhere
else. Signing out clears it.

Forms (sign-in, sign-out, cancel, start a check) carry a CSRF token: a random value
also held in the ``protolens_csrf`` cookie (double submit; ``SameSite=Strict``,
``HttpOnly``). A POST is accepted only when the form's token equals the cookie's and,
when the browser sends an ``Origin``, that origin is the gallery's own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protolens_server.errors import InvalidArgument

SESSION_COOKIE = "protolens_session"
CSRF_COOKIE = "protolens_csrf"
CSRF_FIELD = "csrf"
MIN_SECRET_CHARS = 32
_NONCE_BYTES = 12
_AAD = b"protolens-web-session-v1"


@dataclass(frozen=True)
class Session:
    """A signed-in viewer: the API key to forward (never shown) and when it ends."""

    api_key: str
    expires: float


class SessionSealer:
    """Seals and opens session cookies with AES-GCM (256-bit key from the secret)."""

    def __init__(self, secret: str, lifetime_s: float) -> None:
        if secret and len(secret) < MIN_SECRET_CHARS:
            raise InvalidArgument(
                "web_secret", f"must be at least {MIN_SECRET_CHARS} characters (or empty)"
            )
        material = secret.encode() if secret else os.urandom(32)
        self._aead = AESGCM(hashlib.sha256(b"protolens-web:" + material).digest())
        self.lifetime_s = lifetime_s

    def seal(self, api_key: str, now: float | None = None) -> str:
        expires = (time.time() if now is None else now) + self.lifetime_s
        payload = json.dumps({"k": api_key, "e": expires}, separators=(",", ":")).encode()
        nonce = os.urandom(_NONCE_BYTES)
        blob = nonce + self._aead.encrypt(nonce, payload, _AAD)
        return base64.urlsafe_b64encode(blob).decode().rstrip("=")

    def open(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session in ``cookie``; None when absent, forged, tampered with or expired."""
        if not cookie or len(cookie) > 4096:
            return None
        try:
            blob = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
            payload = self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _AAD)
            data = json.loads(payload)
            session = Session(str(data["k"]), float(data["e"]))
        except (ValueError, KeyError, TypeError, InvalidTag):
            return None
        return session if session.expires > (time.time() if now is None else now) else None


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(cookie: str | None, submitted: str | None) -> bool:
    """The form's token equals the cookie's (compared in constant time)."""
    if not cookie or not submitted:
        return False
    return hmac.compare_digest(cookie.encode(), submitted.encode())


def same_origin(origin: str | None, scheme: str, host: str) -> bool:
    """An ``Origin`` header, when sent, names this gallery (scheme://host[:port])."""
    if origin is None:
        return True  # older browsers and same-origin navigations may omit it: token decides
    return origin == f"{scheme}://{host}"


def key_fingerprint(api_key: str) -> str:
    """A short one-way name for a key (cache partitions, logs): never the key itself."""
    return hashlib.sha256(b"protolens-key:" + api_key.encode()).hexdigest()[:16]
