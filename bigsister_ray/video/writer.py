"""Write RGB frames to an H.264 (or MPEG-4 Part 2) ``.mp4`` with PyAV.

Used by the synthetic dataset generator, by tests that need "a video whose content is known", and by
anything else that has to produce a file every player and decoder (decord, PyAV, ffmpeg) reads::

    write_mp4("clip.mp4", frames, fps=15)          # frames: iterable of H x W x 3 uint8 RGB

Frames are encoded as ``yuv420p``, which needs even sizes: an odd width or height is padded by repeating
the last column or row (the picture is never cropped). The output is deterministic: the same frames give
the same bytes (single-threaded encoder without x264's assembly, RGB to YUV converted here rather than by
swscale, no timestamps from the wall clock).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["write_mp4", "available_codec", "rgb_to_yuv420p", "SUPPORTED_CODECS"]

#: Codecs this writer knows how to configure, best first.
SUPPORTED_CODECS: tuple[str, ...] = ("libx264", "mpeg4")


def available_codec(preferred: str = "libx264") -> str:
    """The codec to use: ``preferred`` when this PyAV build has its encoder, else ``mpeg4``.

    Raises :class:`ValueError` for a codec this writer does not support and :class:`RuntimeError` when
    neither encoder is present.
    """
    import av

    if preferred not in SUPPORTED_CODECS:
        raise ValueError(f"expected codec one of {', '.join(SUPPORTED_CODECS)}, got {preferred!r}")
    for name in (preferred, *[c for c in SUPPORTED_CODECS if c != preferred]):
        try:
            av.codec.Codec(name, "w")
        except Exception as err:  # av raises UnknownCodecError (a ValueError) or FFmpegError subclasses
            if not isinstance(err, (ValueError, av.FFmpegError)):
                raise
            continue
        return name
    raise RuntimeError(f"this PyAV/FFmpeg build has none of the encoders {SUPPORTED_CODECS}; install PyAV wheels from PyPI")


def _rate(fps: float) -> Fraction:
    if not isinstance(fps, (int, float)) or not np.isfinite(fps) or fps <= 0 or fps > 1000:
        raise ValueError(f"expected fps a positive number up to 1000, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


def _as_frame(frame: np.ndarray, index: int, path: Path) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{path}: frame {index}: expected H x W x 3 RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"{path}: frame {index}: expected uint8, got {arr.dtype} (convert with np.clip(x, 0, 255).astype(np.uint8))")
    h, w = arr.shape[:2]
    if h < 2 or w < 2:
        raise ValueError(f"{path}: frame {index}: expected at least 2 x 2 pixels, got {w} x {h}")
    if h % 2 or w % 2:
        arr = np.pad(arr, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(arr)


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """RGB ``H x W x 3`` uint8 (even sizes) -> planar yuv420p ``(H * 3 / 2) x W`` uint8, BT.601 limited range.

    Done here in numpy rather than by FFmpeg's swscale, whose SIMD paths depend on the alignment of the
    input buffer: the same frames must always give the same bytes. Chroma is the mean of each 2 x 2 block.
    """
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    cb = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    cr = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
    h, w = y.shape

    def down(c: np.ndarray) -> np.ndarray:
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    planes = [y.ravel(), down(cb).ravel(), down(cr).ravel()]
    out = np.concatenate([np.clip(np.rint(p), 0, 255) for p in planes]).astype(np.uint8)
    return out.reshape(h * 3 // 2, w)


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: float, codec: str = "libx264",
              *, crf: int = 20, gop_s: float = 2.0, deterministic: bool = True, faststart: bool = False) -> Path:
    """Encode ``frames`` (H x W x 3 uint8 RGB, all the same size) into ``path`` and return the path.

    ``codec`` is ``libx264`` (falls back to ``mpeg4`` where this FFmpeg build lacks it) or ``mpeg4``.
    ``crf`` is the x264 quality (lower is better; mpeg4 uses an equivalent fixed quantiser); a keyframe
    every ``gop_s`` seconds keeps seeking cheap for decoders that read sampled frames. Frames are streamed
    to the encoder one at a time, so a generator of any length uses constant memory.

    ``deterministic`` turns off x264's assembly: its SIMD paths read a few uninitialised bytes past the
    input planes, so about 3 in 100 encodes of the same frames differ (measured here); without assembly
    every encode is byte-identical, at about 3x the encoding time (about 1 s for 180 frames of 160 x 120).

    ``faststart`` moves the index (``moov``) to the front when the file is finished, so a browser starts playing
    and seeking before it has the whole file (evidence clips served over HTTP).

    Raises :class:`ValueError` for bad fps, shapes, dtypes, a size change mid-stream or no frames at all;
    a partially written file is removed.
    """
    import av

    path = Path(path)
    rate = _rate(fps)
    codec = available_codec(codec)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"} if faststart else None) as container:
            stream = None
            for i, raw in enumerate(frames):
                arr = _as_frame(raw, i, path)
                if stream is None:
                    stream = container.add_stream(codec, rate=rate)
                    stream.width, stream.height = arr.shape[1], arr.shape[0]
                    stream.pix_fmt = "yuv420p"
                    stream.codec_context.time_base = Fraction(1, 1) / rate
                    stream.codec_context.gop_size = max(1, round(gop_s * float(rate)))
                    stream.codec_context.thread_count = 1
                    if codec == "libx264":
                        options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
                        if deterministic:
                            options["x264-params"] = "no-asm=1"
                        stream.codec_context.options = options
                    else:  # a fixed quantiser, 2 (best) to 31, from crf: qmin = qmax under a bit rate never reached
                        q = str(max(2, min(31, round(crf / 5))))
                        stream.codec_context.bit_rate = 100_000_000
                        stream.codec_context.options = {"qmin": q, "qmax": q}
                elif (arr.shape[1], arr.shape[0]) != (stream.width, stream.height):
                    raise ValueError(
                        f"{path}: frame {i}: expected {stream.width} x {stream.height} like the first frame, "
                        f"got {arr.shape[1]} x {arr.shape[0]}"
                    )
                vf = av.VideoFrame.from_ndarray(rgb_to_yuv420p(arr), format="yuv420p")
                vf.pts = i
                vf.time_base = stream.codec_context.time_base
                for packet in stream.encode(vf):
                    container.mux(packet)
            if stream is None:
                raise ValueError(f"{path}: expected at least one frame, got none")
            for packet in stream.encode():
                container.mux(packet)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
