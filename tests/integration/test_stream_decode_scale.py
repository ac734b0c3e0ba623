"""StreamRunner's decode step: frames scaled at decode time, NVDEC fallback, resuming a moved stream. No Ray.

Real files written with PyAV (tests/_stream_server.make_video) and a real local HTTP MPEG-TS server.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bigsister_ray.clip import ClipSpec, scale_frame
from bigsister_ray.config import StreamsConfig
from bigsister_ray.video.stream import StreamRunner
from tests._serve_support import wait_for
from tests._stream_server import StreamServer, make_video

SPEC = ClipSpec(frames=8, fps=5.0, size=32, stride=4)

pytestmark = pytest.mark.timeout(90)


def _cfg(media_root: Path, **kw) -> StreamsConfig:
    base = dict(media_root=media_root, backoff_initial_s=0.2, backoff_max_s=1.6, healthy_after_s=1.0, watchdog_s=3.0,
                open_timeout_s=3.0, probe_s=0.3, max_buffer_windows=2)
    base.update(kw)
    return StreamsConfig(**base)


class Collector:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.stamps: list[float] = []
        self.lock = threading.Lock()
        self.ended = threading.Event()

    def __call__(self, stream_id: str, frames: np.ndarray, stamps: list[float]) -> None:
        with self.lock:
            self.frames.extend(frames)
            self.stamps.extend(stamps)

    def count(self) -> int:
        with self.lock:
            return len(self.stamps)


def _replay(path: Path, cfg: StreamsConfig, spec: ClipSpec = SPEC, **kw) -> tuple[Collector, StreamRunner]:
    got = Collector()
    runner = StreamRunner("file", path.name, spec, cfg, got, realtime=False, on_end=lambda _sid: got.ended.set(), **kw)
    runner.start()
    try:
        wait_for(got.ended.is_set, 60, 0.05, "the file replay to end")
    finally:
        runner.stop(10)
    return got, runner


@pytest.fixture()
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


def test_kept_frames_are_scaled_from_the_decoders_frames(media):
    """Each delivered frame is clip.scale_frame of the decoded frame at its timestamp (1 s GOPs, 4:3 source)."""
    import av

    path = make_video(media / "v.mp4", frames=40, fps=10.0, size=(96, 72))
    for resize in ("squash", "crop"):
        spec = SPEC.model_copy(update={"resize": resize})
        got, runner = _replay(path, _cfg(media), spec)
        with av.open(str(path)) as c:
            decoded = {round(float(f.time), 6): scale_frame(f, spec) for f in c.decode(video=0)}
        assert runner.status().frames_sampled == len(got.stamps) == 20
        for frame, ts in zip(got.frames, got.stamps):
            assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
            assert np.array_equal(frame, decoded[round(ts, 6)]), f"{resize}: frame at {ts}s"


def test_hwaccel_cuda_without_a_device_decodes_on_the_cpu_and_says_so(media):
    from bigsister_ray.video.decode import hwaccel_for

    if hwaccel_for("cuda")[1] is None:
        pytest.skip("this node has a usable CUDA device; the fallback path is for nodes without one")
    path = make_video(media / "v.mp4", frames=20, fps=10.0)
    got, runner = _replay(path, _cfg(media, hwaccel="cuda"))
    status = runner.status()
    assert status.finished and got.count() == 10, status
    assert status.decoder == "cpu"
    assert "serve.streams.hwaccel=cuda" in status.last_error and "decoding on the CPU" in status.last_error
    assert "set serve.streams.hwaccel: none" in status.last_error
    _, plain = _replay(path, _cfg(media))  # the positive control: no message without the setting
    assert plain.status().last_error is None and plain.status().decoder == "cpu"


def test_a_file_resumed_at_last_ts_continues_the_same_frames_and_timestamps(media):
    path = make_video(media / "v.mp4", frames=60, fps=10.0, size=(64, 48))  # keyframes every second
    whole, runner = _replay(path, _cfg(media))
    assert whole.stamps == [round(i * 0.2, 6) for i in range(30)]
    assert runner.status().last_ts_s == whole.stamps[-1]
    k = 13  # 2.6 s: between keyframes, so the reader must seek to 2.0 s and decode up to it
    resumed, runner2 = _replay(path, _cfg(media), start_at_s=whole.stamps[k - 1] + 1 / SPEC.fps)
    assert resumed.stamps == whole.stamps[k:]
    assert all(np.array_equal(a, b) for a, b in zip(resumed.frames, whole.frames[k:]))
    assert runner2.status().frames_decoded < 60 - 10  # it seeked instead of decoding from the start
    assert runner2.status().last_ts_s == whole.stamps[-1]


def test_a_live_stream_resumed_at_start_at_s_keeps_stream_time_continuous(media):
    got = Collector()
    with StreamServer(fps=10.0, size=(64, 48)) as server:
        runner = StreamRunner("cam", server.url("/live.ts"), SPEC, _cfg(media), got, start_at_s=1000.0).start()
        try:
            wait_for(lambda: got.count() >= 6, 30, 0.05, "six frames")
            status = runner.status()
        finally:
            runner.stop(10)
    stamps = got.stamps
    assert 1000.0 <= stamps[0] < 1000.0 + 10.0, stamps[:3]
    assert np.allclose(np.diff(stamps), 1 / SPEC.fps)
    assert status.last_ts_s is not None and status.last_ts_s >= stamps[5]
    assert runner.status().last_ts_s == stamps[-1]


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_start_at_s_must_be_a_finite_non_negative_time(media, bad):
    with pytest.raises(ValueError, match="start_at_s"):
        StreamRunner("x", "v.mp4", SPEC, _cfg(media), lambda *a: None, start_at_s=bad)
