"""Evidence clips: the frames around an incident's peak, cut from a stream's recent frames, written as an H.264
MP4 (decoded back here with PyAV), fenced by the stream's lease, and served by GET /incidents/{id}/clip with
Range requests. Real SQLite, real files, the real Ingress app (in-process, stand-in handles)."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timezone

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from bigsister_ray.config import Settings
from bigsister_ray.incidents.leases import LeaseStore
from bigsister_ray.incidents.models import IncidentCreate, StreamCreate
from bigsister_ray.incidents.store import IncidentStore
from bigsister_ray.serve.evidence import EvidenceRecorder, clip_relpath, latest_frame_relpath
from bigsister_ray.video.evidence import ClipCapture, FrameRing
from tests._handles import ingress_app
from tests._serve_support import READ_KEY, TINY_SPEC, WRITE_KEY, wait_for

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)
FPS = TINY_SPEC.fps  # 8 frames a second, 32 x 32


def frame_value(i: int) -> int:
    """The grey level of frame ``i`` (distinct, far apart, within H.264's limited range)."""
    return 20 + 6 * (i % 35)


def chunk(first: int, n: int) -> tuple[np.ndarray, list[float]]:
    """Frames ``first .. first+n-1``: uniform grey ``frame_value(i)``, at ``i / FPS`` stream seconds."""
    frames = np.stack([np.full((TINY_SPEC.size, TINY_SPEC.size, 3), frame_value(i), np.uint8) for i in range(first, first + n)])
    return frames, [i / FPS for i in range(first, first + n)]


def decoded_values(path) -> list[int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        return [int(round(f.to_ndarray(format="rgb24").mean())) for f in container.decode(stream)]


def frames_in(values: list[int]) -> list[int]:
    """Which frame index each decoded grey level is (nearest ``frame_value``)."""
    table = {i: frame_value(i) for i in range(35)}
    return [min(table, key=lambda i: abs(table[i] - v)) for v in values]


@pytest.fixture
def settings(tmp_path):
    return Settings(database={"url": f"sqlite:///{tmp_path / 'incidents.db'}"},
                    incidents={"media_dir": str(tmp_path / "media"), "clip_before_s": 1.0, "clip_after_s": 1.5},
                    auth={"keys": [{"name": "ops", "key": WRITE_KEY, "scope": "write"},
                                   {"name": "viewer", "key": READ_KEY, "scope": "read"}]},
                    serve={"streams": {"max_buffer_windows": 2, "watchdog_s": 2.0}})


@pytest.fixture
def store(settings):
    s = IncidentStore(settings.database.url)
    s.create_tables()
    yield s
    s.dispose()


def open_incident(store: IncidentStore, fence, peak: tuple[float, float]) -> int:
    data = IncidentCreate(event_key=f"cam-1:fight:{peak[0]}", stream_id="cam-1", stream_name="Lobby", label="fight",
                          severity="medium", started_at=T0, start_s=peak[0], end_s=peak[1], peak_score=0.9,
                          peak_start_s=peak[0], peak_end_s=peak[1])
    return store.record_event(data, fence=fence)


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def leased(store):
    store.add_stream(StreamCreate(id="cam-1", url="file:///x.mp4", name="Lobby"))
    leases = LeaseStore(store)
    return leases, leases.claim("cam-1", "shard-a", "node-1", ttl_s=60)


def recorder(settings, store, clock, written: list[int] | None = None) -> EvidenceRecorder:
    """The recorder a shard builds from ``settings``, on a clock the test moves."""
    rec = EvidenceRecorder.from_settings(settings, store, TINY_SPEC, on_written=written.append if written is not None else None)
    rec.clock = clock
    return rec


# ---- the ring and the capture -------------------------------------------------------------------------
def test_ring_keeps_only_its_seconds_and_its_bytes():
    ring = FrameRing(keep_s=1.0)
    for first in range(0, 40, 5):
        ring.push(*chunk(first, 5))
    assert len(ring) == 9 and ring.since(0.0)[0][0] == pytest.approx(39 / FPS - 1.0)  # 1 s behind the newest, inclusive
    capped = FrameRing(keep_s=100.0, max_bytes=3 * 32 * 32 * 3)
    capped.push(*chunk(0, 10))
    assert len(capped) == 3 and capped.nbytes == 3 * 32 * 32 * 3


def test_capture_takes_its_span_once_and_is_complete_at_its_end():
    cap = ClipCapture(incident_id=1, stream_id="s", start_s=1.0, end_s=2.0, deadline=0.0)
    frames, stamps = chunk(0, 12)  # 0 .. 1.375 s
    cap.add(list(zip(stamps, frames)))
    cap.add(list(zip(stamps, frames)))  # the same frames again are not taken twice
    assert len(cap.frames) == 4 and not cap.complete  # 1.0, 1.125, 1.25, 1.375
    frames, stamps = chunk(12, 8)  # 1.5 .. 2.375 s
    cap.add(list(zip(stamps, frames)))
    assert cap.complete and len(cap.frames) == 9  # 1.0 .. 2.0 at 8 fps


# ---- the recorder: frames around the peak, written as MP4 ------------------------------------------------
def test_clip_holds_the_frames_around_the_peak_and_is_served_with_range(settings, store, leased):
    _, fence = leased
    written: list[int] = []
    rec = recorder(settings, store, Clock(), written)
    for first in range(0, 24, 4):  # 0 .. 2.875 s decoded before the incident opens
        rec.push("cam-1", *chunk(first, 4))
    iid = open_incident(store, fence, peak=(2.0, 2.5))  # clip: 1.0 s .. 4.0 s
    rec.start(fence, iid, 2.0, 2.5)
    assert written == [] and store.get_clip_path(iid) is None  # nothing until the span is in
    for first in range(24, 40, 4):  # 3.0 .. 4.875 s
        rec.push("cam-1", *chunk(first, 4))
    rec.wait(30)
    assert written == [iid]
    rel = store.get_clip_path(iid)
    assert rel == clip_relpath(iid)
    path = settings.incidents.media_dir / rel
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    got = frames_in(decoded_values(path))
    assert got == list(range(8, 33)), got  # frames 8 .. 32: 1.0 s before the peak's start to 1.5 s after its end
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "faststart: the index comes before the media data"

    client = TestClient(ingress_app(settings))
    url = f"/incidents/{iid}/clip"
    assert client.get(url).status_code == 401  # read key like every /incidents route
    full = client.get(url, headers={"X-API-Key": READ_KEY})
    assert full.status_code == 200 and full.headers["content-type"] == "video/mp4" and full.content == data
    assert full.headers["accept-ranges"] == "bytes"
    part = client.get(url, headers={"X-API-Key": READ_KEY, "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(url, headers={"X-API-Key": READ_KEY, "Range": f"bytes={len(data) - 10}-"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    assert client.get(url, headers={"X-API-Key": READ_KEY, "Range": f"bytes={len(data) + 5}-"}).status_code == 416
    other = open_incident(store, fence, peak=(9.0, 9.5))
    assert client.get(f"/incidents/{other}/clip", headers={"X-API-Key": READ_KEY}).status_code == 404
    assert client.get("/incidents/999/clip", headers={"X-API-Key": READ_KEY}).status_code == 404
    assert store.get_incident(iid).has_clip and not store.get_incident(other).has_clip


def test_a_camera_that_drops_mid_clip_still_gets_what_it_has(settings, store, leased):
    _, fence = leased
    clock = Clock()
    rec = recorder(settings, store, clock)
    for first in range(0, 24, 4):
        rec.push("cam-1", *chunk(first, 4))
    iid = open_incident(store, fence, peak=(2.0, 2.5))
    rec.start(fence, iid, 2.0, 2.5)
    rec.push("cam-1", *chunk(24, 3))  # up to 3.25 s, then the camera goes quiet
    rec.flush_due()
    rec.wait(30)
    assert store.get_clip_path(iid) is None  # not due yet: the camera may come back
    clock.t += 3.0 + 2.0 + 0.1  # the clip's span plus the grace
    rec.flush_due()
    rec.wait(30)
    path = settings.incidents.media_dir / store.get_clip_path(iid)
    assert frames_in(decoded_values(path)) == list(range(8, 27))


def test_a_clip_after_the_lease_was_lost_is_not_recorded(settings, store, leased):
    leases, fence = leased
    rec = recorder(settings, store, Clock())
    for first in range(0, 24, 4):
        rec.push("cam-1", *chunk(first, 4))
    iid = open_incident(store, fence, peak=(2.0, 2.5))
    rec.start(fence, iid, 2.0, 2.5)
    assert leases.release(fence)
    assert leases.claim("cam-1", "shard-b", "node-2", ttl_s=60) is not None  # another shard took the stream
    rec.finish("cam-1")  # the stream stops here: written with what it has, then fenced out
    rec.wait(30)
    assert store.get_clip_path(iid) is None
    assert not (settings.incidents.media_dir / clip_relpath(iid)).exists()
    assert list((settings.incidents.media_dir / str(iid)).iterdir()) == []  # no temporary file left either


def test_the_ring_memory_per_camera_is_bounded(settings, store):
    rec = recorder(settings, store, Clock())
    for first in range(0, 400, 8):
        rec.push("cam-1", *chunk(first, 8))
    per_frame = TINY_SPEC.size * TINY_SPEC.size * 3
    assert rec.memory_bytes() <= (rec.keep_s * FPS + 1) * per_frame
    assert rec.keep_s == pytest.approx(1.0 + TINY_SPEC.duration_s + 2 * TINY_SPEC.stride_s)


def test_writing_runs_off_the_decoding_thread(settings, store, leased):
    import threading

    _, fence = leased
    seen: list[str] = []
    rec = recorder(settings, store, Clock())
    real = rec._write

    def spy(capture):
        seen.append(threading.current_thread().name)
        return real(capture)

    rec._write = spy
    for first in range(0, 24, 4):
        rec.push("cam-1", *chunk(first, 4))
    iid = open_incident(store, fence, peak=(2.0, 2.5))
    rec.start(fence, iid, 2.0, 2.5)
    for first in range(24, 40, 4):
        rec.push("cam-1", *chunk(first, 4))
    wait_for(lambda: store.get_clip_path(iid), 30, 0.05, "the clip to be recorded")
    assert seen and all(name.startswith("evidence-clips") for name in seen)
    assert threading.current_thread().name not in seen


# ---- each camera's newest frame, for the console's camera grid ----------------------------------------------
def picture_value(path) -> float:
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "JPEG" and im.size == (TINY_SPEC.size, TINY_SPEC.size)
        return float(np.asarray(im.convert("RGB")).mean())


def test_each_camera_gets_its_newest_frame_served_to_readers_until_it_is_deleted(settings, store, leased):
    rec = recorder(settings, store, Clock())
    assert rec.write_latest_frames() == 0  # no frame yet
    rec.push("cam-1", *chunk(0, 4))
    assert rec.write_latest_frames() == 1
    rec.wait(30)
    path = settings.incidents.media_dir / latest_frame_relpath("cam-1")
    assert picture_value(path) == pytest.approx(frame_value(3), abs=2)  # the newest of the chunk
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert rec.write_latest_frames() == 0  # nothing newer: nothing rewritten
    rec.push("cam-1", *chunk(4, 4))
    assert rec.write_latest_frames() == 1
    rec.wait(30)
    assert picture_value(path) == pytest.approx(frame_value(7), abs=2)
    assert list(path.parent.iterdir()) == [path]  # replaced in place, no temporary file left

    client = TestClient(ingress_app(settings))
    assert client.get("/streams/cam-1/frame").status_code == 401  # a read key, like GET /streams
    got = client.get("/streams/cam-1/frame", headers={"X-API-Key": READ_KEY})
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg" and got.content == path.read_bytes()
    store.add_stream(StreamCreate(id="cam-2", url="file:///y.mp4", name="Yard"))
    none_yet = client.get("/streams/cam-2/frame", headers={"X-API-Key": READ_KEY})
    assert none_yet.status_code == 404 and "no frame yet" in none_yet.text
    assert client.get("/streams/nope/frame", headers={"X-API-Key": READ_KEY}).status_code == 404

    rec.finish("cam-1")  # the stream stopped here: its last picture stays, and nothing is written for it
    rec.push("cam-2", *chunk(0, 2))
    assert rec.write_latest_frames() == 1
    rec.wait(30)
    assert path.is_file() and client.get("/streams/cam-1/frame", headers={"X-API-Key": READ_KEY}).status_code == 200
    assert client.delete("/streams/cam-1", headers={"X-API-Key": WRITE_KEY}).status_code == 204
    assert not path.exists() and client.get("/streams/cam-1/frame", headers={"X-API-Key": READ_KEY}).status_code == 404
    assert (settings.incidents.media_dir / latest_frame_relpath("cam-2")).is_file()


def test_no_picture_is_kept_when_latest_frames_are_off(settings, store):
    off = settings.model_copy(update={"serve": settings.serve.model_copy(update={
        "streams": settings.serve.streams.model_copy(update={"latest_frame": False})})})
    rec = recorder(off, store, Clock())
    rec.push("cam-1", *chunk(0, 4))
    assert rec.write_latest_frames() == 0
    rec.wait(30)
    assert not (settings.incidents.media_dir / "cameras").exists()


@pytest.mark.parametrize("stream_id", ["cam-1", "../../etc/passwd", "a/b", "..", "caméra 7"])
def test_any_stream_id_names_a_picture_inside_the_cameras_folder(stream_id):
    rel = latest_frame_relpath(stream_id)
    folder, name = rel.split("/")
    assert folder == "cameras" and name.endswith(".jpg") and name[:-4].isalnum()
    assert rel != latest_frame_relpath(stream_id + "x")


def test_a_file_that_ends_between_lease_rounds_still_leaves_its_last_frame(settings, store):
    rec = recorder(settings, store, Clock())
    rec.push("cam-1", *chunk(0, 5))  # the whole file, decoded before any lease round
    rec.finish("cam-1", last_picture=True)
    rec.wait(30)
    path = settings.incidents.media_dir / latest_frame_relpath("cam-1")
    assert picture_value(path) == pytest.approx(frame_value(4), abs=2)
    rec.push("cam-2", *chunk(0, 5))
    rec.finish("cam-2")  # stopped (moved, disabled or deleted): no picture written for it now
    rec.wait(30)
    assert not (settings.incidents.media_dir / latest_frame_relpath("cam-2")).exists()
