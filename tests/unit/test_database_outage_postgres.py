"""The database unavailable for a while, on a REAL PostgreSQL: readiness degrades, incidents are buffered and
retried, nothing is lost or written twice, every alert goes out once.

The PostgreSQL server itself is stopped (``.ci/start_postgres.sh stop``: ``pg_ctl stop -m fast``, open
connections cut) while incidents are opened, and started again. So this runs only on the throwaway cluster that
``.ci/start_postgres.sh`` starts: it needs both ``BIGSISTER_TEST_POSTGRES_URL`` and
``BIGSISTER_TEST_POSTGRES_DIR`` (which that script prints and ``.ci/run`` exports), and skips otherwise. The
server is always started again (``finally``), so PostgreSQL tests after this one find it up.

No Ray: the AlertManager deployment's class is instantiated in this process (its real rule engine, incident
sink with its buffer and retry thread, IncidentService with its sweeper, IncidentStore on PostgreSQL, the
console notifier writing a JSONL file). Readiness is the real ingress ``GET /readyz`` route, whose AlertManager
handle here calls that instance in this process. The test works in its own database, dropped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests._serve_support import TINY_SPEC, make_checkpoint, wait_for

REPO = Path(__file__).resolve().parents[2]
# tests/conftest.py clears BIGSISTER_* per test: read what the CI shell exported at collection time
PG_URL = os.environ.get("BIGSISTER_TEST_POSTGRES_URL")
PG_DIR = os.environ.get("BIGSISTER_TEST_POSTGRES_DIR")
DB_NAME = "bigsister_outage_test"
READ = "outage-read-key-0123456789"

pytestmark = pytest.mark.skipif(
    not (PG_URL and PG_DIR),
    reason="needs BIGSISTER_TEST_POSTGRES_URL and BIGSISTER_TEST_POSTGRES_DIR (eval \"$(bash .ci/start_postgres.sh)\"): "
           "the test stops and restarts that throwaway server")


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


class _InProcessHandle:
    """``handle.method.remote(...)`` awaited, as the Ingress calls its deployments, on an object in this process."""

    def __init__(self, target) -> None:
        self._target = target

    def __getattr__(self, name: str):
        method = getattr(self._target, name)

        class _Method:
            @staticmethod
            async def remote(*args, **kwargs):
                if asyncio.iscoroutinefunction(method):
                    return await method(*args, **kwargs)
                return await asyncio.to_thread(method, *args, **kwargs)

        return _Method()


def _windows(scores: list[float], t0: float) -> list[dict]:
    step = TINY_SPEC.stride / TINY_SPEC.fps
    return [{"start_s": i * step, "end_s": i * step + TINY_SPEC.duration_s, "scores": {"fight": s, "normal": 1 - s},
             "at": t0 + i * step} for i, s in enumerate(scores)]


def test_postgres_down_for_a_while_buffers_incidents_degrades_readiness_and_loses_nothing(tmp_path, pg_db):
    from bigsister_ray.alerts.notifiers import ConsoleNotifier
    from bigsister_ray.config import Settings
    from bigsister_ray.incidents.store import IncidentStore
    from bigsister_ray.security.auth import Authenticator
    from bigsister_ray.serve.alert_manager import AlertManager
    from bigsister_ray.serve.api import create_api
    from bigsister_ray.serve.context import ServeContext
    from bigsister_ray.serve.sinks import IncidentServiceSink

    ckpt = make_checkpoint(tmp_path / "ckpt", thresholds={"fight": 0.5})
    alert_file = tmp_path / "alerts.jsonl"
    settings = Settings(
        database={"url": pg_db, "busy_timeout_ms": 1000},
        alerts={"notifier": "console", "alert_file": str(alert_file), "sweep_interval_s": 0.3,
                "retry_backoff_initial_s": 0.3, "retry_backoff_max_s": 1.0, "lease_s": 5.0,
                "max_messages_per_minute": 1000,
                "default": {"k": 1, "n": 1, "close_after": 1, "cooldown_s": 0.0}},
        auth={"keys": [{"name": "r", "key": READ, "scope": "read"}]})
    am = AlertManager.func_or_class(settings, str(ckpt))  # the deployment's class, in this process
    sink = next(s for s in am.sinks if isinstance(s, IncidentServiceSink))
    assert isinstance(sink.service.notifier, ConsoleNotifier) and sink.service.sweeper_running
    ingress_store = IncidentStore(pg_db, busy_timeout_ms=1000)  # the Ingress has its own connection pool
    ctx = ServeContext(settings=settings, store=ingress_store, decoder=None, windower=None, classifier=None,
                       alert_manager=_InProcessHandle(am), authenticator=Authenticator.from_config(settings.auth))
    t0 = time.time()

    def observe(stream_id: str, scores: list[float]) -> list[str]:
        return [e["kind"] for e in asyncio.run(am.observe(stream_id, _windows(scores, t0)))]

    def readyz(client) -> dict:
        # the Classifier is absent here, so "ready" is always false: the database part is what this test reads
        r = client.get("/readyz", headers={"X-API-Key": READ})
        assert r.status_code == 503, r.text
        return r.json()

    expected: dict[str, int] = {}  # stream -> incidents it must have in the database
    try:
        with TestClient(create_api(ctx)) as client:
            # up: written at once, readiness has no complaint about the database
            assert observe("cam-before", [0.9, 0.1]) == ["opened", "closed"]
            expected["cam-before"] = 1
            assert am.health()["buffer"]["buffered"] == 0
            body = readyz(client)
            assert body["database"] is True and "database" not in body["detail"], body

            _pg("stop")
            down_events = []
            down_events += observe("cam-0", [0.95, 0.1, 0.9, 0.1])  # two incidents, each opened and closed
            down_events += observe("cam-1", [0.8, 0.85])  # opened, updated: still open when the database returns
            down_events += observe("cam-2", [0.7])  # opened ...
            down_events += observe("cam-2", [0.2])  # ... and closed in a later call, still during the outage
            expected.update({"cam-0": 2, "cam-1": 1, "cam-2": 1})
            assert down_events == ["opened", "closed", "opened", "closed", "opened", "updated", "opened", "closed"]

            health = am.health()
            assert health["ok"] is False and health["database"]["ok"] is False, health
            assert health["buffer"]["buffered"] == len(down_events) and health["buffer"]["dropped"] == 0, health
            assert DB_NAME in health["buffer"]["error"], health  # the store's error names the database
            body = readyz(client)
            assert body["database"] is False, body
            assert f"{len(down_events)} incident event(s) buffered" in body["detail"]["database"], body

            time.sleep(sink.retry_s * 2 + 0.5)  # retried while the server is down: still all there, in order
            assert [e.kind for e, _ in sink._buffer] == down_events
            assert am.health()["buffer"]["buffered"] == len(down_events)

            _pg("start")
            wait_for(lambda: am.health()["buffer"]["buffered"] == 0, 30, 0.2,
                     "the buffered incident events to be written once PostgreSQL answers again (no new event needed)")
            body = wait_for(lambda: (b := readyz(client))["database"] and b, 30, 0.5, "readiness to report the database up")
            assert "database" not in body["detail"], body
            # the incident that was open through the outage closes normally afterwards
            assert observe("cam-1", [0.1]) == ["closed"]

        rows = _incident_rows(pg_db)
        by_stream: dict[str, list[dict]] = {}
        for row in rows:
            by_stream.setdefault(row["stream_id"], []).append(row)
        assert {s: len(v) for s, v in by_stream.items()} == expected, rows
        assert len({r["event_key"] for r in rows}) == len(rows)
        assert all(r["ended_at"] is not None for r in rows), rows
        assert sorted(r["peak_score"] for r in by_stream["cam-0"]) == pytest.approx([0.9, 0.95])
        assert by_stream["cam-1"][0]["peak_score"] == pytest.approx(0.85)
        assert by_stream["cam-2"][0]["peak_score"] == pytest.approx(0.7)

        # persist first, notify second: every alert and every close reply goes out once, none during the outage
        ids = sorted(r["id"] for r in rows)

        def delivered() -> list[tuple[str, int]]:
            if not alert_file.exists():
                return []
            return [(d["event"], d["incident_id"]) for d in map(json.loads, alert_file.read_text().splitlines())]

        wait_for(lambda: len(delivered()) >= 2 * len(ids), 30, 0.3, "every alert and close reply to be delivered")
        time.sleep(1.0)  # a second delivery would come within a few sweeps
        sent = delivered()
        assert sorted(sent) == sorted([("incident", i) for i in ids] + [("incident_closed", i) for i in ids]), sent
        assert am.health()["alerts"] == {"pending": 0, "sent": len(ids), "failed": 0, "last_failed": None}
    finally:
        for s in am.sinks:
            s.close()
        am._store.dispose()
        ingress_store.dispose()


def _incident_rows(url: str) -> list[dict]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(
                "SELECT id, stream_id, event_key, ended_at, peak_score FROM incident ORDER BY id"))]
    finally:
        engine.dispose()
