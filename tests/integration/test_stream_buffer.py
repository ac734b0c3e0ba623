"""The buffered file source: a producer thread waits for the consumer instead of dropping frames, and closing releases
it.
"""

from __future__ import annotations

import threading

from bigsister_ray.video.stream import FrameBuffer

from tests.unit.test_sources import _f  # noqa: F401 (shared fixtures)


def test_buffer_file_waits_instead_of_dropping():
    buf = FrameBuffer(3, drop_oldest=False)
    got: list[float] = []

    waiting = threading.Event()

    def full() -> bool:  # asked by a put that waits for room
        if len(buf) == buf.capacity:
            waiting.set()
        return False

    def producer():
        for i in range(12):
            assert buf.put(_f(i), float(i), cancelled=full)
        buf.end()

    t = threading.Thread(target=producer)
    t.start()
    assert waiting.wait(10), "the producer never waited for room"
    assert len(buf) == 3 and t.is_alive() and buf.dropped == 0  # blocked, not dropping
    while True:
        chunk = buf.get_chunk(2, max_wait_s=0.05)
        if not chunk:
            break
        got += [ts for _, ts in chunk]
    t.join(2)
    assert got == [float(i) for i in range(12)] and buf.dropped == 0 and buf.done


def test_buffer_close_releases_a_blocked_producer():
    buf = FrameBuffer(1, drop_oldest=False)
    assert buf.put(_f(0), 0.0)
    result: list[bool] = []
    waiting = threading.Event()

    def blocked() -> bool:  # asked by the put while it waits for room
        waiting.set()
        return False

    t = threading.Thread(target=lambda: result.append(buf.put(_f(1), 1.0, cancelled=blocked)))
    t.start()
    assert waiting.wait(10), "the producer never waited for room"
    buf.close()
    t.join(2)
    assert result == [False] and not t.is_alive() and buf.get_chunk(4, 0.01) == []
