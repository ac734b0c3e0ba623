"""Stream leases with fencing tokens and shard heartbeats, on a real SQLite file and a real PostgreSQL.

Time is the injected ``now``; concurrent claimers are real threads released together by a barrier.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest

from bigsister_ray.alerts.notifiers import ConsoleNotifier
from bigsister_ray.alerts.rules import IncidentEvent
from bigsister_ray.config import Settings
from bigsister_ray.incidents.leases import Fence, LeaseStore, StaleLeaseError
from bigsister_ray.incidents.models import IncidentCreate, StreamCreate
from bigsister_ray.incidents.service import IncidentService
from bigsister_ray.incidents.store import IncidentStore, IncidentStoreError
from tests._postgres import fresh_postgres

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
TTL = 30.0


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'leases.db'}" if request.param == "sqlite" else fresh_postgres("bigsister_leases_test")
    s = IncidentStore(url, busy_timeout_ms=10_000)
    s.create_tables()
    yield s
    s.dispose()


@pytest.fixture
def leases(store):
    return LeaseStore(store)


def cams(store, *ids: str) -> None:
    for i in ids:
        store.add_stream(StreamCreate(name=f"Camera {i}", url=f"/media/{i}.mp4", id=i))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def incident(key: str, stream: str = "cam-1") -> IncidentCreate:
    return IncidentCreate(event_key=key, stream_id=stream, stream_name="Lobby", label="fight", severity="medium",
                          started_at=T0, start_s=1.0, end_s=5.0, peak_score=0.9, peak_start_s=2.0, peak_end_s=4.0,
                          timeline=[[1.0, 0.9]])


# ---- claim, renew, release ----------------------------------------------------------------------
def test_claim_renew_expire_takeover_and_release_keep_the_token_growing(leases, store):
    cams(store, "cam-1")
    a = leases.claim("cam-1", "shard-a", "node-1", TTL, now=at(0))
    assert a == Fence("cam-1", "shard-a", 1)
    assert leases.claim("cam-1", "shard-b", "node-2", TTL, now=at(10)) is None  # held
    assert leases.claim("cam-1", "shard-a", "node-1", TTL, now=at(10)) == a  # the owner again: same token, extended
    assert leases.lease("cam-1").expires_at == at(40)
    assert leases.renew("shard-a", [a], TTL, now=at(35)) == {"cam-1"}
    assert leases.lease("cam-1").expires_at == at(65)
    assert leases.claim("cam-1", "shard-b", "node-2", TTL, now=at(65)) is None  # expires_at == now: not expired yet
    b = leases.claim("cam-1", "shard-b", "node-2", TTL, now=at(66))  # A stopped renewing: B takes over
    assert b == Fence("cam-1", "shard-b", 2)
    assert leases.renew("shard-a", [a], TTL, now=at(67)) == set()  # A learns it lost the stream
    assert not leases.release(a, state={"from": "a"}, now=at(67))
    assert leases.held_by("shard-a") == [] and leases.held_by("shard-b") == [b]
    view = leases.lease("cam-1")
    assert (view.owner, view.node_id, view.token, view.expires_at) == ("shard-b", "node-2", 2, at(96))
    assert leases.release(b, state={"resume_s": 12.5, "rules": {"fight": [0.9]}}, now=at(70))
    view = leases.lease("cam-1")
    assert (view.owner, view.node_id, view.token, view.expires_at) == (None, None, 2, None)
    assert leases.load_state("cam-1") == {"resume_s": 12.5, "rules": {"fight": [0.9]}}
    assert leases.claim("cam-1", "shard-a", "node-1", TTL, now=at(71)) == Fence("cam-1", "shard-a", 3)
    assert leases.load_state("cam-1") == {"resume_s": 12.5, "rules": {"fight": [0.9]}}  # the new owner resumes from it


def test_an_expired_lease_reclaimed_by_its_own_owner_gets_a_new_token(leases, store):
    cams(store, "cam-1")
    first = leases.claim("cam-1", "shard-a", "node-1", TTL, now=at(0))
    again = leases.claim("cam-1", "shard-a", "node-1", TTL, now=at(31))
    assert (first.token, again.token) == (1, 2)
    with pytest.raises(StaleLeaseError):  # a write still in flight from before the gap is refused
        leases.save_state(first, {"x": 1}, now=at(32))


def test_renew_extends_only_what_the_owner_still_holds_in_one_call(leases, store):
    cams(store, "cam-1", "cam-2", "cam-3", "cam-4")
    f1, f2, f3 = (leases.claim(c, "shard-a", "node-1", TTL, now=at(0)) for c in ("cam-1", "cam-2", "cam-3"))
    f4 = leases.claim("cam-4", "shard-b", "node-2", TTL, now=at(0))
    assert leases.release(f2, now=at(5))
    store.delete_stream("cam-3", now=at(6))
    stale = Fence("cam-1", "shard-a", f1.token + 7)
    assert leases.renew("shard-a", [f1, f2, f3, f4, stale], TTL, now=at(10)) == {"cam-1"}
    assert leases.lease("cam-1").expires_at == at(40) and leases.lease("cam-4").expires_at == at(30)
    assert leases.renew("shard-a", [], TTL, now=at(10)) == set()
    with pytest.raises(ValueError, match="ttl_s: expected a number of seconds > 0, got 0"):
        leases.renew("shard-a", [f1], 0, now=at(10))


def test_claimable_lists_free_and_expired_streams_oldest_first(leases, store):
    cams(store, "c", "a", "b", "d", "e")  # registration order, not id order
    assert leases.claimable(10, now=at(0)) == ["c", "a", "b", "d", "e"]
    leases.claim("a", "shard-a", "node-1", TTL, now=at(0))
    fb = leases.claim("b", "shard-a", "node-1", 5, now=at(0))  # expires at 5
    leases.release(leases.claim("d", "shard-a", "node-1", TTL, now=at(0)), now=at(1))
    store.delete_stream("e")
    assert leases.claimable(10, now=at(5)) == ["c", "d"]
    assert leases.claimable(10, now=at(6)) == ["c", "b", "d"]
    assert leases.claimable(2, now=at(6)) == ["c", "b"]
    assert fb.token == 1


def test_unknown_and_deleted_streams_cannot_be_claimed_and_deleting_frees_the_lease(leases, store):
    cams(store, "cam-1", "cam-2")
    assert leases.claim("nope", "shard-a", "node-1", TTL, now=at(0)) is None
    fence = leases.claim("cam-1", "shard-a", "node-1", TTL, now=at(0))
    leases.save_state(fence, {"resume_s": 3.0}, now=at(1))
    assert store.delete_stream("cam-1", now=at(2))
    view = leases.lease("cam-1")
    assert (view.owner, view.expires_at, view.token) == (None, None, 1)  # freed at once, token kept
    assert leases.load_state("cam-1") == {"resume_s": 3.0}
    assert leases.renew("shard-a", [fence], TTL, now=at(3)) == set()
    with pytest.raises(StaleLeaseError, match="the lease is free"):
        store.record_event(incident("k1"), now=at(3), fence=fence)
    assert leases.claim("cam-1", "shard-b", "node-2", TTL, now=at(4)) is None
    assert store.delete_stream("cam-2", now=at(5)) and leases.lease("cam-2") is None  # never leased: nothing to free
    assert [v.stream_id for v in leases.leases()] == ["cam-1"]


def test_save_state_refuses_stale_and_expired_fences(leases, store):
    cams(store, "cam-1")
    a = leases.claim("cam-1", "shard-a", "node-1", TTL, now=at(0))
    leases.save_state(a, {"n": 1}, now=at(30))  # expires_at == now: still held
    with pytest.raises(StaleLeaseError, match=r"expired at .*stop working on this stream") as info:
        leases.save_state(a, {"n": 2}, now=at(31))
    assert isinstance(info.value, IncidentStoreError)
    b = leases.claim("cam-1", "shard-b", "node-2", TTL, now=at(31))
    with pytest.raises(StaleLeaseError, match="shard 'shard-b' holds it with token 2"):
        leases.save_state(a, {"n": 3}, now=at(32))
    with pytest.raises(StaleLeaseError, match="has no lease"):
        leases.save_state(Fence("cam-9", "shard-a", 1), {"n": 4}, now=at(32))
    leases.save_state(b, {"n": 5}, now=at(32))
    assert leases.load_state("cam-1") == {"n": 5} and leases.load_state("cam-9") is None


# ---- exactly one winner -------------------------------------------------------------------------


# ---- fenced incident writes ---------------------------------------------------------------------
def test_a_fenced_write_with_a_stale_token_is_refused_and_leaves_no_row(leases, store):
    cams(store, "cam-1")
    a = leases.claim("cam-1", "shard-a", "node-1", TTL, now=at(0))
    iid = store.record_event(incident("k1"), now=at(1), fence=a)
    assert store.get_incident(iid).stream_id == "cam-1"
    b = leases.claim("cam-1", "shard-b", "node-2", TTL, now=at(31))
    with pytest.raises(StaleLeaseError, match="shard 'shard-b' holds it with token 2"):
        store.record_event(incident("k2"), now=at(32), fence=a)
    with pytest.raises(StaleLeaseError):  # a merge into an existing incident is refused too
        store.record_event(incident("k1"), closed=True, now=at(32), fence=a)
    assert store.list_incidents()[1] == 1 and store.get_incident(iid).ended_at is None
    assert store.record_event(incident("k1"), closed=True, now=at(33), fence=b) == iid
    assert store.get_incident(iid).ended_at is not None
    with pytest.raises(StaleLeaseError, match="expired"):
        store.record_event(incident("k3"), now=at(70), fence=b)
    with pytest.raises(ValueError, match="expected a fence for stream 'cam-2', got one for 'cam-1'"):
        store.record_event(incident("k4", stream="cam-2"), now=at(33), fence=b)
    assert store.list_incidents()[1] == 1


def test_the_service_passes_the_fence_and_a_stale_one_propagates_without_an_alert(leases, store):
    cams(store, "cam-1")
    out = io.StringIO()
    settings = Settings(alerts={"notifier": "console"})
    svc = IncidentService(store, ConsoleNotifier(stream=out), settings, clock=lambda: at(40))
    a = leases.claim("cam-1", "shard-a", "node-1", TTL, now=at(0))
    b = leases.claim("cam-1", "shard-b", "node-2", TTL, now=at(31))
    event = IncidentEvent(kind="opened", stream_id="cam-1", label="fight", severity="high", start_s=1.0, end_s=5.0,
                          peak_score=0.9, peak_start_s=2.0, peak_end_s=4.0, at=at(40), started_at=at(36),
                          timeline=[(1.0, 0.9)], key="cam-1:fight:1")
    with pytest.raises(StaleLeaseError):
        svc.handle(event, stream_name="Lobby", fence=a)
    assert store.list_incidents()[1] == 0 and out.getvalue() == ""
    assert svc.health()["database"]["ok"] is True  # losing a stream is not a database outage
    iid = svc.handle(event, stream_name="Lobby", fence=b)
    assert store.get_incident(iid).alert_status == "sent" and f'"incident_id": {iid}' in out.getvalue()


# ---- shards -------------------------------------------------------------------------------------
def test_heartbeats_live_shards_and_removal(leases):
    leases.heartbeat("shard-a", "node-1", capacity=8, load=0, now=at(0))
    leases.heartbeat("shard-b", "node-2", capacity=4, load=1, now=at(5))
    leases.heartbeat("shard-a", "node-1", capacity=8, load=3, now=at(10))
    live = leases.live_shards(10, now=at(15))
    assert [(s.shard_id, s.load, s.heartbeat_at, s.started_at) for s in live] == [
        ("shard-a", 3, at(10), at(0)), ("shard-b", 1, at(5), at(5))]
    assert [s.shard_id for s in leases.live_shards(10, now=at(16))] == ["shard-a"]
    leases.remove_shard("shard-a")
    assert [s.shard_id for s in leases.live_shards(100, now=at(16))] == ["shard-b"]
    with pytest.raises(ValueError, match="expected capacity >= 0 and load >= 0, got 4 and -1"):
        leases.heartbeat("shard-b", "node-2", capacity=4, load=-1, now=at(17))


def test_public_surface():
    import importlib
    import subprocess
    import sys

    import bigsister_ray.incidents as pkg
    from bigsister_ray.incidents import errors, fencing, leases, migrate, models, outbox, store

    assert leases.__all__ == ["LeaseStore", "Fence", "StaleLeaseError"]
    assert {"StreamLease", "StreamLeasePublic", "ShardRecord", "ShardRecordPublic"} <= set(models.__all__)
    assert {"StaleLeaseError", "MigrationError"} <= set(store.__all__) and store.StaleLeaseError is errors.StaleLeaseError
    assert {"IncidentStore", "LeaseStore", "Fence", "StaleLeaseError", "IncidentStoreError", "StreamLease",
            "ShardRecord", "IncidentService"} <= set(pkg.__all__)
    for name in pkg.__all__:
        assert getattr(pkg, name) is getattr(importlib.import_module(f"bigsister_ray.incidents.{pkg._EXPORTS[name]}"), name)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        pkg.nothing  # noqa: B018
    assert pkg.Fence is fencing.Fence is leases.Fence and pkg.StaleLeaseError is leases.StaleLeaseError
    assert issubclass(pkg.StaleLeaseError, pkg.IncidentStoreError)
    assert outbox.__all__ == ["DeliveryKind", "DeliveryOutbox", "DELIVERY_KINDS", "REPLIES"] and issubclass(store.IncidentStore, outbox.DeliveryOutbox)
    assert {"upgrade", "current_revision", "head_revision", "target_metadata"} <= set(migrate.__all__)
    for mod in (errors, fencing, leases, migrate, outbox):
        for name in mod.__all__:
            assert hasattr(mod, name), (mod.__name__, name)
    # importing the package alone imports none of its modules
    code = "import sys, bigsister_ray.incidents; print(sorted(m for m in sys.modules if m.startswith('bigsister_ray.incidents.')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
