"""Console sessions: a signed, expiring cookie that names who logged in, with the form token of the session.

The cookie holds ``{"u": who, "s": scope, "c": csrf token, "i": incident, "x": until}`` signed with itsdangerous
(HMAC-SHA256, a timestamp checked against ``serve.ui.session_ttl_s``); nothing in it is secret, nothing in it
can be changed without the key. Scopes:

* ``read`` / ``write``: an operator who logged in with an API key of that scope (the key itself is never kept);
* ``link``: a viewer who opened a signed alert link (:mod:`bigsister_ray.alerts.links`): the read view of the
  one incident ``i``, nothing else, until the link expires (``x``);
* ``anonymous``: no login yet; it only carries the login form's token.

The signing key is ``serve.ui.session_secret`` or, when unset, derived from every configured API key: the
same on every Ingress replica, and a changed or revoked key ends every session. The cookie is HttpOnly,
SameSite=Lax, limited to ``/ui``, and Secure behind TLS (``serve.ui.secure_cookies``).

A form post must carry the session's token (:data:`CSRF_FIELD`); :func:`csrf_ok` compares it in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from bigsister_ray.config import Settings
from bigsister_ray.serve.context import CONSOLE_PREFIX

__all__ = ["CONSOLE_PREFIX", "COOKIE_NAME", "CSRF_FIELD", "ConsoleSession", "SessionCodec", "csrf_ok", "safe_next"]

COOKIE_NAME = "bigsister_session"
#: The hidden form field holding the session's token.
CSRF_FIELD = "csrf_token"
_SALT = "bigsister-console-session"


@dataclass(frozen=True)
class ConsoleSession:
    """Who is looking at the console, and the token their forms carry."""

    user: str | None
    scope: str  # "read" | "write" | "link" | "anonymous"
    csrf: str
    incident: int | None = None  # the one incident a link viewer may see
    until: int | None = None  # a link viewer's session ends with the link (Unix seconds)

    @classmethod
    def anonymous(cls) -> "ConsoleSession":
        return cls(user=None, scope="anonymous", csrf=secrets.token_urlsafe(24))

    @classmethod
    def login(cls, user: str, scope: str) -> "ConsoleSession":
        """A fresh session (a new token: the anonymous one used on the login page is not carried over)."""
        return cls(user=user, scope=scope, csrf=secrets.token_urlsafe(24))

    @property
    def operator(self) -> bool:
        """Logged in with an API key (sees every page)."""
        return self.scope in ("read", "write")

    @property
    def can_act(self) -> bool:
        return self.scope == "write"

    def sees_incident(self, incident_id: int) -> bool:
        return self.operator or (self.scope == "link" and self.incident == incident_id)

    def as_link_viewer(self, incident_id: int, until: int) -> "ConsoleSession":
        """The read view of one incident until the link that opened it expires."""
        return replace(self, user="link", scope="link", incident=int(incident_id), until=int(until))


class SessionCodec:
    """Signs and reads session cookies. ``secret``: the signing key; ``ttl_s``: how long a cookie is good for."""

    def __init__(self, secret: str | bytes, ttl_s: float) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT, signer_kwargs={"digest_method": hashlib.sha256})
        self.ttl_s = ttl_s

    @classmethod
    def from_settings(cls, settings: Settings, authenticator: Any) -> "SessionCodec":
        ui = settings.serve.ui
        if ui.session_secret is not None:
            secret: str | bytes = ui.session_secret.get_secret_value()
        elif authenticator is not None and getattr(authenticator, "enabled", False):
            secret = hmac.new(b"bigsister-console", authenticator.to_json().encode(), hashlib.sha256).digest()
        else:  # no keys at all: sessions last as long as this process
            secret = secrets.token_bytes(32)
        return cls(secret, ui.session_ttl_s)

    def __repr__(self) -> str:
        return f"SessionCodec(ttl_s={self.ttl_s})"

    def dumps(self, session: ConsoleSession) -> str:
        return self._serializer.dumps({"u": session.user, "s": session.scope, "c": session.csrf, "i": session.incident,
                                       "x": session.until})

    def loads(self, cookie: str | None) -> ConsoleSession | None:
        """The session in ``cookie``; None when absent, tampered with, signed with another key or expired."""
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self.ttl_s)
        except (SignatureExpired, BadSignature):
            return None
        if not isinstance(data, dict) or data.get("s") not in ("read", "write", "link", "anonymous") or not data.get("c"):
            return None
        incident, until = data.get("i"), data.get("x")
        if isinstance(until, int) and time.time() > until:
            return None
        return ConsoleSession(user=data.get("u"), scope=data["s"], csrf=str(data["c"]),
                              incident=int(incident) if isinstance(incident, int) else None,
                              until=until if isinstance(until, int) else None)


def csrf_ok(session: ConsoleSession | None, presented: Any) -> bool:
    """True when ``presented`` (the form's token) is the session's token."""
    if session is None or not isinstance(presented, str) or not presented:
        return False
    return hmac.compare_digest(session.csrf.encode(), presented.encode())


def safe_next(target: str | None, default: str = CONSOLE_PREFIX + "/incidents") -> str:
    """``target`` when it is a console path on this site (``/ui/...``), else ``default``: never another site."""
    if not target or not target.startswith(CONSOLE_PREFIX + "/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(ch) < 0x20 for ch in target):
        return default
    return target
