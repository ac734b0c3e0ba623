"""Data at rest: the SQLite file and its folders are private to the service's user; a deleted stream keeps no
credentials; settings handed to Ray workers carry no secret.

Real files, real modes (``os.stat``); PostgreSQL too when BIGSISTER_TEST_POSTGRES_URL is set (tests/_postgres.py).
"""

from __future__ import annotations

import os
import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from bigsister_ray.config import Settings
from bigsister_ray.incidents.models import IncidentCreate, StreamCreate, StreamUpdate, redact_url
from bigsister_ray.incidents.store import IncidentStore
from tests._postgres import fresh_postgres

SECRET = "hunter2-camera-pw"
URL = f"rtsp://admin:{SECRET}@10.0.0.5:554/live?token=tok-{SECRET}&ch=1"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture()
def open_umask():
    """The most permissive umask, so a mode we did not set explicitly would show."""
    before = os.umask(0)
    yield
    os.umask(before)


def test_sqlite_file_wal_shm_are_0600_and_created_folders_0700(tmp_path, open_umask):
    db = tmp_path / "var" / "lib" / "bigsister.db"
    store = IncidentStore(f"sqlite:///{db}")
    store.upgrade()
    store.add_stream(StreamCreate(name="Gate", url=URL, id="gate"))
    with store.engine.connect() as conn:  # WAL mode: a connection keeps -wal and -shm in place
        conn.exec_driver_sql("SELECT count(*) FROM stream").scalar_one()
        wal, shm = db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")
        assert wal.exists() and shm.exists(), sorted(p.name for p in db.parent.iterdir())
        assert {p.name: oct(_mode(p)) for p in (db, wal, shm)} == {p.name: oct(0o600) for p in (db, wal, shm)}
    store.dispose()
    assert oct(_mode(tmp_path / "var")) == oct(0o700)  # both folders we created
    assert oct(_mode(tmp_path / "var" / "lib")) == oct(0o700)


def test_an_existing_database_readable_by_others_is_narrowed(tmp_path, open_umask, caplog):
    db = tmp_path / "old.db"
    first = IncidentStore(f"sqlite:///{db}")
    first.upgrade()
    first.dispose()
    os.chmod(db, 0o644)
    assert _mode(db) == 0o644  # positive control: the mode was really opened up
    store = IncidentStore(f"sqlite:///{db}")
    assert _mode(db) == 0o600
    assert "narrowed to 0600" in caplog.text
    store.dispose()


def test_existing_folder_is_left_alone(tmp_path, open_umask):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    store = IncidentStore(f"sqlite:///{shared / 'b.db'}")
    store.upgrade()
    store.dispose()
    assert _mode(shared) == 0o755 and _mode(shared / "b.db") == 0o600


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'incidents.db'}" if request.param == "sqlite" else fresh_postgres("bigsister_at_rest")
    s = IncidentStore(url, busy_timeout_ms=10_000)
    s.upgrade()
    yield s
    s.dispose()


def test_deleted_stream_keeps_its_redacted_url_only_and_its_incidents(store):
    store.add_stream(StreamCreate(name="Gate", url=URL, id="gate"))
    store.update_stream("gate", StreamUpdate(last_error=f"cannot open {URL}"))
    store.record_event(IncidentCreate(
        event_key="gate:fight:1", stream_id="gate", stream_name="Gate", location=None, label="fight",
        severity="high", started_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        start_s=0.0, end_s=4.0, peak_score=0.9, peak_start_s=1.0, peak_end_s=3.0, timeline=[[0.0, 0.9]]))
    assert store.get_stream_url("gate") == URL  # positive control: the credentials were stored

    assert store.delete_stream("gate")
    with store.engine.connect() as conn:
        url, last_error, deleted_at = conn.execute(
            text("SELECT url, last_error, deleted_at FROM stream WHERE id = 'gate'")).one()
    assert deleted_at is not None
    assert url == redact_url(URL) and SECRET not in url, url
    assert last_error is None
    assert store.get_stream("gate", include_deleted=True).url == redact_url(URL)
    page, total = store.list_incidents()
    assert total == 1 and page[0].stream_id == "gate"  # its incidents stay
    assert not store.delete_stream("gate")  # already deleted


def test_deleted_credentials_are_not_left_in_the_sqlite_files(tmp_path):
    db = tmp_path / "incidents.db"
    store = IncidentStore(f"sqlite:///{db}")
    store.upgrade()
    store.add_stream(StreamCreate(name="Gate", url=URL, id="gate"))
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("incidents.db"))
    assert SECRET.encode() in raw  # positive control: the URL is on disk while the stream exists
    assert store.delete_stream("gate")
    # while the service still runs (its -wal file in use), then once it has stopped
    for when in ("running", "stopped"):
        found = [p.name for p in tmp_path.iterdir() if p.name.startswith("incidents.db") and SECRET.encode() in p.read_bytes()]
        assert found == [], when
        store.dispose()


# ---- settings for Ray workers ---------------------------------------------------------------------
def test_settings_for_workers_drop_every_secret_and_validate_again():
    key = "k" * 24 + "-api-key-secret"
    settings = Settings.model_validate({
        "auth": {"keys": [{"name": "ops", "key": key, "scope": "write"}], "keys_file": "/etc/bigsister/keys.yaml"},
        "alerts": {"slack": {"token": "xoxb-slack-secret-token", "channel": "#cctv"},
                   "webhook": {"url": "https://hooks.example/secret-hook-path"}},
        "database": {"url": "postgresql+psycopg://bigsister:db-secret-pw@db.internal:5432/bigsister"},
        "train": {"workers": 3},
    })
    workers = settings.for_workers()
    for mode in ("json", "python"):
        dumped = repr(workers.model_dump(mode=mode))
        for secret in (key, "xoxb-slack-secret-token", "secret-hook-path", "db-secret-pw"):
            assert secret not in dumped, (mode, secret)
    again = Settings.model_validate(workers.model_dump(mode="json"))  # what a worker does with its dict
    assert again.train.workers == 3 and again.alerts.slack.channel == "#cctv"
    assert again.auth.keys == [] and str(again.auth.keys_file) == "/etc/bigsister/keys.yaml"
    assert again.database.url == "postgresql+psycopg://***@db.internal:5432/bigsister"
    # the original is untouched
    assert settings.auth.keys[0].key.get_secret_value() == key
    assert settings.alerts.slack.token.get_secret_value() == "xoxb-slack-secret-token"
    # the JSON dump of the full settings is what broke the workers: masked keys fail validation
    with pytest.raises(ValueError, match="too short"):
        Settings.model_validate(settings.model_dump(mode="json"))
