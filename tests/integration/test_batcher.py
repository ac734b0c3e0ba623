"""WindowBatcher: windows from many stream threads reach the Classifier together, and a closing shard's waiting
threads are released at once. A real sender function stands in for the Classifier handle (no Ray)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from bigsister_ray.serve.batcher import WindowBatcher


def test_windows_from_many_threads_go_in_fewer_requests_in_order_of_their_callers():
    calls: list[int] = []
    gate = threading.Event()

    def send(stacked):
        gate.wait(10)  # the first request is held, so the other windows queue up behind it
        calls.append(len(stacked))
        return [[float(w.mean()), 1.0 - float(w.mean())] for w in stacked]

    batcher = WindowBatcher(send, max_batch_size=8, wait_s=0.01, senders=1)
    try:
        futures = [batcher.submit(np.full((2, 2), i / 100.0)) for i in range(12)]
        gate.set()
        probs = [f.result(timeout=10) for f in futures]
    finally:
        batcher.close()
    assert [p[0] for p in probs] == pytest.approx([i / 100.0 for i in range(12)])  # each window its own answer
    assert sum(calls) == 12 and len(calls) < 12, calls  # coalesced
    assert max(calls) <= 8


def test_closing_releases_windows_queued_and_in_flight_whatever_the_classifier_does():
    held = threading.Event()
    never = threading.Event()

    def send(stacked):
        held.set()
        never.wait(30)  # a Classifier that never answers
        return [[0.5, 0.5]] * len(stacked)

    batcher = WindowBatcher(send, max_batch_size=2, wait_s=0.01, senders=1)
    in_flight = [batcher.submit(np.zeros((2, 2))) for _ in range(2)]
    assert held.wait(10)  # positive control: the first batch is in the sender's hands
    queued = batcher.submit(np.zeros((2, 2)))
    batcher.close()
    for fut in in_flight + [queued]:
        with pytest.raises(RuntimeError, match="shut down"):
            fut.result(timeout=1)
    never.set()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(np.zeros((2, 2)))
