"""A real local HTTP video server for stream tests (127.0.0.1 only).

Routes (``fps``, ``size`` set per server):

- ``/live.ts``   live MPEG-TS encoded on the fly with PyAV (mpeg2video, one GOP per second), paced at real time
- ``/live.mjpeg`` MJPEG as ``multipart/x-mixed-replace`` (JPEGs made with Pillow), paced at real time
- ``/stall.ts``  sends the 200 headers, then nothing until the server stops
- ``/stall_after.ts?s=SECONDS`` live MPEG-TS for SECONDS, then keeps the connection open and silent
- ``/short.ts?s=SECONDS`` live MPEG-TS for SECONDS, then closes the connection (a flapping camera)
- ``/static/NAME`` a file from the ``static`` folder (whole body; e.g. an HLS playlist and its segments)

:meth:`StreamServer.stop` closes every open connection at once (clients see the stream end) and frees the port;
:meth:`StreamServer.start` binds the same port again. Frame ``i`` is a flat grey of :func:`frame_level` ``(i)``,
so tests can tell which frames arrived.

:class:`RtspServer` is a minimal RTSP server (OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN) that sends the same live
MPEG-TS as RTP payload type 33 (MP2T), interleaved on the TCP connection (what ``rtsp_transport=tcp`` asks for).
"""

from __future__ import annotations

import io
import socket
import socketserver
import struct
import threading
import time
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

__all__ = ["StreamServer", "RtspServer", "frame_level", "closed_port", "make_video", "make_hls"]


def frame_level(i: int) -> int:
    """Grey level of frame ``i`` (distinct for 0..39, then repeats)."""
    return (i * 5) % 200 + 20


_RESERVED: list[socket.socket] = []


