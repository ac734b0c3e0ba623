"""The Classifier deployment: batches windows from every stream (and uploads) into one forward pass.

``classify(window)`` takes one ``T x S x S x 3`` uint8 window (the checkpoint's ClipSpec) and returns its
softmax probabilities (with the checkpoint's temperature), in the checkpoint's label order; ``classify_many``
takes ``n`` windows at once (what the stream shards and ``/detect`` send). Concurrent calls are gathered by
``@serve.batch``, one window per batch item; batch size and wait come from ``serve.classifier`` through ``user_config``,
so they change live with ``serve deploy`` (``reconfigure``). CPUs, GPUs and autoscaling come from the same
section (see :func:`bigsister_ray.serve.app.build_app`). The forward pass runs on a worker thread so the
replica keeps accepting (and batching) requests meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

__all__ = ["Classifier", "ClassifierUserConfig"]

log = logging.getLogger("ray.serve")

#: Most a forming batch's wait is stretched while a forward pass runs (a slow first pass, e.g. CUDA start-up,
#: must not hold later windows for long).
MAX_EXTRA_WAIT_S = 1.0


class ClassifierUserConfig(BaseModel):
    """The live knobs (``user_config``) of the Classifier."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(16, ge=1, le=4096)
    batch_wait_timeout_s: float = Field(0.05, ge=0, le=10)
    stuck_after_s: float = Field(120.0, gt=0, description="check_health fails when requests wait and no batch finished for this long.")


