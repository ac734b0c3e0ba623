"""Video files: probe with decord (or PyAV), decode only the sampled frames, scaled at decode time.

decord gives the facts clips are sampled from (frame count and fps: :func:`probe`, :func:`open_reader`) and
full-resolution RGB frames by index (:func:`decode_frames`). decord is optional (it has no wheel for Linux
aarch64 or macOS arm64): where ``import decord`` fails, :func:`open_reader` returns a PyAV reader with the same
interface (:class:`PyAVReader`: frames counted from the container's packets, fps from the stream's average rate,
the numbers decord reports for the same file). Clip pixels come from :class:`ScaledFrameReader`:
PyAV decodes the sampled frames and :func:`bigsister_ray.clip.scale_frame` turns each one, from the decoder's
own YUV pixels, into the small RGB frame of the ClipSpec. The serving stream readers call the same function on
the same decoder's frames, so a clip is the same bytes in training and in serving (decord bundles an older
FFmpeg whose scaler rounds differently, so its own scaled output cannot be used for this). No
full-resolution RGB frame is made.

Readers are opened inside the function that uses them (so inside the Ray worker, never in a parent that
forks). The clips of the index are decoded with these pieces by :mod:`bigsister_ray.data.clips`, one reader
per video.

A missing, zero-byte, truncated or corrupt file raises :class:`bigsister_ray.errors.VideoDecodeError` naming
the file (:func:`probe`, :func:`frame_timing`, :func:`decode_frames`, :meth:`ScaledFrameReader.fill`).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bigsister_ray.clip import ClipSpec, sample_indices, scale_frame
from bigsister_ray.errors import VideoDecodeError
from bigsister_ray.video.sniff import video_stream

__all__ = ["VideoInfo", "open_reader", "probe", "frame_timing", "decode_frames", "ScaledFrameReader", "PyAVReader",
           "file_size", "decord_available"]


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


@functools.lru_cache(maxsize=1)
def _decord() -> Any | None:
    """The decord module, or None where it cannot be imported (no wheel for the platform, not installed)."""
    try:
        import decord
    except ImportError:
        return None
    return decord


def decord_available() -> bool:
    """True when decord can be imported; otherwise :func:`open_reader` reads with PyAV."""
    return _decord() is not None


def _decord_errors() -> tuple[type[BaseException], ...]:
    import av

    decord = _decord()
    own = (decord.DECORDError,) if decord is not None else ()
    return (*own, av.FFmpegError, RuntimeError, ValueError, IndexError, OSError)


class _Frames:
    """What ``get_batch`` returns: ``asnumpy()`` gives the ``N x H x W x 3`` uint8 frames."""

    def __init__(self, frames: np.ndarray) -> None:
        self._frames = frames

    def asnumpy(self) -> np.ndarray:
        return self._frames


class PyAVReader:
    """decord's ``VideoReader`` interface (``len``, ``get_avg_fps``, ``[i]``, ``get_batch``) over PyAV.

    The frame count is the number of the video stream's packets (no decode) and the fps the stream's average
    rate, as decord reports them; frames are numbered in presentation order from 0 and decoded by one forward
    pass from the start (:meth:`get_batch`), RGB at full resolution. Used where decord cannot be imported.
    """

    def __init__(self, path: str | Path, num_threads: int = 1) -> None:
        import av

        from bigsister_ray.video.sniff import probe_container

        self.path, self.num_threads = str(path), num_threads
        with av.open(self.path) as container:
            self.info = probe_container(container, self.path)

    def __len__(self) -> int:
        return self.info.num_frames

    def get_avg_fps(self) -> float:
        return self.info.fps

    def __getitem__(self, index: int) -> np.ndarray:
        return self.get_batch([index]).asnumpy()[0]

    def get_batch(self, indices: Sequence[int]) -> _Frames:
        import av

        order = [int(i) for i in indices]
        if not order:
            raise ValueError("expected at least one frame index")
        wanted, last = set(order), max(order)
        got: dict[int, np.ndarray] = {}
        with av.open(self.path) as container:
            stream = video_stream(container, self.path)
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = self.num_threads
            for n, frame in enumerate(container.decode(stream)):
                if n in wanted:
                    got[n] = frame.to_ndarray(format="rgb24")
                if n >= last:
                    break
        missing = sorted(wanted - got.keys())
        if missing:
            raise IndexError(f"the video ended before frame {missing[0]}")
        return _Frames(np.stack([got[i] for i in order]))


def open_reader(path: str | Path, num_threads: int = 1) -> Any:
    """Open a decord ``VideoReader`` (CPU, RGB), or a :class:`PyAVReader` where decord cannot be imported.

    Raises :class:`VideoDecodeError` naming the file and why.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise VideoDecodeError(f"{p}: video file is missing") from None
    except OSError as err:
        raise VideoDecodeError(f"{p}: cannot read video: {err.strerror or err}") from err
    if size == 0:
        raise VideoDecodeError(f"{p}: video file is empty (0 bytes)")
    decord = _decord()
    try:
        if decord is None:
            reader = PyAVReader(p, num_threads=num_threads)
        else:
            reader = decord.VideoReader(str(p), ctx=decord.cpu(0), num_threads=num_threads)
    except VideoDecodeError:
        raise
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
            ctx = video_stream(container, str(path)).codec_context
            width, height = int(ctx.width or 0), int(ctx.height or 0)
    except (av.FFmpegError, OSError, ValueError, VideoDecodeError):
        return None
    return (width, height) if width > 0 and height > 0 else None


