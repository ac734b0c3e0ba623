"""The Windower deployment: assembles windows per stream where the frames arrive, scores them, hands them on.

The Decoder pushes each stream's preprocessed frames here in chunks (frames move once). One
:class:`~bigsister_ray.video.windows.WindowAssembler` per stream cuts ``clip.frames``-frame windows every
``clip.stride`` frames; the complete windows of all streams go to the Classifier together (``classify_many``,
which batches them with other callers'), and the scored windows go, in order, to the AlertManager. ``push``
answers once its windows are scored, which paces a file source (never dropping) and lets a live source's
drop-oldest buffer absorb a slow classifier.

A Classifier replica that dies (killed, out of memory, node lost) does not lose windows: a call that failed
because its replica went away is retried (capped backoff, up to ``CLASSIFY_RETRY_S`` seconds) and lands on
the replica Serve starts in its place; only a window the Classifier refuses (wrong shape) is not retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ray import serve

__all__ = ["Windower"]

log = logging.getLogger("ray.serve")

#: Frame-to-score latencies kept for ``stats()`` (the Prometheus histogram keeps the rest).
LATENCY_SAMPLES = 4096
#: How long a window is retried while the Classifier replica it was sent to is replaced.
CLASSIFY_RETRY_S = 60.0
#: Most streams' scored windows sent to the AlertManager in one request.
OBSERVE_BATCH = 64


def _replica_gone(err: BaseException) -> bool:
    """True when ``err`` says the replica went away (worth retrying on another), not that the window was bad."""
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError, RequestCancelledError

    gone = (RayActorError, ActorUnavailableError, ReplicaUnavailableError, DeploymentUnavailableError)
    return isinstance(err, gone) and not isinstance(err, RequestCancelledError)


@serve.deployment(name="Windower")
class Windower:
    """Per-stream window assembly. One replica owns every stream's state (shard by stream for more)."""

    def __init__(self, checkpoint: str, classifier, alert_manager, max_batch_size: int = 16) -> None:
        from bigsister_ray.models.checkpoint import read_checkpoint_meta
        from bigsister_ray.serve.metrics import WindowerMetrics

        meta = read_checkpoint_meta(Path(checkpoint))
        self.spec = meta.clip
        self.labels = list(meta.labels)
        self._classifier = classifier
        self._alerts = alert_manager
        self._asm: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._classified: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._retries: dict[str, int] = {}
        self._latency: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._metrics = WindowerMetrics()
        self._coalesce.set_max_batch_size(max_batch_size)
        self._observations: list[tuple[str, list[dict[str, Any]], asyncio.Future]] = []
        self._observer: asyncio.Task | None = None

    async def push(self, stream_id: str, frames: np.ndarray, timestamps: Sequence[float], decoded_at: float | None = None
                   ) -> dict[str, int]:
        """Add a chunk of ``stream_id``'s frames; score the windows it completes. Returns the stream's counters."""
        from bigsister_ray.video.windows import WindowAssembler

        lock = self._locks.setdefault(stream_id, asyncio.Lock())
        async with lock:
            asm = self._asm.get(stream_id)
            if asm is None:
                asm = self._asm[stream_id] = WindowAssembler(self.spec)
            windows = asm.push(frames, timestamps, decoded_at)
            if windows:
                await self._score(stream_id, windows)
        return {"windows_classified": self._classified.get(stream_id, 0), "classify_errors": self._errors.get(stream_id, 0)}

    async def _classify(self, stream_id: str, frames: np.ndarray) -> Any:
        """One window's probabilities; retried while its Classifier replica is replaced."""
        deadline = time.monotonic() + CLASSIFY_RETRY_S
        wait = 0.25
        while True:
            try:
                return await self._coalesce(frames)
            except Exception as err:
                if not _replica_gone(err) or time.monotonic() + wait > deadline:
                    raise
                self._retries[stream_id] = self._retries.get(stream_id, 0) + 1
                log.warning("stream %s: Classifier replica gone (%s); retrying the window in %.2f s", stream_id,
                            type(err).__name__, wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 4.0)

    # The windows of all streams that are ready within 10 ms go to the Classifier in one call: one request and one
    # object instead of one per window (Serve's per-request cost was 15 ms of the Classifier's CPU per window on
    # a CPU node; benchmarks/RESULTS.md). Up to 4 calls are out at once, so the Classifier always has the next batch
    # waiting. The size is the Classifier's max_batch_size at build time; if it changes live, the Classifier
    # splits or joins these calls into its own batches.
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01, max_concurrent_batches=4)
    async def _coalesce(self, windows: list[np.ndarray]) -> list[Any]:
        return await self._classifier.classify_many.remote(np.stack(windows))

    async def _score(self, stream_id: str, windows: list) -> None:
        results = await asyncio.gather(*(self._classify(stream_id, w.frames) for w in windows), return_exceptions=True)
        now = time.time()
        scored = []
        for w, res in zip(windows, results):
            if isinstance(res, BaseException):
                self._errors[stream_id] = self._errors.get(stream_id, 0) + 1
                self._metrics.classify_errors.inc(tags={"stream": stream_id})
                log.warning("stream %s: window %.1f-%.1f s not classified: %s", stream_id, w.start_s, w.end_s, res)
                continue
            if w.ready_at is not None:
                lat = max(0.0, now - w.ready_at)
                self._latency.append(lat)
                self._metrics.frame_to_score.observe(lat)
            scored.append({
                "start_s": w.start_s,
                "end_s": w.end_s,
                "scores": {label: float(p) for label, p in zip(self.labels, res)},
                "at": w.ready_at if w.ready_at is not None else now,
                "snapshot": w.frames[len(w.frames) // 2],
            })
        if not scored:
            return
        self._classified[stream_id] = self._classified.get(stream_id, 0) + len(scored)
        self._metrics.windows_classified.inc(len(scored), tags={"stream": stream_id})
        try:
            await self._observe(stream_id, scored)
        except Exception as err:  # the alert path failing must not stop classification; logged and counted
            log.error("stream %s: %d scored windows not delivered to the AlertManager: %r", stream_id, len(scored), err)

    async def _observe(self, stream_id: str, scored: list[dict[str, Any]]) -> None:
        """Hand ``stream_id``'s scored windows to the AlertManager; returns once they are applied.

        What the streams score while a request to the AlertManager is out waits and goes in the next one
        (``observe_many``): one request per round trip, however many streams, and no wait when it is idle. A
        stream's windows stay in order: its ``push`` holds the stream's lock until they are applied."""
        fut = asyncio.get_running_loop().create_future()
        self._observations.append((stream_id, scored, fut))
        if self._observer is None or self._observer.done():
            self._observer = asyncio.create_task(self._send_observations())
        result = await fut
        if "error" in result:
            raise RuntimeError(f"the AlertManager could not apply them: {result['error']}")

    async def _send_observations(self) -> None:
        while self._observations:
            batch, self._observations = self._observations[:OBSERVE_BATCH], self._observations[OBSERVE_BATCH:]
            try:
                results = await self._alerts.observe_many.remote([(sid, scored) for sid, scored, _ in batch])
            except Exception as err:  # the AlertManager unreachable: every waiting stream hears it
                results = err
            for i, (_, _, fut) in enumerate(batch):
                if fut.done():
                    continue
                if isinstance(results, BaseException):
                    fut.set_exception(results)
                else:
                    fut.set_result(results[i])

    async def end_of_stream(self, stream_id: str) -> None:
        """A file stream ended: after its last window, let the AlertManager close what is open."""
        lock = self._locks.setdefault(stream_id, asyncio.Lock())
        async with lock:
            await self._alerts.flush.remote(stream_id)

    def forget(self, stream_id: str) -> bool:
        """Drop ``stream_id``'s buffered frames and counters (the stream was deleted)."""
        self._locks.pop(stream_id, None)
        self._classified.pop(stream_id, None)
        self._errors.pop(stream_id, None)
        self._retries.pop(stream_id, None)
        return self._asm.pop(stream_id, None) is not None

    def stats(self) -> dict[str, Any]:
        """Windows classified per stream and frame-to-score latency percentiles (seconds) over recent windows."""
        lat = np.asarray(self._latency, dtype=np.float64)
        pct = {}
        if lat.size:
            pct = {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)), "n": int(lat.size)}
        return {"windows_classified": dict(self._classified), "classify_errors": dict(self._errors),
                "classify_retries": dict(self._retries), "frame_to_score_s": pct, "streams": len(self._asm)}

    def reset_latency(self) -> None:
        """Forget recorded latencies (benchmarks measure one phase at a time)."""
        self._latency.clear()
