"""Signed, expiring links to the console's incident pages: what an alert links to.

A link opens ``/ui/incidents/{id}`` in a browser without a login until it expires::

    https://cctv.example.org/ui/incidents/42?exp=1767225600&sig=Vb0...

``exp`` is the expiry in Unix seconds and ``sig`` the HMAC-SHA256 of ``"{path}\\n{exp}"`` under the link key
(``serve.links.secret``), URL-safe base64 without padding. The signature covers the path, so a link to one
incident opens no other page; it grants the read view of that page only (acting still needs a write key or
the Slack buttons). The key must be the same on every node that sends alerts or serves the console.

Without a key, links are plain (``/ui/incidents/{id}``) and the console asks for a login first.

:func:`verify_path` raises :class:`LinkError` for a link that is expired, tampered with, for another page, or
signed with another key; its message says what to do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlencode

from pydantic import SecretStr

from bigsister_ray.config import Settings
from bigsister_ray.errors import BigSisterError, ConfigError

__all__ = ["LinkError", "LinkSigner", "incident_page_path", "sign_path", "verify_path", "MIN_SECRET_CHARS"]

#: Shortest link key accepted: the key is the only thing between a guessed URL and an incident page.
MIN_SECRET_CHARS = 32


class LinkError(BigSisterError):
    """A signed link that does not open its page: expired, tampered with, or signed with another key."""


def incident_page_path(incident_id: int) -> str:
    """The console page of one incident."""
    return f"/ui/incidents/{int(incident_id)}"


def _key(secret: SecretStr | str) -> bytes:
    value = secret.get_secret_value() if isinstance(secret, SecretStr) else str(secret)
    if len(value) < MIN_SECRET_CHARS:
        raise ConfigError(f"serve.links.secret: expected at least {MIN_SECRET_CHARS} random characters, got {len(value)} "
                          "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return value.encode()


def _signature(key: bytes, path: str, exp: int) -> str:
    digest = hmac.new(key, f"{path}\n{exp}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign_path(path: str, secret: SecretStr | str, expires_at: float) -> dict[str, str]:
    """The query parameters (``exp``, ``sig``) that open ``path`` until ``expires_at`` (Unix seconds)."""
    exp = int(expires_at)
    return {"exp": str(exp), "sig": _signature(_key(secret), path, exp)}


def verify_path(path: str, exp: str | int | None, sig: str | None, secret: SecretStr | str, *, now: float | None = None) -> None:
    """Raise :class:`LinkError` unless ``exp``/``sig`` (from the query string) sign ``path`` and have not expired."""
    if exp is None or sig is None or str(exp) == "" or sig == "":
        raise LinkError(f"{path}: the link is not signed (it needs exp and sig): log in to open the page")
    try:
        exp_i = int(str(exp))
    except ValueError:
        raise LinkError(f"{path}: the link's exp is not a time ({str(exp)[:20]!r}): open the link from the alert again, "
                        "or log in") from None
    if not hmac.compare_digest(_signature(_key(secret), path, exp_i).encode(), str(sig).encode()):
        raise LinkError(f"{path}: the link's signature does not match (changed, for another page, or signed with "
                        "another serve.links.secret): log in to open the page")
    now = time.time() if now is None else now
    if now > exp_i:
        raise LinkError(f"{path}: the link expired {now - exp_i:.0f} s ago: log in to open the page")


@dataclass(frozen=True)
class LinkSigner:
    """Makes and checks the links alerts carry. ``secret`` None: plain links (the console asks for a login)."""

    public_url: str
    secret: SecretStr | None = None
    ttl_s: float = 7 * 24 * 3600.0
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if self.secret is not None:
            _key(self.secret)  # a short key is a config error now, not at the first alert
        if not self.ttl_s > 0:
            raise ConfigError(f"serve.links.ttl_s: expected a positive number of seconds, got {self.ttl_s!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> "LinkSigner":
        links = getattr(settings.serve, "links", None)
        if links is None:
            return cls(settings.serve.public_url)
        return cls(settings.serve.public_url, links.secret, links.ttl_s)

    def __repr__(self) -> str:
        return f"LinkSigner(public_url={self.public_url!r}, signed={self.secret is not None}, ttl_s={self.ttl_s})"

    @property
    def signed(self) -> bool:
        return self.secret is not None

    def incident_url(self, incident_id: int) -> str:
        """The absolute URL of the incident's page, signed when a key is set."""
        path = incident_page_path(incident_id)
        url = self.public_url.rstrip("/") + path
        if self.secret is None:
            return url
        return f"{url}?{urlencode(sign_path(path, self.secret, self.clock() + self.ttl_s))}"

    def verify(self, path: str, exp: str | int | None, sig: str | None) -> None:
        """Raise :class:`LinkError` unless the link opens ``path`` now (always, when no key is set)."""
        if self.secret is None:
            raise LinkError(f"{path}: signed links are off (serve.links.secret is not set): log in to open the page")
        verify_path(path, exp, sig, self.secret, now=self.clock())
