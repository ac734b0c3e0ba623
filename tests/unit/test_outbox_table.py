"""The delivery outbox as its own table (one row per incident and kind), on a real SQLite file and a real
PostgreSQL: an evidence clip queued with ``enqueue_delivery`` waits for its alert, is uploaded into the alert's
thread on a local server speaking the Slack Web API, once, and is skipped when the alert failed."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from bigsister_ray.incidents.models import AlertStatus, IncidentCreate
from bigsister_ray.incidents.store import IncidentStore
from tests._postgres import fresh_postgres

T0 = datetime(2026, 7, 1, 22, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'outbox.db'}" if request.param == "sqlite" else fresh_postgres("bigsister_outbox_test")
    s = IncidentStore(url, busy_timeout_ms=10_000)
    s.upgrade()
    yield s
    s.dispose()


def add(store: IncidentStore, key: str) -> int:
    return store.record_event(IncidentCreate(
        event_key=key, stream_id="cam-1", stream_name="Lobby", label="fight", severity="high", started_at=T0,
        start_s=1.0, end_s=5.0, peak_score=0.9, peak_start_s=2.0, peak_end_s=4.0, timeline=[[1.0, 0.9]]), now=T0)


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
