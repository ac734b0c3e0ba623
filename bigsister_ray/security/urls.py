"""Which stream URLs the service may open, so that registering a camera is no way into the private network.

One :class:`UrlPolicy` decides, at registration and again at every connection the stream reader makes:

- schemes: ``rtsp``, ``rtsps``, ``http``, ``https`` and local files (``file://`` or a path; the media-root check
  lives with the file source); anything else is refused;
- addresses: the host is resolved and EVERY address is checked. Always refused: the cloud metadata addresses and
  the link-local range, unspecified, multicast and reserved addresses. Loopback only with ``auth.allow_loopback``,
  private ranges only with ``auth.allow_private``; with ``auth.allowed_networks`` set, every address must lie in
  one of those networks; with ``auth.allowed_hosts`` set, the host must be named there (or all its addresses lie
  in a network listed there);
- ports: Ray's own ports and the service's port are refused; with ``auth.allowed_ports`` set, only those ports
  (the scheme's default port counts when the URL names none);
- names that do not resolve are refused, unless ``auth.allowed_hosts`` names them: such a camera may be
  registered before it is up, but it is connected to only once its name resolves to an allowed address.

:meth:`UrlPolicy.resolve_target` is the connect-time form: it returns a :class:`CheckedTarget` holding the
addresses it checked, and the reader connects to one of those (never resolving the name again), so a name
that changes its address between the check and the connection (DNS rebinding) gains nothing.

A process that runs streams for the service installs its configured policy with :func:`install_url_policy`;
:func:`url_policy` is what a reader uses when it was given none. Until one is installed, that is
:data:`LIBRARY_POLICY` (the defaults, plus loopback for local replay servers and tests).

Refusals are :class:`~bigsister_ray.errors.StreamError` whose message names the (redacted) URL and the rule.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import SplitResult, urlsplit, urlunsplit

from bigsister_ray.config import AuthConfig
from bigsister_ray.errors import StreamError

__all__ = ["UrlPolicy", "CheckedTarget", "check_stream_url", "install_url_policy", "url_policy", "split_url", "LIBRARY_POLICY",
           "NETWORK_SCHEMES", "RAY_PORTS", "DEFAULT_PORTS", "Resolver", "system_resolve"]

NETWORK_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https"})
#: The port a URL without one connects to.
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
#: GCS, Ray client, dashboard, dashboard agent, metrics export, runtime-env agent.
RAY_PORTS = frozenset({6379, 8265, 10001, 52365, 52366, 8080, 44217, 44227})
_METADATA = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fd00:ec2::254/128"),
             ipaddress.ip_network("100.100.100.200/32"))

#: ``resolve(host, port) -> addresses`` (strings); raises ``OSError`` (``socket.gaierror``) when the name does
#: not resolve.
Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def system_resolve(host: str, port: int) -> list[str]:
    """The TCP addresses the system resolver gives for ``host``."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)]


def split_url(url: str, shown: str) -> SplitResult:
    """``urlsplit`` whose every failure is a :class:`StreamError` naming the URL (``shown``, redacted): brackets that
    do not close or hold no IP address, host labels that are empty or longer than 63 characters, a host over 253
    characters, characters that IDNA refuses, a port that is not a number in 0-65535."""
    why = "expected scheme://host[:port]/path"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as err:
        raise StreamError(f"stream URL {shown}: malformed ({err}); {why}") from err
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as err:
        raise StreamError(f"stream URL {shown}: invalid port ({err}); {why}") from err
    if host and not host.startswith("[") and ":" not in host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            try:
                encoded = host.encode("idna")
            except UnicodeError as err:
                raise StreamError(f"stream URL {shown}: malformed host name ({err}); {why}") from err
            if len(encoded) > 253 or any(not label or len(label) > 63 for label in encoded.rstrip(b".").split(b".")):
                raise StreamError(f"stream URL {shown}: malformed host name (a label is empty or over 63 characters, "
                                  f"or the name is over 253); {why}")
    return parts


