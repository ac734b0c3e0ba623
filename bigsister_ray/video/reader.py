"""The reader half of :class:`~bigsister_ray.video.stream.StreamRunner`: one connection attempt's thread.

A reader opens the source, decodes it (:mod:`bigsister_ray.video.decode`), keeps frames at ``spec.fps``
(:class:`~bigsister_ray.video.buffering.FrameSampler`), scales each kept frame to the clip size at decode
time, paces file replays and live HLS at real time, and puts the frames into the runner's buffer. What it
decided (first frame, error, end, watchdog) goes into its :class:`Attempt`, which the supervisor watches.

Every attempt connects under the stream URL policy (:class:`~bigsister_ray.security.urls.UrlPolicy`): the
runner's ``url_policy`` when set, else the one installed in the process. The host is resolved and checked again
on each (re)connection, so a stream resumed from the database is held to the same rules as a new one, and a
refusal (at connect time, or of a later HLS segment or RTSP redirect) is the attempt's error, in policy terms.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING


from bigsister_ray.errors import StreamError
from bigsister_ray.security.urls import UrlPolicy, url_policy
from bigsister_ray.video.decode import KeptFrameScaler, configure_decoder, hwaccel_for, seek_media_time
from bigsister_ray.video.sources import ARRIVAL_TIME_FORMATS, open_source, redact_text, resolve_source

if TYPE_CHECKING:  # pragma: no cover - typing only
    from bigsister_ray.video.stream import StreamRunner

__all__ = ["Attempt", "Stalled", "StreamReader"]

log = logging.getLogger("bigsister_ray.video.stream")


class Attempt:
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
        self.paced = False  # frames released at real-time pace (file replay, live HLS)
        self.pace_origin: tuple[float, float] | None = None  # (monotonic, timestamp) of real-time pacing
        self.scaler: KeptFrameScaler | None = None


class Stalled(Exception):
    """No frame for watchdog_s."""


class StreamReader:
    """Reader methods of :class:`~bigsister_ray.video.stream.StreamRunner` (the runner's state, lock and
    counters are its own; these run in the reader thread and touch the container only there)."""

    #: The policy this runner's connections are held to (None: the process's, see :func:`url_policy`).
    url_policy: UrlPolicy | None = None

    def _read(self: "StreamRunner", attempt: Attempt) -> None:
        container = None
        refusals: list[StreamError] = []
        try:
            try:
                src = self._source
                if not src.is_live:
                    # Check the file again now (it may have been replaced by a link since registration).
                    src = resolve_source(src.url, self.cfg.media_root, must_exist=True)
                hwaccel = self._hwaccel()
                container = open_source(src, open_timeout_s=self.cfg.open_timeout_s,
                                        read_timeout_s=self.cfg.watchdog_s, probe_s=self.cfg.probe_s, hwaccel=hwaccel,
                                        policy=self.url_policy or url_policy(), refusals=refusals)
            except StreamError as err:
                attempt.error = err
                attempt.permanent = not self._source.is_live
                return
            if attempt.cancel.is_set():
                return
            self._decode(container, attempt)
        except Stalled as err:
            attempt.error, attempt.watchdog = err, True
        except StreamError as err:
            attempt.error = err
        except Exception as err:  # noqa: BLE001 - any decode failure is this attempt's error, reported in status
            import av

            if isinstance(err, av.error.ExitError) and container is not None:
                # PyAV's read timeout (= watchdog_s) fired: connected, but not even a packet for watchdog_s
                attempt.error = Stalled(f"no data for {self.cfg.watchdog_s:.1f}s while connected")
                attempt.watchdog = True
                return
            attempt.error = err
            if not self._source.is_live and isinstance(err, (av.error.FFmpegError, ValueError)):
                attempt.permanent = True
            if not isinstance(err, (av.error.FFmpegError, OSError)):
                log.exception("stream %s: unexpected reader error", self.stream_id)
        finally:
            if refusals and not isinstance(attempt.error, StreamError):
                # A hop the policy refused (an HLS segment elsewhere, an RTSP redirect) is why this attempt
                # failed, whatever FFmpeg made of it.
                attempt.error = StreamError(f"{self._source.redacted}: {refusals[0]}")
                attempt.watchdog = False
            if container is not None:
                try:
                    container.close()
                except Exception as err:  # noqa: BLE001 - closing a broken container must not mask its error
                    log.debug("stream %s: closing the container failed: %s", self.stream_id,
                              redact_text(str(err), [self._source.url]))

    def _hwaccel(self: "StreamRunner"):
        """PyAV's HWAccel for ``serve.streams.hwaccel`` (None: CPU); an unusable device is reported once."""
        hwaccel, problem = hwaccel_for(self.cfg.hwaccel)
        with self._lock:
            self._decoder = "cuda" if hwaccel is not None else "cpu"
            first = problem is not None and not self._hwaccel_warned
            if first:
                self._hwaccel_warned = True
                self._set_error(str(problem))
        if first:
            log.warning("stream %s: %s", self.stream_id, problem)
        return hwaccel

    def _decode(self: "StreamRunner", container, attempt: Attempt) -> None:
        import av

        live = self._source.is_live
        vstream = container.streams.video[0]
        configure_decoder(vstream, self.cfg.decode_threads, live)
        attempt.scaler = KeptFrameScaler(self.spec)
        attempt.paced = (not live and self.realtime) or container.format.name == "hls"
        arrival = live and container.format.name in ARRIVAL_TIME_FORMATS
        t_conn = time.monotonic()
        assert self._started_mono is not None
        if live:
            self._sampler.reset(start_at=self.start_at_s + (t_conn - self._started_mono))
        else:
            resume = self._sampler.next_out  # start_at_s, or where a restarted replay left off
            if resume > 0:
                seek_media_time(container, vstream, resume)
                self._sampler.reset(start_at=resume, grid_at=resume)
            else:
                self._sampler.reset()
        base_time = float(vstream.start_time * vstream.time_base) if vstream.start_time is not None else 0.0
        rate = float(vstream.average_rate or vstream.guessed_rate or self.spec.fps)
        n_frames = 0
        watchdog_s = self.cfg.watchdog_s
        attempt.progress = time.monotonic()

        for packet in container.demux(vstream):
            if attempt.cancel.is_set():
                return
            if time.monotonic() - attempt.progress > watchdog_s:
                raise Stalled(f"no frame for {watchdog_s:.1f}s while connected")
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

    def _keep(self: "StreamRunner", frame, ts: float, attempt: Attempt) -> bool:
        """Scale to the clip size, pace (file replay, live HLS), enqueue. False when the attempt must end."""
        assert attempt.scaler is not None
        small = attempt.scaler(frame)
        if attempt.paced:
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


def _now() -> datetime:
    return datetime.now(timezone.utc)
