"""Alembic migrations of the incidents database, on a real SQLite file and a real PostgreSQL.

An upgraded empty database has exactly the models' schema (Alembic's autogenerate compare finds nothing); a
database made by the pre-migration ``create_tables`` is stamped and upgraded with its rows; several processes
upgrading at once all succeed; ``bigsister db upgrade`` / ``db current`` report the revision.
"""

from __future__ import annotations

import multiprocessing as mp
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from typer.testing import CliRunner

from bigsister_ray.incidents.leases import LeaseStore
from bigsister_ray.incidents.migrate import current_revision, head_revision, target_metadata
from bigsister_ray.incidents.store import IncidentStore, MigrationError
from tests._postgres import fresh_postgres

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
TABLES = {"alembic_version", "stream", "incident", "incident_actions", "incident_deliveries", "stream_leases",
          "stream_shards"}
HEAD = "0004"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrations.db'}"
    return fresh_postgres("bigsister_migrations_test")


@pytest.fixture
def store(db_url):
    s = IncidentStore(db_url, busy_timeout_ms=20_000)
    yield s
    s.dispose()


def schema_diff(store: IncidentStore, metadata: sa.MetaData | None = None) -> list:
    with store.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata or target_metadata())


def test_an_empty_database_upgrades_to_exactly_the_models_schema(store):
    assert current_revision(store) is None
    assert store.upgrade() == head_revision() == HEAD
    assert current_revision(store) == HEAD
    assert set(inspect(store.engine).get_table_names()) == TABLES
    assert schema_diff(store) == []
    # the comparison is able to fail: a column the database lacks is reported
    changed = target_metadata()
    changed.tables["stream_leases"].append_column(sa.Column("lease_note", sa.String(40)))
    assert [d[0] for d in schema_diff(store, changed)] == ["add_column"]
    assert store.upgrade() == HEAD  # again: nothing to do
    store.create_tables()  # the old entry point upgrades too
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1


def _old_create_tables(store: IncidentStore) -> None:
    """The tables the pre-migration ``create_tables`` made (the schema of revision 0001), without alembic_version."""
    from alembic import command

    from bigsister_ray.incidents.migrate import alembic_config

    with store.engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(text("DROP TABLE alembic_version"))


def test_a_database_from_the_old_create_tables_is_stamped_and_upgraded_without_losing_rows(store):
    _old_create_tables(store)
    with store.engine.begin() as conn:  # rows as the old code wrote them (the models now have newer columns)
        conn.execute(text("INSERT INTO stream (id, name, url, options, created_at) VALUES "
                          "('cam-1', 'Lobby', 'rtsp://u:secret@cam/1', '{\"k\": 2}', :t)"), {"t": T0})
        for key in ("old-1", "old-2"):
            conn.execute(text(
                "INSERT INTO incident (event_key, stream_id, stream_name, label, severity, started_at, start_s, end_s, "
                "peak_score, peak_start_s, peak_end_s, timeline, snapshot, status, created_at, updated_at, "
                "alert_status, alert_attempts, close_attempts) VALUES (:k, 'cam-1', 'Lobby', 'fight', 'high', :t, 1, "
                "5, 0.9, 2, 4, '[[1.0, 0.9]]', :snap, 'open', :t, :t, 'pending', 0, 0)"),
                {"k": key, "t": T0, "snap": b"\xff\xd8jpeg"})
        iid = conn.execute(text("SELECT id FROM incident WHERE event_key = 'old-1'")).scalar_one()
        conn.execute(text("UPDATE incident SET alert_status = 'sent', alert_attempts = 2, alert_sent_at = :t, "
                          "slack_channel = 'C1', slack_ts = '1.5', ended_at = :t, close_status = 'pending', "
                          "close_reason = 'later', close_next_attempt_at = :t WHERE event_key = 'old-2'"), {"t": T0})
        sent = conn.execute(text("SELECT id FROM incident WHERE event_key = 'old-2'")).scalar_one()
    assert current_revision(store) is None
    assert store.upgrade() == HEAD
    assert schema_diff(store) == []
    assert [s.id for s in store.list_streams()] == ["cam-1"] and store.get_stream_url("cam-1") == "rtsp://u:secret@cam/1"
    assert store.list_incidents()[1] == 2 and store.get_snapshot(iid) == b"\xff\xd8jpeg"
    assert store.get_stream("cam-1").enabled is True and store.get_incident(iid).has_clip is False
    # the delivery state moved to the outbox table
    old, done = store.get_incident(iid), store.get_incident(sent)
    assert (old.alert_status, old.alert_attempts, old.close_status) == ("pending", 0, None)
    assert (done.alert_status, done.alert_attempts, done.alert_sent_at, done.close_status, done.close_reason) == (
        "sent", 2, T0, "pending", "later")
    assert store.slack_ref(sent) == ("C1", "1.5") and store.due("close", now=T0) == [sent]
    assert store.due("alert", now=T0) == [iid]
    fence = LeaseStore(store).claim("cam-1", "shard-a", "node-1", 30, now=T0)
    assert fence is not None and fence.token == 1  # the new tables work on the old data


def test_a_database_newer_than_the_code_or_with_missing_tables_is_refused(store, db_url):
    store.upgrade()
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(MigrationError, match="0099.*knows revisions up to 0004"):
        store.upgrade()
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("DROP TABLE stream"))
    with pytest.raises(MigrationError, match=r"has the tables \['incident', 'incident_actions', 'incident_deliveries', 'stream_leases', 'stream_shards'\] but no "
                                             r"alembic_version table"):
        store.upgrade()


def _upgrade_in_process(url: str, barrier, queue) -> None:
    store = IncidentStore(url, busy_timeout_ms=60_000)
    barrier.wait(60)
    try:
        queue.put(store.upgrade())
    except Exception as err:  # reported to the parent, which fails the test
        queue.put(f"{type(err).__name__}: {err}")
    finally:
        store.dispose()


def test_several_processes_upgrading_at_once_all_succeed(db_url, store):
    ctx = mp.get_context("spawn")
    n = 3
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_upgrade_in_process, args=(db_url, barrier, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert results == [HEAD] * n
    assert schema_diff(store) == []
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]


def test_db_commands_upgrade_and_report_the_revision(tmp_path):
    from bigsister_ray.cli import app

    db = tmp_path / "cli.db"
    cfg = tmp_path / "settings.yaml"
    cfg.write_text(f"database:\n  url: sqlite:///{db}\n")
    runner = CliRunner()
    before = runner.invoke(app, ["db", "current", "--config", str(cfg)])
    assert before.exit_code == 0 and before.stdout.strip() == "none"
    up = runner.invoke(app, ["db", "upgrade", "--config", str(cfg)])
    assert up.exit_code == 0, up.output
    assert up.stdout.strip() == HEAD
    after = runner.invoke(app, ["db", "current", "--config", str(cfg)])
    assert after.exit_code == 0 and after.stdout.strip() == HEAD
    cfg.write_text("database:\n  url: mysql://root@localhost/x\n")
    bad = runner.invoke(app, ["db", "upgrade", "--config", str(cfg)])
    assert bad.exit_code == 1 and "expected sqlite:// or postgresql://" in bad.output


def test_the_migrations_ship_inside_the_package():
    from setuptools import find_packages

    from bigsister_ray.incidents import migrations

    root = Path(migrations.__file__).resolve().parents[3]
    packages = set(find_packages(str(root), include=["bigsister_ray*"]))
    assert {"bigsister_ray.incidents.migrations", "bigsister_ray.incidents.migrations.versions"} <= packages
