"""The incidents HTTP API on an app built with a temporary SQLite database (FastAPI TestClient)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bigsister_ray.incidents.api import make_incidents_router
from bigsister_ray.incidents.models import IncidentCreate
from bigsister_ray.incidents.store import IncidentStore

T0 = datetime(2026, 2, 1, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path):
    s = IncidentStore(f"sqlite:///{tmp_path / 'api.db'}")
    s.create_tables()
    yield s
    s.dispose()


@pytest.fixture
def client(store):
    app = FastAPI()
    app.include_router(make_incidents_router(lambda: store))
    with TestClient(app) as c:
        yield c


def add(store, key, *, stream="cam-1", label="fight", minutes=0, snapshot=None, closed=False):
    data = IncidentCreate(event_key=key, stream_id=stream, stream_name="Lobby", label=label, severity="medium",
                          started_at=T0 + timedelta(minutes=minutes), start_s=5, end_s=9, peak_score=0.9,
                          peak_start_s=6, peak_end_s=8, timeline=[[5, 0.7], [6, 0.9], [7, 0.8]], snapshot=snapshot)
    return store.record_event(data, closed=closed, now=T0 + timedelta(minutes=minutes, seconds=30))


def test_list_filters_and_pages(client, store):
    for i in range(5):
        add(store, f"k{i}", stream="cam-1" if i < 3 else "cam-2", label="fight" if i % 2 else "assault", minutes=i, closed=i < 2)
    body = client.get("/incidents").json()
    assert body["total"] == 5 and body["limit"] == 50 and len(body["items"]) == 5
    assert [x["started_at"] for x in body["items"]] == sorted((x["started_at"] for x in body["items"]), reverse=True)
    assert body["items"][0]["timeline"] is None
    assert client.get("/incidents", params={"stream_id": "cam-2"}).json()["total"] == 2
    assert client.get("/incidents", params={"label": "fight"}).json()["total"] == 2
    page = client.get("/incidents", params={"limit": 2, "offset": 2}).json()
    assert page["total"] == 5 and len(page["items"]) == 2 and page["offset"] == 2
    since = (T0 + timedelta(minutes=2)).isoformat()
    assert client.get("/incidents", params={"since": since}).json()["total"] == 3  # the two closed early are out
    assert client.get("/incidents", params={"until": (T0 + timedelta(minutes=1)).isoformat()}).json()["total"] == 2
    assert client.get("/incidents", params={"status": "open"}).json()["total"] == 5
    assert client.get("/incidents", params={"status": "bogus"}).status_code == 422
    assert client.get("/incidents", params={"limit": 0}).status_code == 422
    bad = client.get("/incidents", params={"since": since, "until": T0.isoformat()})
    assert bad.status_code == 422 and "must be <=" in bad.json()["detail"]


def test_detail_has_the_timeline_and_snapshot_is_jpeg(client, store):
    iid = add(store, "s1", snapshot=b"\xff\xd8\xff\xe0fake-jpeg")
    other = add(store, "s2")
    detail = client.get(f"/incidents/{iid}").json()
    assert detail["timeline"] == [[5.0, 0.7], [6.0, 0.9], [7.0, 0.8]]
    assert detail["has_snapshot"] is True and detail["alert_status"] == "pending" and detail["status"] == "open"
    assert "snapshot" not in detail and "event_key" not in detail
    snap = client.get(f"/incidents/{iid}/snapshot")
    assert snap.status_code == 200 and snap.headers["content-type"] == "image/jpeg" and snap.content.startswith(b"\xff\xd8")
    assert client.get(f"/incidents/{other}/snapshot").status_code == 404
    assert client.get("/incidents/999/snapshot").status_code == 404
    assert client.get("/incidents/999").status_code == 404


@pytest.mark.parametrize(
    "steps",
    [
        [("ack", 200, "acknowledged"), ("ack", 409, None), ("resolve", 200, "resolved"), ("false-alarm", 409, None)],
        [("false-alarm", 200, "false_alarm"), ("ack", 409, None), ("resolve", 409, None)],
        [("ack", 200, "acknowledged"), ("false-alarm", 200, "false_alarm")],
        [("resolve", 200, "resolved"), ("ack", 409, None)],
        [("reopen", 409, None), ("false-alarm", 200, "false_alarm"), ("reopen", 200, "open"), ("reopen", 409, None),
         ("ack", 200, "acknowledged"), ("reopen", 409, None), ("resolve", 200, "resolved"), ("reopen", 200, "open")],
    ],
)
def test_only_valid_transitions(client, store, steps):
    iid = add(store, "t1")
    for action, code, status in steps:
        r = client.post(f"/incidents/{iid}/{action}")
        assert r.status_code == code, (action, r.json())
        if code == 200:
            assert r.json()["status"] == status and r.json()["status_changed_at"] is not None
        else:
            assert "cannot move" in r.json()["detail"]
    assert client.post("/incidents/4242/ack").status_code == 404


def test_store_outage_is_503(tmp_path):
    down = IncidentStore("postgresql+psycopg://nobody@127.0.0.1:1/none", busy_timeout_ms=1000)
    app = FastAPI()
    app.include_router(make_incidents_router(lambda: down))
    with TestClient(app) as c:
        r = c.get("/incidents")
    assert r.status_code == 503 and "incident store unavailable" in r.json()["detail"]


@pytest.mark.parametrize("method, url", [
    ("GET", "/incidents?offset=99999999999999999999999"),
    ("GET", "/incidents?since=9999-12-31T23:59:59-23:00"),
    ("GET", "/incidents/99999999999999999999999"),
    ("GET", "/incidents/99999999999999999999999/snapshot"),
    ("POST", "/incidents/99999999999999999999999/ack"),
    ("GET", "/incidents/0"),
])
def test_out_of_range_ids_offsets_and_times_are_422_not_a_crash(client, method, url):
    """Found by fuzzing the running app's schema: integers past BIGINT and times past year 9999 in UTC."""
    r = client.request(method, url)
    assert r.status_code == 422, (url, r.status_code, r.text)
