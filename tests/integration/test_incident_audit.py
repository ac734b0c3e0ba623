"""Operator actions and their audit trail, on a real SQLite file and a real PostgreSQL; the HTTP routes on the
real Ingress app (FastAPI TestClient) record the calling key's name and the note."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from bigsister_ray.config import Settings
from bigsister_ray.incidents.models import IncidentCreate
from bigsister_ray.incidents.store import IncidentNotFoundError, IncidentStore, InvalidTransitionError
from tests._handles import ingress_app
from tests._postgres import fresh_postgres

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
WRITE = "audit-write-key-0123456789"
READ = "audit-read-key-0123456789"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.db'}" if request.param == "sqlite" else fresh_postgres("bigsister_audit_test")
    s = IncidentStore(url, busy_timeout_ms=10_000)
    s.upgrade()
    yield s
    s.dispose()


def add(store: IncidentStore, key: str) -> int:
    return store.record_event(IncidentCreate(
        event_key=key, stream_id="cam-1", stream_name="Lobby", label="fight", severity="medium", started_at=T0,
        start_s=1.0, end_s=5.0, peak_score=0.9, peak_start_s=2.0, peak_end_s=4.0, timeline=[[1.0, 0.9]]), now=T0)


def test_an_action_moves_the_status_and_writes_one_audit_row_in_the_same_transaction(store):
    iid = add(store, "a")
    assert store.audit_trail(iid) == []
    acked = store.act(iid, "ack", actor="console:alice", note="on my way", now=T0 + timedelta(minutes=1))
    assert acked.status == "acknowledged" and acked.status_changed_at == T0 + timedelta(minutes=1)
    done = store.act(iid, "resolve", actor="slack:U123 (bob)", now=T0 + timedelta(minutes=5))
    assert done.status == "resolved"
    trail = store.audit_trail(iid)
    assert [(a.action, a.from_status, a.to_status, a.actor, a.note, a.at) for a in trail] == [
        ("ack", "open", "acknowledged", "console:alice", "on my way", T0 + timedelta(minutes=1)),
        ("resolve", "acknowledged", "resolved", "slack:U123 (bob)", None, T0 + timedelta(minutes=5)),
    ]


def test_a_refused_action_changes_nothing_and_leaves_no_audit_row(store):
    iid = add(store, "b")
    store.act(iid, "false_alarm", actor="w", now=T0)
    with pytest.raises(InvalidTransitionError):
        store.act(iid, "ack", actor="w", note="too late")
    assert store.get_incident(iid).status == "false_alarm"
    assert [a.action for a in store.audit_trail(iid)] == ["false_alarm"]
    with pytest.raises(IncidentNotFoundError):
        store.act(iid + 100, "ack", actor="w")
    with pytest.raises(IncidentNotFoundError):
        store.audit_trail(iid + 100)
    with pytest.raises(ValueError, match="unknown incident action 'close'"):
        store.act(iid, "close", actor="w")
    with pytest.raises(ValueError, match="actor"):
        store.act(add(store, "c"), "ack", actor="  ")


def test_two_operators_acking_at_once_one_wins_and_the_trail_says_who(store):
    import threading

    iid = add(store, "race")
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def operator(name: str) -> None:
        barrier.wait(10)
        try:
            store.act(iid, "ack", actor=name)
            outcomes.append("ok")
        except InvalidTransitionError:
            outcomes.append("refused")

    threads = [threading.Thread(target=operator, args=(f"op{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["ok", "refused", "refused", "refused"]
    trail = store.audit_trail(iid)
    assert len(trail) == 1 and trail[0].actor.startswith("op")


@pytest.fixture
def client(tmp_path):
    settings = Settings(auth={"keys": [{"name": "night-desk", "key": WRITE, "scope": "write"},
                                       {"name": "viewer", "key": READ, "scope": "read"}]},
                        database={"url": f"sqlite:///{tmp_path / 'api.db'}"})
    app = ingress_app(settings)
    with TestClient(app) as c:
        yield c, app.state.ctx.store


def test_the_routes_record_the_calling_key_and_the_note(client):
    c, store = client
    first, second, third = add(store, "h1"), add(store, "h2"), add(store, "h3")
    w, r = {"X-API-Key": WRITE}, {"X-API-Key": READ}
    res = c.post(f"/incidents/{first}/ack", json={"note": "guard sent"}, headers=w)
    assert res.status_code == 200 and res.json()["status"] == "acknowledged"
    assert c.post(f"/incidents/{second}/false-alarm", headers=w).status_code == 200  # no body: no note
    assert c.post(f"/incidents/{third}/resolve", json={}, headers={"Authorization": f"Bearer {WRITE}"}).status_code == 200
    assert c.post(f"/incidents/{first}/ack", headers=r).status_code == 403  # a read key cannot act
    trail = c.get(f"/incidents/{first}/audit", headers=r)
    assert trail.status_code == 200
    assert [(a["action"], a["actor"], a["note"]) for a in trail.json()["items"]] == [("ack", "night-desk", "guard sent")]
    assert c.get(f"/incidents/{second}/audit", headers=r).json()["items"][0]["note"] is None
    assert c.get(f"/incidents/{third}/audit", headers=r).json()["items"][0]["action"] == "resolve"
    assert c.post(f"/incidents/{first}/ack", json={"note": "again"}, headers=w).status_code == 409
    assert len(c.get(f"/incidents/{first}/audit", headers=r).json()["items"]) == 1
    assert c.get("/incidents/999/audit", headers=r).status_code == 404
    bad = c.post(f"/incidents/{first}/resolve", json={"note": "x", "by": "someone else"}, headers=w)
    assert bad.status_code == 422  # the actor comes from the key, never from the body
    assert c.post(f"/incidents/{first}/resolve", json={"note": "x" * 2001}, headers=w).status_code == 422
    assert store.get_incident(first).status == "acknowledged"


def test_a_verdict_taken_back_is_reviewed_again_and_leaves_the_verdicts(store):
    iid = add(store, "mistake")
    store.act(iid, "false_alarm", actor="slack:U1 (ana)", now=T0)
    assert [inc.id for inc, _ in store.verdicts()] == [iid]
    with pytest.raises(InvalidTransitionError):
        store.act(add(store, "still-open"), "reopen", actor="w")  # only a verdict can be taken back
    again = store.act(iid, "reopen", actor="console:bob", note="that was a fight", now=T0 + timedelta(minutes=2))
    assert again.status == "open" and again.status_changed_at == T0 + timedelta(minutes=2)
    assert store.verdicts() == []  # export-feedback no longer writes it as "normal"
    assert store.act(iid, "ack", actor="console:bob").status == "acknowledged"
    assert [(a.action, a.from_status, a.to_status, a.actor) for a in store.audit_trail(iid)] == [
        ("false_alarm", "open", "false_alarm", "slack:U1 (ana)"),
        ("reopen", "false_alarm", "open", "console:bob"),
        ("ack", "open", "acknowledged", "console:bob"),
    ]
