"""What the gallery tests share: the stack's facts (``Gallery``) and a plain HTTP client."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from protolens import Client
from protolens.auth import auth_metadata


@dataclass
class Gallery:
    url: str  # http://127.0.0.1:PORT (no trailing slash)
    address: str  # the API
    keys: dict[str, str]
    jobs: dict[str, str] = field(default_factory=dict)  # label -> job id
    check: str = ""  # alpha's finished check id
    redis_url: str = ""  # the stack's Redis (to make and revoke keys)

    def client(self, tenant: str) -> Client:
        return Client(self.address, timeout=30, metadata=auth_metadata(self.keys[tenant]))


# --- plain HTTP, as a browser without JavaScript would -------------------------------------


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


@dataclass
class Http:
    """An HTTP client with a cookie jar that does not follow redirects."""

    base: str
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def request(
        self,
        path: str,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect
        )
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with opener.open(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def csrf(self) -> str:
        """The CSRF token of the sign-in form (and the cookie it came with)."""
        _, _, body = self.request("/login")
        found = re.search(rb'name="csrf" value="([^"]+)"', body)
        assert found, body[:500]
        return found.group(1).decode()

    def sign_in(self, key: str) -> tuple[int, dict[str, str], bytes]:
        return self.request("/login", {"csrf": self.csrf(), "api_key": key, "next": "/"})
