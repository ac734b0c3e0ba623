"""The decode step of a stream reader: decoder threads, hardware decoding, resuming, decode-time scaling.

**Decoder threads** (``serve.streams.decode_threads``, default 1). A shard decodes many cameras at once, so its
cores are filled by streams, not by threads inside one decoder: one thread per stream costs the least CPU per
camera-second (no thread hand-offs), and frame threading would add one frame of delay per thread on a live
source. Live sources use slice threading, files frame threading (throughput matters there, not delay).
Raise it only for a node that serves a few very high-resolution cameras; 0 lets FFmpeg use every core.

**Scaling.** :class:`KeptFrameScaler` turns only the frames the sampler keeps into clip frames, with
:func:`bigsister_ray.clip.scale_frame`: FFmpeg's scaler reads the decoder's YUV frame and writes the small
RGB frame directly, which is what the training data path does too (bit-identical clips).

**Hardware decoding** (``serve.streams.hwaccel``). ``cuda`` asks FFmpeg for NVDEC (PyAV ``HWAccel``), with
FFmpeg's own software fallback for streams the GPU cannot decode. A node without a usable CUDA device decodes
on the CPU instead of failing the camera: :func:`hwaccel_for` says why, the runner logs a warning and shows
it in the stream's status (``decoder: cpu``, ``last_error``). A camera recorded on the CPU is better than no
camera; the status tells the operator to fix the node or the setting.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from bigsister_ray.clip import ClipSpec, scale_frame

if TYPE_CHECKING:  # pragma: no cover - typing only
    import av.container

__all__ = ["HWAccelMode", "hwaccel_for", "configure_decoder", "seek_media_time", "KeptFrameScaler"]

log = logging.getLogger(__name__)

HWAccelMode = Literal["none", "cuda"]


@functools.lru_cache(maxsize=4)
def _device_problem(device_type: str) -> str | None:
    """Why FFmpeg cannot create a ``device_type`` device on this node (None: it can). Checked once per process."""
    import av
    from av.codec.hwaccel import HWAccel, hwdevices_available

    if device_type not in hwdevices_available():
        return f"this FFmpeg build has no {device_type} support (it has: {', '.join(hwdevices_available()) or 'none'})"
    try:
        HWAccel(device_type=device_type, allow_software_fallback=False).create(av.codec.Codec("h264", "r"))
    except (av.FFmpegError, OSError, ValueError, NotImplementedError) as err:
        return f"FFmpeg could not open a {device_type} device: {getattr(err, 'strerror', None) or err}"
    return None


def hwaccel_for(mode: HWAccelMode) -> tuple[Any, str | None]:
    """``(HWAccel or None, problem)`` for ``serve.streams.hwaccel = mode``.

    ``problem`` is None when the mode is ``none`` or the device works; otherwise it says why decoding stays on
    the CPU and what to do.
    """
    if mode == "none":
        return None, None
    problem = _device_problem(mode)
    if problem is not None:
        return None, (f"serve.streams.hwaccel={mode}: {problem}; decoding on the CPU. Give this replica a node "
                      f"with a working NVIDIA driver and GPU, or set serve.streams.hwaccel: none")
    from av.codec.hwaccel import HWAccel

    return HWAccel(device_type=mode, allow_software_fallback=True), None


def configure_decoder(vstream: Any, threads: int, live: bool) -> None:
    """Decoder threads for one stream (see the module doc): slice threads for live sources, frame threads for files."""
    vstream.codec_context.thread_count = threads
    vstream.thread_type = "SLICE" if live else "AUTO"


def seek_media_time(container: "av.container.InputContainer", vstream: Any, t: float) -> None:
    """Seek a file to the keyframe at or before media time ``t`` (seconds from the start of the stream)."""
    if t <= 0:
        return
    tb = vstream.time_base
    start = vstream.start_time or 0
    container.seek(start + int(t / float(tb)), stream=vstream, backward=True)


class KeptFrameScaler:
    """Scale kept frames into clip frames; a frame kept twice in a row (spec.fps above the source's) is scaled once."""

    def __init__(self, spec: ClipSpec) -> None:
        from av.video.reformatter import VideoReformatter

        self.spec = spec
        self._reformatter = VideoReformatter()
        self._last: tuple[object, np.ndarray] | None = None

    def __call__(self, frame: Any) -> np.ndarray:
        if self._last is not None and self._last[0] is frame:
            return self._last[1]
        small = scale_frame(frame, self.spec, self._reformatter)
        self._last = (frame, small)
        return small
