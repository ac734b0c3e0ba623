"""Evidence clips cut from a stream's recent frames: a bounded ring of frames per stream and the captures that
collect the frames around an incident's peak.

The frames are the ones the stream already decodes: sampled at ``spec.fps`` and scaled to ``spec.size`` squared
(``N x S x S x 3`` uint8, timestamps in stream seconds). They are kept raw, not re-encoded: encoding every frame
to JPEG on the decoding thread would cost CPU on every camera all the time to save memory that only matters
for large clip specs, while raw frames are a reference to arrays the decoder made anyway.

Memory per camera is ``keep_s x fps x S x S x 3`` bytes, and never more than ``max_bytes`` (oldest frames go
first). With the default 5 s before and 10 s after the peak, ``keep_s`` is the 5 s plus one window plus the
queueing allowance (see :func:`ring_seconds`):

=========  ==========  ======  ==========================
clip spec  frame size  keep_s  ring per camera
=========  ==========  ======  ==========================
laptop     112 x 112   11.0 s  3.3 MB (88 frames at 8 fps)
i3d-32     224 x 224   11.4 s  25.6 MB (170 frames at 15 fps)
i3d        224 x 224   12.7 s  47.7 MB (317 frames at 25 fps)
=========  ==========  ======  ==========================

(``serve.streams.max_buffer_windows`` 4.) A camera never holds more than :data:`DEFAULT_MAX_BYTES` (64 MiB).

A capture in progress holds at most ``before + window + after`` seconds of frames more (references to the same
arrays while they are still in the ring).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FrameRing", "ClipCapture", "ring_seconds", "DEFAULT_MAX_BYTES"]

#: The most bytes of frames one camera's ring keeps, whatever the clip spec.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def ring_seconds(before_s: float, spec: Any, queued_windows: int) -> float:
    """Seconds of frames a ring keeps: ``before_s`` before the peak window's start, the window itself, and the
    windows a stream may queue before scoring (the peak is known that much after its frames were decoded)."""
    return float(before_s) + float(spec.duration_s) + float(spec.stride_s) * max(1, int(queued_windows))


class FrameRing:
    """The recent frames of one stream, bounded by time (``keep_s`` behind the newest) and by ``max_bytes``."""

    def __init__(self, keep_s: float, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if keep_s <= 0 or max_bytes <= 0:
            raise ValueError(f"expected keep_s and max_bytes > 0, got {keep_s!r} and {max_bytes!r}")
        self.keep_s = float(keep_s)
        self.max_bytes = int(max_bytes)
        self._frames: deque[tuple[float, np.ndarray]] = deque()
        self.nbytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, frames: np.ndarray, timestamps: list[float]) -> None:
        """Add a chunk (``N x H x W x 3`` and N timestamps); drop what is older than ``keep_s`` or over the byte cap."""
        if len(frames) != len(timestamps):
            raise ValueError(f"expected one timestamp per frame, got {len(frames)} frames and {len(timestamps)} timestamps")
        with self._lock:
            for frame, ts in zip(frames, timestamps):
                self._frames.append((float(ts), frame))
                self.nbytes += frame.nbytes
            if not self._frames:
                return
            newest = self._frames[-1][0]
            while self._frames and (self._frames[0][0] < newest - self.keep_s or self.nbytes > self.max_bytes):
                self.nbytes -= self._frames.popleft()[1].nbytes

    def since(self, t0: float) -> list[tuple[float, np.ndarray]]:
        """The frames at or after stream second ``t0``, oldest first."""
        with self._lock:
            return [(ts, f) for ts, f in self._frames if ts >= t0]

    def newest_ts(self) -> float | None:
        with self._lock:
            return self._frames[-1][0] if self._frames else None

    def newest(self) -> tuple[float, np.ndarray] | None:
        """The newest frame and its stream second, or None while the ring is empty."""
        with self._lock:
            return self._frames[-1] if self._frames else None


@dataclass
class ClipCapture:
    """The frames of one incident's clip, from ``start_s`` to ``end_s`` (stream seconds), as they arrive.

    ``deadline`` is the wall-clock time (``time.time()``) after which the capture is written with what it has
    (the camera stopped sending); ``owner`` is whatever the caller needs to write it (e.g. a fencing token).
    """

    incident_id: int
    stream_id: str
    start_s: float
    end_s: float
    deadline: float
    owner: Any = None
    frames: list[np.ndarray] = field(default_factory=list)
    last_ts: float | None = None
    seen_ts: float | None = None

    def add(self, items: list[tuple[float, np.ndarray]]) -> None:
        """Take the frames within the clip's span, in order (frames already taken or outside it are skipped)."""
        for ts, frame in items:
            self.seen_ts = ts if self.seen_ts is None else max(self.seen_ts, ts)
            if ts < self.start_s or ts > self.end_s or (self.last_ts is not None and ts <= self.last_ts):
                continue
            self.frames.append(frame)
            self.last_ts = ts

    @property
    def complete(self) -> bool:
        """True once a frame at or past the clip's end has arrived (the rest of the span is in)."""
        return self.seen_ts is not None and self.seen_ts >= self.end_s - 1e-6

    def span_s(self) -> tuple[float, float] | None:
        """(first, last) frame time taken so far; None when it has no frame."""
        return None if not self.frames or self.last_ts is None else (self.start_s, self.last_ts)
