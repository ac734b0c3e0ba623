"""Windows of every stream in a shard go to the Classifier together: :class:`WindowBatcher`.

A shard's stream threads each hand their complete windows to :meth:`WindowBatcher.classify` and wait for the
probabilities. A few sender threads take what is queued (up to ``max_batch_size`` windows, waiting at most
``wait_s`` for more once one is there) and send it as ONE ``classify_many`` request: one request and one object
per batch instead of one per window. Up to ``senders`` requests are out at once, so the Classifier always has the
next batch waiting.

A Classifier replica that goes away (killed, out of memory, node lost) does not lose windows: a batch whose
request failed because its replica went away is sent again (capped backoff, up to ``retry_s``) and lands on the
replica Serve starts in its place. A batch the Classifier refuses (wrong shape) fails its windows at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np

__all__ = ["WindowBatcher", "replica_gone"]

log = logging.getLogger("ray.serve")


def replica_gone(err: BaseException) -> bool:
    """True when ``err`` says the replica went away (worth retrying on another), not that the request was bad."""
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError, RequestCancelledError

    gone = (RayActorError, ActorUnavailableError, ReplicaUnavailableError, DeploymentUnavailableError)
    return isinstance(err, gone) and not isinstance(err, RequestCancelledError)


class WindowBatcher:
    """Coalesces windows from many threads into ``send(stacked) -> probabilities`` calls.

    ``send`` takes ``B x T x S x S x 3`` uint8 and returns ``B`` probability vectors (the Classifier's
    ``classify_many``). ``retries`` counts batches sent again because their replica went away.
    """

    def __init__(self, send: Callable[[np.ndarray], Any], *, max_batch_size: int = 16, wait_s: float = 0.01,
                 senders: int = 4, retry_s: float = 60.0, name: str = "shard") -> None:
        if max_batch_size < 1 or senders < 1:
            raise ValueError(f"max_batch_size and senders must be >= 1, got {max_batch_size} and {senders}")
        self._send = send
        self.max_batch_size = max_batch_size
        self._wait_s = wait_s
        self._retry_s = retry_s
        self._queue: queue.Queue[tuple[np.ndarray, Future] | None] = queue.Queue()
        self._closed = threading.Event()
        self._inflight: dict[int, list[tuple[np.ndarray, Future]]] = {}  # batches being sent, by id
        self._inflight_lock = threading.Lock()
        self.retries = 0
        self.batches = 0
        self._threads = [threading.Thread(target=self._run, name=f"{name}-classify-{i}", daemon=True) for i in range(senders)]
        for t in self._threads:
            t.start()

    def classify(self, window: np.ndarray, timeout_s: float | None = None) -> np.ndarray:
        """One window's probabilities (blocks until its batch is scored). Raises what the Classifier raised."""
        return self.submit(window).result(timeout=timeout_s)

    def submit(self, window: np.ndarray) -> Future:
        if self._closed.is_set():
            raise RuntimeError("the window batcher is closed (the shard is shutting down)")
        fut: Future = Future()
        self._queue.put((window, fut))
        return fut

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def close(self) -> None:
        """Stop the senders; windows queued or being sent fail with RuntimeError at once (their stream threads
        stop waiting), whatever the Classifier does."""
        self._closed.set()
        with self._inflight_lock:
            inflight = [item for batch in self._inflight.values() for item in batch]
        for _, fut in inflight:
            _settle(fut, error=RuntimeError("the shard shut down before this window was scored"))
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + 2.0  # a sender waiting on a Classifier that is gone too is not waited for
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                _settle(item[1], error=RuntimeError("the shard shut down before this window was scored"))

    # ---- senders ---------------------------------------------------------------------------------
    def _take(self) -> list[tuple[np.ndarray, Future]] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self._wait_s
        while len(batch) < self.max_batch_size:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(left, 0.0)) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:  # closing: let another sender see it too
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while not self._closed.is_set():
            batch = self._take()
            if batch is None:
                return
            with self._inflight_lock:
                self._inflight[id(batch)] = batch
            try:
                probs = self._send_with_retry(np.stack([w for w, _ in batch]))
            except BaseException as err:  # every window of the batch hears it; the sender carries on
                for _, fut in batch:
                    _settle(fut, error=err)
                continue
            finally:
                with self._inflight_lock:
                    self._inflight.pop(id(batch), None)
            self.batches += 1
            for (_, fut), p in zip(batch, probs):
                _settle(fut, result=np.asarray(p))

    def _send_with_retry(self, stacked: np.ndarray) -> Any:
        deadline = time.monotonic() + self._retry_s
        wait = 0.25
        while True:
            try:
                return self._send(stacked)
            except Exception as err:
                if not replica_gone(err) or time.monotonic() + wait > deadline or self._closed.is_set():
                    raise
                self.retries += 1
                log.warning("Classifier replica gone (%s); sending %d windows again in %.2f s", type(err).__name__,
                            len(stacked), wait)
                if self._closed.wait(wait):
                    raise
                wait = min(wait * 2, 4.0)


def _settle(fut: Future, *, result: object = None, error: BaseException | None = None) -> None:
    """Give ``fut`` its outcome unless it already has one (a closing batcher and a sender may race)."""
    from concurrent.futures import InvalidStateError

    try:
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)
    except InvalidStateError:
        pass
