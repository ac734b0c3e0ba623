"""The Decoder deployment: runs one :class:`~bigsister_ray.video.stream.StreamRunner` per registered stream.

Each runner opens its source, samples it at the checkpoint's ``clip.fps``, preprocesses every frame once
(:func:`bigsister_ray.clip.preprocess_frames`, the training function) and hands chunks of small uint8 frames
to :meth:`Decoder._on_frames`, which pushes them to the Windower (the only time frames move). Reconnects with
backoff, the watchdog and drop-oldest live in the runner; one stream failing never touches another.

Registrations live in the database (the ``Stream`` table): on start the Decoder resumes every stream that is
not deleted, so a restarted service (or a replaced replica) picks up where it was.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

__all__ = ["Decoder", "status_dict"]

log = logging.getLogger("ray.serve")

STATES = ("connecting", "live", "reconnecting", "error", "stopped")

#: Fields of the runner's StreamStatus that the API shows.
STATUS_FIELDS = ("state", "last_frame_at", "fps", "frames_decoded", "frames_dropped", "windows_classified", "reconnects",
                 "watchdog_restarts", "callback_errors", "last_error", "backoff_s", "next_retry_s", "finished")


def status_dict(status: Any) -> dict[str, Any]:
    """A runner's ``StreamStatus`` as the API's status fields (URL already redacted by the runner)."""
    d = status.model_dump() if hasattr(status, "model_dump") else dict(status)
    return {k: d[k] for k in STATUS_FIELDS if k in d}


@serve.deployment(name="Decoder")
class Decoder:
    """Owns the stream runners. One replica (runners are stateful threads); shard by stream to scale out."""

    def __init__(self, settings: Any, checkpoint: str, windower, resume: bool = True, push_timeout_s: float = 120.0) -> None:
        from bigsister_ray.config import Settings
        from bigsister_ray.incidents.store import IncidentStore
        from bigsister_ray.models.checkpoint import read_checkpoint_meta
        from bigsister_ray.serve.metrics import DecoderMetrics

        settings = Settings.model_validate(settings) if isinstance(settings, dict) else settings
        self.settings = settings
        self.spec = read_checkpoint_meta(Path(checkpoint)).clip
        self._windower = windower
        self._push_timeout_s = push_timeout_s
        self._runners: dict[str, Any] = {}
        self._windows: dict[str, int] = {}
        self._lock = threading.Lock()
        self._metrics = DecoderMetrics()
        self._seen: dict[str, tuple[int, int]] = {}  # stream -> (reconnects, dropped) already exported
        self._store = IncidentStore(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
        self._store.create_tables()
        self._stop = threading.Event()
        self._housekeeper = threading.Thread(target=self._housekeep, name="decoder-housekeeping", daemon=True)
        self._housekeeper.start()
        if resume:
            for rec in self._store.list_streams():
                url = self._store.get_stream_url(rec.id)
                if url is None:
                    continue
                try:
                    self._start(rec.id, url, bool((rec.options or {}).get("realtime", True)))
                except Exception as err:  # one bad registration never stops the others from resuming; logged
                    log.error("Decoder: cannot resume stream %s (%s): %s", rec.id, rec.url, err)
            log.info("Decoder: resumed %d registered streams", len(self._runners))

    # ---- runners -------------------------------------------------------------------------------
    def _start(self, stream_id: str, url: str, realtime: bool) -> None:
        from bigsister_ray.video.stream import StreamRunner

        with self._lock:
            old = self._runners.pop(stream_id, None)
        if old is not None:
            old.stop(5.0)
        runner = StreamRunner(stream_id, url, self.spec, self.settings.serve.streams, self._on_frames, realtime=realtime,
                              on_end=self._on_end)
        with self._lock:
            self._runners[stream_id] = runner
            self._windows.setdefault(stream_id, 0)
        runner.start()

    def _on_frames(self, stream_id: str, frames: np.ndarray, timestamps: list[float]) -> None:
        """Runner thread: push one chunk to the Windower and wait (back-pressure; a file never drops)."""
        decoded_at = time.time()
        self._metrics.frames_decoded.inc(len(frames), tags={"stream": stream_id})
        # A failure raises into the runner, which counts it (callback_errors, last_error) and keeps the stream going.
        out = self._windower.push.remote(stream_id, frames, list(timestamps), decoded_at).result(timeout_s=self._push_timeout_s)
        total = int(out.get("windows_classified", 0))
        runner = self._runners.get(stream_id)
        done = self._windows.get(stream_id, 0)
        if runner is not None and total > done:
            runner.note_windows_classified(total - done)
        self._windows[stream_id] = max(done, total)

    def _on_end(self, stream_id: str) -> None:
        """A file source ended: close the incidents still open on it."""
        self._windower.end_of_stream.remote(stream_id).result(timeout_s=self._push_timeout_s)

    async def start_stream(self, stream_id: str, url: str, realtime: bool = True) -> dict[str, Any]:
        """Start (or restart) decoding ``stream_id`` from ``url``; returns its first status."""
        await asyncio.to_thread(self._start, stream_id, url, realtime)
        return self.status(stream_id)

    async def stop_stream(self, stream_id: str, timeout_s: float = 10.0) -> bool:
        """Stop decoding ``stream_id`` and free its thread, connection and buffers. False when unknown."""
        with self._lock:
            runner = self._runners.pop(stream_id, None)
        if runner is None:
            return False
        await asyncio.to_thread(runner.stop, timeout_s)
        self._windows.pop(stream_id, None)
        self._seen.pop(stream_id, None)
        return True

    def status(self, stream_id: str) -> dict[str, Any] | None:
        """The status fields of one stream, or None when it is not running here."""
        runner = self._runners.get(stream_id)
        if runner is None:
            return None
        return status_dict(runner.status())

    def statuses(self) -> dict[str, dict[str, Any]]:
        """Status of every running stream."""
        with self._lock:
            items = list(self._runners.items())
        return {sid: status_dict(r.status()) for sid, r in items}

    def running(self) -> list[str]:
        """Ids of the streams with a runner (threads alive or retrying)."""
        with self._lock:
            return sorted(self._runners)

    def stream_threads(self) -> dict[str, int]:
        """Live decoder threads per stream id in this replica (a deleted stream must have none)."""
        import re

        pattern = re.compile(r"^bigsister-stream-(.+?)-(consumer|supervisor|reader-\d+)$")
        counts: dict[str, int] = {}
        for t in threading.enumerate():
            m = pattern.match(t.name)
            if m and t.is_alive():
                counts[m.group(1)] = counts.get(m.group(1), 0) + 1
        return counts

    # ---- operations ----------------------------------------------------------------------------
    def _housekeep(self) -> None:
        """Every 2 s: export reconnects and drops as counters, streams per state as a gauge."""
        while not self._stop.wait(2.0):
            states = dict.fromkeys(STATES, 0)
            for sid, st in self.statuses().items():
                states[st["state"]] = states.get(st["state"], 0) + 1
                rec, drop = self._seen.get(sid, (0, 0))
                if st["reconnects"] > rec:
                    self._metrics.reconnects.inc(st["reconnects"] - rec, tags={"stream": sid})
                if st["frames_dropped"] > drop:
                    self._metrics.frames_dropped.inc(st["frames_dropped"] - drop, tags={"stream": sid})
                self._seen[sid] = (max(rec, st["reconnects"]), max(drop, st["frames_dropped"]))
            for state, n in states.items():
                self._metrics.streams.set(n, tags={"state": state})

    def check_health(self) -> None:
        """Unhealthy when the housekeeping thread died (metrics and status would silently stop)."""
        if not self._housekeeper.is_alive():
            raise RuntimeError("Decoder housekeeping thread is not running")

    def shutdown(self) -> None:
        """Stop every runner (called on replica shutdown)."""
        self._stop.set()
        with self._lock:
            runners = list(self._runners.values())
            self._runners.clear()
        for r in runners:  # signal every runner first, then wait: shutdown takes one timeout, not one per stream
            r.stop(0.0)
        deadline = time.monotonic() + 10.0
        for r in runners:
            r.stop(max(0.0, deadline - time.monotonic()))

    def __del__(self) -> None:
        self.shutdown()
