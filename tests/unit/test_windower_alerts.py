"""The Windower hands scored windows to the AlertManager in one request per round trip, in each stream's order.

In this process: the Windower's and the AlertManager's classes (Ray Serve's real ``@serve.batch`` on the
Windower's way to the Classifier), a stand-in for the Classifier's handle whose fight probability is the window's
mean brightness, and the real AlertManager (its rule engine, memory sink) behind a handle stand-in that takes
50 ms per request, as a round trip between replicas would.
"""

from __future__ import annotations

import asyncio

import numpy as np

from tests._serve_support import TINY_SPEC, make_checkpoint

ROUND_TRIP_S = 0.05
STREAMS = 8
PUSHES = 6


class _Method:
    def __init__(self, fn) -> None:
        self._fn = fn

    def remote(self, *args):
        return self._fn(*args)


class _ClassifierHandle:
    def __init__(self) -> None:
        async def classify_many(windows: np.ndarray) -> list[list[float]]:
            fight = windows.reshape(len(windows), -1).mean(axis=1) / 255.0
            return [[float(p), float(1 - p)] for p in fight]

        self.classify_many = _Method(classify_many)


class _AlertManagerHandle:
    """The real AlertManager behind a stand-in handle; records every request."""

    def __init__(self, am) -> None:
        self.am = am
        self.requests: list[list[tuple[str, list[float]]]] = []

        async def observe_many(batch):
            self.requests.append([(sid, [w["start_s"] for w in ws]) for sid, ws in batch])
            await asyncio.sleep(ROUND_TRIP_S)
            return await am.observe_many(batch)

        self.observe_many = _Method(observe_many)


def test_scored_windows_reach_the_alert_manager_batched_in_order_and_one_failing_stream_stops_none(monkeypatch, tmp_path):
    from ray.serve import batching

    from bigsister_ray.config import Settings
    from bigsister_ray.serve.alert_manager import AlertManager
    from bigsister_ray.serve.windower import Windower

    monkeypatch.setattr(batching._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None)
    queue = Windower.func_or_class._coalesce.set_max_batch_size.__self__  # Serve's process-wide lazy queue
    saved = (queue._queue, queue.max_batch_size, queue.batch_wait_timeout_s)
    try:
        ckpt = str(make_checkpoint(tmp_path / "ckpt"))
        settings = Settings(alerts={"alert_file": None, "notifier": "console"})
        am = AlertManager.func_or_class(settings, ckpt, use_incidents=False)
        real_update = am.engine.update

        def update(stream_id, ws, overrides=None):
            if stream_id == "s-bad":
                raise RuntimeError("rule engine broke on this stream")
            return real_update(stream_id, ws, overrides)

        am.engine.update = update
        am_handle = _AlertManagerHandle(am)
        windower = Windower.func_or_class(ckpt, _ClassifierHandle(), am_handle, max_batch_size=4)
        ids = [f"s{i}" for i in range(STREAMS)] + ["s-bad"]
        counters = asyncio.run(_push_all(windower, ids))
    finally:
        queue._queue, queue.max_batch_size, queue.batch_wait_timeout_s = saved

    s = TINY_SPEC
    per_stream = PUSHES  # the first push completes one window, every later one (stride frames) one more
    assert all(c["windows_classified"] == per_stream for c in counters.values()), counters
    entries = [e for req in am_handle.requests for e in req]
    assert sum(len(starts) for _, starts in entries) == per_stream * len(ids), "every scored window was sent once"
    # batched: one request per round trip for all streams, not one per window
    assert len(am_handle.requests) <= len(entries) / 3, [len(r) for r in am_handle.requests]
    assert max(len(r) for r in am_handle.requests) >= STREAMS // 2
    # each stream's windows arrived in order
    for sid in ids:
        starts = [t for stream, ts in entries if stream == sid for t in ts]
        assert starts == [k * s.stride / s.fps for k in range(per_stream)], (sid, starts)
    # the rules ran: bright (fight) streams opened an incident, dark ones none; the broken stream stopped no other
    opened = {e["stream_id"] for e in am.memory.events if e["kind"] == "opened"}
    assert opened == {f"s{i}" for i in range(0, STREAMS, 2)}, opened


async def _push_all(windower, ids: list[str]) -> dict[str, dict]:
    s = TINY_SPEC

    async def stream(i: int, sid: str) -> dict:
        level = 250 if (sid != "s-bad" and i % 2 == 0) else 10
        frames = np.full((s.frames, s.size, s.size, 3), level, np.uint8)
        out = await windower.push(sid, frames, [k / s.fps for k in range(s.frames)], None)
        for p in range(1, PUSHES):
            chunk = np.full((s.stride, s.size, s.size, 3), level, np.uint8)
            t0 = s.frames + (p - 1) * s.stride
            out = await windower.push(sid, chunk, [(t0 + k) / s.fps for k in range(s.stride)], None)
        return out

    results = await asyncio.gather(*(stream(i, sid) for i, sid in enumerate(ids)))
    return dict(zip(ids, results))
