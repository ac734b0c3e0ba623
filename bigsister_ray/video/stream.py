"""Keep one camera stream (or a replayed local file) flowing into a callback, whatever the camera does.

:class:`StreamRunner` owns three kinds of threads, named ``bigsister-stream-<id>-...``:

- the **supervisor** runs the state machine below and starts one **reader** per connection attempt;
- the **reader** opens the source (:func:`~bigsister_ray.video.sources.open_source`), decodes, keeps frames at
  ``spec.fps`` by timestamp (:class:`FrameSampler`), resizes each kept frame once with
  :func:`bigsister_ray.clip.preprocess_frames` and puts it into a bounded :class:`FrameBuffer`
  (``max_buffer_windows * spec.frames`` frames);
- the **consumer** takes chunks from the buffer and calls ``on_frames(stream_id, frames N x S x S x 3 uint8,
  timestamps_s)``.

States::

    connecting --first frame--> live --source fails / ends / watchdog--> reconnecting --first frame--> live
        |                                                                    ^   |
        +--- fails -------------------------------------------------------- +   +-- (backoff, then reopen)
    any --stop()--> stopped          file source at its end --> stopped (finished)
    any --permanent error (bad URL, outside the media root, missing/corrupt file)--> error

Reconnection waits ``backoff_initial_s * 2**n`` capped at ``backoff_max_s``, times a random factor in
``1 +- backoff_jitter`` (:class:`Backoff`); ``n`` returns to 0 only once a connection has stayed live for
``healthy_after_s``. The **watchdog** restarts a connection that delivers no frame for ``watchdog_s``: reads are
bounded by PyAV's interrupt-callback timeout (``watchdog_s``), the reader checks the deadline after every
packet, and a reader stuck past twice that is abandoned by the supervisor (it closes its own container when
its read returns; containers are only ever touched by the thread that opened them).

Live sources never wait for a slow consumer: when the buffer is full the OLDEST frames are dropped and counted
(``frames_dropped``). Files never drop: the reader waits for room. Files are replayed at real-time pace, or as
fast as the consumer takes them with ``realtime=False``.

Timestamps (``timestamps_s``) are seconds on the sampling grid, ``1 / spec.fps`` apart: for a file, media time
from the start of the file; for a live source, time since :meth:`StreamRunner.start`, kept increasing across
reconnects. Live MJPEG (whose timestamps are invented by FFmpeg) is timed by frame arrival.
"""

from __future__ import annotations

import errno
import logging
import math
import random
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Callable, Generic, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from bigsister_ray.clip import ClipSpec, preprocess_frames
from bigsister_ray.config import StreamsConfig
from bigsister_ray.errors import StreamError
from bigsister_ray.video.sources import (
    ARRIVAL_TIME_FORMATS,
    Source,
    describe_av_error,
    open_source,
    redact_text,
    redact_url,
    resolve_source,
)

__all__ = [
    "StreamState",
    "StreamStatus",
    "StreamRunner",
    "FrameSampler",
    "FrameBuffer",
    "Backoff",
    "OnFrames",
    "redact_url",
]

log = logging.getLogger(__name__)

StreamState = Literal["connecting", "live", "reconnecting", "error", "stopped"]
#: ``on_frames(stream_id, frames N x S x S x 3 uint8, timestamps_s)``; called from the consumer thread.
OnFrames = Callable[[str, np.ndarray, list[float]], None]

T = TypeVar("T")

_FPS_WINDOW_S = 5.0


class StreamStatus(BaseModel):
    """A snapshot of one runner (JSON-ready; ``url`` and ``last_error`` are redacted)."""

    model_config = ConfigDict(extra="forbid")

    stream_id: str
    url: str
    kind: Literal["live", "file"]
    state: StreamState
    started_at: datetime | None = None
    live_since: datetime | None = None
    last_frame_at: datetime | None = None
    fps: float = 0.0
    frames_decoded: int = 0
    frames_sampled: int = 0
    frames_delivered: int = 0
    frames_dropped: int = 0
    windows_classified: int = 0
    reconnects: int = 0
    watchdog_restarts: int = 0
    callback_errors: int = 0
    last_error: str | None = None
    backoff_s: float | None = None
    next_retry_s: float | None = None
    finished: bool = False


# ============================================================================================ building blocks
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
            self._anchor(t)
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

    def reset(self, start_at: float | None = None) -> None:
        """New connection: forget the held frame; the next segment starts at or after ``start_at``."""
        self._prev, self._last_dt = None, None
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


