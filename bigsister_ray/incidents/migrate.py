"""Schema migrations of the incidents database, with Alembic (revisions in ``incidents/migrations/versions``).

:func:`upgrade` brings a database to the newest revision. Several processes may call it at once (every
replica does, through :meth:`IncidentStore.create_tables`): on PostgreSQL the upgrade runs in one transaction
under a transaction-scoped advisory lock (``pg_advisory_xact_lock``), on SQLite in one ``BEGIN IMMEDIATE``
transaction (the database's write lock); whoever comes second finds the schema current and changes nothing.
Within one process a lock serialises callers too (Alembic's ``context`` is process-global).

A database whose tables were created before migrations existed (``create_tables`` of earlier releases: the
tables but no ``alembic_version``) is stamped at the revision whose tables it has, then upgraded.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from bigsister_ray.incidents.errors import MigrationError
from bigsister_ray.incidents.models import Incident, IncidentAction, IncidentDelivery, ShardRecord, Stream, StreamLease

if TYPE_CHECKING:
    from bigsister_ray.incidents.store import IncidentStore

__all__ = ["VERSION_TABLE", "target_metadata", "alembic_config", "head_revision", "current_revision", "upgrade"]

log = logging.getLogger(__name__)

VERSION_TABLE = "alembic_version"
SCRIPT_LOCATION = "bigsister_ray.incidents:migrations"
#: PostgreSQL advisory lock key held while upgrading ("bigsistr" in ASCII).
LOCK_KEY = int.from_bytes(b"bigsistr", "big")
#: The tables each revision leaves, newest first: how a database without ``alembic_version`` is recognised.
_TABLES_AT: tuple[tuple[str, frozenset[str]], ...] = (
    ("0004", frozenset({"stream", "incident", "stream_leases", "stream_shards", "incident_actions", "incident_deliveries"})),
    ("0003", frozenset({"stream", "incident", "stream_leases", "stream_shards", "incident_actions"})),
    ("0002", frozenset({"stream", "incident", "stream_leases", "stream_shards"})),
    ("0001", frozenset({"stream", "incident"})),
)
_PROCESS_LOCK = threading.Lock()


def target_metadata() -> MetaData:
    """The tables the models define (only the incidents package's, whatever else shares SQLModel.metadata)."""
    metadata = MetaData()
    for model in (Stream, Incident, IncidentAction, IncidentDelivery, StreamLease, ShardRecord):
        model.__table__.to_metadata(metadata)
    return metadata


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (``url`` for running ``env.py`` on its own)."""
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise MigrationError(f"no migrations found at {SCRIPT_LOCATION} (a broken install: reinstall bigsister-ray)")
    return head


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def current_revision(store: "IncidentStore") -> str | None:
    """The revision the database is at; None for a database without ``alembic_version``."""
    try:
        with store.engine.connect() as conn:
            return _current(conn)
    except SQLAlchemyError as err:
        raise MigrationError(f"database {store.safe_url}: cannot read its schema revision: {err}") from err


def _baseline(conn: Connection) -> str | None:
    """For a database without ``alembic_version``: the revision its tables match (None when it has none)."""
    existing = set(inspect(conn).get_table_names())
    ours = existing & _TABLES_AT[0][1]
    if not ours:
        return None
    for revision, tables in _TABLES_AT:
        if ours == tables:
            return revision
    raise MigrationError(
        f"the database has the tables {sorted(ours)} but no {VERSION_TABLE} table: expected an empty database or "
        f"one of {[sorted(t) for _, t in _TABLES_AT]}; restore the missing tables or point database.url at a new database")


def upgrade(store: "IncidentStore") -> str:
    """Upgrade the database of ``store`` to the newest revision; return it."""
    target = head_revision()
    try:
        with store.engine.connect() as conn:
            if _current(conn) == target:
                return target
        with _PROCESS_LOCK, store.engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE (see IncidentStore)
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            if _current(conn) is None:
                baseline = _baseline(conn)
                if baseline is not None:
                    log.warning("database %s has tables but no %s: stamping it at revision %s", store.safe_url,
                                VERSION_TABLE, baseline)
                    command.stamp(cfg, baseline)
            command.upgrade(cfg, "head")
            revision = _current(conn)
    except CommandError as err:
        raise MigrationError(f"database {store.safe_url}: {err}; this code knows revisions up to {target}: a database "
                             "upgraded by a newer release needs that release") from err
    except SQLAlchemyError as err:
        raise MigrationError(f"database {store.safe_url}: upgrade to revision {target} failed: {type(err).__name__}: "
                             f"{getattr(err, 'orig', None) or err}") from err
    if revision is not None and revision != target:
        raise MigrationError(f"database {store.safe_url}: upgraded to {revision!r}, expected {target!r}")
    log.info("database %s is at revision %s", store.safe_url, revision)
    return target
