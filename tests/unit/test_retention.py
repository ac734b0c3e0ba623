"""Media retention with an injected clock, on a real SQLite file and a real PostgreSQL and real clip files:
old incidents lose their snapshot and clip, the rows stay; recent ones keep theirs; the service's sweeper runs
it on its own clock every ``incidents.retention_sweep_interval_s``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bigsister_ray.alerts.notifiers import ConsoleNotifier
from bigsister_ray.config import Settings
from bigsister_ray.incidents.models import AlertStatus, IncidentCreate
from bigsister_ray.incidents.retention import media_file, sweep_media
from bigsister_ray.incidents.service import IncidentService
from bigsister_ray.incidents.store import IncidentStore
from tests._media import make_mp4
from tests._postgres import fresh_postgres

T0 = datetime(2026, 4, 1, 12, 0, tzinfo=timezone.utc)
JPEG = b"\xff\xd8\xff\xe0jpeg"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'retention.db'}" if request.param == "sqlite" else fresh_postgres("bigsister_retention_test")
    s = IncidentStore(url, busy_timeout_ms=10_000)
    s.upgrade()
    yield s
    s.dispose()


def incident(store: IncidentStore, media: Path, key: str, started: datetime, *, alert: AlertStatus = AlertStatus.sent) -> int:
    iid = store.record_event(IncidentCreate(
        event_key=key, stream_id="cam-1", stream_name="Lobby", label="fight", severity="high", started_at=started,
        start_s=1.0, end_s=5.0, peak_score=0.9, peak_start_s=2.0, peak_end_s=4.0, timeline=[[1.0, 0.9]],
        snapshot=JPEG), now=started)
    rel = f"{iid}/clip.mp4"
    (media / rel).parent.mkdir(parents=True, exist_ok=True)
    make_mp4(media / rel, frames=10)
    store.set_clip(iid, rel)
    if alert is not AlertStatus.pending:
        assert store.claim("alert", iid, "test", 60, now=started)
        assert store.finish("alert", iid, "test", status=alert, now=started)
    return iid


def test_old_media_goes_the_rows_stay_and_recent_media_is_kept(store, tmp_path):
    media = tmp_path / "media"
    old = incident(store, media, "old", T0)
    failed = incident(store, media, "failed", T0 + timedelta(days=1), alert=AlertStatus.failed)
    waiting = incident(store, media, "waiting", T0 + timedelta(days=2), alert=AlertStatus.pending)
    recent = incident(store, media, "recent", T0 + timedelta(days=25))
    assert (media / f"{old}/clip.mp4").stat().st_size > 0
    now = T0 + timedelta(days=31)
    report = sweep_media(store, media, 30, now=now)
    assert report.cutoff == T0 + timedelta(days=1)
    assert report.incidents == [old] and report.files_removed == 1 and report.errors == []
    gone = store.get_incident(old)
    assert gone is not None and gone.status == "open" and gone.peak_score == 0.9  # the row stays
    assert (gone.has_snapshot, gone.has_clip) == (False, False)
    assert store.get_snapshot(old) is None and store.get_clip_path(old) is None
    assert not (media / f"{old}/clip.mp4").exists() and not (media / str(old)).exists()
    for kept in (failed, recent):  # the positive control: the same sweep left these alone
        assert store.get_snapshot(kept) == JPEG and (media / store.get_clip_path(kept)).is_file()

    later = sweep_media(store, media, 30, now=T0 + timedelta(days=40))
    assert later.incidents == [failed]  # a delivered (or failed) alert's media goes; a pending one waits
    assert store.get_snapshot(waiting) == JPEG and (media / f"{waiting}/clip.mp4").is_file()
    assert store.get_snapshot(recent) == JPEG
    assert sweep_media(store, media, 30, now=T0 + timedelta(days=40)).incidents == []  # nothing left to do


def test_zero_or_none_keeps_everything_and_a_missing_file_is_not_an_error(store, tmp_path):
    media = tmp_path / "media"
    iid = incident(store, media, "a", T0)
    for days in (0, None):
        assert sweep_media(store, media, days, now=T0 + timedelta(days=3650)).incidents == []
    assert store.get_snapshot(iid) == JPEG
    (media / f"{iid}/clip.mp4").unlink()
    report = sweep_media(store, media, 1, now=T0 + timedelta(days=2))
    assert report.incidents == [iid] and report.errors == [] and store.get_clip_path(iid) is None


def test_clip_paths_stay_inside_the_media_folder(store, tmp_path):
    iid = incident(store, tmp_path / "media", "a", T0)
    for bad in ("/etc/passwd", "../outside.mp4", "a/../../b.mp4", ""):
        with pytest.raises(ValueError, match="relative to incidents.media_dir"):
            store.set_clip(iid, bad)
    assert store.get_clip_path(iid) == f"{iid}/clip.mp4"
    (tmp_path / "media" / "link").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="leaves incidents.media_dir"):
        media_file(tmp_path / "media", "link/retention.db")
    store.set_clip(iid, None)
    assert store.get_incident(iid).has_clip is False


def test_the_service_sweeps_media_on_its_clock_every_interval(tmp_path):
    store = IncidentStore(f"sqlite:///{tmp_path / 'svc.db'}")
    store.upgrade()
    media = tmp_path / "media"
    settings = Settings(incidents={"media_dir": str(media), "media_retention_days": 7, "retention_sweep_interval_s": 600})
    clock = [T0 + timedelta(days=7, seconds=-100)]
    svc = IncidentService(store, ConsoleNotifier(None), settings, clock=lambda: clock[0])
    first = incident(store, media, "first", T0)
    assert svc.sweep_media_if_due().incidents == []  # 100 s short of 7 days: nothing to remove yet
    clock[0] += timedelta(seconds=200)
    assert svc.sweep_media_if_due() is None  # now old enough, but the interval has not passed on this clock
    assert store.get_snapshot(first) == JPEG
    clock[0] += timedelta(seconds=400)
    assert svc.sweep_media_if_due().incidents == [first]
    assert not (media / f"{first}/clip.mp4").exists() and store.get_incident(first) is not None
    store.dispose()


def test_a_clip_is_recorded_only_under_the_writers_current_lease(store, tmp_path):
    from bigsister_ray.incidents.leases import LeaseStore
    from bigsister_ray.incidents.models import StreamCreate
    from bigsister_ray.incidents.store import StaleLeaseError

    store.add_stream(StreamCreate(id="cam-1", name="Lobby", url="rtsp://cam/1"))
    leases = LeaseStore(store)
    old = leases.claim("cam-1", "shard-a", "node-1", 30, now=T0)
    iid = incident(store, tmp_path / "media", "a", T0)
    store.set_clip(iid, "a/first.mp4", fence=old, now=T0)
    assert store.get_clip_path(iid) == "a/first.mp4"
    assert leases.release(old, now=T0) and leases.claim("cam-1", "shard-b", "node-2", 30, now=T0) is not None
    with pytest.raises(StaleLeaseError):
        store.set_clip(iid, "a/second.mp4", fence=old, now=T0)
    assert store.get_clip_path(iid) == "a/first.mp4"
