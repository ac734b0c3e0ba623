"""The Classifier's batching, in this process: its class with Ray Serve's real ``@serve.batch`` and the real model.

The forward pass is made slow (it takes FORWARD_S, then runs the real one), and the windows that must arrive while
the model is busy are sent from inside a forward pass on a schedule measured from its start: they arrive while it
runs by construction, whatever this machine's load, and the gaps between them are its script. ``@serve.batch`` keeps one queue per decorated method
for the whole process, bound to the event loop of its first call, so everything runs in one ``asyncio.run``
with one instance.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import numpy as np

from tests._serve_support import TINY_SPEC, make_checkpoint

FORWARD_S = 0.4


def _window(seed: int) -> np.ndarray:
    s = TINY_SPEC
    return np.random.default_rng(seed).integers(0, 256, (s.frames, s.size, s.size, 3), dtype=np.uint8)


def test_batches_fill_while_the_model_is_busy_and_not_longer(monkeypatch, tmp_path):
    from ray.serve import batching

    from bigsister_ray.serve.classifier import Classifier

    # Outside a replica only this warning (it reads the replica's max_ongoing_requests) cannot run; the batching
    # is Ray Serve's own.
    monkeypatch.setattr(batching._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None)
    # The batch queue lives on the class's decorated method for the whole process: put it back as it was after
    # the test, or a later test that deploys the Classifier would have to pickle this test's queue.
    queue = Classifier.func_or_class._classify_batch.set_max_batch_size.__self__  # Serve's lazy queue wrapper
    saved = (queue._queue, queue.max_batch_size, queue.batch_wait_timeout_s)
    try:
        _run(Classifier, tmp_path)
    finally:
        queue._queue, queue.max_batch_size, queue.batch_wait_timeout_s = saved


def _run(Classifier, tmp_path) -> None:
    clf = Classifier.func_or_class(str(make_checkpoint(tmp_path / "ckpt")))  # the deployment's class
    clf.reconfigure({"max_batch_size": 4, "batch_wait_timeout_s": 0.02})
    sizes: list[int] = []
    passes = [0]
    real = clf._forward
    windows = np.stack([_window(i) for i in range(10)])
    # The windows the next forward pass sends, as (seconds after its start, window index), and what it sent:
    # (perf_counter at sending, future of the probabilities) per window.
    script: list[tuple[float, int]] = []
    sent: list[tuple[float, concurrent.futures.Future]] = []
    loop: list[asyncio.AbstractEventLoop] = []

    def slow_forward(items):
        start = time.monotonic()
        sizes.append(len(items))
        passes[0] += 1
        arrivals, script[:] = list(script), []
        for after_s, index in arrivals:
            time.sleep(max(0.0, start + after_s - time.monotonic()))
            sent.append((time.perf_counter(), asyncio.run_coroutine_threadsafe(clf.classify(windows[index]), loop[0])))
        time.sleep(max(0.0, start + FORWARD_S - time.monotonic()))
        return real(items)

    clf._forward = slow_forward

    async def run() -> dict:
        loop.append(asyncio.get_running_loop())
        out: dict = {"one_by_one": [await clf.classify(w) for w in windows[:3]]}  # also learns the forward's time
        out["sizes_one_by_one"] = list(sizes)

        # 1. windows arriving while a forward pass runs wait for one full batch: window 3's pass sends windows 4-7,
        # the first 50 ms after it starts, then one every 60 ms (each gap 3x the configured 20 ms wait)
        sizes.clear()
        script[:] = [(0.05 + 0.06 * i, 4 + i) for i in range(4)]
        await clf.classify(windows[3])
        assert len(sent) == 4
        out["late"] = [await asyncio.wrap_future(future) for _, future in sent]
        out["sizes_busy"] = list(sizes)

        # 2. a window arriving near the end of a forward pass (sent 50 ms before it ends) waits for that end, not
        # for a whole forward more
        sent.clear()
        script[:] = [(FORWARD_S - 0.05, 9)]
        await clf.classify(windows[3])
        [(t0, future)] = sent
        await asyncio.wrap_future(future)
        out["near_end_s"] = time.perf_counter() - t0

        # 3. with the model idle again, a window waits only the configured time
        assert clf._running == 0, "a forward pass is still running or queued"
        sizes.clear()
        t0 = time.perf_counter()
        await clf.classify(windows[8])
        out["idle_s"] = time.perf_counter() - t0

        # 4. one call larger than a batch is scored in full batches, with the same probabilities
        sizes.clear()
        out["together"] = await clf.classify_many(windows)
        out["sizes_together"] = list(sizes)
        return out

    out = asyncio.run(run())
    assert out["sizes_one_by_one"] == [1, 1, 1]
    # Without the stretched wait each late window closes its own batch after 20 ms: [1, 1, 1, 1, 1].
    assert out["sizes_busy"] == [1, 4], out["sizes_busy"]
    assert all(len(p) == 2 and abs(sum(p) - 1) < 1e-4 for p in out["late"])
    # ~50 ms left of the running pass + its 20 ms wait + its own 400 ms pass; stretched by a whole forward's time
    # instead, it would wait 0.42 s before its own pass (0.82 s in all).
    assert out["near_end_s"] < 0.05 + FORWARD_S + 0.2, out["near_end_s"]
    # 20 ms of wait + the 400 ms forward; a wait still stretched would add another forward's time (0.4 s).
    assert out["idle_s"] < FORWARD_S + 0.3, out["idle_s"]
    assert out["sizes_together"] == [4, 4, 2], out["sizes_together"]
    np.testing.assert_allclose(np.asarray(out["together"][:3]), np.asarray(out["one_by_one"]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["together"][4:8]), np.asarray(out["late"]), rtol=1e-4, atol=1e-5)
    # info() adds up the time of every forward pass (the utilisation bench_serve reports)
    busy = clf.info()["busy_s"]
    assert passes[0] * FORWARD_S <= busy < passes[0] * (FORWARD_S + 0.1), (busy, passes[0])
