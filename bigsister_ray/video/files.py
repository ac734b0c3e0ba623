"""Video files: probe and decode only the sampled frames, with decord.

A decord reader is opened inside the function that uses it (so inside the Ray worker, never in a parent that
forks) and is shared by every clip of its video: :func:`iter_clip_frames` opens one reader per video, decodes
exactly the frames :func:`bigsister_ray.clip.sample_indices` picks for each clip, and puts them through
:func:`bigsister_ray.clip.preprocess_frames` (the one shared preprocessing) right away, so full-resolution
frames never leave the worker.

A missing, zero-byte, truncated or corrupt file raises :class:`bigsister_ray.errors.VideoDecodeError` naming
the file (:func:`probe`, :func:`decode_frames`), or is yielded as an
:class:`bigsister_ray.data.records.InputError` (:func:`iter_clip_frames`), so one bad video never stops the rest.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from bigsister_ray.clip import ClipSpec, preprocess_frames, sample_indices
from bigsister_ray.errors import VideoDecodeError

if TYPE_CHECKING:
    from bigsister_ray.data.records import ClipRecord, InputError, VideoRecord

__all__ = ["VideoInfo", "open_reader", "probe", "decode_frames", "clip_indices", "iter_clip_frames", "file_size"]


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video."""

    num_frames: int
    fps: float
    width: int
    height: int

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


def _decord_errors() -> tuple[type[BaseException], ...]:
    import decord

    return (decord.DECORDError, RuntimeError, ValueError, IndexError, OSError)


def open_reader(path: str | Path, num_threads: int = 1) -> Any:
    """Open a decord ``VideoReader`` (CPU, RGB). Raises :class:`VideoDecodeError` naming the file and why."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise VideoDecodeError(f"{p}: video file is missing") from None
    except OSError as err:
        raise VideoDecodeError(f"{p}: cannot read video: {err.strerror or err}") from err
    if size == 0:
        raise VideoDecodeError(f"{p}: video file is empty (0 bytes)")
    import decord

    try:
        reader = decord.VideoReader(str(p), ctx=decord.cpu(0), num_threads=num_threads)
    except _decord_errors() as err:
        raise VideoDecodeError(f"{p}: cannot open video (truncated or corrupt?): {_short(err)}") from err
    if len(reader) <= 0:
        raise VideoDecodeError(f"{p}: video has no frames (truncated or corrupt?)")
    return reader


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    # decord's messages carry a C++ backtrace; the first meaningful line says what happened.
    for line in text:
        line = line.strip()
        if line and not line.startswith(("[bt]", "Stack trace")):
            return line[:300]
    return type(err).__name__


def _info(reader: Any, path: str | Path, decode_first: bool = True) -> VideoInfo:
    """Container facts; ``decode_first`` also decodes frame 0 (size, and proof the stream decodes at all)."""
    fps = float(reader.get_avg_fps())
    if not math.isfinite(fps) or fps <= 0:
        raise VideoDecodeError(f"{path}: video reports an unusable frame rate {fps!r}")
    if not decode_first:
        return VideoInfo(num_frames=len(reader), fps=fps, width=0, height=0)
    try:
        h, w = reader[0].shape[:2]
    except _decord_errors() as err:
        raise VideoDecodeError(f"{path}: cannot decode the first frame (corrupt?): {_short(err)}") from err
    return VideoInfo(num_frames=len(reader), fps=fps, width=int(w), height=int(h))


def _header_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from the container header with PyAV, without decoding a frame; None if it does not say."""
    import av

    try:
        with av.open(str(path)) as container:
            ctx = container.streams.video[0].codec_context
            width, height = int(ctx.width or 0), int(ctx.height or 0)
    except (av.FFmpegError, IndexError, OSError, ValueError):
        return None
    return (width, height) if width > 0 and height > 0 else None


