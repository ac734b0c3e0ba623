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

The same rings give each camera its picture in the console: :meth:`EvidenceRecorder.write_latest_frames` (each
lease round, ``serve.streams.latest_frame``) writes every stream's newest frame as a JPEG at
``incidents.media_dir/cameras/<hash of the stream id>.jpg`` (:func:`latest_frame_relpath`), replaced atomically, on
the same worker thread. The Ingress serves it from the shared media folder, whichever shard decodes the stream.
"""

from __future__ import annotations

import hashlib
import io
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

__all__ = ["EvidenceRecorder", "clip_relpath", "latest_frame_relpath"]

log = logging.getLogger("ray.serve")


def clip_relpath(incident_id: int) -> str:
    """Where an incident's clip lies, relative to ``incidents.media_dir``."""
    return f"{int(incident_id)}/clip.mp4"


def latest_frame_relpath(stream_id: str) -> str:
    """Where a stream's newest frame lies, relative to ``incidents.media_dir`` (a hash: any stream id is a safe name)."""
    return f"cameras/{hashlib.sha256(stream_id.encode()).hexdigest()[:32]}.jpg"


def _write_private(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a new 0600 file beside ``path`` (in a 0700 folder), then replace ``path`` with it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        write(tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
        latest_frame: bool = True,
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
        self.latest_frame = latest_frame
        self._frame_ts: dict[str, float] = {}  # stream id -> stream second of the newest frame written
        self._frames_job: Future | None = None

    @classmethod
    def from_settings(cls, settings: Settings, store: Any, spec: Any, on_written: Callable[[int], None] | None = None) -> "EvidenceRecorder":
        inc, streams = settings.incidents, settings.serve.streams
        return cls(store, Path(inc.media_dir).resolve(), spec, before_s=inc.clip_before_s, after_s=inc.clip_after_s,
                   queued_windows=streams.max_buffer_windows, grace_s=streams.watchdog_s, on_written=on_written,
                   latest_frame=streams.latest_frame)

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

    def finish(self, stream_id: str, *, last_picture: bool = False) -> None:
        """The stream ended or stopped here: write its captures with what they have and forget its frames. Its
        picture stays (the console shows a stopped camera's last frame with its age); ``last_picture`` (a file
        that ended) first writes its newest frame, which a lease round may not have seen yet."""
        self._write_where(lambda c: c.stream_id == stream_id)
        with self._lock:
            ring = self._rings.pop(stream_id, None)
            written = self._frame_ts.pop(stream_id, None)
            newest = ring.newest() if ring is not None and last_picture and self.latest_frame else None
            if newest is not None and newest[0] != written:
                self._futures = [f for f in self._futures if not f.done()]
                self._futures.append(self._pool.submit(self._write_frames, [(stream_id, newest[0], newest[1])], False))

    def write_latest_frames(self) -> int:
        """Queue the newest frame of every stream that has a newer one than its picture (lease loop). Returns how
        many; 0 while the previous round's pictures are still being written, so a slow disk never queues more."""
        if not self.latest_frame:
            return 0
        with self._lock:
            if self._frames_job is not None and not self._frames_job.done():
                return 0
            due = []
            for sid, ring in self._rings.items():
                newest = ring.newest()
                if newest is not None and newest[0] != self._frame_ts.get(sid):
                    due.append((sid, newest[0], newest[1]))
            if due:
                self._frames_job = self._pool.submit(self._write_frames, due)
        return len(due)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the clips and pictures submitted so far are written (or failed); TimeoutError after ``timeout``
        seconds."""
        with self._lock:
            futures = list(self._futures) + ([self._frames_job] if self._frames_job is not None else [])
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

    def _write_frames(self, due: list[tuple[str, float, np.ndarray]], live: bool = True) -> None:
        from PIL import Image

        for sid, ts, frame in due:
            with self._lock:
                if live and sid not in self._rings:  # stopped or deleted meanwhile: no picture of it is written again
                    continue
            path = self.media_dir / latest_frame_relpath(sid)
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).save(buf, format="JPEG", quality=80)
            try:
                _write_private(path, lambda tmp: tmp.write_bytes(buf.getvalue()))
            except OSError as err:
                log.error("stream %s: latest frame not written to %s: %s (check incidents.media_dir)", safe_log(sid), path, err)
                continue
            with self._lock:
                if sid in self._rings:  # not a stream that stopped meanwhile
                    self._frame_ts[sid] = ts

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
        try:
            _write_private(path, lambda tmp: write_mp4(tmp, capture.frames, fps=self.spec.fps, crf=23,
                                                       deterministic=False, faststart=True))
        except (OSError, ValueError, RuntimeError, av.FFmpegError) as err:
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
