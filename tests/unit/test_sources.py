"""Stream sources: URL redaction, source resolution (schemes, media root), opening files safely; and the
runner's pure building blocks (timestamp sampler, backoff, frame buffer). No network, no Ray."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bigsister_ray.clip import ClipSpec, sample_indices
from bigsister_ray.config import StreamsConfig
from bigsister_ray.errors import StreamError
from bigsister_ray.video.sources import open_source, redact_text, redact_url, resolve_media_path, resolve_source
from bigsister_ray.video.stream import Backoff, FrameBuffer, FrameSampler, StreamRunner
from tests._stream_server import make_hls, make_video


# ============================================================================================ redaction
@pytest.mark.parametrize(
    "url, secret, expected",
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/Streaming/101", "hunter2", "rtsp://***@10.0.0.5:554/Streaming/101"),
        ("rtsps://admin@cam.example/live", "admin", "rtsps://***@cam.example/live"),
        ("http://u:p%40ss@cam/x.ts?token=abc123&ch=2", "abc123", "http://***@cam/x.ts?token=***&ch=2"),
        ("https://cdn.example/live.m3u8?X-Amz-Signature=deadbeef&expires=9", "deadbeef",
         "https://cdn.example/live.m3u8?X-Amz-Signature=***&expires=9"),
        ("http://cam/mjpeg?api_key=K1&user=bob&password=pw9", "pw9", "http://cam/mjpeg?api_key=***&user=bob&password=***"),
    ],
)
def test_redact_url_removes_credentials_and_secret_params(url, secret, expected):
    out = redact_url(url)
    assert out == expected
    assert secret not in out


def test_redact_url_keeps_harmless_urls_and_paths():
    assert redact_url("http://cam.local:8080/live.ts?ch=1&fps=10") == "http://cam.local:8080/live.ts?ch=1&fps=10"
    assert redact_url("videos/cam1.mp4") == "videos/cam1.mp4"
    assert redact_url("file:///media/a.mp4") == "file:///media/a.mp4"


def test_redact_text_finds_urls_inside_messages():
    raw = "rtsp://root:toor@192.168.1.9/h264"
    msg = f"Connection refused: '{raw}' (and http://a:b@c/d?sig=zz)"
    out = redact_text(msg, [raw])
    assert "toor" not in out and "a:b" not in out and "zz" not in out
    assert "rtsp://***@192.168.1.9/h264" in out


# ============================================================================================ resolution
@pytest.fixture()
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    make_video(root / "cam1.mp4", frames=6)
    (root / "sub").mkdir()
    make_video(root / "sub" / "cam2.mkv", frames=6)
    return root


def test_live_schemes_resolve_without_network(media):
    for url in ("rtsp://cam/1", "rtsps://cam:322/1", "http://cam/live.ts", "HTTPS://cam/x.m3u8"):
        src = resolve_source(url, media)
        assert src.kind == "live" and src.target == url and src.is_live


@pytest.mark.parametrize("url", ["ftp://cam/x.ts", "udp://239.0.0.1:1234", "concat:/etc/passwd", "subfile://x",
                                 "data://text/plain,abc", "pipe://0"])
def test_other_schemes_are_refused_with_what_is_allowed(media, url):
    with pytest.raises(StreamError) as exc:
        resolve_source(url, media)
    msg = str(exc.value)
    # 'concat:' has no '//' and is treated as a (missing) relative file under the media root
    assert "rtsp://" in msg or "media root" in msg


def test_network_url_without_host_or_with_bad_port(media):
    with pytest.raises(StreamError, match="no host"):
        resolve_source("http:///live.ts", media)
    with pytest.raises(StreamError, match="invalid port"):
        resolve_source("rtsp://cam:99999/x", media)


def test_files_resolve_under_the_media_root(media):
    rel = resolve_source("cam1.mp4", media)
    assert rel.kind == "file" and Path(rel.target) == (media / "cam1.mp4").resolve()
    absolute = resolve_source(str(media / "sub" / "cam2.mkv"), media)
    assert Path(absolute.target) == (media / "sub" / "cam2.mkv").resolve()
    url = resolve_source((media / "sub" / "cam2.mkv").resolve().as_uri(), media)
    assert Path(url.target) == (media / "sub" / "cam2.mkv").resolve()


@pytest.mark.parametrize("bad", ["../outside.mp4", "sub/../../outside.mp4", "sub/../cam1.mp4"])
def test_dotdot_is_refused(media, bad):
    (media.parent / "outside.mp4").write_bytes(b"x")
    with pytest.raises(StreamError, match=r"'\.\.' is not allowed"):
        resolve_source(bad, media)


def test_absolute_path_outside_is_refused(media):
    outside = make_video(media.parent / "outside.mp4", frames=3)
    with pytest.raises(StreamError, match="outside the media root"):
        resolve_source(str(outside), media)
    with pytest.raises(StreamError, match="outside the media root"):
        resolve_source(outside.as_uri(), media)


def test_symlink_escape_is_refused_but_inner_links_work(media):
    outside = make_video(media.parent / "secret.mp4", frames=3)
    (media / "link.mp4").symlink_to(outside)
    (media / "dirlink").symlink_to(media.parent)
    with pytest.raises(StreamError, match="outside the media root"):
        resolve_source("link.mp4", media)
    with pytest.raises(StreamError, match="outside the media root"):
        resolve_source("dirlink/secret.mp4", media)
    # refused even when the file need not exist yet (registration time)
    with pytest.raises(StreamError, match="outside the media root"):
        resolve_source("link.mp4", media, must_exist=False)
    (media / "inner.mp4").symlink_to(media / "cam1.mp4")
    assert Path(resolve_source("inner.mp4", media).target) == (media / "cam1.mp4").resolve()


def test_missing_file_and_missing_root(media, tmp_path):
    with pytest.raises(StreamError, match="no such file under the media root"):
        resolve_source("nope.mp4", media)
    assert resolve_source("later.mp4", media, must_exist=False).kind == "file"
    with pytest.raises(StreamError, match="media root .* does not exist"):
        resolve_source("cam1.mp4", tmp_path / "absent")
    with pytest.raises(StreamError, match="expected a regular file"):
        resolve_media_path("sub", media)
    with pytest.raises(StreamError, match="file:// URLs must name a local path"):
        resolve_source("file://otherhost/media/cam1.mp4", media)


def test_source_repr_never_shows_credentials(media):
    src = resolve_source("rtsp://admin:pw123@cam/1", media)
    assert "pw123" not in repr(src) and "pw123" not in str(src) and src.redacted == "rtsp://***@cam/1"


# ============================================================================================ opening files
def test_open_source_opens_a_video_file(media):
    src = resolve_source("cam1.mp4", media)
    container = open_source(src, open_timeout_s=5, read_timeout_s=5)
    try:
        frames = [f for f in container.decode(video=0)]
        assert len(frames) == 6 and frames[0].width == 64 and frames[0].height == 48
    finally:
        container.close()


def test_open_source_rejects_a_non_video_file_clearly(media):
    (media / "notes.mp4").write_text("this is not a video")
    src = resolve_source("notes.mp4", media)
    with pytest.raises(StreamError, match=r"cannot open notes\.mp4|cannot open .*notes\.mp4"):
        open_source(src, open_timeout_s=5, read_timeout_s=5)


def test_a_playlist_under_the_media_root_cannot_reach_outside_files(media):
    # An HLS playlist is a list of other files: under the media root it could name anything on the disk.
    hls = make_hls(media.parent / "hls", seconds=1.0)
    playlist = media / "evil.m3u8"
    playlist.write_text(hls.read_text().replace("index0.ts", str(hls.parent / "index0.ts")))
    with pytest.raises(StreamError, match="cannot open"):
        open_source(resolve_source("evil.m3u8", media), open_timeout_s=5, read_timeout_s=5)


def test_runner_refuses_escape_at_construction(media):
    cfg = StreamsConfig(media_root=media)
    with pytest.raises(StreamError, match=r"'\.\.' is not allowed"):
        StreamRunner("s", "../x.mp4", ClipSpec(size=32), cfg, lambda *a: None)
    with pytest.raises(StreamError, match="unsupported scheme 'ftp'"):
        StreamRunner("s", "ftp://user:pw@cam/x", ClipSpec(size=32), cfg, lambda *a: None)


def test_streams_config_checks_backoff_bounds():
    with pytest.raises(ValueError, match="backoff_max_s"):
        StreamsConfig(backoff_initial_s=5, backoff_max_s=1)


# ============================================================================================ sampler
def _sample_file(num_frames: int, video_fps: float, fps: float) -> list[tuple[int, float]]:
    sampler: FrameSampler[int] = FrameSampler(fps)
    out: list[tuple[int, float]] = []
    for i in range(num_frames):
        out += sampler.push(i, i / video_fps)
    return out + sampler.flush()


@pytest.mark.parametrize("video_fps, fps", [(25.0, 8.0), (30.0, 10.0), (10.0, 5.0), (10.0, 10.0), (12.5, 8.0), (5.0, 8.0)])
def test_sampler_picks_the_frames_sample_indices_picks(video_fps, fps):
    num = int(video_fps * 4)
    got = _sample_file(num, video_fps, fps)
    spec = ClipSpec(frames=len(got), fps=fps, size=32, stride=1)
    # sample_indices over the whole video laid out from t=0 (the same floor rule)
    idx = np.floor(np.arange(len(got)) / fps * video_fps + 1e-6).astype(int)
    assert [i for i, _ in got] == idx.tolist()
    assert np.allclose([t for _, t in got], np.arange(len(got)) / fps)
    # and the count covers the video: every target inside [0, duration)
    assert len(got) == int(np.ceil(num / video_fps * fps - 1e-9))
    if num / video_fps >= spec.duration_s:
        assert sample_indices(num, video_fps, spec).tolist() == idx.tolist()


@settings(max_examples=60, deadline=None)
@given(deltas=st.lists(st.floats(0.001, 0.4), min_size=1, max_size=80), fps=st.floats(1.0, 30.0))
def test_sampler_always_takes_the_frame_showing_at_each_target(deltas, fps):
    times = np.concatenate([[0.0], np.cumsum(deltas)])
    sampler: FrameSampler[int] = FrameSampler(fps, max_gap_s=10.0)
    out = []
    for i, t in enumerate(times):
        out += sampler.push(i, float(t))
    out += sampler.flush()
    step = 1.0 / fps
    assert out, "the first frame always yields a sample"
    for k, (i, ts) in enumerate(out):
        assert ts == pytest.approx(k * step, abs=1e-6)  # one regular grid from the first frame (in microseconds)
        assert times[i] <= ts + 1e-6  # the frame was showing at the target...
        if i + 1 < len(times):
            assert times[i + 1] > ts - 1e-6  # ...and was the last one that was
    assert out[-1][1] <= times[-1] + max(deltas[-1], step) + 1e-6


def test_sampler_uses_timestamps_not_counts():
    # Irregular arrival (a camera that stutters): kept frames follow time, not frame numbers.
    times = [0.0, 0.05, 0.1, 0.5, 0.55, 0.6, 1.0, 1.02]
    sampler: FrameSampler[int] = FrameSampler(fps=4.0)  # every 0.25 s
    out = []
    for i, t in enumerate(times):
        out += sampler.push(i, t)
    out += sampler.flush()
    assert [i for i, _ in out] == [0, 2, 3, 5, 6]  # t=0 -> f0; 0.25 -> f2 (0.1); 0.5 -> f3; 0.75 -> f5 (0.6); 1.0 -> f6
    assert np.allclose([t for _, t in out], [0, 0.25, 0.5, 0.75, 1.0])


def test_sampler_keeps_time_increasing_across_gaps_and_resets():
    sampler: FrameSampler[str] = FrameSampler(fps=10.0, max_gap_s=1.0)
    out = []
    for i in range(5):
        out += sampler.push(f"a{i}", 100.0 + i / 10)
    for i in range(5):  # the camera restarted: its clock went back to 0
        out += sampler.push(f"b{i}", i / 10)
    sampler.reset(start_at=50.0)  # a new connection 50 s after start
    for i in range(5):
        out += sampler.push(f"c{i}", 7.0 + i / 10)
    out += sampler.flush()
    stamps = [t for _, t in out]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert stamps[0] == 0.0
    assert [x for x, _ in out][:5] == ["a0", "a1", "a2", "a3", "a4"]
    c_first = next(t for x, t in out if x.startswith("c"))
    assert c_first == pytest.approx(50.0)


# ============================================================================================ backoff
def test_backoff_grows_is_capped_and_resets():
    b = Backoff(0.2, 3.0, jitter=0.2, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    nominal = [min(3.0, 0.2 * 2**i) for i in range(8)]
    for d, n in zip(delays, nominal):
        assert n * 0.8 <= d <= n * 1.2
    assert all(b2 > b1 for b1, b2 in zip(delays[:4], delays[1:5]))  # strictly growing until the cap
    assert max(delays) <= 3.0 * 1.2
    b.reset()
    assert b.nominal() == 0.2 and 0.16 <= b.next_delay() <= 0.24


def test_backoff_jitter_spreads_retries():
    a = [Backoff(1.0, 30.0, 0.2, random.Random(s)).next_delay() for s in range(20)]
    assert len({round(x, 6) for x in a}) > 15


# ============================================================================================ buffer
def _f(i: int) -> np.ndarray:
    return np.full((2, 2, 3), i, np.uint8)


def test_buffer_live_drops_oldest_and_counts():
    buf = FrameBuffer(4, drop_oldest=True)
    for i in range(10):
        assert buf.put(_f(i), float(i))
    assert buf.dropped == 6 and len(buf) == 4
    chunk = buf.get_chunk(8, max_wait_s=0.01)
    assert [ts for _, ts in chunk] == [6.0, 7.0, 8.0, 9.0]  # the newest survive


@pytest.fixture(autouse=True)
def _no_leaked_runner_threads():
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("bigsister-stream-")]
    assert not left, f"threads left behind: {left}"
