"""Building blocks of a stream reader: sampling by timestamp, the bounded frame queue, reconnection backoff.

:class:`FrameSampler` keeps frames at the ClipSpec's fps by timestamp, :class:`FrameBuffer` sits between a
reader and its consumer (live sources drop their oldest frames, files wait), :class:`Backoff` spaces
reconnection attempts. Used by :class:`bigsister_ray.video.stream.StreamRunner`; no threads of their own.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from typing import Callable, Generic, TypeVar

import numpy as np

__all__ = ["FrameSampler", "FrameBuffer", "Backoff"]

T = TypeVar("T")


class FrameSampler(Generic[T]):
    """Keep frames at ``fps`` by timestamp, the way :func:`bigsister_ray.clip.sample_indices` picks them.

    The sample at time ``t`` is the last frame whose timestamp is ``<= t`` (so a frame is released when the next
    one arrives). A timestamp going backwards or jumping forward by more than ``max_gap_s`` starts a new
    segment; output timestamps stay increasing and ``1 / fps`` apart within a segment. Output time =
    source time + an offset chosen so that each segment starts at or after ``start_at`` (see :meth:`reset`).
    """

    _EPS = 1e-6

    def __init__(self, fps: float, max_gap_s: float = 2.0, start_at: float = 0.0) -> None:
        if fps <= 0:
            raise ValueError(f"expected fps > 0, got {fps}")
        self.step = 1.0 / fps
        self.max_gap_s = max(max_gap_s, 2 * self.step)
        self._next_out = start_at
        self._anchor_t = 0.0
        self._k = 0
        self._offset = 0.0
        self._prev: tuple[T, float] | None = None
        self._last_dt: float | None = None
        self._grid_at: float | None = None

    def _target(self) -> float:
        return self._anchor_t + self._k * self.step

    def _anchor(self, t: float) -> None:
        self._anchor_t, self._k = t, 0
        self._offset = self._next_out - t
        self._last_dt = None

    def _emit(self, item: T) -> tuple[T, float]:
        out_t = round(self._target() + self._offset, 6)  # microseconds: 0.3, not 0.30000000000000004
        self._k += 1
        self._next_out = out_t + self.step
        return item, out_t

    def _drain(self, limit: float) -> list[tuple[T, float]]:
        """Emit the held frame for every target ``< limit`` (and not before the frame itself)."""
        out: list[tuple[T, float]] = []
        if self._prev is None:
            return out
        item, pt = self._prev
        while self._target() < limit - self._EPS:
            if pt <= self._target() + self._EPS:
                out.append(self._emit(item))
            else:  # cannot happen within a segment; skip a target the frame is after
                self._k += 1
        return out

    def push(self, item: T, t: float) -> list[tuple[T, float]]:
        """Feed one decoded frame at source time ``t``; returns the ``(item, out_time)`` now decided."""
        if not math.isfinite(t):
            raise ValueError(f"expected a finite timestamp, got {t}")
        out: list[tuple[T, float]] = []
        if self._prev is None:
            anchor, self._grid_at = (self._grid_at, None) if self._grid_at is not None else (t, None)
            self._anchor(anchor)
        else:
            pt = self._prev[1]
            if t < pt - self._EPS or t - pt > self.max_gap_s:
                out += self.flush()
                self._anchor(t)
            else:
                if t > pt:
                    self._last_dt = t - pt
                out += self._drain(t)
        self._prev = (item, t)
        return out

    def flush(self) -> list[tuple[T, float]]:
        """End of a segment: release the held frame for the targets it still covers."""
        if self._prev is None:
            return []
        dt = self._last_dt if self._last_dt is not None else self.step
        out = self._drain(self._prev[1] + min(dt, self.max_gap_s))
        self._prev = None
        return out

    def reset(self, start_at: float | None = None, grid_at: float | None = None) -> None:
        """New connection: forget the held frame; the next segment starts at or after ``start_at``.

        ``grid_at`` (a source time): the next segment's first sample is at that source time, not at its first
        frame; earlier frames only stand in for it (a file resumed after a seek to the keyframe before it).
        """
        self._prev, self._last_dt = None, None
        self._grid_at = grid_at
        if start_at is not None:
            self._next_out = max(self._next_out, start_at)

    @property
    def next_out(self) -> float:
        return self._next_out


class Backoff:
    """Capped exponential backoff with jitter: ``min(max, initial * 2**n) * U(1 - jitter, 1 + jitter)``.

    :meth:`next_delay` returns the delay for the current failure and advances ``n``; :meth:`reset` returns to
    ``initial`` (called only after a connection has stayed healthy). With ``jitter < 1/3`` consecutive delays
    strictly grow until the cap.
    """

    def __init__(self, initial_s: float, max_s: float, jitter: float = 0.2, rng: random.Random | None = None) -> None:
        if initial_s <= 0 or max_s <= 0:
            raise ValueError(f"expected positive backoff bounds, got initial={initial_s} max={max_s}")
        if not 0 <= jitter < 1:
            raise ValueError(f"expected 0 <= jitter < 1, got {jitter}")
        self.initial_s, self.max_s, self.jitter = initial_s, max(max_s, initial_s), jitter
        self.failures = 0
        self._rng = rng or random.Random()

    def nominal(self) -> float:
        """The un-jittered delay of the next failure."""
        return min(self.max_s, self.initial_s * (2.0 ** min(self.failures, 60)))

    def next_delay(self) -> float:
        base = self.nominal()
        self.failures += 1
        return base * (1.0 + self._rng.uniform(-self.jitter, self.jitter))

    def reset(self) -> None:
        self.failures = 0


class FrameBuffer:
    """Bounded frame queue between the reader and the consumer.

    ``drop_oldest=True`` (live): :meth:`put` never waits; a full buffer loses its oldest frame (counted in
    ``dropped``). ``drop_oldest=False`` (files): :meth:`put` waits for room.
    """

    def __init__(self, capacity: int, drop_oldest: bool) -> None:
        if capacity < 1:
            raise ValueError(f"expected capacity >= 1, got {capacity}")
        self.capacity, self.drop_oldest = capacity, drop_oldest
        self._q: deque[tuple[np.ndarray, float]] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._ended = False
        self.dropped = 0

    def __len__(self) -> int:
        with self._cv:
            return len(self._q)

    def put(self, frame: np.ndarray, ts: float, cancelled: Callable[[], bool] = lambda: False) -> bool:
        """Add one frame; False when the buffer was closed (or ``cancelled()``) before there was room."""
        with self._cv:
            if self.drop_oldest:
                while len(self._q) >= self.capacity:
                    self._q.popleft()
                    self.dropped += 1
            else:
                while len(self._q) >= self.capacity and not self._closed and not cancelled():
                    self._cv.wait(0.1)
            if self._closed or cancelled():
                return False
            self._q.append((frame, ts))
            self._cv.notify_all()
            return True

    def end(self) -> None:
        """No more frames will come (a file ended): the consumer drains what is left, then stops."""
        with self._cv:
            self._ended = True
            self._cv.notify_all()

    def close(self) -> None:
        """Stop now: waiting producers and consumers return; buffered frames are discarded."""
        with self._cv:
            self._closed = True
            self._q.clear()
            self._cv.notify_all()

    @property
    def done(self) -> bool:
        with self._cv:
            return self._closed or (self._ended and not self._q)

    def get_chunk(self, max_frames: int, max_wait_s: float) -> list[tuple[np.ndarray, float]]:
        """Up to ``max_frames`` frames: waits for the first, then up to ``max_wait_s`` more for a full chunk.

        Returns ``[]`` when closed, or ended and empty.
        """
        with self._cv:
            while not self._q and not self._closed and not self._ended:
                self._cv.wait(0.25)
            if self._closed:
                return []
            deadline = time.monotonic() + max_wait_s
            while len(self._q) < max_frames and not self._closed and not self._ended:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            if self._closed:
                return []
            n = min(max_frames, len(self._q))
            out = [self._q.popleft() for _ in range(n)]
            self._cv.notify_all()
            return out
