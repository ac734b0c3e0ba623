"""video/files.py and data/clips.py: decode exactly the sampled frames with one reader; bad files become clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from bigsister_ray.clip import ClipSpec
from bigsister_ray.data.clips import iter_clip_frames
from bigsister_ray.data.records import ClipRecord, InputError, VideoRecord
from bigsister_ray.errors import VideoDecodeError
from bigsister_ray.video.files import decode_frames, probe
from tests._media import frame_level, make_mp4, truncate

SPEC = ClipSpec(frames=4, fps=5.0, size=32, stride=2)


def _levels(frames: np.ndarray) -> np.ndarray:
    return frames[:, 0, 0, 0].astype(int)


def test_probe_and_decode_exact_indices_in_the_asked_order(tmp_path):
    path = make_mp4(tmp_path / "a.mp4", frames=30, fps=10, size=(64, 48))
    info = probe(path)
    assert (info.num_frames, info.fps, info.width, info.height) == (30, 10.0, 64, 48)
    idx = [12, 3, 3, 29, 0]
    frames = decode_frames(path, idx)
    assert frames.shape == (5, 48, 64, 3) and frames.dtype == np.uint8
    assert np.all(np.abs(_levels(frames) - [frame_level(i) for i in idx]) <= 3)
    with pytest.raises(VideoDecodeError, match="outside the video's 30 frames"):
        decode_frames(path, [0, 30])


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: None, "video file is missing"),
    (lambda p: p.write_bytes(b""), r"empty \(0 bytes\)"),
    (lambda p: truncate(make_mp4(p, frames=30), keep=0.5), "truncated or corrupt"),
    (lambda p: p.write_bytes(b"not a video at all" * 10), "truncated or corrupt"),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path, make, message):
    path = tmp_path / "bad.mp4"
    make(path)
    with pytest.raises(VideoDecodeError, match=rf"bad\.mp4.*{message}"):
        probe(path)


def _clip(video: str, i: int, start: float, end: float) -> ClipRecord:
    return ClipRecord(clip_id=f"c{i}", video=video, label="fight", label_idx=1, group="g", split="train",
                      start_s=start, end_s=end, kind="positive")


def test_iter_clip_frames_preprocesses_each_clip_and_reports_bad_videos(tmp_path):
    path = make_mp4(tmp_path / "v.mp4", frames=40, fps=10)
    video = VideoRecord(path=str(path), label="fight", group="g", source="aihub")
    clips = [_clip(str(path), 0, 0.0, 0.8), _clip(str(path), 1, 2.5, 3.3)]
    out = list(iter_clip_frames(video, clips, SPEC, chunk=3))
    assert [c.clip_id for c, _ in out] == ["c0", "c1"]
    first, second = out[0][1], out[1][1]
    assert first.shape == (4, 32, 32, 3) and first.dtype == np.uint8
    # 0.8 s at 5 fps from a 10 fps video: frames 0, 2, 4, 6; the second clip is centred on 2.9 s
    assert np.all(np.abs(_levels(first) - [frame_level(i) for i in (0, 2, 4, 6)]) <= 3)
    assert np.all(np.abs(_levels(second) - [frame_level(i) for i in (25, 27, 29, 31)]) <= 3)

    missing = VideoRecord(path=str(tmp_path / "gone.mp4"), label="fight", group="g", source="aihub")
    bad = list(iter_clip_frames(missing, [_clip(missing.path, 0, 0, 1), _clip(missing.path, 1, 1, 2)], SPEC))
    assert len(bad) == 2 and all(isinstance(r, InputError) and r.stage == "decode" and "missing" in r.reason for _, r in bad)