def closed_port() -> int:
    """A 127.0.0.1 port that refuses connections: bound and never listening, and kept bound for the life of the
    test process, so no server started later (a Ray worker, another test's) can be given it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _RESERVED.append(s)
    return s.getsockname()[1]


def _av_error() -> type[Exception]:
    import av

    return av.error.FFmpegError


class _SocketWriter(io.RawIOBase):
    """File-like sink PyAV's muxer writes into; forwards to the HTTP response socket."""

    def __init__(self, wfile, stopped: threading.Event) -> None:
        self._wfile, self._stopped = wfile, stopped

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # noqa: D401 - file protocol
        if self._stopped.is_set():
            raise BrokenPipeError("server stopped")
        self._wfile.write(bytes(b))
        self._wfile.flush()
        return len(b)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "StreamServer"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format, *args) -> None:  # keep test output quiet
        return

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection)

    def do_GET(self) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        owner.requests.append(parts.path)
        try:
            if parts.path == "/live.ts":
                self._send_headers("video/mp2t")
                owner._write_ts(self.wfile, seconds=None)
            elif parts.path == "/live.mjpeg":
                self._send_headers("multipart/x-mixed-replace; boundary=frame")
                owner._write_mjpeg(self.wfile)
            elif parts.path == "/stall.ts":
                self._send_headers("video/mp2t")
                owner._stopped.wait()
            elif parts.path == "/short.ts":
                seconds = float(parse_qs(parts.query).get("s", ["1.0"])[0])
                self._send_headers("video/mp2t")
                owner._write_ts(self.wfile, seconds=seconds)  # then the connection closes: a flapping camera
            elif parts.path == "/stall_after.ts":
                seconds = float(parse_qs(parts.query).get("s", ["1.0"])[0])
                self._send_headers("video/mp2t")
                owner._write_ts(self.wfile, seconds=seconds)
                owner._stopped.wait()
            elif parts.path.startswith("/static/") and owner.static is not None:
                name = parts.path[len("/static/"):]
                path = owner.static / name
                if "/" in name or name in ("", ".", "..") or not path.is_file():
                    self.send_error(404, "no such file")
                    return
                data = path.read_bytes()
                ctype = "application/vnd.apple.mpegurl" if name.endswith(".m3u8") else "video/mp2t"
                self._send_headers(ctype, length=len(data))
                self.wfile.write(data)
            else:
                self.send_error(404, "no such stream")
        except (OSError, _av_error()):
            return  # the client went away or the server is stopping (PyAV wraps the broken pipe)

    def _send_headers(self, ctype: str, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-cache")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.flush()


class StreamServer:
    """Serve synthetic live streams on 127.0.0.1; stoppable and restartable on the same port."""

    def __init__(self, fps: float = 10.0, size: tuple[int, int] = (64, 48), static: Path | None = None,
                 port: int = 0) -> None:
        self.fps, self.size = fps, size
        self.static = Path(static) if static is not None else None
        self.port = port
        self.requests: list[str] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> "StreamServer":
        self._stopped = threading.Event()
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"test-stream-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut every open connection, free the port."""
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> "StreamServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)

    # ----------------------------------------------------------------- payloads
    def _frame(self, i: int) -> np.ndarray:
        w, h = self.size
        return np.full((h, w, 3), frame_level(i), dtype=np.uint8)

    def _pace(self, t0: float, i: int) -> bool:
        """Sleep until frame ``i`` is due; False when the server stops meanwhile."""
        delay = t0 + i / self.fps - time.monotonic()
        if delay > 0:
            return not self._stopped.wait(delay)
        return not self._stopped.is_set()

    def _write_ts(self, wfile, seconds: float | None, sink: io.RawIOBase | None = None) -> None:
        import av

        sink = sink if sink is not None else _SocketWriter(wfile, self._stopped)
        w, h = self.size
        with av.open(sink, mode="w", format="mpegts", buffer_size=1024, container_options={"flush_packets": "1"}) as out:
            stream = out.add_stream("mpeg2video", rate=Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.codec_context.gop_size = max(1, int(round(self.fps)))
            stream.codec_context.max_b_frames = 0
            t0, i = time.monotonic(), 0
            while seconds is None or i < seconds * self.fps:
                if not self._pace(t0, i):
                    return
                frame = av.VideoFrame.from_ndarray(self._frame(i), format="rgb24")
                frame.pts = i
                frame.time_base = Fraction(1, 1) / stream.codec_context.framerate
                for packet in stream.encode(frame):
                    out.mux(packet)
                i += 1

    def _write_mjpeg(self, wfile) -> None:
        from PIL import Image

        t0, i = time.monotonic(), 0
        while self._pace(t0, i):
            buf = io.BytesIO()
            Image.fromarray(self._frame(i)).save(buf, format="JPEG", quality=90)
            data = buf.getvalue()
            wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data))
            wfile.write(data + b"\r\n")
            wfile.flush()
            i += 1


