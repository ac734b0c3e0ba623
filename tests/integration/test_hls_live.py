"""A live HLS playlist written by FFmpeg stays live: followed as it grows, never taken for an ended stream.

FFmpeg (``-re``, real time) writes a rolling playlist (``-hls_list_size 6 -hls_flags delete_segments``, no
``#EXT-X-ENDLIST``) into a folder that a real local HTTP server serves on 127.0.0.1. Skipped where ``ffmpeg``
is not installed (Debian: ``apt-get install ffmpeg``).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bigsister_ray.clip import ClipSpec
from bigsister_ray.config import StreamsConfig
from bigsister_ray.video.stream import StreamRunner
from tests._serve_support import wait_for
from tests._stream_server import StreamServer

SPEC = ClipSpec(frames=8, fps=5.0, size=32, stride=4)
LIVE_FOR_S = 60.0

pytestmark = [
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command (apt-get install ffmpeg)"),
    pytest.mark.timeout(180),
]


@pytest.fixture()
def live_playlist(tmp_path: Path):
    """FFmpeg publishing a rolling live playlist ``live.m3u8`` (2 s segments: one keyframe every 2 s)."""
    folder = tmp_path / "hls"
    folder.mkdir()
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10",
           "-c:v", "libx264", "-preset", "ultrafast", "-g", "20", "-pix_fmt", "yuv420p",
           "-f", "hls", "-hls_time", "1", "-hls_list_size", "6", "-hls_flags", "delete_segments",
           str(folder / "live.m3u8")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (folder / "live.m3u8").exists() or proc.poll() is not None, 30, 0.1, "ffmpeg's first playlist")
        if proc.poll() is not None:
            pytest.fail(f"ffmpeg exited {proc.returncode}: {proc.stderr.read().decode(errors='replace')[-500:]}")
        yield folder, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow
def test_a_rolling_live_playlist_stays_live_for_a_minute(live_playlist, tmp_path):
    folder, ffmpeg = live_playlist
    stamps: list[float] = []
    lock = threading.Lock()

    def on_frames(_sid, frames: np.ndarray, ts: list[float]) -> None:
        assert frames.shape[1:] == (32, 32, 3)
        with lock:
            stamps.extend(ts)

    def count() -> int:
        with lock:
            return len(stamps)

    cfg = StreamsConfig(media_root=tmp_path, watchdog_s=3.0, open_timeout_s=5.0, probe_s=0.5, backoff_initial_s=0.5,
                        backoff_max_s=2.0, max_buffer_windows=2)
    with StreamServer(static=folder) as server:
        runner = StreamRunner("hls", server.url("/static/live.m3u8"), SPEC, cfg, on_frames).start()
        try:
            wait_for(lambda: runner.status().state == "live", 30, 0.1, "the playlist to go live")
            live_from = time.monotonic()
            seen = count()
            while time.monotonic() - live_from < LIVE_FOR_S:
                # Frames keep arriving: at least 2 s of them (at spec.fps) within every 5 s.
                wait_for(lambda: count() >= seen + 2 * SPEC.fps, 5.0, 0.1,
                         f"frames {time.monotonic() - live_from:.0f}s after going live (status {runner.status()})")
                seen = count()
                status = runner.status()
                assert status.state == "live" and status.reconnects == 0 and status.watchdog_restarts == 0, status
                assert ffmpeg.poll() is None, "ffmpeg stopped publishing"
            status = runner.status()
        finally:
            runner.stop(10)
    assert status.last_error is None and status.frames_dropped == 0, status
    with lock:
        got = list(stamps)
    assert len(got) >= LIVE_FOR_S * SPEC.fps * 0.8, len(got)
    assert np.allclose(np.diff(got), 1 / SPEC.fps), "stream time has a gap or goes back"
    # The playlist rolled: segments that were served early are gone from the folder now.
    served = {p for p in server.requests if p.endswith(".ts")}
    assert len(served) >= LIVE_FOR_S / 2 - 2 and not all((folder / Path(p).name).exists() for p in served)
