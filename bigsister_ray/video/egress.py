"""Connections a live source makes, held to the stream URL policy (:mod:`bigsister_ray.security.urls`).

FFmpeg on its own follows HTTP redirects, HLS playlist and segment URLs and RTSP redirects to any host, and
resolves a name again on every connection. :func:`~bigsister_ray.video.sources.open_source` therefore never
hands FFmpeg a host name to resolve or a way to leave the checked camera:

- **HTTP(S)** (MPEG-TS, MJPEG): the URL's host is replaced by the checked address, the original ``Host`` is sent
  with FFmpeg's ``headers`` option (and used for TLS SNI through ``verifyhost``), ``max_redirects=0`` makes any
  3xx an error, and the ``hls`` demuxer is not allowed on this path.
- **HLS** (a path ending in ``.m3u8`` or ``.m3u``): the ``hls`` demuxer is forced and every URL it opens (the
  playlist, each reload, every segment, variant playlist or key) goes through :class:`HlsFetcher`, PyAV's
  ``io_open`` hook: each is checked against the policy, fetched from the checked address, never redirected,
  and bounded in size. Encrypted (``crypto+``) and non-HTTP segment URLs are refused.
- **RTSP(S)**: FFmpeg talks to a :class:`RtspRelay` on 127.0.0.1 that connects to the checked address (with TLS
  for ``rtsps``) and ends the session when the camera answers with a redirect (RTSP 3xx), before FFmpeg sees it.

What a guard refused is appended to ``refusals`` so the caller can say why a source failed in policy terms.
"""

from __future__ import annotations

import base64
import http.client
import io
import logging
import socket
import ssl
import struct
import threading
from urllib.parse import unquote, urlsplit

from bigsister_ray.errors import StreamError
from bigsister_ray.security.urls import CheckedTarget, UrlPolicy

__all__ = ["HlsFetcher", "RtspRelay", "is_hls_url", "MAX_HLS_OBJECT_BYTES"]

log = logging.getLogger("bigsister_ray.video.stream")

#: Largest playlist or segment an HLS source may serve.
MAX_HLS_OBJECT_BYTES = 64 * 1024 * 1024
_MAX_RTSP_HEAD = 64 * 1024


def redact_url(url: str) -> str:
    from bigsister_ray.video.sources import redact_url as redact

    return redact(url)


def is_hls_url(url: str) -> bool:
    """An HTTP(S) URL whose path names an HLS playlist."""
    return urlsplit(url).path.lower().endswith((".m3u8", ".m3u"))


def _tls_context() -> ssl.SSLContext:
    # As FFmpeg's own TLS by default (tls_verify=0): cameras mostly present self-signed certificates.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a checked address, with the URL's host name as SNI."""

    def __init__(self, address: str, port: int, server_name: str, timeout: float) -> None:
        super().__init__(address, port, timeout=timeout, context=_tls_context())
        self._server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_name)


class HlsFetcher:
    """PyAV ``io_open`` for the ``hls`` demuxer: every URL it opens is checked and fetched from the checked address."""

    def __init__(self, policy: UrlPolicy, timeout_s: float, refusals: list[StreamError]) -> None:
        self.policy, self.timeout_s, self.refusals = policy, timeout_s, refusals

    def _refuse(self, err: StreamError) -> StreamError:
        self.refusals.append(err)
        return err

    def __call__(self, url: str, flags: int, options: dict) -> io.BytesIO:
        shown = redact_url(url)
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            raise self._refuse(StreamError(f"HLS URL {shown}: only http and https playlists and segments are allowed"))
        try:
            target = self.policy.resolve_target(url, shown)
        except StreamError as err:
            raise self._refuse(err) from None
        return io.BytesIO(self._get(url, target, shown))

    def _get(self, url: str, target: CheckedTarget, shown: str) -> bytes:
        parts = urlsplit(url)
        if target.scheme == "https":
            conn: http.client.HTTPConnection = _PinnedHTTPS(target.address, target.port, target.host, self.timeout_s)
        else:
            conn = http.client.HTTPConnection(target.address, target.port, timeout=self.timeout_s)
        headers = {"Host": target.host_header, "User-Agent": "bigsister-ray", "Accept": "*/*"}
        if parts.username is not None:
            cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(cred).decode()
        try:
            conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers=headers)
            resp = conn.getresponse()
            if 300 <= resp.status < 400:
                raise self._refuse(StreamError(f"HLS URL {shown}: the server answered with a redirect; redirects are refused"))
            if resp.status != 200:
                raise StreamError(f"HLS URL {shown}: could not be fetched from the camera")
            body = resp.read(MAX_HLS_OBJECT_BYTES + 1)
        except (OSError, http.client.HTTPException) as err:
            raise StreamError(f"HLS URL {shown}: could not be fetched from the camera") from err
        finally:
            conn.close()
        if len(body) > MAX_HLS_OBJECT_BYTES:
            raise self._refuse(StreamError(f"HLS URL {shown}: larger than {MAX_HLS_OBJECT_BYTES} bytes"))
        return body


