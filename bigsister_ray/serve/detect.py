"""Detection on a whole video file: per-window probabilities and the incidents the alert rules find.

``bigsister detect FILE --checkpoint C`` calls :func:`detect_file` (model in this process); ``POST /detect``
runs the same steps with the Classifier deployment scoring the windows. Both share every step but the
scoring call:

1. :func:`iter_file_chunks` decodes the file sampled at the checkpoint's ``clip.fps`` with the data pipeline's
   decoder (``bigsister_ray.video.files.ScaledFrameReader``: each frame scaled at decode time by
   :func:`bigsister_ray.clip.scale_frame`, the frames training and streams see); an upload is opened only as
   the container its first bytes show (:mod:`bigsister_ray.video.sniff`: that demuxer forced, local file
   protocol only) and decoded on a thread of its own (:class:`UploadDecode`) that a deadline stops;
2. :func:`bigsister_ray.video.windows.iter_windows` cuts windows of ``clip.frames`` every ``clip.stride``;
3. :func:`detection_result` turns the scored windows into the JSON answer with
   :func:`bigsister_ray.alerts.rules.detect_events` (the live streams' rules).
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from bigsister_ray.clip import ClipSpec
from bigsister_ray.errors import VideoDecodeError
from bigsister_ray.video.files import ScaledFrameReader
from bigsister_ray.video.sniff import ContainerFormat, DecodeCancelled, video_stream

__all__ = ["detect_file", "iter_file_chunks", "iter_window_batches", "detection_result", "scores_dict", "UploadDecode",
           "DecodersBusy", "DECODE_THREAD_PREFIX", "MAX_UPLOAD_DECODES", "CHUNK_FRAMES"]

log = logging.getLogger("ray.serve")

#: Sampled frames decoded per call to the decoder (bounded memory for long files).
CHUNK_FRAMES = 64
#: Upload decodes running at once in one process (a timed-out decode keeps its slot until its thread has ended).
MAX_UPLOAD_DECODES = 2
#: Name prefix of the upload decode threads.
DECODE_THREAD_PREFIX = "bigsister-upload-decode"


class _CancellableContainer:
    """A PyAV input container whose ``decode`` stops with :class:`DecodeCancelled` between frames once ``cancel`` is set."""

    def __init__(self, container: Any, cancel: threading.Event, shown: str) -> None:
        self._c, self._cancel, self._shown = container, cancel, shown

    def __getattr__(self, name: str) -> Any:
        return getattr(self._c, name)

    def decode(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for frame in self._c.decode(*args, **kwargs):
            if self._cancel.is_set():
                raise DecodeCancelled(self._shown)
            yield frame


class _UploadFrameReader(ScaledFrameReader):
    """:class:`ScaledFrameReader` on an upload: opened by :func:`bigsister_ray.video.sniff.open_container` (the
    sniffed demuxer forced, file protocol only, FFmpeg I/O timeout) and stopped between frames by ``cancel``."""

    def __init__(self, path: str | Path, spec: ClipSpec, fps: float, fmt: ContainerFormat, cancel: threading.Event,
                 io_timeout_s: float) -> None:
        from av.video.reformatter import VideoReformatter

        from bigsister_ray.video.sniff import open_container

        self.path, self.spec, self.fps = str(path), spec, float(fps)
        container = open_container(path, fmt, io_timeout_s)
        try:
            self._stream = video_stream(container, str(path))
        except VideoDecodeError:
            container.close()
            raise
        self._container = _CancellableContainer(container, cancel, self.path)
        self._stream.thread_type = "AUTO"
        self._stream.codec_context.thread_count = 1
        tb = self._stream.time_base
        self._tb = float(tb) if tb else 0.0
        self._start = self._stream.start_time or 0
        self._reformatter = VideoReformatter()
        self._frames = self._container.decode(self._stream)
        self._pos = -1
        self._counting = True
        self._ended = False


def iter_file_chunks(path: str | Path, spec: ClipSpec, chunk_frames: int = CHUNK_FRAMES, max_seconds: float | None = None,
                     max_pixels: int | None = None, *, container: ContainerFormat | None = None,
                     cancel: threading.Event | None = None,
                     io_timeout_s: float = 30.0) -> Iterator[tuple[np.ndarray, list[float]]]:
    """Yield ``(frames N x S x S x 3 uint8, timestamps_s)`` of ``path`` sampled at ``spec.fps``, in order.

    Frame ``k`` is the video frame shown at ``k / spec.fps`` seconds (the same rule as
    :func:`bigsister_ray.clip.sample_indices`). Raises :class:`VideoDecodeError` naming the file, also when the
    video is longer than ``max_seconds`` or its frames larger than ``max_pixels`` (checked before decoding).

    With ``container`` (an upload, sniffed by :mod:`bigsister_ray.video.sniff`) the file is probed and decoded
    by PyAV only as that container, local file protocol only, each open and read limited to ``io_timeout_s`` by
    FFmpeg; ``cancel`` stops it with :class:`DecodeCancelled` between frames and between chunks. Without it (a
    local file given to the CLI) decord probes and FFmpeg picks the demuxer.
    """
    from bigsister_ray.video.files import probe
    from bigsister_ray.video.sniff import open_container, probe_container

    p = Path(path)
    if not p.is_file():
        raise VideoDecodeError(f"{p}: no such video file")
    cancel = cancel if cancel is not None else threading.Event()
    if container is not None:
        opened = open_container(p, container, io_timeout_s)
        try:
            info = probe_container(opened, str(p), cancel)
        finally:
            opened.close()
    else:
        info = probe(p)
    if max_pixels is not None and info.width * info.height > max_pixels:
        raise VideoDecodeError(f"{p}: frames are {info.width}x{info.height} ({info.width * info.height} pixels), "
                               f"the limit is {max_pixels} pixels (serve.upload_max_pixels)")
    duration = info.num_frames / info.fps
    if max_seconds is not None and duration > max_seconds:
        raise VideoDecodeError(f"{p}: video is {duration:.1f} s long, the limit is {max_seconds:.0f} s (serve.upload_max_seconds)")
    n = max(1, int(math.floor(duration * spec.fps + 1e-6)))
    times = np.arange(n) / spec.fps
    idx = np.clip(np.floor(times * info.fps + 1e-6).astype(np.int64), 0, info.num_frames - 1)
    reader = (_UploadFrameReader(p, spec, info.fps, container, cancel, io_timeout_s) if container is not None
              else ScaledFrameReader(p, spec, info.fps))
    with reader:  # scaled at decode time, as training and streams are
        for lo in range(0, n, chunk_frames):
            if cancel.is_set():
                raise DecodeCancelled(str(p))
            hi = min(n, lo + chunk_frames)
            cache: dict[int, np.ndarray] = {}
            wanted = sorted(set(int(i) for i in idx[lo:hi]))
            reader.fill(wanted, cache)
            yield np.stack([cache[int(i)] for i in idx[lo:hi]]), [float(t) for t in times[lo:hi]]


def iter_window_batches(path: str | Path, spec: ClipSpec, batch_size: int, max_seconds: float | None = None,
                        max_pixels: int | None = None, **upload: Any):
    """Batches (lists) of at most ``batch_size`` :class:`~bigsister_ray.video.windows.Window` of a file.

    ``upload`` (``container``, ``cancel``, ``io_timeout_s``) goes to :func:`iter_file_chunks`.
    """
    from bigsister_ray.video.windows import iter_windows

    batch = []
    chunks = iter_file_chunks(path, spec, max_seconds=max_seconds, max_pixels=max_pixels, **upload)
    for w in iter_windows(chunks, spec):
        batch.append(w)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def scores_dict(labels: Sequence[str], probs: Sequence[float]) -> dict[str, float]:
    """``{label: probability}`` from one row of model output, in the checkpoint's label order."""
    if len(probs) != len(labels):
        raise ValueError(f"expected {len(labels)} probabilities (one per label), got {len(probs)}")
    return {label: float(p) for label, p in zip(labels, probs)}


