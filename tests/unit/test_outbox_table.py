"""The delivery outbox as its own table (one row per incident and kind), on a real SQLite file and a real
PostgreSQL: an evidence clip queued with ``enqueue_delivery`` waits for its alert, is uploaded into the alert's
thread on a local server speaking the Slack Web API, once, and is skipped when the alert failed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bigsister_ray.alerts.slack import SlackNotifier
from bigsister_ray.config import Settings
from bigsister_ray.incidents.models import AlertStatus, IncidentCreate
from bigsister_ray.incidents.service import IncidentService
from bigsister_ray.incidents.store import IncidentNotFoundError, IncidentStore
from tests._media import make_mp4
from tests._postgres import fresh_postgres
from tests._slack_server import FakeSlack

T0 = datetime(2026, 7, 1, 22, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'outbox.db'}" if request.param == "sqlite" else fresh_postgres("bigsister_outbox_test")
    s = IncidentStore(url, busy_timeout_ms=10_000)
    s.upgrade()
    yield s
    s.dispose()


@pytest.fixture
def slack():
    fake = FakeSlack().start()
    yield fake
    fake.stop()


def add(store: IncidentStore, key: str) -> int:
    return store.record_event(IncidentCreate(
        event_key=key, stream_id="cam-1", stream_name="Lobby", label="fight", severity="high", started_at=T0,
        start_s=1.0, end_s=5.0, peak_score=0.9, peak_start_s=2.0, peak_end_s=4.0, timeline=[[1.0, 0.9]]), now=T0)


def test_a_clip_delivery_waits_for_its_alert_then_goes_into_the_thread_once(store, slack, tmp_path):
    media = tmp_path / "media"
    settings = Settings(serve={"public_url": "https://cctv.example.org/"}, incidents={"media_dir": str(media)},
                        alerts={"notifier": "slack", "alert_file": None, "slack": {
                            "token": slack.token, "channel": "#incidents", "base_url": slack.base_url,
                            "max_retries": 0, "timeout_s": 2}})
    svc = IncidentService(store, SlackNotifier.from_settings(settings), settings, clock=lambda: T0)
    iid = add(store, "a")
    (media / "a").mkdir(parents=True)
    make_mp4(media / "a" / "clip.mp4", frames=12)
    store.set_clip(iid, "a/clip.mp4")
    assert store.enqueue_delivery(iid, "clip", now=T0) == "pending"
    assert store.due("clip", now=T0) == [] and store.due("alert", now=T0) == [iid]  # the thread does not exist yet
    assert svc.sweep_once() == 2  # the alert, then the clip into its thread
    top = slack.top_level_messages()
    assert len(top) == 1 and store.slack_ref(iid) == (top[0]["channel"], top[0]["ts"])
    files = slack.files_in_thread(top[0]["ts"])
    assert [f["data"] for f in files].count((media / "a" / "clip.mp4").read_bytes()) == 1
    assert store.delivery("clip", iid).status == "sent"
    assert store.enqueue_delivery(iid, "clip", now=T0) == "sent"  # queued again: nothing changes, nothing resent
    assert svc.sweep_once() == 0 and len(slack.files_in_thread(top[0]["ts"])) == len(files)
    assert store.sent_since(T0 - timedelta(seconds=1)) == 2
    with pytest.raises(IncidentNotFoundError):
        store.enqueue_delivery(iid + 100, "clip")
    with pytest.raises(ValueError, match="delivery kind"):
        store.enqueue_delivery(iid, "fax")


def test_replies_to_a_failed_alert_are_skipped_and_a_claim_is_exclusive(store):
    iid = add(store, "b")
    store.enqueue_delivery(iid, "clip", now=T0)
    assert store.claim_due("alert", "one", 60, now=T0) == {iid: None}
    assert store.claim_due("alert", "two", 60, now=T0) == {}  # leased: nobody else gets it
    assert store.finish("alert", iid, "one", status=AlertStatus.failed, reason="invalid_auth", now=T0)
    assert store.delivery("clip", iid).status == "skipped"
    assert store.record_event(IncidentCreate(
        event_key="b", stream_id="cam-1", stream_name="Lobby", label="fight", severity="high", started_at=T0,
        start_s=1.0, end_s=6.0, peak_score=0.9, peak_start_s=2.0, peak_end_s=4.0), closed=True, now=T0) == iid
    inc = store.get_incident(iid)
    assert (inc.alert_status, inc.close_status) == ("failed", "skipped") and "nothing to reply to" in inc.close_reason
    assert store.last_failure() == (iid, "invalid_auth") and store.delivery_counts() == {"failed": 1}
    assert store.slack_ref(iid) is None