class RtspRelay:
    """A one-connection TCP relay on 127.0.0.1 to a checked RTSP camera that stops at the first RTSP 3xx reply.

    FFmpeg connects to :attr:`url`; the relay connects to ``target.address`` (TLS for ``rtsps``), forwards the
    client's bytes as they are and the camera's message by message (RTSP replies and ``$``-framed interleaved
    data), and closes both sides instead of forwarding a redirect.
    """

    def __init__(self, target: CheckedTarget, timeout_s: float, refusals: list[StreamError]) -> None:
        self.target, self.timeout_s, self.refusals = target, timeout_s, refusals
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self._listener.settimeout(timeout_s)
        self.port = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rtsp-relay-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """What FFmpeg opens: the camera URL with its host and port replaced by the relay's."""
        parts = urlsplit(self.target.url)
        userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        query = f"?{parts.query}" if parts.query else ""
        return f"rtsp://{userinfo}127.0.0.1:{self.port}{parts.path or '/'}{query}"

    def close(self) -> None:
        self._closed.set()
        for s in [self._listener, *self._socks]:
            try:
                s.close()
            except OSError:
                pass

    def _run(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            self.close()
            return
        self._listener.close()
        self._socks.append(client)
        try:
            upstream = socket.create_connection((self.target.address, self.target.port), timeout=self.timeout_s)
            if self.target.scheme == "rtsps":
                upstream = _tls_context().wrap_socket(upstream, server_hostname=self.target.host)
            upstream.settimeout(None)
        except OSError as err:
            log.debug("RTSP relay: connecting to the camera failed: %s", type(err).__name__)
            self.close()
            return
        self._socks.append(upstream)
        client.settimeout(None)
        up = threading.Thread(target=self._to_camera, args=(client, upstream), name=f"rtsp-relay-{self.port}-up",
                              daemon=True)
        up.start()
        self._to_client(upstream, client)
        self.close()

    def _to_camera(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                data = client.recv(65536)
                if not data:
                    break
                upstream.sendall(data)
        except OSError:
            pass
        self.close()

    def _to_client(self, upstream: socket.socket, client: socket.socket) -> None:
        buf = b""
        try:
            while not self._closed.is_set():
                data = upstream.recv(65536)
                if not data:
                    return
                buf += data
                while buf:
                    if buf[:1] == b"$":
                        if len(buf) < 4:
                            break
                        end = 4 + struct.unpack("!H", buf[2:4])[0]
                    else:
                        head_end = buf.find(b"\r\n\r\n")
                        if head_end < 0:
                            if len(buf) > _MAX_RTSP_HEAD:
                                return
                            break
                        head = buf[:head_end].decode("latin-1")
                        end = head_end + 4 + _content_length(head)
                        status = head.split("\r\n", 1)[0].split()
                        if (len(status) >= 2 and status[0].startswith("RTSP/") and status[1].isdigit()
                                and 300 <= int(status[1]) < 400):
                            self.refusals.append(StreamError(
                                f"stream URL {redact_url(self.target.url)}: the camera answered with an RTSP "
                                f"redirect ({status[1]}); redirects are refused"))
                            return
                    if len(buf) < end:
                        break
                    client.sendall(buf[:end])
                    buf = buf[end:]
        except (OSError, ValueError):
            return


def _content_length(head: str) -> int:
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            n = int(value.strip())
            if n < 0 or n > _MAX_RTSP_HEAD:
                raise ValueError("bad Content-Length")
            return n
    return 0