@serve.deployment(name="Classifier")
class Classifier:
    """Loads a self-describing checkpoint; scores windows in batches. Device: CUDA when a GPU is assigned."""

    def __init__(self, checkpoint: str, torch_threads: int = 1) -> None:
        import torch

        from bigsister_ray.models.checkpoint import load_checkpoint
        from bigsister_ray.serve.metrics import ClassifierMetrics

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        loaded = load_checkpoint(Path(checkpoint), map_location=str(self._device))
        self._model = loaded.model.to(self._device).eval()
        self.meta = loaded.meta
        self._checkpoint = str(checkpoint)
        s = self.meta.clip.size
        self._shape = (self.meta.clip.frames, s, s, 3)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classifier")
        self._metrics = ClassifierMetrics()
        self._cfg = ClassifierUserConfig()
        self._pending = 0
        self._batches = 0
        self._windows = 0
        self._requests = 0
        self._last_progress = time.monotonic()
        self._busy_since = self._last_progress
        self._last_batch_size = 0
        self._running = 0  # batches in or waiting for the forward thread
        self._forward_s = 0.0  # moving average of a forward pass (s)
        self._busy_s = 0.0  # forward passes so far, in all (s): its growth over wall time is the model's utilisation
        self._forward_started = time.monotonic()  # when the current (or last) forward pass started
        log.info("Classifier: loaded %s (%s, %d labels, clip %s) on %s", checkpoint, self.meta.model_name,
                 len(self.meta.labels), self.meta.clip, self._device)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply ``user_config``: batch size and wait of ``@serve.batch``, stuck detection."""
        cfg = ClassifierUserConfig.model_validate(user_config or {})
        self._cfg = cfg
        self._classify_batch.set_max_batch_size(cfg.max_batch_size)
        self._classify_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    async def classify(self, window: np.ndarray) -> list[float]:
        """Probabilities of one window ``T x S x S x 3`` uint8, in ``info()['labels']`` order."""
        arr = np.asarray(window)
        if arr.shape != self._shape or arr.dtype != np.uint8:
            raise ValueError(f"expected a window shaped {self._shape} uint8 (checkpoint {self._checkpoint}), got {arr.shape} {arr.dtype}")
        return (await self._score(arr[None]))[0]

    async def classify_many(self, windows: np.ndarray) -> list[list[float]]:
        """Probabilities of ``n`` windows ``n x T x S x S x 3`` uint8 sent in one call (a stream shard coalesces the
        windows of its streams: one request, one object, instead of ``n``). They still batch with other callers'.
        """
        arr = np.asarray(windows)
        if arr.ndim != 5 or arr.shape[1:] != self._shape or arr.dtype != np.uint8 or len(arr) == 0:
            raise ValueError(f"expected windows shaped n x {' x '.join(map(str, self._shape))} uint8, n >= 1 "
                             f"(checkpoint {self._checkpoint}), got {arr.shape} {arr.dtype}")
        return await self._score(arr)

    async def _score(self, arr: np.ndarray) -> list[list[float]]:
        n = len(arr)
        self._requests += 1
        if self._pending == 0:
            self._busy_since = time.monotonic()
        self._pending += n
        try:
            # One batch item per window: the windows of one call fill batches exactly, with other callers' windows,
            # whatever the call's size (an item of k windows that did not fit closed the batch early).
            self._classify_batch.set_batch_wait_timeout_s(self._batch_wait_s())
            return list(await asyncio.gather(*(self._classify_batch(arr[i]) for i in range(n))))
        finally:
            self._pending -= n

    def _batch_wait_s(self) -> float:
        """The wait of a batch that starts forming now: the configured wait, plus, while the forward thread is busy,
        the time until it is expected to be free (those windows could not run earlier anyway, and a batch that
        Serve closed after the configured wait would run part-empty while the windows behind it wait)."""
        base = self._cfg.batch_wait_timeout_s
        if self._running == 0:
            return base
        free_at = self._forward_started + self._forward_s * self._running  # the one running, then those queued
        return base + min(max(0.0, free_at - time.monotonic()), MAX_EXTRA_WAIT_S)

    # Two batches may be open: one forms (and waits its turn) while the other runs, so the model never waits for
    # a batch to form. Serve reads the wait when a batch's first window arrives; _score sets it just before.
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.05, max_concurrent_batches=2)
    async def _classify_batch(self, items: list[np.ndarray]) -> list[list[float]]:
        loop = asyncio.get_running_loop()
        self._running += 1
        try:
            probs = await loop.run_in_executor(self._pool, self._timed_forward, items)
        finally:
            self._running -= 1
        return probs.tolist()

    def _timed_forward(self, items: list[np.ndarray]) -> np.ndarray:
        self._forward_started = time.monotonic()
        try:
            return self._forward(items)
        finally:
            dt = time.monotonic() - self._forward_started
            self._forward_s = dt if self._forward_s == 0 else 0.8 * self._forward_s + 0.2 * dt
            self._busy_s += dt

    def _forward(self, items: list[np.ndarray]) -> np.ndarray:
        import torch

        from bigsister_ray.models.checkpoint import predict_proba

        t0 = time.perf_counter()
        with torch.inference_mode():
            clips = torch.from_numpy(np.stack(items))  # a copy: the items are read-only views of Ray's object store
            if self._device.type != "cpu":
                clips = clips.to(self._device, non_blocking=True)
            probs = predict_proba(self._model, clips, self.meta)
        dt = time.perf_counter() - t0
        n = len(clips)
        self._metrics.batch_size.observe(n)
        self._metrics.inference.observe(dt)
        self._metrics.windows.inc(n)
        self._batches += 1
        self._windows += n
        self._last_batch_size = n
        self._last_progress = time.monotonic()
        return np.asarray(probs, dtype=np.float32)

    def info(self) -> dict[str, Any]:
        """What is loaded, and progress: labels, clip, thresholds, batches and windows so far."""
        return {
            "loaded": True,
            "checkpoint": self._checkpoint,
            "model_name": self.meta.model_name,
            "labels": list(self.meta.labels),
            "clip": self.meta.clip.model_dump(),
            "thresholds": dict(self.meta.thresholds),
            "temperature": float(self.meta.temperature),
            "device": str(self._device),
            "batches": self._batches,
            "windows": self._windows,
            "requests": self._requests,
            "last_batch_size": self._last_batch_size,
            "forward_s": self._forward_s,
            "busy_s": self._busy_s,
            "pending": self._pending,
            "max_batch_size": self._cfg.max_batch_size,
            "batch_wait_timeout_s": self._cfg.batch_wait_timeout_s,
        }

    def inject_stall(self, seconds: float) -> None:
        """Fault drill: occupy the forward thread for ``seconds`` (a hung GPU or driver, as the replica sees it).

        Only callers holding a deployment handle (inside the Ray cluster) can reach it; there is no HTTP route.
        Windows sent meanwhile wait, and :meth:`check_health` fails after ``stuck_after_s``.
        """
        if not 0 < seconds <= 3600:
            raise ValueError(f"expected 0 < seconds <= 3600, got {seconds}")
        log.warning("Classifier: fault drill, forward thread stalled for %.0f s", seconds)
        self._pool.submit(time.sleep, seconds)

    def check_health(self) -> None:
        """Unhealthy when windows are waiting and no batch has finished for ``stuck_after_s`` (a hung forward)."""
        idle = time.monotonic() - max(self._last_progress, self._busy_since)
        if self._pending > 0 and idle > self._cfg.stuck_after_s:
            raise RuntimeError(f"Classifier stuck: {self._pending} windows waiting, no batch finished for {idle:.0f} s")
