"""``POST /detect`` gives up decoding an upload after ``serve.upload_decode_timeout_s``: 400 naming the setting.

No Ray: the real ingress app (:func:`bigsister_ray.serve.api.create_api`) with a real SQLite store and the real
route, which decodes a real, valid video written here. The model's description (labels, ClipSpec, batch size)
is given to the ServeContext up front, as the Classifier's ``info()`` would give it; there is no Classifier,
so an upload that got past the decode deadline would fail differently (500), never with this 400.

The deadline is set from the time the same video takes to decode here (a fraction of it), so the test does
not depend on how fast or busy the machine is. A decode slowed to 50 ms a frame shows the deadline stopping
its thread (no frame scaled after it, the thread count back) while ``/readyz`` and ``GET /streams`` answer at
once during it (stand-in Classifier and StreamShard handles that answer ``info``/``health`` at once).
"""

from __future__ import annotations

import tempfile
import time

from fastapi.testclient import TestClient

from bigsister_ray.config import Settings
from bigsister_ray.incidents.store import IncidentStore
from tests._handles import Handles
from tests._media import make_mp4
from tests._serve_support import TINY_SPEC

WRITE = "unit-write-key-0123456789"
#: Every window of the upload in one batch: the first step of the decode loop decodes the whole video.
BATCH = 4096


def _app(tmp_path, decode_timeout_s: float):
    from bigsister_ray.security.auth import Authenticator
    from bigsister_ray.serve.api import create_api
    from bigsister_ray.serve.context import ServeContext

    settings = Settings(auth={"keys": [{"name": "w", "key": WRITE, "scope": "write"}]},
                        database={"url": f"sqlite:///{tmp_path / 'x.db'}"},
                        serve={"upload_decode_timeout_s": decode_timeout_s, "upload_max_seconds": 60.0})
    store = IncidentStore(settings.database.url, busy_timeout_ms=500)
    store.create_tables()
    ctx = ServeContext(settings=settings, store=store, shards=None, classifier=None,
                       authenticator=Authenticator.from_config(settings.auth),
                       model_info={"loaded": True, "labels": ["fight", "normal"], "clip": TINY_SPEC.model_dump(),
                                   "thresholds": {}, "max_batch_size": BATCH})
    return create_api(ctx)


def _decode_seconds(path) -> tuple[float, int]:
    """(fastest of two full decodes, windows): what the route's decode loop does, timed here."""
    from bigsister_ray.serve.detect import iter_window_batches

    best, windows = float("inf"), 0
    for _ in range(2):
        t = time.perf_counter()
        windows = sum(len(b) for b in iter_window_batches(path, TINY_SPEC, BATCH, max_seconds=60.0))
        best = min(best, time.perf_counter() - t)
    return best, windows


def test_an_upload_still_decoding_after_the_timeout_is_a_400_naming_the_setting(tmp_path, monkeypatch):
    video = make_mp4(tmp_path / "long.mp4", frames=300, fps=25.0, size=(640, 480))  # 12 s, valid
    seconds, windows = _decode_seconds(video)
    assert windows > 10, windows  # a real, decodable video with many windows
    timeout = max(seconds / 20, 1e-3)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))  # where the route writes the upload (and Starlette spools)

    with TestClient(_app(tmp_path, timeout), raise_server_exceptions=False) as c:
        r = c.post("/detect", headers={"X-API-Key": WRITE},
                   files={"file": ("long.mp4", video.read_bytes(), "video/mp4")})
    assert r.status_code == 400, (r.status_code, r.text, f"decode takes {seconds:.3f} s, timeout {timeout:.4f} s")
    detail = r.json()["detail"]
    assert "long.mp4" in detail and "upload_decode_timeout_s" in detail and f"{timeout:g} s" in detail, detail
    # the upload's temporary file is gone although its decode thread may still be running
    assert not list(uploads.glob("bigsister-detect-*")), list(uploads.iterdir())


def test_the_timeout_400_is_not_the_decode_error_400(tmp_path):
    """Control: a broken upload is a 400 for being undecodable, and does not mention the decode timeout."""
    video = make_mp4(tmp_path / "cut.mp4", frames=30, fps=10.0)
    data = video.read_bytes()
    with TestClient(_app(tmp_path, 300.0), raise_server_exceptions=False) as c:
        r = c.post("/detect", headers={"X-API-Key": WRITE}, files={"file": ("cut.mp4", data[: len(data) // 3], "video/mp4")})
    assert r.status_code == 400 and "cut.mp4" in r.json()["detail"], r.text
    assert "upload_decode_timeout_s" not in r.json()["detail"], r.text


# ------------------------------------------------------------- a timed-out decode stops; other routes answer


def test_a_timed_out_decode_stops_its_thread_and_other_routes_answer_meanwhile(tmp_path, monkeypatch):
    import threading

    from ray._common.test_utils import wait_for_condition

    import bigsister_ray.video.files as files
    from bigsister_ray.serve.api import create_api
    from bigsister_ray.serve.detect import DECODE_THREAD_PREFIX

    # Every scaled frame takes 50 ms: the upload's 96 sampled frames need about 5 s; the deadline is 1.5 s.
    scaled = []
    real_scale = files.scale_frame

    def slow_scale(*args, **kwargs):
        scaled.append(time.monotonic())
        time.sleep(0.05)
        return real_scale(*args, **kwargs)

    monkeypatch.setattr(files, "scale_frame", slow_scale)
    video = make_mp4(tmp_path / "slow.mp4", frames=300, fps=25.0, size=(64, 48))  # 12 s, 96 sampled frames
    app = _app(tmp_path, 1.5)
    ctx = app.state.ctx
    handles = Handles(ctx.model_info)
    ctx.classifier = ctx.shards = handles
    app = create_api(ctx)

    def decoders():
        return [t for t in threading.enumerate() if t.name.startswith(DECODE_THREAD_PREFIX)]

    def own_threads() -> int:
        """Threads other than the reusable workers of the event loop's and AnyIO's pools (they stay, idle)."""
        return sum(1 for t in threading.enumerate() if not t.name.startswith(("asyncio_", "AnyIO worker")))

    result = {}
    with TestClient(app, raise_server_exceptions=False) as c:
        before = own_threads()

        def upload():
            result["r"] = c.post("/detect", headers={"X-API-Key": WRITE},
                                 files={"file": ("slow.mp4", video.read_bytes(), "video/mp4")})

        poster = threading.Thread(target=upload)
        poster.start()
        wait_for_condition(lambda: len(scaled) >= 2 and decoders(), timeout=10)  # the decode is running
        # meanwhile, readiness and the stream list answer at once, several times over
        for _ in range(3):
            t = time.monotonic()
            ready = c.get("/readyz", headers={"X-API-Key": WRITE})
            streams = c.get("/streams", headers={"X-API-Key": WRITE})
            assert ready.status_code == 200 and streams.status_code == 200, (ready.text, streams.text)
            assert time.monotonic() - t < 1.0, time.monotonic() - t
            assert decoders(), "the decode ended before the checks ran: the test proves nothing"
        poster.join(timeout=30)
        r = result["r"]
        assert r.status_code == 400 and "upload_decode_timeout_s" in r.json()["detail"], r.text
        # the decode thread ends within a frame or two of the deadline, long before the video would be decoded
        wait_for_condition(lambda: not decoders(), timeout=2)
        assert len(scaled) < 96, len(scaled)  # with its thread gone, no frame is scaled any more
        assert own_threads() == before, [t.name for t in threading.enumerate()]