def probe(path: str | Path) -> VideoInfo:
    """Frame count and fps (decord: the numbers decoding will use) and size of a video.

    The size comes from the container header (no decode, about 3x cheaper over a folder of videos); when the
    header does not give it, frame 0 is decoded.
    """
    reader = open_reader(path)
    try:
        size = _header_size(path)
        if size is None:
            return _info(reader, path)
        info = _info(reader, path, decode_first=False)
        return VideoInfo(num_frames=info.num_frames, fps=info.fps, width=size[0], height=size[1])
    finally:
        del reader


def decode_frames(path: str | Path, indices: Sequence[int], num_threads: int = 1, reader: Any | None = None) -> np.ndarray:
    """Decode exactly ``indices`` of ``path``: uint8 ``N x H x W x 3`` RGB.

    Pass an open ``reader`` to reuse it across calls (one reader per video). Raises
    :class:`VideoDecodeError` naming the file for a missing, empty, truncated or corrupt video.
    """
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(f"expected a non-empty 1-D list of frame indices, got shape {idx.shape}")
    vr = reader if reader is not None else open_reader(path, num_threads=num_threads)
    n = len(vr)
    if idx.min() < 0 or idx.max() >= n:
        raise VideoDecodeError(f"{path}: frame indices {int(idx.min())}..{int(idx.max())} outside the video's {n} frames")
    # decord decodes a sorted, de-duplicated list fastest (one forward pass); restore the order afterwards.
    uniq, inverse = np.unique(idx, return_inverse=True)
    try:
        frames = vr.get_batch(uniq.tolist()).asnumpy()
    except _decord_errors() as err:
        raise VideoDecodeError(f"{path}: cannot decode frames {int(uniq[0])}..{int(uniq[-1])} (truncated or corrupt?): {_short(err)}") from err
    if frames.ndim != 4 or frames.shape[0] != uniq.size or frames.shape[-1] != 3:
        raise VideoDecodeError(f"{path}: decoder returned frames shaped {frames.shape}, expected {uniq.size} x H x W x 3")
    return frames[inverse] if uniq.size != idx.size or not np.array_equal(uniq, idx) else frames


def clip_indices(clip: "ClipRecord", info: VideoInfo, spec: ClipSpec) -> np.ndarray:
    """The frame indices of one clip of the index (centred on its ``[start_s, end_s]``; short videos loop)."""
    return sample_indices(info.num_frames, info.fps, spec, clip.start_s, clip.end_s)


def iter_clip_frames(
    video: "VideoRecord",
    clips: "Sequence[ClipRecord]",
    spec: ClipSpec,
    num_threads: int = 1,
    chunk: int = 8,
) -> Iterator[tuple["ClipRecord", "np.ndarray | InputError"]]:
    """For each clip of ``video``: ``(clip, uint8 T x S x S x 3)`` or ``(clip, InputError)``.

    One decord reader serves every clip of the video and is opened here (inside the worker). A video that
    cannot be opened yields an :class:`InputError` for each of its clips; a clip whose frames cannot be
    decoded yields one for that clip and the others go on. Frames are decoded ``chunk`` at a time and resized
    at once, so a worker never holds more than ``chunk`` full-resolution frames.
    """
    from bigsister_ray.data.records import InputError

    if not clips:
        return
    try:
        reader = open_reader(video.path, num_threads=num_threads)
        info = _info(reader, video.path, decode_first=False)  # the clips' own frames prove the stream decodes
    except VideoDecodeError as err:
        for clip in clips:
            yield clip, InputError(path=video.path, stage="decode", reason=str(err))
        return
    try:
        for clip in clips:
            try:
                idx = clip_indices(clip, info, spec)
                # Decode and resize a few frames at a time: a 4K frame is 25 MB, a whole clip of them is not kept.
                parts = [
                    preprocess_frames(decode_frames(video.path, idx[i : i + chunk], reader=reader), spec)
                    for i in range(0, len(idx), chunk)
                ]
            except (VideoDecodeError, ValueError) as err:
                yield clip, InputError(path=video.path, stage="decode", reason=f"clip {clip.clip_id}: {err}")
                continue
            yield clip, parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    finally:
        del reader


def file_size(path: str | Path) -> int | None:
    """Size in bytes, or ``None`` when the file cannot be stat'ed."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None
