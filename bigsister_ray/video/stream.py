"""Keep one camera stream (or a replayed local file) flowing into a callback, whatever the camera does.

:class:`StreamRunner` owns three kinds of threads, named ``bigsister-stream-<id>-...``:

- the **supervisor** runs the state machine below and starts one **reader** per connection attempt;
- the **reader** opens the source (:func:`~bigsister_ray.video.sources.open_source`), decodes
  (:mod:`bigsister_ray.video.decode`: decoder threads, optional NVDEC), keeps frames at ``spec.fps`` by
  timestamp (:class:`FrameSampler`), has FFmpeg scale each kept frame from the decoder's YUV pixels straight to
  the clip size with :func:`bigsister_ray.clip.scale_frame` (the function the training data path uses; frames
  the sampler drops are never converted) and puts it into a bounded :class:`FrameBuffer`
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
fast as the consumer takes them with ``realtime=False``. A live HLS playlist is followed as players do: FFmpeg
starts three segments behind its end and reloads it as it grows, and its frames are released at real-time
pace (segments arrive whole, so unpaced frames would come in bursts one segment apart).

Timestamps (``timestamps_s``) are seconds on the sampling grid, ``1 / spec.fps`` apart: for a file, media time
from the start of the file; for a live source, ``start_at_s`` + time since :meth:`StreamRunner.start`, kept
increasing across reconnects. Live MJPEG (whose timestamps are invented by FFmpeg) is timed by frame arrival.

**Moving a stream.** :meth:`StreamRunner.status` gives ``last_ts_s``, the timestamp of the last frame handed to
``on_frames``. A runner started elsewhere with ``start_at_s = last_ts_s + 1 / spec.fps`` continues it: a live
source's timestamps go on from there, and a file seeks to that media time and resumes on the same sampling
grid (the same frames and timestamps as an uninterrupted replay).
"""

from __future__ import annotations

import errno
import logging
import math
import random
import threading
import time
from collections import deque
from datetime import datetime
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from bigsister_ray.clip import ClipSpec
from bigsister_ray.config import StreamsConfig
from bigsister_ray.errors import StreamError
from bigsister_ray.redact import safe_log
from bigsister_ray.video.buffering import Backoff, FrameBuffer, FrameSampler
from bigsister_ray.video.reader import Attempt, Stalled, StreamReader, _now
from bigsister_ray.video.sources import Source, describe_av_error, redact_text, redact_url, resolve_source

__all__ = [
    "live_stream_threads",
    "status_dict",
    "STATUS_FIELDS",
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
    last_ts_s: float | None = None
    decoder: Literal["cpu", "cuda"] = "cpu"


# ============================================================================================ the runner
class StreamRunner(StreamReader):
    """Decode one source in background threads and hand its frames to ``on_frames`` (see the module doc).

    ``url``: ``rtsp://``, ``rtsps://``, ``http(s)://`` or a file under ``streams_cfg.media_root``. The URL is
    checked here (scheme, media root): a bad one raises :class:`StreamError` at once; a missing file or an
    unreachable camera shows up in :meth:`status` instead. ``on_end(stream_id)`` (optional) is called from the
    consumer thread after the last frame of a file. ``chunk_frames`` defaults to ``spec.stride``.
    ``start_at_s``: where a moved stream continues (see "Moving a stream" in the module doc): the first
    timestamp of a live source, the media time a file resumes from.
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
        start_at_s: float = 0.0,
    ) -> None:
        if not (math.isfinite(start_at_s) and start_at_s >= 0):
            raise ValueError(f"start_at_s: expected a finite number of seconds >= 0, got {start_at_s!r}")
        self.stream_id = str(stream_id)
        self.start_at_s = float(start_at_s)
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
        self._sampler: FrameSampler[object] = FrameSampler(spec.fps, max_gap_s=max(2.0, 4 * spec.stride_s),
                                                           start_at=self.start_at_s)
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
        self._last_ts: float | None = None
        self._decoder: Literal["cpu", "cuda"] = "cpu"
        self._hwaccel_warned = False
        self._backoff_s: float | None = None
        self._retry_at: float | None = None
        self._finished = False
        self._supervisor: threading.Thread | None = None
        self._consumer: threading.Thread | None = None
        self._attempt: Attempt | None = None
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
        log.info("stream %s: started %s (%s)", safe_log(self.stream_id), safe_log(self.url), self.kind)
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
                        safe_log(self.stream_id), timeout)
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
                last_ts_s=self._last_ts,
                decoder=self._decoder,
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
                attempt = Attempt(number)
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
                        log.info("stream %s: file finished", safe_log(self.stream_id))
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

    def _watch(self, attempt: Attempt) -> None:
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
                attempt.error = Stalled(f"no frame for {limit:.1f}s and the read did not return; reader abandoned")
                self._abandoned.append(attempt.thread)
                self._abandoned = [t for t in self._abandoned if t.is_alive()]
                return

    def _after_failure(self, attempt: Attempt) -> None:
        err = attempt.error
        if isinstance(err, StreamError):
            text = str(err)
        elif isinstance(err, Stalled):
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
        log.info("stream %s: reconnecting in %.2fs", safe_log(self.stream_id), delay)
        return not self._stop.wait(delay)

    # ------------------------------------------------------------------------------------------ reader
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
                    self._last_ts = stamps[-1]
                    self._counts["callback_errors"] += 1
                    self._set_error(f"on_frames failed: {type(err).__name__}: {err}")
                log.warning("stream %s: on_frames failed: %s", safe_log(self.stream_id), safe_log(self._last_error))
                continue
            with self._lock:
                self._counts["frames_delivered"] += len(chunk)
                self._last_ts = stamps[-1]
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
                log.warning("stream %s: on_end failed: %s", safe_log(self.stream_id), safe_log(redact_text(str(err), [self._source.url])))


def live_stream_threads() -> dict[str, int]:
    """Live runner threads (``bigsister-stream-<id>-...``) per stream id in this process: a stopped stream has none."""
    import re

    pattern = re.compile(r"^bigsister-stream-(.+?)-(consumer|supervisor|reader-\d+)$")
    counts: dict[str, int] = {}
    for t in threading.enumerate():
        m = pattern.match(t.name)
        if m and t.is_alive():
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


#: Fields of :class:`StreamStatus` that the HTTP API shows.
STATUS_FIELDS = ("state", "last_frame_at", "fps", "frames_decoded", "frames_dropped", "windows_classified", "reconnects",
                 "watchdog_restarts", "callback_errors", "last_error", "backoff_s", "next_retry_s", "finished")


def status_dict(status: "StreamStatus") -> dict:
    """A runner's status as the API's status fields, JSON-ready (the URL in it is already redacted)."""
    d = status.model_dump(mode="json")
    return {k: d[k] for k in STATUS_FIELDS if k in d}