def detection_result(windows: Sequence[tuple[float, float, Mapping[str, float]]], labels: Sequence[str], alerts,
                     thresholds: Mapping[str, float] | None) -> dict[str, Any]:
    """The ``/detect`` JSON: ``{windows: [{start_s, end_s, scores}], events: [{label, start_s, end_s, peak_score}]}``."""
    from bigsister_ray.alerts.rules import WindowScore, detect_events

    scored = [WindowScore(start_s=float(s), end_s=float(e), scores=dict(sc)) for s, e, sc in windows]
    events = detect_events(scored, labels, alerts, thresholds)
    return {
        "windows": [{"start_s": round(w.start_s, 4), "end_s": round(w.end_s, 4), "scores": w.scores} for w in scored],
        "events": [ev.to_dict() for ev in events],
    }


def detect_file(path: str | Path, checkpoint: str | Path, settings) -> dict[str, Any]:
    """Classify ``path`` offline with ``checkpoint``: the same JSON as ``POST /detect``.

    Windows are scored ``settings.serve.classifier.max_batch_size`` at a time; memory stays bounded by one
    batch plus one decode chunk whatever the file's length.
    """
    import torch

    from bigsister_ray.models.checkpoint import load_checkpoint, predict_proba

    loaded = load_checkpoint(Path(checkpoint))
    meta = loaded.meta
    batch_size = settings.serve.classifier.max_batch_size
    rows: list[tuple[float, float, dict[str, float]]] = []
    with torch.inference_mode():
        for batch in iter_window_batches(path, meta.clip, batch_size):
            probs = predict_proba(loaded.model, np.stack([w.frames for w in batch]), meta)
            rows.extend((w.start_s, w.end_s, scores_dict(meta.labels, p)) for w, p in zip(batch, probs))
    return detection_result(rows, meta.labels, settings.alerts, meta.thresholds)


