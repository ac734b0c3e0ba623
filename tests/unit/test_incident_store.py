"""The incidents store on a real SQLite file and, when BIGSISTER_TEST_POSTGRES_URL is set, a real PostgreSQL.

`.ci/run` starts PostgreSQL with `.ci/start_postgres.sh` and exports the URL; without it the PostgreSQL
parameter skips (tests/_postgres.py). Several processes and threads write at once: nothing may be lost or claimed twice.
"""

from __future__ import annotations

import multiprocessing as mp
from datetime import datetime, timedelta, timezone

import pytest

from bigsister_ray.incidents.models import AlertStatus, IncidentCreate, StreamCreate, StreamUpdate
from bigsister_ray.incidents.store import IncidentNotFoundError, IncidentStore, IncidentStoreError, InvalidTransitionError
from tests._postgres import fresh_postgres

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def _fresh(url: str) -> IncidentStore:
    store = IncidentStore(url, busy_timeout_ms=10_000)
    store.create_tables()
    return store


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'incidents.db'}"
    return fresh_postgres("bigsister_store_test")  # a database of its own, created empty for each test


@pytest.fixture
def store(db_url):
    s = _fresh(db_url)
    yield s
    s.dispose()


def make(key: str, *, stream: str = "cam-1", label: str = "fight", peak: float = 0.8, start: float = 10.0,
         started_at: datetime = T0, snapshot: bytes | None = None, timeline=None) -> IncidentCreate:
    return IncidentCreate(
        event_key=key, stream_id=stream, stream_name="Lobby", location="1F", label=label, severity="medium",
        started_at=started_at, start_s=start, end_s=start + 4, peak_score=peak, peak_start_s=start + 1,
        peak_end_s=start + 3, timeline=timeline if timeline is not None else [[start, peak]], snapshot=snapshot,
    )


# ---- streams ------------------------------------------------------------------------------------
def test_streams_add_list_get_update_delete_and_url_redaction(store):
    created = store.add_stream(StreamCreate(name="Gate", url="rtsp://admin:hunter2@10.0.0.5:554/live?token=abc&ch=1",
                                            location="North gate", options={"rules": {"fight": {"k": 2}}}))
    assert "hunter2" not in created.url and "abc" not in created.url and created.url.startswith("rtsp://***@10.0.0.5:554/live")
    assert "hunter2" not in repr(store.list_streams())
    assert store.get_stream_url(created.id) == "rtsp://admin:hunter2@10.0.0.5:554/live?token=abc&ch=1"
    other = store.add_stream(StreamCreate(name="Yard", url="/media/yard.mp4", id="yard"))
    assert other.id == "yard" and other.url == "/media/yard.mp4"
    with pytest.raises(IncidentStoreError, match="already exists"):
        store.add_stream(StreamCreate(name="Yard again", url="/media/y.mp4", id="yard"))
    assert [s.name for s in store.list_streams()] == ["Gate", "Yard"]
    got = store.get_stream(created.id)
    assert got is not None and got.options == {"rules": {"fight": {"k": 2}}} and got.created_at.tzinfo is not None
    upd = store.update_stream(created.id, StreamUpdate(state="live", last_error=None))
    assert upd is not None and upd.state == "live" and upd.name == "Gate"
    assert store.delete_stream(created.id) is True
    assert store.delete_stream(created.id) is False
    assert store.get_stream(created.id) is None and store.get_stream_url(created.id) is None
    assert store.get_stream(created.id, include_deleted=True).deleted_at is not None
    assert [s.id for s in store.list_streams()] == ["yard"]
    assert len(store.list_streams(include_deleted=True)) == 2
    assert store.delete_stream("nope") is False


# ---- incidents ----------------------------------------------------------------------------------
def test_record_event_inserts_then_merges_peak_timeline_snapshot_and_close(store):
    iid = store.record_event(make("k1", peak=0.7, snapshot=b"first"))
    assert store.record_event(make("k1", peak=0.6, timeline=[[10, 0.7], [11, 0.6]])) == iid  # lower peak: kept
    inc = store.get_incident(iid)
    assert inc.peak_score == pytest.approx(0.7) and inc.timeline == [[10.0, 0.7], [11.0, 0.6]]
    assert store.get_snapshot(iid) == b"first"
    store.record_event(make("k1", peak=0.95, snapshot=b"better", timeline=[[10, 0.7], [11, 0.6], [12, 0.95]]))
    assert store.get_snapshot(iid) == b"better" and store.get_incident(iid).peak_score == pytest.approx(0.95)
    assert store.get_incident(iid).alert_status == "pending" and store.get_incident(iid).close_status is None
    store.record_event(make("k1", peak=0.95), closed=True, now=T0 + timedelta(seconds=30))
    inc = store.get_incident(iid)
    assert inc.ended_at == T0 + timedelta(seconds=30) and inc.close_status == "pending"
    assert inc.started_at == T0 and inc.started_at.tzinfo is not None


