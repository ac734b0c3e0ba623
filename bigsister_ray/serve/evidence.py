"""A shard's evidence clips: the frames around each incident's peak, written as MP4 beside the incident.

:class:`EvidenceRecorder` keeps a :class:`~bigsister_ray.video.evidence.FrameRing` per stream (the scaled frames
the shard decodes anyway; memory per camera in :mod:`bigsister_ray.video.evidence`). When an incident opens it
starts a capture from ``incidents.clip_before_s`` before the peak window to ``incidents.clip_after_s`` after it;
the capture fills as frames arrive and is written when it is complete, when the stream ends or stops, or when
the camera has sent nothing for ``serve.streams.watchdog_s`` past its expected end (what it has is written).

Writing runs on one worker thread, never on a decoding thread: an H.264 MP4 (``yuv420p``, ``faststart``, so
Chromium plays and seeks it while it downloads) at ``incidents.media_dir/<incident id>/clip.mp4``, mode 0600 in
a 0700 folder, then :meth:`IncidentStore.set_clip` with the stream's fence: a shard that lost the lease records
nothing and removes its file. The outbox's ``clip`` delivery is queued with it, and uploads the clip into the
alert's thread once the alert is out. ``on_written(incident_id)`` runs after that.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bigsister_ray.config import Settings
from bigsister_ray.redact import safe_log
from bigsister_ray.video.evidence import DEFAULT_MAX_BYTES, ClipCapture, FrameRing, ring_seconds

__all__ = ["EvidenceRecorder", "clip_relpath"]

log = logging.getLogger("ray.serve")


def clip_relpath(incident_id: int) -> str:
    """Where an incident's clip lies, relative to ``incidents.media_dir``."""
    return f"{int(incident_id)}/clip.mp4"


