"""StreamRunner against a real local HTTP video server (tests/_stream_server.py) and real files. No Ray.

Tiny frames (64x48 at 10 fps), ClipSpec(size=32, fps=5) and short timeouts keep every test to a few seconds.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from bigsister_ray.clip import ClipSpec
from bigsister_ray.config import StreamsConfig
from bigsister_ray.errors import StreamError
from bigsister_ray.video.stream import StreamRunner, StreamStatus
from tests._stream_server import RtspServer, StreamServer, closed_port, frame_level, make_hls, make_video

SPEC = ClipSpec(frames=8, fps=5.0, size=32, stride=4)

#: a hung stream must fail its test, not the CI run
pytestmark = pytest.mark.timeout(90)


def _cfg(media_root: Path, **kw) -> StreamsConfig:
    base = dict(media_root=media_root, backoff_initial_s=0.2, backoff_max_s=1.6, backoff_jitter=0.2,
                healthy_after_s=1.0, watchdog_s=1.5, open_timeout_s=2.0, probe_s=0.3, max_buffer_windows=2)
    base.update(kw)
    return StreamsConfig(**base)


class Collector:
    """on_frames target: keeps every chunk, optionally slow."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.chunks: list[tuple[np.ndarray, list[float]]] = []
        self.lock = threading.Lock()

    def __call__(self, stream_id: str, frames: np.ndarray, stamps: list[float]) -> None:
        assert stream_id
        with self.lock:
            self.chunks.append((frames, list(stamps)))
        if self.delay_s:
            time.sleep(self.delay_s)

    @property
    def stamps(self) -> list[float]:
        with self.lock:
            return [t for _, ts in self.chunks for t in ts]

    @property
    def frames(self) -> np.ndarray:
        with self.lock:
            return np.concatenate([f for f, _ in self.chunks]) if self.chunks else np.zeros((0, 32, 32, 3), np.uint8)