def _encode(out, frames: int, fps: float, size: tuple[int, int], codec: str) -> None:
    import av

    w, h = size
    stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    stream.codec_context.gop_size = max(1, int(round(fps)))
    stream.codec_context.max_b_frames = 0
    if codec == "libx264":
        stream.options = {"preset": "ultrafast", "qp": "0"}  # lossless: tests read the grey level back
    for i in range(frames):
        img = np.full((h, w, 3), frame_level(i), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def make_video(path: Path, frames: int = 30, fps: float = 10.0, size: tuple[int, int] = (64, 48),
               codec: str = "libx264") -> Path:
    """Write a small video file (container from the suffix) whose frame ``i`` is grey :func:`frame_level` ``(i)``."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as out:
        _encode(out, frames, fps, size, codec)
    return path


def make_hls(folder: Path, seconds: float = 3.0, fps: float = 10.0, size: tuple[int, int] = (64, 48)) -> Path:
    """Write an HLS (VOD) playlist ``index.m3u8`` with 1-second MPEG-TS segments into ``folder``."""
    import av

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    playlist = folder / "index.m3u8"
    with av.open(str(playlist), mode="w", format="hls",
                 options={"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"}) as out:
        _encode(out, int(seconds * fps), fps, size, "mpeg2video")
    return playlist


# ============================================================================================ RTSP
class _RtpSink(io.RawIOBase):
    """Collects MPEG-TS bytes and sends whole 188-byte packets (up to 7) as interleaved RTP on channel 0."""

    def __init__(self, sock: socket.socket, stopped: threading.Event, lock: threading.Lock) -> None:
        self._sock, self._stopped, self._lock = sock, stopped, lock
        self._buf = b""
        self._seq = 0
        self._t0 = time.monotonic()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if self._stopped.is_set():
            raise BrokenPipeError("server stopped")
        self._buf += bytes(b)
        while len(self._buf) >= 188:
            n = min(7, len(self._buf) // 188) * 188
            payload, self._buf = self._buf[:n], self._buf[n:]
            ts = int((time.monotonic() - self._t0) * 90000) & 0xFFFFFFFF
            rtp = struct.pack("!BBHII", 0x80, 33, self._seq & 0xFFFF, ts, 0x1234ABCD) + payload
            self._seq += 1
            with self._lock:
                self._sock.sendall(b"$\x00" + struct.pack("!H", len(rtp)) + rtp)
        return len(b)


class _RtspHandler(socketserver.BaseRequestHandler):
    server: "_RtspTcpServer"

    def handle(self) -> None:
        owner = self.server.owner
        sock: socket.socket = self.request
        owner._track(sock)
        send_lock = threading.Lock()
        rfile = sock.makefile("rb")
        playing: threading.Thread | None = None
        try:
            while not owner._stopped.is_set():
                first = rfile.read(1)
                if not first:
                    return
                if first == b"$":  # interleaved RTCP from the client: skip it
                    _, length = struct.unpack("!BH", rfile.read(3))
                    rfile.read(length)
                    continue
                line = first + rfile.readline()
                headers: dict[str, str] = {}
                while True:
                    h = rfile.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                if int(headers.get("content-length", "0") or 0):
                    rfile.read(int(headers["content-length"]))
                method, url = line.decode("latin-1").split()[:2]
                owner.requests.append(method)
                cseq = headers.get("cseq", "0")
                extra, body = "", b""
                if method == "OPTIONS":
                    extra = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n"
                elif method == "DESCRIBE":
                    body = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=bigsister test\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
                            b"m=video 0 RTP/AVP 33\r\na=rtpmap:33 MP2T/90000\r\na=control:track1\r\n")
                    extra = f"Content-Base: {url.rstrip('/')}/\r\nContent-Type: application/sdp\r\n"
                elif method == "SETUP":
                    extra = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 12345678;timeout=60\r\n"
                elif method in ("PLAY", "GET_PARAMETER"):
                    extra = "Session: 12345678\r\n"
                elif method == "TEARDOWN":
                    self._reply(sock, send_lock, cseq, "Session: 12345678\r\n", b"")
                    return
                self._reply(sock, send_lock, cseq, extra, body)
                if method == "PLAY" and playing is None:
                    sink = _RtpSink(sock, owner._stopped, send_lock)
                    playing = threading.Thread(target=self._play, args=(owner, sink), daemon=True)
                    playing.start()
        except (OSError, ValueError, struct.error):
            return  # client went away or sent something this tiny server does not speak

    @staticmethod
    def _play(owner: "RtspServer", sink: _RtpSink) -> None:
        try:
            owner._write_ts(None, seconds=None, sink=sink)
        except (OSError, _av_error()):
            return

    @staticmethod
    def _reply(sock: socket.socket, lock: threading.Lock, cseq: str, extra: str, body: bytes) -> None:
        head = f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}"
        if body:
            head += f"Content-Length: {len(body)}\r\n"
        with lock:
            sock.sendall(head.encode("latin-1") + b"\r\n" + body)


class _RtspTcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "RtspServer"


class RtspServer(StreamServer):
    """Live MPEG-TS over RTSP (RTP/MP2T interleaved on TCP) on 127.0.0.1: ``rtsp://127.0.0.1:PORT/live``."""

    def start(self) -> "RtspServer":
        self._stopped = threading.Event()
        server = _RtspTcpServer(("127.0.0.1", self.port), _RtspHandler)
        server.owner = self  # type: ignore[assignment]
        self.port = server.server_address[1]
        self._server = server  # type: ignore[assignment]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"test-rtsp-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def url(self, path: str = "/live") -> str:
        return f"rtsp://127.0.0.1:{self.port}{path}"
