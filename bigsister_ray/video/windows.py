"""Sliding windows over a stream of already-preprocessed frames, where the frames are.

Frames arrive in chunks (``N x S x S x 3`` uint8, already through :func:`bigsister_ray.clip.preprocess_frames`)
with their stream timestamps. :class:`WindowAssembler` keeps the frames one window still needs and emits a
:class:`Window` of ``spec.frames`` frames every ``spec.stride`` frames, the same layout as
:func:`bigsister_ray.clip.window_starts` gives over a whole file. The serving Windower keeps one assembler per
stream; ``bigsister detect`` and ``POST /detect`` feed a file through one, so live streams and uploads are cut
into windows by the same code.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from bigsister_ray.clip import ClipSpec

__all__ = ["Window", "WindowAssembler", "iter_windows"]


@dataclass
class Window:
    """One clip of ``spec.frames`` frames: ``frames`` is ``T x S x S x 3`` uint8.

    ``start_s``/``end_s`` are stream seconds (first frame's timestamp; last frame's timestamp plus one sample
    period). ``ready_at`` is the wall-clock time (``time.time()``) at which the newest frame of the window was
    handed over by the decoder, for frame-to-score latency; None when unknown.
    """

    frames: np.ndarray
    start_s: float
    end_s: float
    index: int
    ready_at: float | None = None


class WindowAssembler:
    """Per-stream window assembly: push chunks of frames, get every complete window, in order.

    Holds at most ``spec.frames + chunk`` frames. Not thread-safe: one assembler per stream, fed in order.
    A window never spans a gap: when the step between two frames exceeds ``1.5 / spec.fps`` (an outage,
    dropped frames, a reconnect), the partial window is discarded and assembly restarts at the new frame
    (counted in :attr:`gaps`).
    """

    def __init__(self, spec: ClipSpec) -> None:
        self.spec = spec
        self._frames: deque[np.ndarray] = deque()
        self._times: deque[float] = deque()
        self._walls: deque[float | None] = deque()
        self._emitted = 0
        self._seen = 0
        self._gaps = 0
        self._last_t: float | None = None
        self._max_step = 1.5 / spec.fps

    @property
    def gaps(self) -> int:
        """Times assembly restarted because frames were further apart than ``1.5 / spec.fps``."""
        return self._gaps

    @property
    def windows_emitted(self) -> int:
        return self._emitted

    @property
    def frames_seen(self) -> int:
        return self._seen

    def push(self, frames: np.ndarray, timestamps: Sequence[float], decoded_at: float | None = None) -> list[Window]:
        """Add ``N`` frames with their ``N`` timestamps; return the windows they complete."""
        arr = np.asarray(frames)
        s = self.spec.size
        if arr.ndim != 4 or arr.shape[1:] != (s, s, 3) or arr.dtype != np.uint8:
            raise ValueError(
                f"expected preprocessed frames N x {s} x {s} x 3 uint8 (the checkpoint's ClipSpec), "
                f"got {arr.shape} {arr.dtype}"
            )
        if len(timestamps) != len(arr):
            raise ValueError(f"expected one timestamp per frame, got {len(timestamps)} timestamps for {len(arr)} frames")
        self._seen += len(arr)
        out: list[Window] = []
        t_len, stride = self.spec.frames, self.spec.stride
        for frame, t in zip(arr, timestamps):
            t = float(t)
            if self._last_t is not None and t - self._last_t > self._max_step:
                self._gaps += 1  # frames across a gap are not one clip: start again after it
                self._frames.clear()
                self._times.clear()
                self._walls.clear()
            self._last_t = t
            self._frames.append(frame)
            self._times.append(t)
            self._walls.append(decoded_at)
            if len(self._frames) >= t_len:
                out.append(self._make(range(t_len)))
                for _ in range(stride):
                    self._frames.popleft()
                    self._times.popleft()
                    self._walls.popleft()
        return out

    def flush(self) -> list[Window]:
        """At the end of a file: one looped window when the whole input was shorter than one window, else none.

        Looping mirrors :func:`bigsister_ray.clip.sample_indices` for short videos, so a short upload still gets
        a score instead of being dropped.
        """
        if self._emitted > 0 or not self._frames:
            return []
        n = len(self._frames)
        window = self._make([i % n for i in range(self.spec.frames)], end_index=n - 1)
        self._frames.clear()
        self._times.clear()
        self._walls.clear()
        return [window]

    def _make(self, idx: Iterable[int], end_index: int | None = None) -> Window:
        idx = list(idx)
        last = end_index if end_index is not None else idx[-1]
        frames = np.stack([self._frames[i] for i in idx])
        start = self._times[0]
        end = self._times[last] + 1.0 / self.spec.fps
        walls = [w for w in list(self._walls)[: last + 1] if w is not None]
        w = Window(frames=frames, start_s=start, end_s=end, index=self._emitted, ready_at=max(walls) if walls else None)
        self._emitted += 1
        return w


def iter_windows(chunks: Iterable[tuple[np.ndarray, Sequence[float]]], spec: ClipSpec) -> Iterator[Window]:
    """Every window of a finite sequence of frame chunks (a file), including the looped one for short inputs."""
    asm = WindowAssembler(spec)
    for frames, times in chunks:
        yield from asm.push(frames, times)
    yield from asm.flush()
