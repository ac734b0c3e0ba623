"""Which stream URLs the service may open, so that registering a camera is no way into the private network.

Allowed: ``rtsp``, ``rtsps``, ``http``, ``https`` and local files (``file://`` or a path; the media-root check
lives with the file source). Refused: other schemes, the cloud metadata addresses and link-local range,
unspecified and multicast addresses, loopback unless ``auth.allow_loopback``, private ranges unless
``auth.allow_private``, Ray's own ports, and hosts outside ``auth.allowed_hosts`` when that list is set.
Host names are resolved and every address is checked.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bigsister_ray.config import AuthConfig
from bigsister_ray.errors import StreamError

__all__ = ["UrlPolicy", "check_stream_url", "NETWORK_SCHEMES", "RAY_PORTS"]

NETWORK_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https"})
#: GCS, Ray client, dashboard, dashboard agent, metrics export, runtime-env agent.
RAY_PORTS = frozenset({6379, 8265, 10001, 52365, 52366, 8080, 44217, 44227})
_METADATA = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fd00:ec2::254/128"),
             ipaddress.ip_network("100.100.100.200/32"))


@dataclass
class UrlPolicy:
    allowed_hosts: list[str] = field(default_factory=list)
    allow_loopback: bool = False
    allow_private: bool = True
    blocked_ports: frozenset[int] = RAY_PORTS

    @classmethod
    def from_config(cls, cfg: AuthConfig, serve_port: int | None = None) -> "UrlPolicy":
        ports = set(RAY_PORTS) | ({serve_port} if serve_port else set())
        return cls(list(cfg.allowed_hosts), cfg.allow_loopback, cfg.allow_private, frozenset(ports))

    def _host_allowed(self, host: str, addrs: list[ipaddress._BaseAddress]) -> bool:
        if not self.allowed_hosts:
            return True
        for entry in self.allowed_hosts:
            if entry.lower() == host.lower():
                return True
            try:
                net = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if addrs and all(a in net for a in addrs):
                return True
        return False

    def check(self, url: str, redacted: str | None = None) -> str:
        """Return the scheme ('file' for local paths) or raise StreamError saying why the URL is refused."""
        shown = redacted or url
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme in ("", "file"):
            return "file"
        if scheme not in NETWORK_SCHEMES:
            raise StreamError(f"stream URL {shown}: scheme {scheme!r} is not allowed; use one of rtsp, rtsps, http, https or a file under the media root")
        host = parts.hostname
        if not host:
            raise StreamError(f"stream URL {shown}: no host")
        try:
            port = parts.port
        except ValueError as err:
            raise StreamError(f"stream URL {shown}: invalid port") from err
        if port is not None and port in self.blocked_ports:
            raise StreamError(f"stream URL {shown}: port {port} is reserved for Ray or this service and is refused")
        try:
            infos = socket.getaddrinfo(host, port or 80, proto=socket.IPPROTO_TCP)
        except socket.gaierror:
            infos = []  # unresolvable now: allowed (the camera may come up later), but only by name rules
        addrs = sorted({ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos}, key=str)
        for a in addrs:
            if any(a in net for net in _METADATA) or a.is_link_local:
                raise StreamError(f"stream URL {shown}: {a} is a link-local/cloud metadata address and is refused")
            if a.is_loopback:
                if not self.allow_loopback:
                    raise StreamError(f"stream URL {shown}: loopback ({a}) is refused; set auth.allow_loopback to allow local sources")
                continue
            if a.is_unspecified or a.is_multicast or a.is_reserved:
                raise StreamError(f"stream URL {shown}: {a} is not a camera address")
            if a.is_private and not self.allow_private:
                raise StreamError(f"stream URL {shown}: private address {a} is refused; set auth.allow_private or auth.allowed_hosts")
        if not self._host_allowed(host, addrs):
            raise StreamError(f"stream URL {shown}: host {host} is not in auth.allowed_hosts")
        return scheme


def check_stream_url(url: str, cfg: AuthConfig, serve_port: int | None = None, redacted: str | None = None) -> str:
    return UrlPolicy.from_config(cfg, serve_port).check(url, redacted)