@dataclass(frozen=True)
class CheckedTarget:
    """A network URL whose host was resolved and whose every address passed the policy."""

    url: str
    scheme: str
    host: str  # as written in the URL (a name or an address)
    port: int  # explicit, or the scheme's default
    addresses: tuple[str, ...]

    @property
    def address(self) -> str:
        """The address to connect to (the first checked one)."""
        return self.addresses[0]

    @property
    def host_header(self) -> str:
        """``Host`` as the original URL would send it."""
        parts = urlsplit(self.url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return netloc

    def pinned_url(self, address: str | None = None) -> str:
        """The URL with its host replaced by the checked ``address`` (credentials, path and query kept)."""
        parts = urlsplit(self.url)
        addr = address or self.address
        shown = f"[{addr}]" if ":" in addr else addr
        userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit((parts.scheme, f"{userinfo}{shown}:{self.port}", parts.path, parts.query, parts.fragment))


def _ip(text: str) -> IPAddress:
    addr = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass
class UrlPolicy:
    allowed_hosts: list[str] = field(default_factory=list)
    allow_loopback: bool = False
    allow_private: bool = True
    blocked_ports: frozenset[int] = RAY_PORTS
    allowed_networks: list[str] = field(default_factory=list)
    allowed_ports: list[int] = field(default_factory=list)
    resolve: Resolver = field(default=system_resolve, repr=False, compare=False)

    @classmethod
    def from_config(cls, cfg: AuthConfig, serve_port: int | None = None, *,
                    resolve: Resolver | None = None) -> "UrlPolicy":
        ports = set(RAY_PORTS) | ({serve_port} if serve_port else set())
        return cls(list(cfg.allowed_hosts), cfg.allow_loopback, cfg.allow_private, frozenset(ports),
                   list(cfg.allowed_networks), list(cfg.allowed_ports), resolve or system_resolve)

    # -------------------------------------------------------------------------------------------- checks
    def check(self, url: str, redacted: str | None = None) -> str:
        """Registration: return the scheme ('file' for local paths) or raise StreamError saying why the URL is
        refused. A name that does not resolve passes only when ``allowed_hosts`` names it."""
        scheme = self._scheme(url, redacted or url)
        if scheme != "file":
            self._check_network(url, redacted or url, need_address=False)
        return scheme

    def resolve_target(self, url: str, redacted: str | None = None) -> CheckedTarget:
        """Connection: resolve the host now, check every address, and return what to connect to."""
        shown = redacted or url
        scheme = self._scheme(url, shown)
        if scheme == "file":
            raise StreamError(f"stream URL {shown}: not a network URL")
        return self._check_network(url, shown, need_address=True)

    def _scheme(self, url: str, shown: str) -> str:
        scheme = split_url(url, shown).scheme.lower()
        if scheme in ("", "file"):
            return "file"
        if scheme not in NETWORK_SCHEMES:
            raise StreamError(f"stream URL {shown}: scheme {scheme!r} is not allowed; use one of rtsp, rtsps, http, https or a file under the media root")
        return scheme

    def _check_network(self, url: str, shown: str, *, need_address: bool) -> CheckedTarget:
        parts = split_url(url, shown)
        scheme = parts.scheme.lower()
        host = parts.hostname
        if not host:
            raise StreamError(f"stream URL {shown}: no host")
        try:
            port = parts.port
        except ValueError as err:
            raise StreamError(f"stream URL {shown}: invalid port") from err
        port = port if port is not None else DEFAULT_PORTS[scheme]
        if port in self.blocked_ports:
            raise StreamError(f"stream URL {shown}: port {port} is reserved for Ray or this service and is refused")
        if self.allowed_ports and port not in self.allowed_ports:
            raise StreamError(f"stream URL {shown}: port {port} is not in auth.allowed_ports {sorted(self.allowed_ports)}")
        try:
            raw = self.resolve(host, port)
        except (OSError, UnicodeError):
            raw = []
        try:
            addrs = sorted({_ip(a) for a in raw}, key=str)
        except ValueError as err:
            raise StreamError(f"stream URL {shown}: host {host} resolved to something that is not an IP address") from err
        if not addrs:
            named = any(entry.lower() == host.lower() for entry in self.allowed_hosts)
            if need_address:
                why = "" if named else "; unresolvable hosts are refused unless auth.allowed_hosts names them"
                raise StreamError(f"stream URL {shown}: host {host} does not resolve{why}")
            if not named:
                raise StreamError(f"stream URL {shown}: host {host} does not resolve; unresolvable hosts are refused "
                                  "unless auth.allowed_hosts names them")
            return CheckedTarget(url, scheme, host, port, ())
        for a in addrs:
            self._check_address(a, shown)
        if not self._host_allowed(host, addrs):
            raise StreamError(f"stream URL {shown}: host {host} is not in auth.allowed_hosts")
        return CheckedTarget(url, scheme, host, port, tuple(str(a) for a in addrs))

    def _check_address(self, a: IPAddress, shown: str) -> None:
        if any(a in net for net in _METADATA) or a.is_link_local:
            raise StreamError(f"stream URL {shown}: {a} is a link-local/cloud metadata address and is refused")
        if a.is_unspecified or a.is_multicast or (a.is_reserved and not a.is_loopback):
            raise StreamError(f"stream URL {shown}: {a} is not a camera address")
        if a.is_loopback and not self.allow_loopback:
            raise StreamError(f"stream URL {shown}: loopback ({a}) is refused; set auth.allow_loopback to allow local sources")
        if a.is_private and not a.is_loopback and not self.allow_private:
            raise StreamError(f"stream URL {shown}: private address {a} is refused; set auth.allow_private or auth.allowed_hosts")
        if self.allowed_networks and not any(a in net for net in self._networks()):
            raise StreamError(f"stream URL {shown}: {a} is outside auth.allowed_networks")

    def _networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.allowed_networks]

    def _host_allowed(self, host: str, addrs: list[IPAddress]) -> bool:
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


def check_stream_url(url: str, cfg: AuthConfig, serve_port: int | None = None, redacted: str | None = None) -> str:
    """Registration check with the configured policy (see :class:`UrlPolicy`)."""
    return UrlPolicy.from_config(cfg, serve_port).check(url, redacted)


#: The policy of a process that installed none: the defaults, plus loopback (local replay servers, tests).
LIBRARY_POLICY = UrlPolicy(allow_loopback=True)
_installed: UrlPolicy | None = None
_installed_lock = threading.Lock()


def install_url_policy(policy: UrlPolicy | None) -> None:
    """Make ``policy`` the one every stream reader of this process connects under (None: back to the default)."""
    global _installed
    with _installed_lock:
        _installed = policy


def url_policy() -> UrlPolicy:
    """The policy installed in this process, or :data:`LIBRARY_POLICY`."""
    return _installed if _installed is not None else LIBRARY_POLICY