def wait_for(pred: Callable[[], bool], timeout: float, what: str, runner: StreamRunner | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    detail = f"; status: {runner.status().model_dump()}" if runner is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


@pytest.fixture()
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture()
def runners():
    """Make runners; after the test every one is stopped, and none of their threads may be left."""
    made: list[StreamRunner] = []

    def make(url: str, cfg: StreamsConfig, on_frames, **kw) -> StreamRunner:
        r = StreamRunner(f"t{len(made)}", url, SPEC, cfg, on_frames, **kw)
        made.append(r)
        return r.start()

    yield make
    for r in made:
        assert r.stop(timeout=8), f"{r} did not stop in time"
        assert r.threads() == [], f"threads left: {r.threads()}"
        assert r.status().state in ("stopped", "error")


@pytest.fixture()
def server():
    srv = StreamServer(fps=10.0, size=(64, 48)).start()
    yield srv
    srv.stop()


def _levels(frames: np.ndarray) -> list[int]:
    return [int(round(float(f.mean()))) for f in frames]


# ============================================================================================ live sources
def test_live_mpegts_goes_live_and_delivers_at_spec_fps(server, media, runners):
    sink = Collector()
    r = runners(server.url("/live.ts"), _cfg(media), sink)
    assert r.status().state in ("connecting", "live")
    wait_for(lambda: r.status().state == "live", 10, "live", r)
    wait_for(lambda: len(sink.stamps) >= 16, 10, "16 frames", r)
    st = r.status()
    frames, stamps = sink.frames, sink.stamps
    assert frames.dtype == np.uint8 and frames.shape[1:] == (32, 32, 3)
    # chunks of spec.stride frames, timestamps on the 1/fps grid and increasing
    assert all(len(ts) == SPEC.stride for _, ts in sink.chunks[:-1])
    assert np.allclose(np.diff(stamps), 1 / SPEC.fps, atol=1e-6)
    # sampled by timestamp: the source runs at 10 fps, so every second frame is kept (grey level + 10 per sample)
    steps = [(b - a) % 200 for a, b in zip(_levels(frames), _levels(frames)[1:])]
    assert sum(abs(s - 10) <= 3 for s in steps) >= len(steps) - 1, steps
    assert 3.5 <= st.fps <= 7.0, st.fps
    assert st.frames_decoded >= 2 * st.frames_sampled - 4
    assert st.frames_dropped == 0 and st.reconnects == 0 and st.last_error is None
    assert st.last_frame_at is not None and st.live_since is not None
    assert isinstance(st, StreamStatus) and st.model_dump(mode="json")["state"] == "live"


def test_live_mjpeg_is_timed_by_arrival(server, media, runners):
    sink = Collector()
    r = runners(server.url("/live.mjpeg"), _cfg(media), sink)
    wait_for(lambda: len(sink.stamps) >= 12, 10, "12 MJPEG frames", r)
    t0 = time.monotonic()
    n0 = len(sink.stamps)
    wait_for(lambda: len(sink.stamps) >= n0 + 10, 10, "10 more MJPEG frames", r)
    rate = (len(sink.stamps) - n0) / (time.monotonic() - t0)
    # FFmpeg stamps MJPEG at 25 fps whatever arrives; by arrival time the 10 fps camera gives spec.fps (5)
    assert 3.0 <= rate <= 7.0, rate
    assert r.status().state == "live" and sink.frames.shape[1:] == (32, 32, 3)


def test_rtsp_over_tcp_goes_live_and_survives_a_server_restart(media, runners):
    with RtspServer(fps=10.0) as srv:
        sink = Collector()
        r = runners(srv.url("/live"), _cfg(media), sink)
        wait_for(lambda: r.status().state == "live" and len(sink.stamps) >= 8, 10, "RTSP live", r)
        assert srv.requests[:4] == ["OPTIONS", "DESCRIBE", "SETUP", "PLAY"]
        steps = [(b - a) % 200 for a, b in zip(_levels(sink.frames), _levels(sink.frames)[1:])]
        assert sum(abs(s - 10) <= 3 for s in steps) >= len(steps) - 1, steps
        srv.stop()
        wait_for(lambda: r.status().state == "reconnecting", 6, "reconnecting", r)
        n = len(sink.stamps)
        srv.start()
        wait_for(lambda: r.status().state == "live" and len(sink.stamps) > n + 4, 10, "RTSP live again", r)
        assert r.status().reconnects >= 1


def test_hls_playlist_over_http(tmp_path, media, runners):
    make_hls(tmp_path / "hls", seconds=3.0)
    with StreamServer(static=tmp_path / "hls") as srv:
        sink = Collector()
        r = runners(srv.url("/static/index.m3u8"), _cfg(media), sink)
        wait_for(lambda: len(sink.stamps) >= 8, 10, "8 HLS frames", r)
        assert any(p.endswith(".ts") for p in srv.requests)


def test_server_restart_reconnects_and_returns_to_live(server, media, runners):
    sink = Collector()
    r = runners(server.url("/live.ts"), _cfg(media), sink)
    wait_for(lambda: r.status().state == "live" and len(sink.stamps) >= 4, 10, "live", r)
    stopped_at = time.monotonic()
    server.stop()
    wait_for(lambda: r.status().state == "reconnecting", 6, "reconnecting", r)
    down = r.status()
    assert down.last_error
    # while the server is down the runner keeps trying (two more attempts) and stays reconnecting
    wait_for(lambda: r.status().reconnects >= down.reconnects + 2, 10, "two more attempts", r)
    assert r.status().state == "reconnecting"
    n_before = len(sink.stamps)
    outage_s = time.monotonic() - stopped_at
    server.start()  # same port
    wait_for(lambda: r.status().state == "live" and len(sink.stamps) > n_before + 4, 10, "live again", r)
    st = r.status()
    assert st.reconnects >= 1
    stamps = sink.stamps
    assert all(b > a for a, b in zip(stamps, stamps[1:])), "timestamps must keep increasing across reconnects"
    # frames after the outage carry the time they arrived at (stream time since start), leaving a gap
    assert max(np.diff(stamps)) >= outage_s - 0.1, (max(np.diff(stamps)), outage_s)
    # live again for longer than healthy_after_s: the backoff is back to its start
    wait_for(lambda: r.status().backoff_s is None, 10, "the backoff to reset", r)
    assert r.status().state == "live"


def test_backoff_resets_only_after_the_source_stayed_healthy(server, media, runners):
    # The camera gives 1.2 s of video per connection (about 0.5 s of it after probing), then hangs up.
    url = server.url("/short.ts?s=1.2")
    flapping = runners(url, _cfg(media, healthy_after_s=30.0, probe_s=0.1), Collector())
    steady = runners(url, _cfg(media, healthy_after_s=0.2, probe_s=0.1), Collector())
    # the delay each runner waited before each reconnect, read when its reconnect count moves
    waited: dict[str, list[float]] = {flapping.stream_id: [], steady.stream_id: []}
    counts = {flapping.stream_id: 0, steady.stream_id: 0}

    def three_reconnects_each() -> bool:
        for r in (flapping, steady):
            st = r.status()
            if st.reconnects != counts[r.stream_id]:
                counts[r.stream_id] = st.reconnects
                waited[r.stream_id].append(st.backoff_s)
        return min(len(v) for v in waited.values()) >= 3

    wait_for(three_reconnects_each, 15, "three reconnects of each runner")
    fl, sd = waited[flapping.stream_id], waited[steady.stream_id]
    assert len(fl) >= 3 and len(sd) >= 3, waited
    assert flapping.status().live_since is not None and steady.status().live_since is not None
    assert fl == sorted(fl) and fl[2] >= 0.8, fl  # 0.2 -> 0.4 -> 0.8: never healthy long enough to reset
    assert 0.2 in sd[1:], sd  # live past healthy_after_s, then failed: waited the initial delay again
    assert "ended" in (flapping.status().last_error or "")


def test_unreachable_url_retries_with_growing_backoff(media, runners):
    url = f"http://127.0.0.1:{closed_port()}/live.ts"
    r = runners(url, _cfg(media, backoff_initial_s=0.2, backoff_max_s=1.6), Collector())
    seen: list[tuple[float, int, float | None]] = []

    def at_the_cap() -> bool:
        st = r.status()
        assert st.state in ("connecting", "reconnecting"), st
        if not seen or st.reconnects != seen[-1][1]:
            seen.append((time.monotonic(), st.reconnects, st.backoff_s))
        return len(seen) >= 4 and seen[-1][2] is not None and abs(seen[-1][2] - 1.6) < 1e-9

    wait_for(at_the_cap, 10, "the backoff to reach its cap of 1.6 s", r)
    st = r.status()
    assert st.state == "reconnecting" and st.reconnects >= 3
    assert "cannot open" in (st.last_error or "") and st.frames_sampled == 0
    assert st.next_retry_s is not None and 0 <= st.next_retry_s <= st.backoff_s * 1.2 + 0.05
    # nominal backoff doubles per failure up to the cap: 0.2, 0.4, 0.8, 1.6, 1.6
    backoffs = [b for _, _, b in seen if b is not None]
    assert backoffs == sorted(backoffs) and backoffs[-1] == pytest.approx(1.6) and backoffs[0] <= 0.4
    gaps = np.diff([t for t, _, _ in seen])
    assert len(gaps) >= 3 and gaps[2] > gaps[0]  # the waits between attempts grow


def test_headers_then_silence_times_out_and_retries(server, media, runners):
    r = runners(server.url("/stall.ts"), _cfg(media, open_timeout_s=1.0), Collector())
    wait_for(lambda: r.status().reconnects >= 1, 8, "a retry after the open timeout", r)
    st = r.status()
    assert st.state in ("reconnecting",) and "timed out" in (st.last_error or ""), st


def test_watchdog_restarts_a_stream_that_goes_silent(server, media, runners):
    sink = Collector()
    r = runners(server.url("/stall_after.ts?s=1.5"), _cfg(media, watchdog_s=1.0), sink)
    wait_for(lambda: r.status().state == "live", 10, "live", r)
    wait_for(lambda: r.status().watchdog_restarts >= 1, 8, "a watchdog restart", r)
    st = r.status()
    assert st.state in ("reconnecting", "connecting", "live")
    assert re.search(r"watchdog: no (frame|data) for 1\.0s while connected", st.last_error or ""), st.last_error
    # and the stream comes back (the server streams again on the next connection)
    n = len(sink.stamps)
    wait_for(lambda: len(sink.stamps) > n, 10, "frames after the restart", r)
    assert r.status().reconnects >= 1


def test_a_reader_stuck_beyond_ffmpeg_timeouts_is_abandoned_and_replaced(media, runners, monkeypatch):
    # Fault injection: an open that ignores every timeout (FFmpeg's interrupt callback normally prevents this).
    import bigsister_ray.video.reader as reader_mod

    release = threading.Event()

    def stuck_open(source, **kw):
        release.wait(10)
        raise StreamError(f"cannot open {source.redacted}: released")

    monkeypatch.setattr(reader_mod, "open_source", stuck_open)
    r = runners("http://127.0.0.1:9/never.ts", _cfg(media, watchdog_s=0.3, open_timeout_s=0.3), Collector())
    wait_for(lambda: r.status().watchdog_restarts >= 2, 8, "two abandoned readers", r)
    st = r.status()
    assert st.state == "reconnecting" and "reader abandoned" in st.last_error and st.reconnects >= 1
    assert len([t for t in r.threads() if "-reader-" in t.name]) >= 2  # the stuck ones are still blocked
    release.set()  # their blocking call returns; stop() must then join every one of them
    assert r.stop(timeout=5) and r.threads() == []


def test_slow_consumer_on_a_live_source_drops_oldest(server, media, runners):
    sink = Collector(delay_s=2.0)  # 4 frames every 2 s taken, 5 per second produced
    cfg = _cfg(media, max_buffer_windows=1)  # 8 frames of room
    r = runners(server.url("/live.ts"), cfg, sink)
    wait_for(lambda: r.status().frames_dropped >= 5, 15, "dropped frames", r)
    st = r.status()
    assert st.state == "live"
    capacity = cfg.max_buffer_windows * SPEC.frames
    in_flight = st.frames_sampled - st.frames_delivered - st.frames_dropped
    assert 0 <= in_flight <= capacity + SPEC.stride, st
    stamps = sink.stamps
    # delivered frames skip what was dropped (gaps), and the newest survive: the last delivered frame is recent
    assert max(np.diff(stamps)) > 1.5 / SPEC.fps
    age = (time.monotonic() - r._started_mono) - stamps[-1]  # noqa: SLF001 - stream time of 'now'
    assert age < (capacity + 2 * SPEC.stride) / SPEC.fps + 2.5


def test_on_frames_errors_are_counted_and_do_not_stop_the_stream(server, media, runners):
    calls = []

    def flaky(sid, frames, stamps):
        calls.append(len(stamps))
        if len(calls) % 2:
            raise RuntimeError("downstream is busy")

    r = runners(server.url("/live.ts"), _cfg(media), flaky)
    wait_for(lambda: len(calls) >= 4, 10, "4 calls", r)
    st = r.status()
    assert st.state == "live" and st.callback_errors >= 2 and "downstream is busy" in st.last_error


# ============================================================================================ files
def test_file_with_a_slow_consumer_never_drops(media, runners):
    make_video(media / "cam.mp4", frames=30, fps=10.0)
    sink = Collector(delay_s=0.1)
    ended = threading.Event()
    cfg = _cfg(media, max_buffer_windows=1)
    r = runners("cam.mp4", cfg, sink, realtime=False, on_end=lambda sid: ended.set())
    wait_for(ended.is_set, 20, "end of file", r)
    st = r.status()
    assert st.state == "stopped" and st.finished and st.frames_dropped == 0
    assert st.frames_decoded == 30 and st.frames_delivered == st.frames_sampled == 15
    assert np.allclose(sink.stamps, np.arange(15) / SPEC.fps)
    # every second frame, by timestamp (10 fps file sampled at 5 fps), resized once to 32x32
    assert _levels(sink.frames) == pytest.approx([frame_level(2 * i) for i in range(15)], abs=2)


def test_file_replays_at_real_time_pace(media, runners):
    make_video(media / "clip.mkv", frames=20, fps=10.0)  # 2 s of video
    sink = Collector()
    t0 = time.monotonic()
    r = runners(f"file://{media / 'clip.mkv'}", _cfg(media), sink, realtime=True)
    wait_for(lambda: r.status().finished, 15, "end of file", r)
    elapsed = time.monotonic() - t0
    assert elapsed >= 1.7, f"a 2 s file replayed in real time took only {elapsed:.2f}s"
    assert len(sink.stamps) == 10 and r.status().frames_dropped == 0


def test_ten_file_streams_at_once_all_progress(media, runners):
    make_video(media / "shared.mp4", frames=20, fps=10.0)
    sinks = [Collector() for _ in range(10)]
    rs = [runners("shared.mp4", _cfg(media), sink, realtime=True) for sink in sinks]
    wait_for(lambda: all(r.status().finished for r in rs), 30, "ten files to finish", rs[0])
    for r, sink in zip(rs, sinks):
        st = r.status()
        assert st.frames_dropped == 0 and st.frames_delivered == 10 and st.state == "stopped"
        assert np.allclose(sink.stamps, np.arange(10) / SPEC.fps)


def test_missing_or_corrupt_file_is_an_error_not_retried(media, runners):
    r = runners("later.mp4", _cfg(media), Collector())  # allowed at registration, missing when opened
    wait_for(lambda: r.status().state == "error", 5, "error", r)
    st = r.status()
    assert "no such file" in st.last_error and st.reconnects == 0
    (media / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    r2 = runners("bad.mp4", _cfg(media), Collector())
    wait_for(lambda: r2.status().state == "error", 5, "error", r2)
    assert "cannot open bad.mp4" in r2.status().last_error
    wait_for(lambda: not r2.threads(), 5, "the runner's threads to end", r2)  # nothing is left to retry
    assert r2.status().reconnects == 0 and r2.status().state == "error"


def test_media_root_escape_is_refused(media, tmp_path):
    outside = make_video(tmp_path / "outside.mp4", frames=3)
    (media / "link.mp4").symlink_to(outside)
    for url in ("../outside.mp4", str(outside), outside.as_uri(), "link.mp4"):
        with pytest.raises(StreamError) as exc:
            StreamRunner("x", url, SPEC, _cfg(media), Collector())
        assert "media root" in str(exc.value) or "'..'" in str(exc.value)


# ============================================================================================ redaction, stop
def test_credentials_never_reach_status_or_logs(media, runners, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    url = f"http://admin:S3cr3tPw@127.0.0.1:{closed_port()}/live.ts?token=tok987&ch=1"
    r = runners(url, _cfg(media), Collector())
    wait_for(lambda: r.status().reconnects >= 2, 8, "two retries", r)
    st = r.status()
    r.stop()
    text = st.model_dump_json() + "\n".join(rec.getMessage() for rec in caplog.records)
    out, err = capfd.readouterr()
    for secret in ("S3cr3tPw", "tok987", "admin:"):
        assert secret not in text and secret not in out + err
    assert st.url.startswith("http://***@127.0.0.1") and "token=***" in st.url
    assert st.last_error and "cannot open http://***@127.0.0.1" in st.last_error
    assert any("reconnecting in" in rec.getMessage() for rec in caplog.records)


def test_stop_during_a_blocked_open_joins_every_thread(server, media):
    r = StreamRunner("blocked", server.url("/stall.ts"), SPEC, _cfg(media, open_timeout_s=1.0, watchdog_s=1.0),
                     Collector()).start()
    wait_for(lambda: "/stall.ts" in server.requests, 5, "the reader to request /stall.ts", r)  # inside av.open
    t0 = time.monotonic()
    assert r.stop(timeout=5)
    assert time.monotonic() - t0 < 3.0
    assert r.threads() == [] and r.status().state == "stopped"


def test_stop_a_live_stream_frees_everything(server, media):
    sink = Collector()
    r = StreamRunner("s", server.url("/live.ts"), SPEC, _cfg(media), sink).start()
    wait_for(lambda: len(sink.stamps) >= 4, 10, "frames", r)
    assert r.stop(timeout=5)
    assert r.threads() == [], "a thread outlived stop(): it could still deliver frames"
    assert r.status().state == "stopped"
    with pytest.raises(RuntimeError, match="already started"):
        r.start()
