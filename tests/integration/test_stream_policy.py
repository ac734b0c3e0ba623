"""The stream URL policy holds at every connection a live source makes, with real servers on 127.0.0.1.

Each refusal test has a "listener" on the forbidden target that records every connection it receives; it must
see none, after a positive control shows the same setup reaches an allowed target. Loopback is allowed
(``allow_loopback``) and the listener's port or address is then forbidden by ``allowed_ports`` or
``allowed_networks``, so what stops the connection is the policy.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bigsister_ray.clip import ClipSpec
from bigsister_ray.config import AuthConfig, StreamsConfig
from bigsister_ray.errors import StreamError
from bigsister_ray.security.urls import UrlPolicy
from bigsister_ray.video.sources import open_source, resolve_source
from tests._serve_support import wait_for
from tests._stream_server import RtspServer, StreamServer, closed_port, make_hls

SPEC = ClipSpec(size=32, frames=8, stride=4, fps=5.0)


class Listener:
    """A TCP socket on a forbidden target that records every connection made to it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.host, self.port = self.sock.getsockname()[:2]
        self.seen: list[tuple] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except OSError:
                continue
            self.seen.append(peer)
            conn.close()

    def only_the_canary_seen(self) -> bool:
        """Connect once and wait until that connection is recorded; True when it is the only one. Connections are
        accepted in the order they were made, so one made before the canary is recorded before it."""
        with socket.create_connection((self.host, self.port), timeout=5) as canary:
            mine = canary.getsockname()[:2]
        wait_for(lambda: mine in self.seen, 5, interval=0.02, what="the listener to record the canary connection")
        return self.seen == [mine]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


def _policy(*ports: int, **kw) -> UrlPolicy:
    return UrlPolicy(allow_loopback=True, allowed_ports=list(ports), **kw)


def _drain(container, packets: int = 5) -> int:
    n = 0
    try:
        for packet in container.demux(video=0):
            if packet.size:
                n += 1
            if n >= packets:
                break
    finally:
        container.close()
    return n


def _open(url: str, media, policy: UrlPolicy, refusals=None):
    return open_source(resolve_source(url, media), open_timeout_s=5, read_timeout_s=5, probe_s=0.5, policy=policy,
                       refusals=refusals)


@pytest.fixture
def media(tmp_path):
    m = tmp_path / "media"
    m.mkdir()
    return m


def test_listener_records_a_connection_the_policy_allows(listener, media):
    """Positive control for every test below: the listener does see a connection it is sent."""
    with pytest.raises(StreamError, match="could not connect to the camera"):
        _open(f"http://127.0.0.1:{listener.port}/live.ts", media, _policy(listener.port))
    wait_for(lambda: listener.seen, 5, interval=0.02, what="the listener to record the connection")


# ------------------------------------------------------------------------------------------------ HTTP redirect
class _Redirect(BaseHTTPRequestHandler):
    location = ""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.location)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_an_http_redirect_is_not_followed(listener, media):
    handler = type("H", (_Redirect,), {"location": f"http://127.0.0.1:{listener.port}/live.ts"})
    redirector = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=redirector.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with StreamServer() as camera:
            # Positive control: the same policy shape reaches an allowed camera.
            assert _drain(_open(camera.url("/live.ts"), media, _policy(camera.port, redirector.server_port))) > 0
            with pytest.raises(StreamError) as info:
                _open(f"http://127.0.0.1:{redirector.server_port}/cam.ts", media,
                      _policy(camera.port, redirector.server_port))
    finally:
        redirector.shutdown()
        redirector.server_close()
    assert "could not connect to the camera" in str(info.value) and "redirects are not followed" in str(info.value)
    assert "302" not in str(info.value)
    assert listener.only_the_canary_seen(), listener.seen


# ------------------------------------------------------------------------------------------------ HLS
def _hls_folder(tmp_path, listener_port: int):
    hls = make_hls(tmp_path / "hls", seconds=1.0)
    text = hls.read_text()
    (hls.parent / "evil.m3u8").write_text(text.replace("index0.ts", f"http://127.0.0.1:{listener_port}/index0.ts"))
    return hls.parent


