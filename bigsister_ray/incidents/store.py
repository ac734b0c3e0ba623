"""The incidents store: SQLite by default (one file, WAL, busy timeout), PostgreSQL by URL.

Safe with several writers (threads, processes, replicas on several nodes):

* SQLite: WAL journal, ``busy_timeout`` and ``BEGIN IMMEDIATE`` transactions, so two writers queue for the
  lock instead of failing with "database is locked" when a read transaction tries to upgrade.
* PostgreSQL: row locks (``SELECT ... FOR UPDATE``) where an event updates an incident.
* Alert delivery (the outbox, :mod:`bigsister_ray.incidents.outbox`) is claimed with a lease (an owner and
  an expiry), so one alert is sent by one sender even when several sweepers run; a crashed sender's lease expires.
* A write on behalf of a stream's owner may carry a :class:`~bigsister_ray.incidents.fencing.Fence`, checked
  in the same transaction (see :mod:`bigsister_ray.incidents.leases`).

Operator actions, clip paths, retention queries and verdicts are :class:`~bigsister_ray.incidents.review.ReviewStore`'s;
deliveries are :class:`~bigsister_ray.incidents.outbox.DeliveryOutbox`'s; both are parts of :class:`IncidentStore`.
The schema is managed by Alembic (:mod:`bigsister_ray.incidents.migrate`): :meth:`IncidentStore.upgrade`.
Errors are drawn in :mod:`bigsister_ray.incidents.errors` and re-exported here.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Collection, Iterator, Sequence

from sqlalchemy import event, func, or_, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, create_engine, select

from bigsister_ray.config import Settings
from bigsister_ray.incidents.errors import (
    IncidentNotFoundError,
    IncidentStoreError,
    InvalidTransitionError,
    MigrationError,
    StaleLeaseError,
)
from bigsister_ray.incidents.fencing import Fence, check_fence
from bigsister_ray.incidents.models import (
    TRANSITIONS,
    Incident,
    IncidentCreate,
    IncidentDelivery,
    IncidentPublic,
    Stream,
    StreamCreate,
    StreamLease,
    StreamPublic,
    StreamUpdate,
    redact_url,
    utcnow,
)
from bigsister_ray.incidents.outbox import DeliveryKind, DeliveryOutbox
from bigsister_ray.incidents.review import ReviewStore, check_media_path

__all__ = [
    "IncidentStore",
    "IncidentStoreError",
    "IncidentNotFoundError",
    "InvalidTransitionError",
    "StaleLeaseError",
    "MigrationError",
    "DeliveryKind",
    "check_media_path",
]

log = logging.getLogger(__name__)

def _normalise_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3 is the driver we install
    return url


def _private_sqlite_file(path: Path) -> None:
    """Create the SQLite file ``path`` readable by its owner only (0600), in folders we create 0700.

    The database holds camera URLs with their credentials and incident snapshots. SQLite gives the ``-wal`` and
    ``-shm`` files it creates the mode of the database file, so they are 0600 too. An existing file (or its
    ``-wal``/``-shm``) that others may read is narrowed to 0600, with a warning; existing folders are left alone.
    """
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # another process made it first
            continue
        except OSError as err:
            raise IncidentStoreError(f"database.url: cannot create the folder {folder} for the SQLite file: "
                                     f"{err.strerror}") from err
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as err:
        raise IncidentStoreError(f"database.url: cannot create the SQLite file {path}: {err.strerror}") from err
    else:
        os.close(fd)
    for f in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            log.warning("database file %s was readable by others (mode %o); narrowed to 0600", f, st.st_mode & 0o777)
            os.chmod(f, 0o600)


class IncidentStore(DeliveryOutbox, ReviewStore):
    """Streams and incidents in one SQL database. ``url``: ``sqlite:///path.db`` or ``postgresql+psycopg://...``.

    Methods return detached ``*Public`` schemas (or plain values), never live ORM rows, except
    :meth:`get_incident_row`, which the incident service uses to build an alert.
    """

    def __init__(self, url: str, busy_timeout_ms: int = 5000, *, echo: bool = False) -> None:
        self.url = _normalise_url(url)
        try:
            parsed = make_url(self.url)
        except Exception as err:  # sqlalchemy raises ArgumentError and ValueError subclasses here
            raise IncidentStoreError(f"database.url: expected an SQLAlchemy URL such as sqlite:///bigsister.db, got {redact_url(url)!r}") from err
        self.dialect = parsed.get_backend_name()
        self.busy_timeout_ms = busy_timeout_ms
        self.safe_url = parsed.render_as_string(hide_password=True)
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            database = parsed.database
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": max(busy_timeout_ms, 1) / 1000.0}
            if not database or database == ":memory:":
                kwargs["poolclass"] = StaticPool
            else:
                _private_sqlite_file(Path(database).expanduser())
        elif self.dialect == "postgresql":
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = {"connect_timeout": max(1, busy_timeout_ms // 1000)}
        else:
            raise IncidentStoreError(f"database.url: expected sqlite:// or postgresql:// , got {self.safe_url!r}")
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            self._sqlite_pragmas(self.engine, busy_timeout_ms)

    @classmethod
    def from_settings(cls, settings: Settings) -> "IncidentStore":
        """Build from ``Settings`` (uses ``settings.database``)."""
        db = settings.database
        return cls(db.url, db.busy_timeout_ms, echo=db.echo)

    def __repr__(self) -> str:
        return f"IncidentStore({self.safe_url!r})"

    @staticmethod
    def _sqlite_pragmas(engine: Engine, busy_timeout_ms: int) -> None:
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # noqa: ANN001
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA secure_delete=ON")  # deleted or overwritten content is zeroed in the file
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # noqa: ANN001
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    # ---- plumbing ------------------------------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success, rolls back on error and wraps database errors."""
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                try:
                    yield session
                    session.commit()
                except BaseException:
                    session.rollback()
                    raise
        except IntegrityError:
            raise
        except SQLAlchemyError as err:
            raise IncidentStoreError(f"database {self.safe_url}: {type(err).__name__}: {err.orig if getattr(err, 'orig', None) else err}") from err

    def create_tables(self) -> None:
        """Bring the schema to the newest revision (:meth:`upgrade`); kept for callers that create tables."""
        self.upgrade()

    def upgrade(self) -> str:
        """Upgrade the database to the newest migration (safe from several processes at once); return the revision.

        Raises MigrationError (an IncidentStoreError) when the schema cannot be upgraded."""
        from bigsister_ray.incidents.migrate import upgrade

        return upgrade(self)

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except SQLAlchemyError as err:
            log.warning("database %s unreachable: %s", self.safe_url, err)
            return False

    def dispose(self) -> None:
        self.engine.dispose()

    # ---- streams -------------------------------------------------------------------------------
    def add_stream(self, data: StreamCreate) -> StreamPublic:
        values = data.model_dump(exclude_none=True)
        row = Stream.model_validate(values)
        try:
            with self.session() as s:
                s.add(row)
        except IntegrityError as err:
            raise IncidentStoreError(f"stream id {data.id!r} already exists") from err
        return StreamPublic.from_row(row)

    def list_streams(self, include_deleted: bool = False) -> list[StreamPublic]:
        with self.session() as s:
            q = select(Stream)
            if not include_deleted:
                q = q.where(Stream.deleted_at.is_(None))
            rows = s.exec(q.order_by(Stream.created_at, Stream.id)).all()
            return [StreamPublic.from_row(r) for r in rows]

    def get_stream(self, stream_id: str, include_deleted: bool = False) -> StreamPublic | None:
        with self.session() as s:
            row = s.get(Stream, stream_id)
            if row is None or (row.deleted_at is not None and not include_deleted):
                return None
            return StreamPublic.from_row(row)

    def get_stream_url(self, stream_id: str) -> str | None:
        """The stored (unredacted) source URL, for the process that opens the stream. Never show it."""
        with self.session() as s:
            row = s.get(Stream, stream_id)
            return None if row is None or row.deleted_at is not None else row.url

    def update_stream(self, stream_id: str, data: StreamUpdate, *, now: datetime | None = None) -> StreamPublic | None:
        """Change the fields set in ``data``; None when the stream is unknown or deleted. Disabling a stream frees
        its lease in the same transaction (its owner stops it at its next renewal; no shard claims it while it is
        disabled); enabling it again makes it claimable."""
        now = now or utcnow()
        with self.session() as s:
            q = select(Stream).where(Stream.id == stream_id, Stream.deleted_at.is_(None))
            if self.dialect == "postgresql":
                q = q.with_for_update()  # the stream row, then the lease row: the order claims take them in
            row = s.exec(q).first()
            if row is None:
                return None
            changes = data.model_dump(exclude_unset=True)
            row.sqlmodel_update(changes)
            row.updated_at = now
            s.add(row)
            if changes.get("enabled") is False:
                s.execute(update(StreamLease).where(StreamLease.stream_id == stream_id)
                          .values(owner=None, node_id=None, expires_at=None, updated_at=now))
            s.flush()
            return StreamPublic.from_row(row)

    def delete_stream(self, stream_id: str, *, now: datetime | None = None) -> bool:
        """Soft-delete (its incidents stay) and free its lease at once, so its owner's next fenced write or
        renewal fails. The lease keeps its token. False when unknown or already deleted.

        The row keeps no secret: its URL is replaced by the redacted URL (no user, password or secret query
        value) and its last error, which may quote the source, is cleared."""
        now = now or utcnow()
        with self.session() as s:
            q = select(Stream).where(Stream.id == stream_id, Stream.deleted_at.is_(None))
            if self.dialect == "postgresql":
                q = q.with_for_update()
            row = s.exec(q).first()
            if row is None:
                return False
            res = s.execute(
                update(Stream).where(Stream.id == stream_id, Stream.deleted_at.is_(None))
                .values(deleted_at=now, url=redact_url(row.url), last_error=None, updated_at=now)
            )
            if res.rowcount != 1:
                return False
            s.execute(update(StreamLease).where(StreamLease.stream_id == stream_id)
                      .values(owner=None, node_id=None, expires_at=None, updated_at=now))
        if self.dialect == "sqlite":
            self._truncate_wal()
        return True

    def _truncate_wal(self) -> None:
        """Copy the WAL into the database file and empty it, so the pages that held a deleted stream's URL do not
        stay in ``-wal`` until SQLite happens to overwrite them (``secure_delete`` clears them in the file)."""
        raw = self.engine.raw_connection()
        try:
            busy, _, _ = raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as err:  # the deletion itself is committed
            log.warning("database %s: WAL checkpoint after a stream deletion failed: %s", self.safe_url, err)
            return
        finally:
            raw.close()
        if busy:
            log.warning("database %s: a reader held the WAL during a stream deletion; the old URL stays in the "
                        "-wal file until the next checkpoint", self.safe_url)

    # ---- incidents: events -----------------------------------------------------------------------
    def record_event(self, data: IncidentCreate, *, closed: bool = False, now: datetime | None = None,
                     fence: Fence | None = None) -> int:
        """Insert the incident ``data.event_key`` or merge a later event into it; return its id.

        A new incident starts with its alert ``pending`` (due now). A later event extends the end and the
        timeline, raises the peak (and replaces the snapshot when a new one comes with a higher peak).
        ``closed`` sets ``ended_at`` and makes the close reply ``pending`` (``skipped`` when the alert failed).
        ``fence``: the writer's lease on ``data.stream_id``, checked in the same transaction; raises
        :class:`StaleLeaseError` (and writes nothing) when it is no longer current at ``now``.
        """
        now = now or utcnow()
        if fence is not None and fence.stream_id != data.stream_id:
            raise ValueError(f"fence: expected a fence for stream {data.stream_id!r}, got one for {fence.stream_id!r}")
        for attempt in range(2):
            try:
                with self.session() as s:
                    if fence is not None:
                        check_fence(s, fence, dialect=self.dialect, now=now)
                    q = select(Incident).where(Incident.event_key == data.event_key)
                    if self.dialect == "postgresql":
                        q = q.with_for_update()
                    row = s.exec(q).first()
                    if row is None:
                        row = Incident.model_validate(data.model_dump())
                        row.created_at = row.updated_at = now
                        if closed:
                            row.ended_at = row.ended_at or now
                        s.add(row)
                        s.flush()
                        self._enqueue(s, int(row.id), "alert", now)
                        if closed:
                            self._enqueue(s, int(row.id), "close", now)
                        return int(row.id)
                    ended = self._merge(row, data, closed=closed, now=now)
                    s.add(row)
                    s.flush()
                    if ended:
                        self._enqueue(s, int(row.id), "close", now)
                    return int(row.id)
            except IntegrityError:
                if attempt == 1:
                    raise
                # another writer inserted the same key between our SELECT and INSERT: merge into theirs
        raise AssertionError("unreachable")

    @staticmethod
    def _merge(row: Incident, data: IncidentCreate, *, closed: bool, now: datetime) -> bool:
        """Merge a later event into ``row``; True when this event ended it (its close reply is then owed)."""
        row.end_s = max(row.end_s, data.end_s)
        if data.peak_score > row.peak_score:
            row.peak_score, row.peak_start_s, row.peak_end_s = data.peak_score, data.peak_start_s, data.peak_end_s
            if data.snapshot is not None:
                row.snapshot = data.snapshot
        elif row.snapshot is None and data.snapshot is not None:
            row.snapshot = data.snapshot
        if len(data.timeline) >= len(row.timeline):
            row.timeline = [list(p) for p in data.timeline]
        row.severity = data.severity or row.severity
        if data.stream_name:
            row.stream_name = data.stream_name
        if data.location is not None:
            row.location = data.location
        row.updated_at = now
        if closed and row.ended_at is None:
            row.ended_at = data.ended_at or now
            return True
        return False

    def end_dangling(self, *, stream_id: str | None = None, now: datetime | None = None,
                     keep_keys: Collection[str] = ()) -> list[int]:
        """End incidents still open in the database (``ended_at`` unset), e.g. after the rule engine that was
        tracking them restarted: ``ended_at`` becomes their last update, and the close reply is queued
        (skipped where the alert failed). Incidents whose event key is in ``keep_keys`` stay open (a stream
        that moved to another shard with its rule state keeps its open incident). Returns their ids.
        """
        now = now or utcnow()
        conds = [Incident.ended_at.is_(None)]
        if stream_id is not None:
            conds.append(Incident.stream_id == stream_id)
        if keep_keys:
            conds.append(Incident.event_key.not_in(list(keep_keys)))
        with self.session() as s:
            q = select(Incident).where(*conds)
            if self.dialect == "postgresql":
                q = q.with_for_update()
            rows = s.exec(q).all()
            for row in rows:
                row.ended_at = row.updated_at or now
                row.updated_at = now
                s.add(row)
                self._enqueue(s, int(row.id), "close", now, reason="ended when the rule engine restarted")
            return [int(r.id) for r in rows]

    # ---- incidents: reading ----------------------------------------------------------------------
    @staticmethod
    def _public(s: Session, rows: Sequence[Incident], *, with_timeline: bool = True) -> list[IncidentPublic]:
        """``rows`` as public schemas, with their deliveries (one query for all of them)."""
        ids = [int(r.id) for r in rows]
        by_id: dict[int, dict[str, IncidentDelivery]] = {i: {} for i in ids}
        if ids:
            for d in s.exec(select(IncidentDelivery).where(IncidentDelivery.incident_id.in_(ids))).all():
                by_id[int(d.incident_id)][d.kind] = d
        return [IncidentPublic.from_row(r, by_id[int(r.id)], with_timeline=with_timeline) for r in rows]

    def get_incident(self, incident_id: int, *, with_timeline: bool = True) -> IncidentPublic | None:
        with self.session() as s:
            row = s.get(Incident, incident_id)
            return None if row is None else self._public(s, [row], with_timeline=with_timeline)[0]

    def get_incident_row(self, incident_id: int) -> Incident | None:
        """The detached table row (with snapshot bytes); for building alerts."""
        with self.session() as s:
            row = s.get(Incident, incident_id)
            if row is not None:
                s.expunge(row)
            return row

    def get_snapshot(self, incident_id: int) -> bytes | None:
        """The snapshot JPEG; raises IncidentNotFoundError for an unknown incident, None when it has none."""
        with self.session() as s:
            row = s.execute(select(Incident.id, Incident.snapshot).where(Incident.id == incident_id)).first()
            if row is None:
                raise IncidentNotFoundError(f"no incident {incident_id}")
            return row[1]

    def list_incidents(
        self,
        *,
        stream_id: str | None = None,
        label: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[IncidentPublic], int]:
        """Incidents newest first, filtered; returns (page, total matching)."""
        conds = []
        if stream_id is not None:
            conds.append(Incident.stream_id == stream_id)
        if label is not None:
            conds.append(Incident.label == label)
        if status is not None:
            conds.append(Incident.status == status)
        if since is not None:
            conds.append(or_(Incident.ended_at.is_(None), Incident.ended_at >= since))
        if until is not None:
            conds.append(Incident.started_at <= until)
        with self.session() as s:
            total = s.execute(select(func.count()).select_from(Incident).where(*conds)).scalar_one()
            rows = s.exec(
                select(Incident).where(*conds).order_by(Incident.started_at.desc(), Incident.id.desc()).offset(offset).limit(limit)
            ).all()
            return self._public(s, rows, with_timeline=False), int(total)

    def set_status(self, incident_id: int, target: str) -> IncidentPublic:
        """Move the review status to ``target`` if TRANSITIONS allows it (atomic; raises otherwise)."""
        if target not in TRANSITIONS:
            raise ValueError(f"unknown incident status {target!r}, expected one of {sorted(TRANSITIONS)}")
        sources = [src for src, targets in TRANSITIONS.items() if target in targets]
        now = utcnow()
        with self.session() as s:
            res = s.execute(
                update(Incident)
                .where(Incident.id == incident_id, Incident.status.in_(sources))
                .values(status=target, status_changed_at=now, updated_at=now)
            )
            row = s.get(Incident, incident_id)
            if row is None:
                raise IncidentNotFoundError(f"no incident {incident_id}")
            if res.rowcount != 1:
                raise InvalidTransitionError(incident_id, row.status, target)
            s.refresh(row)
            return self._public(s, [row])[0]