def test_list_filters_and_pagination(store):
    for i in range(7):
        store.record_event(make(f"a{i}", stream="cam-1" if i % 2 else "cam-2", label="fight" if i < 4 else "assault",
                                started_at=T0 + timedelta(minutes=i)))
    items, total = store.list_incidents()
    assert total == 7 and [i.started_at for i in items] == sorted((i.started_at for i in items), reverse=True)
    assert items[0].timeline is None  # the list view leaves timelines out
    assert store.list_incidents(stream_id="cam-1")[1] == 3
    assert store.list_incidents(label="assault")[1] == 3
    assert store.list_incidents(label="assault", stream_id="cam-2")[1] == 2
    page, total = store.list_incidents(limit=3, offset=3)
    assert total == 7 and len(page) == 3
    all_ids = [i.id for i in store.list_incidents(limit=100)[0]]
    assert [i.id for i in page] == all_ids[3:6]
    assert store.list_incidents(until=T0 + timedelta(minutes=2))[1] == 3
    # open incidents are "still going on", so since keeps them; close two early ones and filter them away
    for i in (0, 1):
        store.record_event(make(f"a{i}", started_at=T0 + timedelta(minutes=i)), closed=True, now=T0 + timedelta(minutes=i, seconds=10))
    assert store.list_incidents(since=T0 + timedelta(minutes=3))[1] == 5
    first = store.list_incidents(label="fight", limit=1)[0][0]
    store.set_status(first.id, "acknowledged")
    assert [i.id for i in store.list_incidents(status="acknowledged")[0]] == [first.id]


def test_status_transitions(store):
    iid = store.record_event(make("t1"))
    assert store.set_status(iid, "acknowledged").status == "acknowledged"
    with pytest.raises(InvalidTransitionError, match="cannot move to 'acknowledged'"):
        store.set_status(iid, "acknowledged")
    assert store.set_status(iid, "resolved").status == "resolved"
    with pytest.raises(InvalidTransitionError, match="allowed from 'resolved': open"):
        store.set_status(iid, "false_alarm")
    with pytest.raises(IncidentNotFoundError):
        store.set_status(12345, "resolved")
    with pytest.raises(ValueError, match="unknown incident status"):
        store.set_status(iid, "closed")
    with pytest.raises(IncidentNotFoundError):
        store.get_snapshot(12345)


def test_claim_is_exclusive_until_the_lease_expires(store):
    iid = store.record_event(make("c1"), now=T0)
    assert store.due("alert", now=T0) == [iid]
    assert store.claim("alert", iid, "A", lease_s=60, now=T0)
    assert not store.claim("alert", iid, "B", lease_s=60, now=T0 + timedelta(seconds=30))
    assert store.due("alert", now=T0 + timedelta(seconds=30)) == []
    # A died: after the lease B may take it; A's late finish no longer counts
    assert store.claim("alert", iid, "B", lease_s=60, now=T0 + timedelta(seconds=61))
    assert not store.finish("alert", iid, "A", status=AlertStatus.sent, ts="1.1")
    assert store.finish("alert", iid, "B", status=AlertStatus.sent, channel="C1", ts="2.2", notifier="slack:#x",
                        now=T0 + timedelta(seconds=62))
    inc = store.get_incident(iid)
    assert (inc.alert_status, inc.slack_ts, inc.alert_attempts) == ("sent", "2.2", 1)
    assert not store.claim("alert", iid, "C", lease_s=60, now=T0 + timedelta(hours=1))  # sent: never again
    assert store.sent_since(T0, "slack:#x") == 1 and store.sent_since(T0, "other") == 0


def test_close_reply_waits_for_the_alert_and_is_skipped_when_it_failed(store):
    a = store.record_event(make("w1"), now=T0)
    store.record_event(make("w1"), closed=True, now=T0)
    assert store.due("close", now=T0) == []  # nothing to reply to yet
    assert store.claim("alert", a, "A", 60, now=T0)
    store.finish("alert", a, "A", status=AlertStatus.sent, ts="1.0")
    assert store.due("close", now=T0 + timedelta(seconds=1)) == [a]
    b = store.record_event(make("w2"), now=T0)
    assert store.claim("alert", b, "A", 60, now=T0)
    store.finish("alert", b, "A", status=AlertStatus.failed, reason="invalid_auth: bad token")
    store.record_event(make("w2"), closed=True, now=T0)
    inc = store.get_incident(b)
    assert inc.close_status == "skipped" and inc.alert_reason.startswith("invalid_auth")
    assert store.delivery_counts() == {"sent": 1, "failed": 1}
    assert store.last_failure() == (b, "invalid_auth: bad token")