def test_hls_segments_elsewhere_are_refused(listener, media, tmp_path):
    folder = _hls_folder(tmp_path, listener.port)
    with StreamServer(static=folder) as server:
        assert _drain(_open(server.url("/static/index.m3u8"), media, _policy(server.port)), 3) > 0
        refusals: list[StreamError] = []
        with pytest.raises(StreamError) as info:
            c = _open(server.url("/static/evil.m3u8"), media, _policy(server.port), refusals)
            _drain(c, 3)
    assert refusals and "auth.allowed_ports" in str(refusals[0])
    assert "auth.allowed_ports" in str(info.value) or "could not connect" in str(info.value)
    assert listener.only_the_canary_seen(), listener.seen


# ------------------------------------------------------------------------------------------------ RTSP redirect
class _RtspRedirector:
    """Answers every RTSP request with ``302 Moved`` to ``location``."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            conn.settimeout(5)
            try:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buf += data
                cseq = next((ln.split(b":", 1)[1].strip() for ln in buf.split(b"\r\n") if ln.lower().startswith(b"cseq")), b"1")
                conn.sendall(b"RTSP/1.0 302 Moved Temporarily\r\nCSeq: " + cseq + b"\r\nLocation: "
                             + self.location.encode() + b"\r\n\r\n")
                time.sleep(0.5)
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def test_an_rtsp_redirect_is_not_followed(listener, media):
    with RtspServer() as camera:
        assert _drain(_open(camera.url(), media, _policy(camera.port)), 3) > 0
    redirector = _RtspRedirector(f"rtsp://127.0.0.1:{listener.port}/live")
    try:
        refusals: list[StreamError] = []
        # The listener's port is allowed here: what stops the hop is that redirects are refused.
        with pytest.raises(StreamError, match="RTSP redirect"):
            _open(f"rtsp://127.0.0.1:{redirector.port}/live", media, _policy(redirector.port, listener.port), refusals)
    finally:
        redirector.close()
    assert listener.only_the_canary_seen(), listener.seen


# ------------------------------------------------------------------------------------------------ DNS rebinding
def test_a_name_that_changes_address_is_checked_again_and_connected_to_as_checked(media):
    with StreamServer() as camera:
        bad = Listener("127.0.0.2", camera.port)  # same port, an address outside allowed_networks
        try:
            answers = {"n": 0}

            def rebinding(host: str, port: int) -> list[str]:
                assert host == "camera.invalid"
                answers["n"] += 1
                return ["127.0.0.1"] if answers["n"] == 1 else ["127.0.0.2"]

            policy = _policy(camera.port, allowed_networks=["127.0.0.1/32"], resolve=rebinding)
            url = f"http://camera.invalid:{camera.port}/live.ts"
            # Positive control: the first answer is checked and FFmpeg connects to that address (the name itself
            # does not resolve on this machine, so FFmpeg never looked it up).
            assert _drain(_open(url, media, policy)) > 0
            with pytest.raises(StreamError, match="outside auth.allowed_networks"):
                _open(url, media, policy)
            assert bad.only_the_canary_seen(), bad.seen
        finally:
            bad.close()


def test_a_runner_checks_every_reconnect_and_reports_in_policy_terms(media):
    from bigsister_ray.video.stream import StreamRunner

    with StreamServer() as camera:
        bad = Listener("127.0.0.2", camera.port)
        try:
            flip = threading.Event()
            policy = _policy(camera.port, allowed_networks=["127.0.0.1/32"],
                             resolve=lambda host, port: ["127.0.0.2" if flip.is_set() else "127.0.0.1"])
            cfg = StreamsConfig(media_root=media, watchdog_s=2.0, open_timeout_s=3.0, probe_s=0.5,
                                backoff_initial_s=0.2, backoff_max_s=0.5, healthy_after_s=60)
            runner = StreamRunner("r", f"http://camera.invalid:{camera.port}/short.ts?s=3", SPEC, cfg,
                                  lambda *a: None)
            runner.url_policy = policy
            runner.start()
            try:
                # positive control: connected through the checked name
                wait_for(lambda: runner.status().frames_decoded > 0, 20, interval=0.05, what="decoded frames")
                flip.set()
                wait_for(lambda: "allowed_networks" in (runner.status().last_error or ""), 20, interval=0.05,
                         what="a reconnect refused by the policy")
                status = runner.status()
            finally:
                runner.stop(5)
            assert "outside auth.allowed_networks" in (status.last_error or ""), status
            assert bad.only_the_canary_seen(), bad.seen
        finally:
            bad.close()


# ------------------------------------------------------------------------------------------------ errors
def test_a_closed_port_says_only_that_the_camera_could_not_be_reached(media):
    port = closed_port()
    with pytest.raises(StreamError) as info:
        _open(f"http://user:pw@127.0.0.1:{port}/x.ts", media, _policy())
    text = str(info.value)
    assert "could not connect to the camera" in text and "refused" not in text.lower() and "pw" not in text


# ------------------------------------------------------------------------------------------------ policy
def _static(*addrs: str):
    return lambda host, port: list(addrs)


def _unresolvable(host, port):
    raise socket.gaierror("no such host")


@pytest.mark.parametrize("url, ok", [
    ("rtsp://cam/live", True),                  # default port 554
    ("rtsp://cam:8554/live", False),
    ("http://cam:8000/x.ts", True),
])
def test_allowed_ports(url, ok):
    policy = UrlPolicy(allowed_ports=[554, 8000], resolve=_static("10.0.0.5"))
    if ok:
        assert policy.check(url) in ("rtsp", "http")
    else:
        with pytest.raises(StreamError, match="auth.allowed_ports"):
            policy.check(url)


def test_allowed_networks_hold_for_every_address():
    policy = UrlPolicy(allowed_networks=["10.20.0.0/16"], resolve=_static("10.20.1.1"))
    assert policy.resolve_target("rtsp://cam/live").addresses == ("10.20.1.1",)
    mixed = UrlPolicy(allowed_networks=["10.20.0.0/16"], resolve=_static("10.20.1.1", "10.30.0.1"))
    with pytest.raises(StreamError, match="10.30.0.1 is outside auth.allowed_networks"):
        mixed.check("rtsp://cam/live")
    mapped = UrlPolicy(allow_loopback=False, resolve=_static("::ffff:127.0.0.1"))
    with pytest.raises(StreamError, match="loopback"):
        mapped.check("http://cam/x.ts")


def test_unresolvable_hosts_are_refused_unless_named():
    with pytest.raises(StreamError, match="does not resolve"):
        UrlPolicy(resolve=_unresolvable).check("rtsp://cam.invalid/live")
    named = UrlPolicy(allowed_hosts=["cam.invalid"], resolve=_unresolvable)
    assert named.check("rtsp://cam.invalid/live") == "rtsp"  # registered before the camera is up
    with pytest.raises(StreamError, match="does not resolve"):
        named.resolve_target("rtsp://cam.invalid/live")  # but never connected to without an address


def test_policy_from_config_carries_the_new_rules():
    cfg = AuthConfig(allowed_networks=["10.20.0.0/16"], allowed_ports=[554])
    policy = UrlPolicy.from_config(cfg, 8000)
    assert policy.allowed_networks == ["10.20.0.0/16"] and policy.allowed_ports == [554]
    assert 8000 in policy.blocked_ports
    with pytest.raises(ValueError, match="allowed_networks"):
        AuthConfig(allowed_networks=["not-a-network"])


def test_pinned_url_keeps_credentials_path_and_host_header():
    target = UrlPolicy(resolve=_static("10.0.0.5")).resolve_target("http://u:p@cam.example:8081/a/b.ts?q=1")
    assert target.pinned_url() == "http://u:p@10.0.0.5:8081/a/b.ts?q=1"
    assert target.host_header == "cam.example:8081"
