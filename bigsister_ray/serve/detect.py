"""Detection on a whole video file: per-window probabilities and the incidents the alert rules find.

``bigsister detect FILE --checkpoint C`` calls :func:`detect_file` (model in this process); ``POST /detect``
runs the same steps with the Classifier deployment scoring the windows. Both share every step but the
scoring call:

1. :func:`iter_file_chunks` decodes the file sampled at the checkpoint's ``clip.fps`` with the data pipeline's
   decoder (``bigsister_ray.video.files.ScaledFrameReader``: each frame scaled at decode time by
   :func:`bigsister_ray.clip.scale_frame`, the frames training and streams see);
2. :func:`bigsister_ray.video.windows.iter_windows` cuts windows of ``clip.frames`` every ``clip.stride``;
3. :func:`detection_result` turns the scored windows into the JSON answer with
   :func:`bigsister_ray.alerts.rules.detect_events` (the live streams' rules).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from bigsister_ray.clip import ClipSpec
from bigsister_ray.errors import VideoDecodeError

__all__ = ["detect_file", "iter_file_chunks", "iter_window_batches", "detection_result", "scores_dict"]

#: Sampled frames decoded per call to the decoder (bounded memory for long files).
CHUNK_FRAMES = 64


def iter_file_chunks(path: str | Path, spec: ClipSpec, chunk_frames: int = CHUNK_FRAMES, max_seconds: float | None = None,
                     max_pixels: int | None = None) -> Iterator[tuple[np.ndarray, list[float]]]:
    """Yield ``(frames N x S x S x 3 uint8, timestamps_s)`` of ``path`` sampled at ``spec.fps``, in order.

    Frame ``k`` is the video frame shown at ``k / spec.fps`` seconds (the same rule as
    :func:`bigsister_ray.clip.sample_indices`). Raises :class:`VideoDecodeError` naming the file, also when the
    video is longer than ``max_seconds`` or its frames larger than ``max_pixels`` (checked before decoding).
    """
    from bigsister_ray.video.files import ScaledFrameReader, probe

    p = Path(path)
    if not p.is_file():
        raise VideoDecodeError(f"{p}: no such video file")
    info = probe(p)
    if max_pixels is not None and info.width * info.height > max_pixels:
        raise VideoDecodeError(f"{p}: frames are {info.width}x{info.height} ({info.width * info.height} pixels), "
                               f"the limit is {max_pixels} pixels (serve.upload_max_pixels)")
    duration = info.num_frames / info.fps
    if max_seconds is not None and duration > max_seconds:
        raise VideoDecodeError(f"{p}: video is {duration:.1f} s long, the limit is {max_seconds:.0f} s (serve.upload_max_seconds)")
    n = max(1, int(math.floor(duration * spec.fps + 1e-6)))
    times = np.arange(n) / spec.fps
    idx = np.clip(np.floor(times * info.fps + 1e-6).astype(np.int64), 0, info.num_frames - 1)
    with ScaledFrameReader(p, spec, info.fps) as reader:  # scaled at decode time, as training and streams are
        for lo in range(0, n, chunk_frames):
            hi = min(n, lo + chunk_frames)
            cache: dict[int, np.ndarray] = {}
            wanted = sorted(set(int(i) for i in idx[lo:hi]))
            reader.fill(wanted, cache)
            yield np.stack([cache[int(i)] for i in idx[lo:hi]]), [float(t) for t in times[lo:hi]]


def iter_window_batches(path: str | Path, spec: ClipSpec, batch_size: int, max_seconds: float | None = None,
                        max_pixels: int | None = None):
    """Batches (lists) of at most ``batch_size`` :class:`~bigsister_ray.video.windows.Window` of a file."""
    from bigsister_ray.video.windows import iter_windows

    batch = []
    for w in iter_windows(iter_file_chunks(path, spec, max_seconds=max_seconds, max_pixels=max_pixels), spec):
        batch.append(w)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def scores_dict(labels: Sequence[str], probs: Sequence[float]) -> dict[str, float]:
    """``{label: probability}`` from one row of model output, in the checkpoint's label order."""
    if len(probs) != len(labels):
        raise ValueError(f"expected {len(labels)} probabilities (one per label), got {len(probs)}")
    return {label: float(p) for label, p in zip(labels, probs)}


def detection_result(windows: Sequence[tuple[float, float, Mapping[str, float]]], labels: Sequence[str], alerts,
                     thresholds: Mapping[str, float] | None) -> dict[str, Any]:
    """The ``/detect`` JSON: ``{windows: [{start_s, end_s, scores}], events: [{label, start_s, end_s, peak_score}]}``."""
    from bigsister_ray.alerts.rules import WindowScore, detect_events

    scored = [WindowScore(start_s=float(s), end_s=float(e), scores=dict(sc)) for s, e, sc in windows]
    events = detect_events(scored, labels, alerts, thresholds)
    return {
        "windows": [{"start_s": round(w.start_s, 4), "end_s": round(w.end_s, 4), "scores": w.scores} for w in scored],
        "events": [ev.to_dict() for ev in events],
    }


def detect_file(path: str | Path, checkpoint: str | Path, settings) -> dict[str, Any]:
    """Classify ``path`` offline with ``checkpoint``: the same JSON as ``POST /detect``.

    Windows are scored ``settings.serve.classifier.max_batch_size`` at a time; memory stays bounded by one
    batch plus one decode chunk whatever the file's length.
    """
    import torch

    from bigsister_ray.models.checkpoint import load_checkpoint, predict_proba

    loaded = load_checkpoint(Path(checkpoint))
    meta = loaded.meta
    batch_size = settings.serve.classifier.max_batch_size
    rows: list[tuple[float, float, dict[str, float]]] = []
    with torch.inference_mode():
        for batch in iter_window_batches(path, meta.clip, batch_size):
            probs = predict_proba(loaded.model, np.stack([w.frames for w in batch]), meta)
            rows.extend((w.start_s, w.end_s, scores_dict(meta.labels, p)) for w, p in zip(batch, probs))
    return detection_result(rows, meta.labels, settings.alerts, meta.thresholds)
