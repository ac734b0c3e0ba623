"""PostgreSQL down for a while under the running app: a StreamShard's incident events wait, readiness degrades,
nothing is lost or written twice, every alert goes out once.

The serving app runs on the session's local Ray with its database on a REAL PostgreSQL. A camera of
tests/_stream_server.py (a grey ramp repeating every 40 frames = 5 s) is watched with the grey-ramp checkpoint
(:func:`tests._serve_support.ramp_checkpoint`) under k=1/n=1/close_after=1 rules, so the shard opens and closes one
incident every ramp period, at known stream times. The PostgreSQL server itself is stopped
(``.ci/start_postgres.sh stop``: ``pg_ctl stop -m fast``, open connections cut) just after a lease round, while
the camera keeps playing, and started again: the outage is shorter than the shard's own lease deadline
(0.75 x ``lease_ttl_s``), so the shard keeps the stream and writes the waiting events with its next chunk.

Runs only on the throwaway cluster that ``.ci/start_postgres.sh`` starts: needs both
``BIGSISTER_TEST_POSTGRES_URL`` and ``BIGSISTER_TEST_POSTGRES_DIR`` (which that script prints and ``.ci/run``
exports), and skips otherwise. The server is always started again (``finally``), so PostgreSQL tests after this one
find it up. The test works in its own database, dropped at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests._serve_support import TINY_SPEC, WRITE_KEY, ramp_checkpoint, serve_settings, start_app, wait_for
from tests._stream_server import StreamServer

REPO = Path(__file__).resolve().parents[2]
# tests/conftest.py clears BIGSISTER_* per test: read what the CI shell exported at collection time
PG_URL = os.environ.get("BIGSISTER_TEST_POSTGRES_URL")
PG_DIR = os.environ.get("BIGSISTER_TEST_POSTGRES_DIR")
DB_NAME = "bigsister_outage_test"
APP = "db-outage-pg"
LEASE_TTL_S = 15.0
RAMP_PERIOD_S = 40 / TINY_SPEC.fps

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(
        not (PG_URL and PG_DIR),
        reason="needs BIGSISTER_TEST_POSTGRES_URL and BIGSISTER_TEST_POSTGRES_DIR (eval \"$(bash .ci/start_postgres.sh)\"): "
               "the test stops and restarts that throwaway server"),
]


def _pg(action: str) -> None:
    """Start or stop the test cluster with the script that CI starts it with (same data directory and port)."""
    port = make_url(PG_URL).port or 5432
    subprocess.run(["bash", str(REPO / ".ci" / "start_postgres.sh"), action], check=True, timeout=120,
                   env={**os.environ, "PGTEST_DIR": PG_DIR, "PGTEST_PORT": str(port)}, stdout=subprocess.DEVNULL)


def _admin(sql: str) -> None:
    engine = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


@pytest.fixture
def pg_db():
    """A database of its own on the test server; the server is running again after the test, whatever happens."""
    _pg("start")
    _admin(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    _admin(f"CREATE DATABASE {DB_NAME}")
    try:
        yield make_url(PG_URL).set(drivername="postgresql+psycopg", database=DB_NAME).render_as_string(hide_password=False)
    finally:
        _pg("start")
        _admin(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


def _query(url: str, sql: str, **params) -> list[dict]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def _incidents(url: str, sid: str) -> list[dict]:
    return _query(url, "SELECT id, event_key, started_at, ended_at, start_s, peak_score FROM incident "
                       "WHERE stream_id = :sid ORDER BY id", sid=sid)


def _lease(url: str, sid: str):
    rows = _query(url, "SELECT expires_at, token FROM stream_leases WHERE stream_id = :sid", sid=sid)
    return (rows[0]["expires_at"], rows[0]["token"]) if rows else None


def test_postgres_down_for_a_while_events_wait_in_the_shard_readiness_degrades_and_nothing_is_lost(tmp_path, pg_db, ray_session):
    from ray import serve

    ckpt = ramp_checkpoint(tmp_path / "ckpt", threshold=0.5)
    settings = serve_settings(tmp_path, ckpt, shards={"lease_ttl_s": LEASE_TTL_S})
    settings.database.url = pg_db
    alert_file = Path(settings.alerts.alert_file)
    al = settings.alerts
    al.sweep_interval_s, al.retry_backoff_initial_s, al.retry_backoff_max_s, al.lease_s = 0.3, 0.3, 1.0, 5.0
    al.max_messages_per_minute = 1000
    al.default.k, al.default.n, al.default.close_after, al.default.cooldown_s = 1, 1, 1, 0.0
    base = start_app(settings, APP)
    shard = serve.get_deployment_handle("StreamShard", app_name=APP)

    def delivered(events: tuple[str, ...] = ("incident", "incident_closed")) -> list[tuple[str, int]]:
        """The alerts and close replies the console notifier wrote (evidence clips: ``events=("incident_clip",)``)."""
        if not alert_file.exists():
            return []
        return [(d["event"], d["incident_id"]) for d in map(json.loads, alert_file.read_text().splitlines())
                if d["event"] in events]

    def closed() -> list[dict]:
        return [r for r in _incidents(pg_db, sid) if r["ended_at"] is not None]

    with httpx.Client(base_url=base, headers={"X-API-Key": WRITE_KEY}, timeout=60) as c, \
            StreamServer(fps=TINY_SPEC.fps, size=(64, 48)) as cam:
        try:
            r = c.post("/streams", json={"url": cam.url("/live.ts"), "name": "outage cam", "realtime": True})
            assert r.status_code == 201, r.text
            sid = r.json()["id"]
            # up: incidents written at once, alerts go out, readiness has no complaint
            wait_for(lambda: len(closed()) >= 1, 90, 0.5, "an incident of the camera written and closed")
            wait_for(lambda: c.get("/readyz").status_code == 200, 30, 0.5, "the app to be ready")
            assert shard.health.remote().result()["buffer"]["buffered"] == 0
            before = len(_incidents(pg_db, sid))

            # stop PostgreSQL just after a lease round: the shard's own deadline is 0.75 x TTL (11 s) away
            renewed = _lease(pg_db, sid)
            wait_for(lambda: _lease(pg_db, sid) != renewed, 2 * LEASE_TTL_S, 0.05, "a lease round")
            token = renewed[1]
            _pg("stop")
            try:
                health = wait_for(lambda: (h := shard.health.remote().result())["buffer"]["buffered"] >= 1 and h,
                                  8, 0.2, "incident events to wait in the shard while PostgreSQL is down")
                assert health["ok"] is False and health["database"]["ok"] is False, health
                r = c.get("/readyz")
                assert r.status_code == 503 and r.json()["database"] is False, r.text
                assert "waiting in a stream shard" in r.json()["detail"]["database"], r.json()
                sent_during = len(delivered())
            finally:
                _pg("start")
            wait_for(lambda: shard.health.remote().result()["buffer"]["buffered"] == 0, 30, 0.2,
                     "the waiting events to be written once PostgreSQL answers (with the stream's next chunk)")
            wait_for(lambda: c.get("/readyz").status_code == 200, 30, 0.5, "readiness to come back")
            wait_for(lambda: len(closed()) >= before + 2, 60, 0.5, "incidents after the outage written as usual")
            assert _lease(pg_db, sid)[1] == token  # the outage was shorter than the lease: the stream did not move
            assert sid in shard.info.remote().result()["streams"]
        finally:
            c.delete(f"/streams/{sid}") if "sid" in locals() else None
        wait_for(lambda: sid not in shard.info.remote().result()["streams"]
                 and sid not in shard.stream_threads.remote().result(), 30, 0.5, "the shard to stop the deleted stream")

    rows = _incidents(pg_db, sid)
    assert len({r["event_key"] for r in rows}) == len(rows), rows  # none written twice
    assert all(r["ended_at"] is not None for r in rows), rows  # closed, or ended by the delete
    starts = sorted(r["start_s"] for r in rows)
    assert all(abs((b - a) - RAMP_PERIOD_S) < 0.3 for a, b in zip(starts, starts[1:])), starts  # no period lost

    # persist first, notify second: every alert and every close reply goes out once
    ids = sorted(r["id"] for r in rows)
    want = sorted([("incident", i) for i in ids] + [("incident_closed", i) for i in ids])
    wait_for(lambda: sorted(set(delivered())) == want, 60, 0.3, "every alert and close reply to be delivered")
    health = wait_for(lambda: (h := shard.health.remote().result())["alerts"]["pending"] == 0 and h, 30, 0.5,
                      "the outbox to be empty")
    assert health["alerts"]["failed"] == 0, health
    assert sent_during <= len(delivered())
    assert sorted(delivered()) == want, delivered()  # each exactly once
    clips = delivered(("incident_clip",))
    assert len(clips) == len(set(clips)) and {i for _, i in clips} <= set(ids), clips  # a clip goes once, if at all
    serve.delete(APP)