def probe(path: str | Path) -> VideoInfo:
    """Frame count and fps (decord's, or the same numbers from PyAV: the numbers decoding will use) and size.

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


def frame_timing(path: str | Path, num_threads: int = 1) -> VideoInfo:
    """Frame count and fps as decoding numbers them, without decoding a frame (``width`` and ``height`` are 0)."""
    reader = open_reader(path, num_threads=num_threads)
    try:
        return _info(reader, path, decode_first=False)
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


class ScaledFrameReader:
    """Frames of one video by index (decord's numbering: presentation order from 0), scaled at decode time.

    One PyAV container, opened here and used by one thread. :meth:`fill` decodes forward and converts only the
    frames asked for (:func:`bigsister_ray.clip.scale_frame`); a frame far ahead, or behind, is reached by a
    seek to the keyframe before it, after which frame numbers come from timestamps (exact for constant frame
    rate; decoding from the start counts frames, exact for any video). Errors are :class:`VideoDecodeError`
    naming the file.
    """

    #: Decode forward rather than seek when the next frame is at most this many seconds ahead.
    SEEK_AHEAD_S = 2.0

    def __init__(self, path: str | Path, spec: ClipSpec, fps: float, num_threads: int = 1) -> None:
        import av
        from av.video.reformatter import VideoReformatter

        self.path, self.spec, self.fps = str(path), spec, float(fps)
        try:
            self._container = av.open(self.path)
        except (av.FFmpegError, OSError) as err:
            raise VideoDecodeError(f"{path}: cannot open video for decoding (truncated or corrupt?): {err}") from err
        try:
            self._stream = video_stream(self._container, self.path)
        except VideoDecodeError:
            self._container.close()
            raise
        self._stream.thread_type = "AUTO"
        self._stream.codec_context.thread_count = num_threads
        tb = self._stream.time_base
        self._tb = float(tb) if tb else 0.0
        self._start = self._stream.start_time or 0
        self._reformatter = VideoReformatter()
        self._frames = self._container.decode(self._stream)
        self._pos = -1  # index of the last decoded frame
        self._counting = True  # decoding from the start: frame numbers are a count
        self._ended = False

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "ScaledFrameReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _seek(self, index: int) -> None:
        import av

        if self._tb <= 0:  # no time base: only a count from the start can number frames
            target, self._counting = self._start, True
        else:
            target = self._start + int((index / self.fps) / self._tb)
            self._counting = index == 0
        try:
            self._container.seek(target, stream=self._stream, backward=True)
        except av.FFmpegError as err:
            raise VideoDecodeError(f"{self.path}: cannot seek to frame {index}: {err}") from err
        self._frames = self._container.decode(self._stream)
        self._pos, self._ended = -1, False

    def _index(self, frame) -> int:
        if self._counting or frame.pts is None or self._tb <= 0:
            return self._pos + 1
        return int(round((frame.pts - self._start) * self._tb * self.fps))

    def fill(self, targets: Sequence[int], cache: dict[int, np.ndarray], keep: "set[int] | None" = None) -> None:
        """Put the scaled frames ``targets`` (sorted) into ``cache``; frames in ``keep`` met on the way too."""
        import av

        keep = keep if keep is not None else set()
        for target in targets:
            if target in cache:
                continue
            if target <= self._pos or target - self._pos > max(16, self.SEEK_AHEAD_S * self.fps):
                self._seek(target)
            while target not in cache:
                try:
                    frame = next(self._frames)
                except StopIteration:
                    frame = None
                except av.FFmpegError as err:
                    raise VideoDecodeError(f"{self.path}: cannot decode frame {self._pos + 1} (truncated or corrupt?): "
                                           f"{err}") from err
                if frame is None:
                    raise VideoDecodeError(f"{self.path}: the video ended at frame {self._pos} before frame {target} "
                                           "(truncated or corrupt?)")
                idx = self._index(frame)
                if idx > target and not self._counting:
                    # The seek landed after the frame (an inexact index): number frames by counting instead.
                    self._seek(0)
                    self._counting = True
                    continue
                self._pos = idx
                if idx == target or (idx in keep and idx not in cache):
                    cache[idx] = scale_frame(frame, self.spec, self._reformatter)


def file_size(path: str | Path) -> int | None:
    """Size in bytes, or ``None`` when the file cannot be stat'ed."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None