def test_bad_urls_are_clear_errors(tmp_path):
    with pytest.raises(IncidentStoreError, match="expected sqlite:// or postgresql://"):
        IncidentStore("mysql://user:pw@host/db")
    with pytest.raises(IncidentStoreError, match="SQLAlchemy URL"):
        IncidentStore("not a url")
    down = IncidentStore("postgresql+psycopg://nobody:secret@127.0.0.1:1/none", busy_timeout_ms=1000)
    assert down.ping() is False
    assert "secret" not in repr(down)
    with pytest.raises(IncidentStoreError) as info:
        down.list_incidents()
    assert "secret" not in str(info.value)


# ---- several writers ------------------------------------------------------------------------------
def _writer(url: str, worker: int, count: int, queue) -> None:
    store = IncidentStore(url, busy_timeout_ms=30_000)
    ids = []
    for i in range(count):
        ids.append(store.record_event(make(f"w{worker}-{i}", stream=f"cam-{worker}")))
        store.record_event(make("shared", peak=0.5 + 0.001 * (worker * count + i)))  # everybody merges into one row
    claimed = [iid for iid in store.due("alert", limit=10_000) if store.claim("alert", iid, f"p{worker}", lease_s=600)]
    queue.put((worker, ids, claimed))
    store.dispose()


def test_several_processes_write_and_claim_without_loss_or_double_claims(db_url):
    store = _fresh(db_url)
    workers, count = 4, 15
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(db_url, w, count, queue)) for w in range(workers)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    items, total = store.list_incidents(limit=1000)
    assert total == workers * count + 1
    own = {i for _, ids, _ in results for i in ids}
    assert len(own) == workers * count  # every process's incidents, each its own row
    shared = [i for i in items if i.id not in own]
    assert len(shared) == 1 and shared[0].peak_score == pytest.approx(0.5 + 0.001 * (workers * count - 1))
    claims = [iid for _, _, claimed in results for iid in claimed]
    assert len(claims) == len(set(claims))  # no alert claimed by two processes
    store.dispose()


def test_end_dangling_ends_only_open_incidents(store):
    a = store.record_event(make("d1", stream="cam-1"), now=T0)
    b = store.record_event(make("d2", stream="cam-2"), now=T0)
    c = store.record_event(make("d3", stream="cam-2"), now=T0)
    store.record_event(make("d3", stream="cam-2"), closed=True, now=T0 + timedelta(seconds=5))
    assert store.claim("alert", b, "A", 60, now=T0)
    store.finish("alert", b, "A", status=AlertStatus.failed, reason="invalid_auth: x")
    assert store.end_dangling(stream_id="cam-1", now=T0 + timedelta(minutes=1)) == [a]
    assert sorted(store.end_dangling(now=T0 + timedelta(minutes=2))) == [b]
    assert store.get_incident(a).ended_at == T0 and store.get_incident(a).close_status == "pending"
    assert store.get_incident(b).close_status == "skipped"
    assert store.get_incident(c).ended_at == T0 + timedelta(seconds=5)


def test_end_dangling_keeps_the_incidents_a_moved_stream_carries_on(store):
    kept = store.record_event(make("m1", stream="cam-1"), now=T0)
    ended = store.record_event(make("m2", stream="cam-1"), now=T0)
    assert store.end_dangling(stream_id="cam-1", now=T0 + timedelta(minutes=1), keep_keys=["m1", "elsewhere"]) == [ended]
    assert store.get_incident(kept).ended_at is None and store.get_incident(kept).close_status is None
    assert store.end_dangling(stream_id="cam-1", now=T0 + timedelta(minutes=2)) == [kept]


# ---- the outbox: many senders ---------------------------------------------------------------------
def test_claim_due_leases_disjoint_batches_and_reports_interrupted_senders(store):
    ids = [store.record_event(make(f"b{i}"), now=T0) for i in range(5)]
    first = store.claim_due("alert", "A", lease_s=60, limit=2, now=T0)
    assert list(first) == ids[:2] and set(first.values()) == {None}
    second = store.claim_due("alert", "B", lease_s=60, limit=10, now=T0)
    assert list(second) == ids[2:]
    assert store.claim_due("alert", "C", lease_s=60, now=T0 + timedelta(seconds=30)) == {}
    assert store.claim_due("close", "C", lease_s=60, now=T0) == {}  # nothing closed yet
    assert store.finish("alert", ids[0], "A", status=AlertStatus.sent, ts="1.0")
    assert store.unclaim("alert", ids[1], "A", now=T0 + timedelta(seconds=1))  # handed back unsent
    assert not store.unclaim("alert", ids[2], "A")  # not A's
    # A's lease on ids[1] was handed back; B died holding the rest: after expiry C gets them, told B held them
    taken = store.claim_due("alert", "C", lease_s=60, now=T0 + timedelta(seconds=61))
    assert taken == {ids[1]: None, ids[2]: "B", ids[3]: "B", ids[4]: "B"}
    assert store.lease_holder("alert", ids[3]) == "C"
    assert store.claim_due("alert", "D", lease_s=60, limit=0, now=T0) == {}