class EvidenceRecorder:
    """Cuts and writes the evidence clips of the streams one shard decodes (thread-safe)."""

    def __init__(
        self,
        store: Any,
        media_dir: Path,
        spec: Any,
        *,
        before_s: float = 5.0,
        after_s: float = 10.0,
        queued_windows: int = 4,
        grace_s: float = 10.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        on_written: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.media_dir = Path(media_dir)
        self.spec = spec
        self.before_s, self.after_s, self.grace_s = float(before_s), float(after_s), float(grace_s)
        self.keep_s = ring_seconds(before_s, spec, queued_windows)
        self.max_bytes = max_bytes
        self.on_written = on_written
        self.clock = clock
        self._rings: dict[str, FrameRing] = {}
        self._captures: list[ClipCapture] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evidence-clips")
        self._futures: list[Future] = []

    @classmethod
    def from_settings(cls, settings: Settings, store: Any, spec: Any, on_written: Callable[[int], None] | None = None) -> "EvidenceRecorder":
        inc, streams = settings.incidents, settings.serve.streams
        return cls(store, Path(inc.media_dir).resolve(), spec, before_s=inc.clip_before_s, after_s=inc.clip_after_s,
                   queued_windows=streams.max_buffer_windows, grace_s=streams.watchdog_s, on_written=on_written)

    def __repr__(self) -> str:
        return f"EvidenceRecorder(media_dir={str(self.media_dir)!r}, before_s={self.before_s}, after_s={self.after_s})"

    # ---- frames and incidents (decoding threads) ----------------------------------------------------------
    def push(self, stream_id: str, frames: np.ndarray, timestamps: list[float]) -> None:
        """A decoded chunk of ``stream_id``: into its ring and into its captures; complete captures are written."""
        with self._lock:
            ring = self._rings.get(stream_id)
            if ring is None:
                ring = self._rings[stream_id] = FrameRing(self.keep_s, self.max_bytes)
            ring.push(frames, timestamps)
            items = list(zip((float(t) for t in timestamps), frames))
            for c in self._captures:
                if c.stream_id == stream_id:
                    c.add(items)
        self._write_where(lambda c: c.stream_id == stream_id and c.complete)

    def start(self, fence: Any, incident_id: int, peak_start_s: float, peak_end_s: float) -> None:
        """An incident opened on ``fence.stream_id`` with its peak window at ``peak_start_s``..``peak_end_s``."""
        sid = fence.stream_id
        start_s, end_s = peak_start_s - self.before_s, peak_end_s + self.after_s
        capture = ClipCapture(incident_id=int(incident_id), stream_id=sid, start_s=start_s, end_s=end_s, owner=fence,
                              deadline=self.clock() + (end_s - start_s) + self.grace_s)
        with self._lock:
            if any(c.incident_id == capture.incident_id for c in self._captures):
                return
            ring = self._rings.get(sid)
            if ring is not None:
                capture.add(ring.since(start_s))
            self._captures.append(capture)
        self._write_where(lambda c: c is capture and c.complete)

    # ---- ends (lease loop, stream end, stop) --------------------------------------------------------------
    def flush_due(self) -> None:
        """Write the captures whose camera went quiet past their deadline, with the frames they have."""
        now = self.clock()
        self._write_where(lambda c: now >= c.deadline)

    def finish(self, stream_id: str) -> None:
        """The stream ended or stopped here: write its captures with what they have and forget its frames."""
        self._write_where(lambda c: c.stream_id == stream_id)
        with self._lock:
            self._rings.pop(stream_id, None)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the clips submitted so far are written (or failed); TimeoutError after ``timeout`` seconds."""
        with self._lock:
            futures = list(self._futures)
        for f in futures:
            f.exception(timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write every capture with what it has, wait up to ``timeout`` seconds for the writes, stop the worker."""
        self._write_where(lambda c: True)
        try:
            self.wait(timeout)
        except TimeoutError:
            log.warning("evidence clips still being written after %.0f s at shutdown; not waiting for them", timeout)
        self._pool.shutdown(wait=False)

    def memory_bytes(self) -> int:
        """Bytes of frames the rings hold now (captures share most of them)."""
        with self._lock:
            return sum(r.nbytes for r in self._rings.values())

    # ---- writing (the worker thread) ----------------------------------------------------------------------
    def _write_where(self, pick: Callable[[ClipCapture], bool]) -> None:
        with self._lock:
            chosen = [c for c in self._captures if pick(c)]
            if not chosen:
                return
            self._captures = [c for c in self._captures if c not in chosen]
            self._futures = [f for f in self._futures if not f.done()]
            for c in chosen:
                self._futures.append(self._pool.submit(self._write, c))

    def _write(self, capture: ClipCapture) -> Path | None:
        import av

        from bigsister_ray.incidents.errors import StaleLeaseError
        from bigsister_ray.video.writer import write_mp4

        iid, sid = capture.incident_id, capture.stream_id
        if not capture.frames:
            log.warning("incident %d (stream %s): no frames for its evidence clip (the stream stopped before any "
                        "arrived); the incident has no clip", iid, safe_log(sid))
            return None
        rel = clip_relpath(iid)
        path = self.media_dir / rel
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            write_mp4(tmp, capture.frames, fps=self.spec.fps, crf=23, deterministic=False, faststart=True)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except (OSError, ValueError, RuntimeError, av.FFmpegError) as err:
            tmp.unlink(missing_ok=True)
            log.error("incident %d (stream %s): evidence clip not written to %s: %s (check incidents.media_dir)",
                      iid, safe_log(sid), path, err)
            return None
        try:
            self.store.set_clip(iid, rel, fence=capture.owner)
            self.store.enqueue_delivery(iid, "clip")  # uploaded into the alert's thread once the alert is out
        except StaleLeaseError as err:
            path.unlink(missing_ok=True)
            log.warning("incident %d: evidence clip dropped: %s", iid, err)
            return None
        except Exception as err:  # the database is down: the file stays, unrecorded; logged for the operator
            log.error("incident %d (stream %s): evidence clip %s written but not recorded: %r", iid, safe_log(sid), path, err)
            return None
        log.info("incident %d (stream %s): evidence clip %s, %d frames (%.1f-%.1f s)", iid, safe_log(sid), path,
                 len(capture.frames), capture.start_s, capture.last_ts or capture.start_s)
        if self.on_written is not None:
            try:
                self.on_written(iid)
            except Exception as err:  # the clip is recorded; its upload is retried by the outbox
                log.warning("incident %d: evidence clip recorded, its delivery not queued yet: %r", iid, err)
        return path
