"""API keys: several named keys with a scope, compared in constant time.

A request carries ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. No key: 401. A read key on a route
that changes something: 403. GET, HEAD and OPTIONS need the read scope, every other method the write scope
(:func:`needed_scope`); :meth:`Authenticator.check` applies both rules to a request's headers alone, so the
Ingress answers 401/403 before it reads a byte of the body. With no key configured at all, :func:`load_keys` generates one write key once,
keeps it in ``auth.generated_key_file`` (mode 0600) and the service logs where it is (never the key).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import SecretStr, TypeAdapter, ValidationError

from bigsister_ray.config import ApiKey, AuthConfig, format_validation_error
from bigsister_ray.errors import ConfigError

__all__ = ["Principal", "Authenticator", "AccessDenied", "load_keys", "needed_scope", "SCOPES", "READ_METHODS"]

log = logging.getLogger(__name__)

Scope = Literal["read", "write"]
SCOPES: dict[str, int] = {"read": 0, "write": 1}
#: Methods that only read: they need the read scope; every other method needs write.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def needed_scope(method: str) -> Scope:
    """The scope a request with this HTTP method needs."""
    return "read" if method.upper() in READ_METHODS else "write"


class AccessDenied(Exception):
    """A request without a valid key (401) or with too small a scope (403); the HTTP layer answers with it."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's name and scope (never the key)."""

    name: str
    scope: str

    def allows(self, needed: str) -> bool:
        return SCOPES[self.scope] >= SCOPES[needed]


def load_keys(cfg: AuthConfig) -> list[ApiKey]:
    """The configured keys, plus the keys file; generates and stores one write key when there are none."""
    keys = list(cfg.keys)
    if cfg.keys_file is not None:
        try:
            raw = yaml.safe_load(Path(cfg.keys_file).read_text()) or []
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"auth.keys_file: cannot read {cfg.keys_file}: {err}") from err
        try:
            keys += TypeAdapter(list[ApiKey]).validate_python(raw)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, str(cfg.keys_file))) from err
    if not keys and cfg.enabled:
        path = Path(cfg.generated_key_file)
        if path.exists():
            key = path.read_text().strip()
        else:
            key = secrets.token_urlsafe(32)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(key + "\n")
        log.warning("no API key configured: generated a write key, stored in %s (send it as X-API-Key)", path.resolve())
        keys.append(ApiKey(name="generated", key=SecretStr(key), scope="write"))
    names = [k.name for k in keys]
    if len(set(names)) != len(names):
        raise ConfigError(f"auth.keys: key names must be unique, got {names}")
    return keys


class Authenticator:
    """Checks a presented key against every configured key in constant time."""

    def __init__(self, keys: list[ApiKey], enabled: bool = True) -> None:
        self.enabled = enabled
        self._keys = [(k.name, k.scope, k.key.get_secret_value().encode()) for k in keys]

    @classmethod
    def from_config(cls, cfg: AuthConfig) -> "Authenticator":
        return cls(load_keys(cfg), enabled=cfg.enabled)

    def identify(self, presented: str | None) -> Principal | None:
        """The principal for a presented key, or None. Compares against every key (no early exit)."""
        if not self.enabled:
            return Principal(name="anonymous", scope="write")
        if not presented:
            return None
        given = presented.encode()
        found: Principal | None = None
        for name, scope, key in self._keys:
            if hmac.compare_digest(given, key) and found is None:
                found = Principal(name=name, scope=scope)
        return found

    def check(self, headers, method: str) -> Principal:
        """The principal of a request from its headers alone; raises :class:`AccessDenied` (401 no or unknown
        key, 403 a scope smaller than ``method`` needs)."""
        principal = self.identify(self.extract(headers))
        if principal is None:
            raise AccessDenied(401, "missing or unknown API key: send it as X-API-Key or Authorization: Bearer")
        needed = needed_scope(method)
        if not principal.allows(needed):
            raise AccessDenied(403, f"key {principal.name!r} has scope {principal.scope!r}; this route needs {needed!r}")
        return principal

    @staticmethod
    def extract(headers) -> str | None:
        """The key from ``X-API-Key`` or ``Authorization: Bearer``."""
        key = headers.get("x-api-key")
        if key:
            return key.strip()
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return None

    def __repr__(self) -> str:  # never the keys
        return f"Authenticator(enabled={self.enabled}, keys={[n for n, _, _ in self._keys]})"

    def to_json(self) -> str:
        """Serialisable form for passing to Serve replicas (keys included: keep it out of logs)."""
        return json.dumps({"enabled": self.enabled, "keys": [[n, s, k.decode()] for n, s, k in self._keys]})
