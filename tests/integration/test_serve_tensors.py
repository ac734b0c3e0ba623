"""Serve and train see the same tensors for the same frames.

The serving path is a StreamShard's: a :class:`StreamRunner` replaying a file (PyAV; FFmpeg's scaler makes each
kept frame clip-sized straight from the decoder's YUV frame with ``clip.scale_frame``), windows cut by the
shard's :class:`WindowAssembler`, then the Classifier's ``to_model_input``. The training path is the data
pipeline's: ``iter_clip_frames`` (decord numbers the frames, PyAV decodes them through the same
``clip.scale_frame``) for a clip of the index covering the same seconds, then the training loop's
``to_model_input``. The video is rendered at the ClipSpec's fps, so both paths sample the same source frames
and the tensors must be bit-identical.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from tests._serve_support import TINY_SPEC, wait_for


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from bigsister_ray.data.synth import render_video

    root = tmp_path_factory.mktemp("serve-tensors")
    path = root / "media" / "cam.mp4"
    path.parent.mkdir()
    # 96 x 72: not square and not the model size, so the resize (squash) is exercised.
    render_video(path, "fight", 6.0, fps=TINY_SPEC.fps, size=(96, 72), seed=3, abnormal_span=(2.0, 4.0))
    return path


def _served_windows(path) -> list:
    """Windows exactly as a StreamShard builds them (its StreamRunner, then its WindowAssembler)."""
    from bigsister_ray.config import StreamsConfig
    from bigsister_ray.video.stream import StreamRunner
    from bigsister_ray.video.windows import WindowAssembler

    asm = WindowAssembler(TINY_SPEC)
    windows, lock = [], threading.Lock()
    ended = threading.Event()

    def on_frames(stream_id, frames, timestamps):
        with lock:
            windows.extend(asm.push(frames, timestamps))

    runner = StreamRunner("tensors", path.name, TINY_SPEC, StreamsConfig(media_root=path.parent), on_frames,
                          realtime=False, on_end=lambda _sid: ended.set())
    runner.start()
    try:
        wait_for(ended.is_set, 60, 0.1, "the file stream to end")
    finally:
        runner.stop(10)
    status = runner.status()
    assert status.frames_dropped == 0 and status.callback_errors == 0, status
    return windows


def test_decoder_windows_equal_training_clips_bit_for_bit(video):
    from bigsister_ray.clip import to_model_input
    from bigsister_ray.data.clips import iter_clip_frames
    from bigsister_ray.data.records import ClipRecord, VideoRecord
    from bigsister_ray.models import get_model_spec
    from bigsister_ray.video.files import probe

    served = _served_windows(video)
    info = probe(video)
    expected_windows = (int(info.num_frames) - TINY_SPEC.frames) // TINY_SPEC.stride + 1
    assert len(served) == expected_windows, (len(served), info)

    rec = VideoRecord(path=str(video), label="fight", group="g", source="test", fps=info.fps, num_frames=info.num_frames)
    clips = [ClipRecord(clip_id=f"w{w.index}", video=str(video), label="fight", label_idx=0, group="g", split="train",
                        start_s=w.start_s, end_s=w.start_s + TINY_SPEC.duration_s, kind="positive") for w in served]
    trained = {clip.clip_id: frames for clip, frames in iter_clip_frames(rec, clips, TINY_SPEC)}
    norm = get_model_spec("tiny3d").norm
    for w in served:
        frames = trained[f"w{w.index}"]
        assert isinstance(frames, np.ndarray), frames  # an InputError would say why the data path failed
        assert frames.shape == w.frames.shape == (TINY_SPEC.frames, TINY_SPEC.size, TINY_SPEC.size, 3)
        serve_x = to_model_input(w.frames[None], norm)
        train_x = to_model_input(frames[None], norm)
        assert serve_x.shape == (1, 3, TINY_SPEC.frames, TINY_SPEC.size, TINY_SPEC.size)
        assert torch.equal(serve_x, train_x), f"window {w.index} at {w.start_s:.2f}s differs between serve and train"
    # The comparison is not vacuous: windows of a moving scene differ from each other.
    assert not np.array_equal(served[0].frames, served[len(served) // 2].frames)