class _Attempt:
    """One connection attempt's reader thread and what the supervisor watches of it."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.cancel = threading.Event()
        self.thread: threading.Thread | None = None
        self.started = time.monotonic()
        self.progress = time.monotonic()  # last decoded frame (or end of a wait the reader chose)
        self.waiting = False  # blocked on the consumer (file back-pressure) or real-time pacing
        self.live_at: float | None = None  # monotonic time of the first kept frame
        self.error: BaseException | None = None
        self.permanent = False
        self.eof = False
        self.watchdog = False
        self.pace_origin: tuple[float, float] | None = None  # (monotonic, timestamp) of real-time replay
        self.last_converted: tuple[object, np.ndarray] | None = None  # (decoded frame, its preprocessed copy)


class _Watchdog(Exception):
    """No frame for watchdog_s."""


# ============================================================================================ the runner
class StreamRunner:
    """Decode one source in background threads and hand its frames to ``on_frames`` (see the module doc).

    ``url``: ``rtsp://``, ``rtsps://``, ``http(s)://`` or a file under ``streams_cfg.media_root``. The URL is
    checked here (scheme, media root): a bad one raises :class:`StreamError` at once; a missing file or an
    unreachable camera shows up in :meth:`status` instead. ``on_end(stream_id)`` (optional) is called from the
    consumer thread after the last frame of a file. ``chunk_frames`` defaults to ``spec.stride``.
    """

    def __init__(
        self,
        stream_id: str,
        url: str,
        spec: ClipSpec,
        streams_cfg: StreamsConfig,
        on_frames: OnFrames,
        realtime: bool = True,
        *,
        on_end: Callable[[str], None] | None = None,
        chunk_frames: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.stream_id = str(stream_id)
        self.spec = spec
        self.cfg = streams_cfg
        self.realtime = realtime
        self._on_frames = on_frames
        self._on_end = on_end
        self._source: Source = resolve_source(url, streams_cfg.media_root, must_exist=False)
        self.url = self._source.redacted
        self.chunk_frames = max(1, chunk_frames or spec.stride)
        self._backoff = Backoff(streams_cfg.backoff_initial_s, streams_cfg.backoff_max_s,
                                streams_cfg.backoff_jitter, rng)
        self._buffer = FrameBuffer(streams_cfg.max_buffer_windows * spec.frames, drop_oldest=self._source.is_live)
        self._sampler: FrameSampler[np.ndarray] = FrameSampler(spec.fps, max_gap_s=max(2.0, 4 * spec.stride_s))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._state: StreamState = "stopped"
        self._started_mono: float | None = None
        self._started_at: datetime | None = None
        self._live_since: datetime | None = None
        self._last_frame_at: datetime | None = None
        self._sample_times: deque[float] = deque()
        self._live_mono: float | None = None
        self._counts = dict(frames_decoded=0, frames_sampled=0, frames_delivered=0, reconnects=0,
                            watchdog_restarts=0, callback_errors=0, windows_classified=0)
        self._last_error: str | None = None
        self._backoff_s: float | None = None
        self._retry_at: float | None = None
        self._finished = False
        self._supervisor: threading.Thread | None = None
        self._consumer: threading.Thread | None = None
        self._attempt: _Attempt | None = None
        self._abandoned: list[threading.Thread] = []

    # ------------------------------------------------------------------------------------------ public API
    @property
    def kind(self) -> Literal["live", "file"]:
        return self._source.kind

    @property
    def state(self) -> StreamState:
        return self._state

    def start(self) -> "StreamRunner":
        """Start the threads (once); returns self."""
        with self._lock:
            if self._supervisor is not None:
                raise RuntimeError(f"stream {self.stream_id} was already started")
            self._state = "connecting"
            self._started_mono = time.monotonic()
            self._started_at = _now()
        self._consumer = threading.Thread(target=self._consume, name=f"bigsister-stream-{self.stream_id}-consumer",
                                          daemon=True)
        self._supervisor = threading.Thread(target=self._supervise, name=f"bigsister-stream-{self.stream_id}-supervisor",
                                            daemon=True)
        self._consumer.start()
        self._supervisor.start()
        log.info("stream %s: started %s (%s)", self.stream_id, self.url, self.kind)
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop decoding, discard buffered frames, join every thread; True if all ended within ``timeout``.

        A reader blocked inside FFmpeg returns by itself within the read timeout (``watchdog_s``) and then closes
        its container; if ``timeout`` is shorter than that, it may outlive this call (False is returned).
        """
        self._stop.set()
        self._buffer.close()
        with self._lock:
            attempt = self._attempt
            if self._state != "error":
                self._state = "stopped"
            self._retry_at = None
        if attempt is not None:
            attempt.cancel.set()
        deadline = time.monotonic() + max(0.0, timeout)
        ok = True
        threads = [t for t in (self._supervisor, self._consumer) if t is not None]
        threads += [t for t in (attempt.thread if attempt else None,) if t is not None]
        threads += list(self._abandoned)
        for t in threads:
            if t is threading.current_thread():
                continue
            t.join(max(0.0, deadline - time.monotonic()))
            ok = ok and not t.is_alive()
        # Readers started by an attempt the supervisor opened while we were joining.
        with self._lock:
            late = self._attempt
        if late is not None and late is not attempt and late.thread is not None:
            late.cancel.set()
            late.thread.join(max(0.0, deadline - time.monotonic()))
            ok = ok and not late.thread.is_alive()
        if not ok:
            log.warning("stream %s: some threads did not stop within %.1fs; they end at their next read timeout",
                        self.stream_id, timeout)
        return ok

    def note_windows_classified(self, n: int = 1) -> None:
        """The owner counts classified windows here; shown as ``windows_classified``."""
        with self._lock:
            self._counts["windows_classified"] += int(n)

    def status(self) -> StreamStatus:
        now = time.monotonic()
        with self._lock:
            while self._sample_times and self._sample_times[0] < now - _FPS_WINDOW_S:
                self._sample_times.popleft()
            span = _FPS_WINDOW_S
            if self._live_mono is not None:
                span = min(span, max(now - self._live_mono, 1.0))
            fps = len(self._sample_times) / span if self._sample_times else 0.0
            next_retry = max(0.0, self._retry_at - now) if self._retry_at is not None else None
            return StreamStatus(
                stream_id=self.stream_id,
                url=self.url,
                kind=self.kind,
                state=self._state,
                started_at=self._started_at,
                live_since=self._live_since,
                last_frame_at=self._last_frame_at,
                fps=round(fps, 3),
                frames_dropped=self._buffer.dropped,
                last_error=self._last_error,
                backoff_s=self._backoff_s,
                next_retry_s=next_retry,
                finished=self._finished,
                **self._counts,
            )

    def threads(self) -> list[threading.Thread]:
        """The runner's threads still alive (for tests and diagnostics)."""
        prefix = f"bigsister-stream-{self.stream_id}-"
        return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]

    def __repr__(self) -> str:
        return f"StreamRunner(id={self.stream_id!r}, url={self.url!r}, state={self._state!r})"

    # ------------------------------------------------------------------------------------------ supervisor
    def _set_error(self, text: str) -> None:
        self._last_error = redact_text(text, [self._source.url, self._source.target])

    def _supervise(self) -> None:
        number = 0
        try:
            while not self._stop.is_set():
                attempt = _Attempt(number)
                attempt.thread = threading.Thread(target=self._read, args=(attempt,),
                                                  name=f"bigsister-stream-{self.stream_id}-reader-{number}", daemon=True)
                with self._lock:
                    if self._stop.is_set():
                        return
                    self._attempt = attempt
                    self._retry_at = None
                    attempt.thread.start()  # under the lock, so stop() never joins an unstarted thread
                self._watch(attempt)
                if self._stop.is_set():
                    return
                if attempt.eof and not attempt.error:
                    if self._source.is_live:
                        attempt.error = StreamError(f"{self.url}: the stream ended")
                    else:
                        self._buffer.end()
                        log.info("stream %s: file finished", self.stream_id)
                        return
                self._after_failure(attempt)
                if attempt.permanent:
                    return
                if not self._wait_backoff():
                    return
                number += 1
                with self._lock:
                    self._counts["reconnects"] += 1
        finally:
            self._buffer.end()

    def _watch(self, attempt: _Attempt) -> None:
        """Wait for the reader; abandon it if it is stuck past twice the watchdog (its read should time out)."""
        assert attempt.thread is not None
        limit = 2 * self.cfg.watchdog_s + self.cfg.open_timeout_s
        while attempt.thread.is_alive():
            attempt.thread.join(0.1)
            if self._stop.is_set():
                attempt.cancel.set()
                return
            if attempt.waiting:
                continue
            if time.monotonic() - attempt.progress > limit:
                attempt.cancel.set()
                attempt.watchdog = True
                attempt.error = _Watchdog(f"no frame for {limit:.1f}s and the read did not return; reader abandoned")
                self._abandoned.append(attempt.thread)
                self._abandoned = [t for t in self._abandoned if t.is_alive()]
                return

    def _after_failure(self, attempt: _Attempt) -> None:
        err = attempt.error
        if isinstance(err, StreamError):
            text = str(err)
        elif isinstance(err, _Watchdog):
            text = f"watchdog: {err}"
        elif err is not None:
            text = describe_av_error(err, self._source)
            if self._source.is_live and getattr(err, "errno", None) in (errno.EIO, errno.EPIPE, errno.ECONNRESET):
                text = f"the stream ended: the source closed the connection ({text})"
        else:
            text = "the source ended"
        healthy = attempt.live_at is not None and time.monotonic() - attempt.live_at >= self.cfg.healthy_after_s
        with self._lock:
            if self._stop.is_set():
                return  # stop() raced the failure: the stream is stopped, not reconnecting
            self._set_error(text)
            if attempt.watchdog:
                self._counts["watchdog_restarts"] += 1
            if attempt.permanent:
                self._state = "error"
                self._retry_at = None
            else:
                if healthy:
                    self._backoff.reset()
                self._state = "reconnecting"
            self._live_mono = None
        level = logging.ERROR if attempt.permanent else logging.WARNING
        log.log(level, "stream %s: %s (%s)", self.stream_id, self._last_error,
                "giving up" if attempt.permanent else "will retry")

    def _wait_backoff(self) -> bool:
        with self._lock:
            nominal = self._backoff.nominal()
            delay = self._backoff.next_delay()
            self._backoff_s = round(nominal, 3)
            self._retry_at = time.monotonic() + delay
        log.info("stream %s: reconnecting in %.2fs", self.stream_id, delay)
        return not self._stop.wait(delay)

    # ------------------------------------------------------------------------------------------ reader
    def _read(self, attempt: _Attempt) -> None:
        container = None
        try:
            try:
                src = self._source
                if not src.is_live:
                    # Check the file again now (it may have been replaced by a link since registration).
                    src = resolve_source(src.url, self.cfg.media_root, must_exist=True)
                container = open_source(src, open_timeout_s=self.cfg.open_timeout_s,
                                        read_timeout_s=self.cfg.watchdog_s, probe_s=self.cfg.probe_s)
            except StreamError as err:
                attempt.error = err
                attempt.permanent = not self._source.is_live
                return
            if attempt.cancel.is_set():
                return
            self._decode(container, attempt)
        except _Watchdog as err:
            attempt.error, attempt.watchdog = err, True
        except StreamError as err:
            attempt.error = err
        except Exception as err:  # noqa: BLE001 - any decode failure is this attempt's error, reported in status
            import av

            if isinstance(err, av.error.ExitError) and container is not None:
                # PyAV's read timeout (= watchdog_s) fired: connected, but not even a packet for watchdog_s
                attempt.error = _Watchdog(f"no data for {self.cfg.watchdog_s:.1f}s while connected")
                attempt.watchdog = True
                return
            attempt.error = err
            if not self._source.is_live and isinstance(err, (av.error.FFmpegError, ValueError)):
                attempt.permanent = True
            if not isinstance(err, (av.error.FFmpegError, OSError)):
                log.exception("stream %s: unexpected reader error", self.stream_id)
        finally:
            if container is not None:
                try:
                    container.close()
                except Exception as err:  # noqa: BLE001 - closing a broken container must not mask its error
                    log.debug("stream %s: closing the container failed: %s", self.stream_id,
                              redact_text(str(err), [self._source.url]))

    def _decode(self, container, attempt: _Attempt) -> None:
        import av

        live = self._source.is_live
        vstream = container.streams.video[0]
        vstream.codec_context.thread_count = self.cfg.decode_threads
        vstream.thread_type = "AUTO" if not live else "SLICE"
        arrival = live and container.format.name in ARRIVAL_TIME_FORMATS
        t_conn = time.monotonic()
        assert self._started_mono is not None
        start_at = (t_conn - self._started_mono) if live else 0.0
        self._sampler.reset(start_at=start_at if live else None)
        base_time = float(vstream.start_time * vstream.time_base) if vstream.start_time is not None else 0.0
        rate = float(vstream.average_rate or vstream.guessed_rate or self.spec.fps)
        n_frames = 0
        watchdog_s = self.cfg.watchdog_s
        attempt.progress = time.monotonic()

        for packet in container.demux(vstream):
            if attempt.cancel.is_set():
                return
            if time.monotonic() - attempt.progress > watchdog_s:
                raise _Watchdog(f"no frame for {watchdog_s:.1f}s while connected")
            try:
                frames = packet.decode()  # the last, empty packet flushes the decoder
            except av.error.InvalidDataError as err:
                if live:  # a damaged packet on a live link: skip it, the next keyframe recovers
                    log.debug("stream %s: skipped a damaged packet: %s", self.stream_id, err)
                    continue
                raise
            for frame in frames:
                now = time.monotonic()
                attempt.progress = now
                n_frames += 1
                with self._lock:
                    self._counts["frames_decoded"] += 1
                if arrival:
                    t = now - t_conn
                elif frame.pts is not None and frame.time is not None:
                    t = float(frame.time) - base_time
                else:
                    t = n_frames / rate if rate > 0 else now - t_conn
                for item, ts in self._sampler.push(frame, t):
                    if not self._keep(item, ts, attempt):
                        return
        if not live:
            for item, ts in self._sampler.flush():
                if not self._keep(item, ts, attempt):
                    return
        attempt.eof = True

    def _keep(self, frame, ts: float, attempt: _Attempt) -> bool:
        """Convert, resize once, pace (files in real time), enqueue. False when the attempt must end."""
        if attempt.last_converted is not None and attempt.last_converted[0] is frame:
            small = attempt.last_converted[1]  # spec.fps above the source's: the same frame again, converted once
        else:
            small = preprocess_frames(frame.to_ndarray(format="rgb24"), self.spec)[0]
            attempt.last_converted = (frame, small)
        if not self._source.is_live and self.realtime:
            if attempt.pace_origin is None:
                attempt.pace_origin = (time.monotonic(), ts)
            wall0, ts0 = attempt.pace_origin
            delay = wall0 + (ts - ts0) - time.monotonic()
            if delay > 0:
                attempt.waiting = True
                try:
                    if attempt.cancel.wait(delay):
                        return False
                finally:
                    attempt.waiting = False
                    attempt.progress = time.monotonic()
        now = time.monotonic()
        with self._lock:
            if self._stop.is_set():
                return False
            first = attempt.live_at is None
            if first:
                attempt.live_at = now
                self._live_mono = now
                self._live_since = _now()
                self._state = "live"
            self._counts["frames_sampled"] += 1
            self._last_frame_at = _now()
            self._sample_times.append(now)
            if len(self._sample_times) > 10_000:
                self._sample_times.popleft()
            if (attempt.live_at is not None and self._backoff.failures
                    and now - attempt.live_at >= self.cfg.healthy_after_s):
                self._backoff.reset()
                self._backoff_s = None
        if first:
            log.info("stream %s: live", self.stream_id)
        if not self._source.is_live:
            attempt.waiting = True
        try:
            ok = self._buffer.put(small, ts, cancelled=attempt.cancel.is_set)
        finally:
            attempt.waiting = False
            attempt.progress = time.monotonic()
        return ok and not attempt.cancel.is_set()

    # ------------------------------------------------------------------------------------------ consumer
    def _consume(self) -> None:
        max_wait = max(0.05, self.spec.stride_s)
        while True:
            chunk = self._buffer.get_chunk(self.chunk_frames, max_wait)
            if not chunk:
                if self._buffer.done:
                    break
                continue
            frames = np.stack([f for f, _ in chunk])
            stamps = [float(ts) for _, ts in chunk]
            try:
                self._on_frames(self.stream_id, frames, stamps)
            except Exception as err:  # noqa: BLE001 - a failing consumer must not kill the stream; counted and shown
                with self._lock:
                    self._counts["callback_errors"] += 1
                    self._set_error(f"on_frames failed: {type(err).__name__}: {err}")
                log.warning("stream %s: on_frames failed: %s", self.stream_id, self._last_error)
                continue
            with self._lock:
                self._counts["frames_delivered"] += len(chunk)
        if self._stop.is_set():
            return
        with self._lock:
            finished = not self._source.is_live and self._state not in ("error",)
            if finished:
                self._finished = True
                self._state = "stopped"
        if finished and self._on_end is not None:
            try:
                self._on_end(self.stream_id)
            except Exception as err:  # noqa: BLE001 - reported, the runner is done anyway
                log.warning("stream %s: on_end failed: %s", self.stream_id, redact_text(str(err), [self._source.url]))


def _now() -> datetime:
    return datetime.now(timezone.utc)