class DecodersBusy(Exception):
    """Every upload decode slot (:data:`MAX_UPLOAD_DECODES`) is taken; the request may be retried."""


_END = object()


class UploadDecode:
    """One upload decoded on a thread of its own, a batch of windows each time :meth:`next` is awaited.

    The thread belongs to this upload (named ``bigsister-upload-decode-N``), so a slow decode never occupies the
    thread pool other routes use; at most :data:`MAX_UPLOAD_DECODES` run in the process (:class:`DecodersBusy`
    beyond). Nothing is decoded ahead: the next batch is decoded when asked for, so memory holds one decode
    chunk and one batch. :meth:`cancel` sets the Event the decoder checks between frames and between chunks; the
    thread then closes the video and ends (and frees its slot) within one frame's decode.

    ``make(cancel)`` builds the batch iterator (:func:`iter_window_batches` with ``cancel``); it is called on
    the thread, so the video is opened where it is decoded.
    """

    _lock = threading.Lock()
    _running = 0
    _serial = 0

    def __init__(self, make: Callable[[threading.Event], Iterator[list]]) -> None:
        self._make = make
        self._cancel = threading.Event()
        self._requests: "queue.SimpleQueue[asyncio.Future | None]" = queue.SimpleQueue()
        self._loop = asyncio.get_running_loop()
        self.done = threading.Event()
        with UploadDecode._lock:
            if UploadDecode._running >= MAX_UPLOAD_DECODES:
                raise DecodersBusy(f"{MAX_UPLOAD_DECODES} uploads are being decoded; try again shortly")
            UploadDecode._running += 1
            UploadDecode._serial += 1
            name = f"{DECODE_THREAD_PREFIX}-{UploadDecode._serial}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        try:
            self._thread.start()
        except BaseException:
            self._release()
            raise

    @classmethod
    def _release(cls) -> None:
        with cls._lock:
            cls._running -= 1

    async def next(self) -> list | None:
        """The next batch of windows, or ``None`` after the last; the decoder's errors are raised here."""
        fut = self._loop.create_future()
        self._requests.put(fut)
        batch = await fut
        return None if batch is _END else batch

    def cancel(self) -> None:
        """Stop decoding (idempotent, does not wait); the thread ends on its own."""
        self._cancel.set()
        self._requests.put(None)

    def _settle(self, fut: asyncio.Future, value: Any = None, error: BaseException | None = None) -> None:
        def settle() -> None:
            if fut.done():  # the awaiting request gave up (deadline, client gone)
                return
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)

        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            pass

    def _run(self) -> None:
        batches = None
        try:
            while True:
                fut = self._requests.get()
                if fut is None or self._cancel.is_set():
                    return
                try:
                    if batches is None:
                        batches = self._make(self._cancel)
                    batch = next(batches, _END)
                except DecodeCancelled:
                    return
                except BaseException as err:  # handed to the request, which turns it into its answer
                    self._settle(fut, error=err)
                    return
                self._settle(fut, batch)
                if batch is _END:
                    return
        finally:
            try:
                if batches is not None:
                    batches.close()  # closes the video
            except Exception as err:  # the answer is already decided; the operator sees this
                log.warning("closing an upload's decoder failed: %r", err)
            finally:
                self._release()
                self.done.set()
