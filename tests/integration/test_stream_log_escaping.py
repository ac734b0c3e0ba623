"""A stream's id and URL reach the log escaped: a hostile id cannot forge log lines (a real StreamRunner replaying a
file).
"""

from __future__ import annotations

import logging
import threading


def test_stream_ids_and_urls_are_logged_escaped(tmp_path, caplog):
    from bigsister_ray.clip import ClipSpec
    from bigsister_ray.config import StreamsConfig
    from bigsister_ray.video.stream import StreamRunner
    from tests._stream_server import make_video

    make_video(tmp_path / "v.mp4", frames=4)
    ended = threading.Event()
    hostile = "gate\n2026-01-01 INFO forged \x1b[31mred"
    runner = StreamRunner(hostile, "v.mp4", ClipSpec(size=32), StreamsConfig(media_root=tmp_path), lambda *a: None,
                          realtime=False, on_end=lambda _sid: ended.set())
    with caplog.at_level(logging.INFO, logger="bigsister_ray.video.stream"):
        runner.start()
        try:
            assert ended.wait(30), "the file replay did not end"
        finally:
            runner.stop(10)
    lines = [r.getMessage() for r in caplog.records if r.filename == "stream.py"]
    assert "stream gate\\n2026-01-01 INFO forged \\x1b[31mred: started v.mp4 (file)" in lines
    assert "stream gate\\n2026-01-01 INFO forged \\x1b[31mred: file finished" in lines
    assert not [line for line in lines if "\x1b" in line or "\n" in line]
