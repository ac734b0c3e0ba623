"""Stream leases with fencing tokens, and shard heartbeats, in the incidents database.

Each stream is owned by at most one shard at a time. A shard *claims* a free (or expired) stream and gets a
:class:`Fence` ``(stream_id, owner, token)``; the token grows by one on every claim by a new owner and is never
reused. The owner *renews* its leases well before ``ttl_s`` runs out; a shard that dies stops renewing, its
leases expire (``expires_at < now``) and another shard claims them. Every write the owner makes for the stream
(incidents, saved rule state) carries its fence and is refused with :class:`StaleLeaseError` once the stream
has moved, so a shard that lost its lease cannot overwrite the new owner's work.

Atomicity: on SQLite every transaction starts with ``BEGIN IMMEDIATE`` (one writer at a time); on PostgreSQL a
claim locks the stream row and then the lease row (``SELECT ... FOR UPDATE``), in the same order as
:meth:`IncidentStore.delete_stream`, so of several concurrent claimers exactly one wins.

Clocks: every method takes ``now`` from the caller's clock (the app clock). Shard nodes need synchronised
clocks (NTP); the TTL must exceed the renewal interval plus the worst clock skew between nodes, since a node
whose clock runs ahead sees other shards' leases expire early.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import select

from bigsister_ray.incidents.errors import StaleLeaseError
from bigsister_ray.incidents.fencing import Fence, check_fence
from bigsister_ray.incidents.models import ShardRecord, ShardRecordPublic, Stream, StreamLease, StreamLeasePublic, utcnow
from bigsister_ray.incidents.store import IncidentStore

__all__ = ["LeaseStore", "Fence", "StaleLeaseError"]


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name}: expected a number of seconds > 0, got {value!r}")


class LeaseStore:
    """Leases and shard heartbeats on the database of ``store`` (shares its engine and sessions)."""

    def __init__(self, store: IncidentStore) -> None:
        self.store = store
        self._pg = store.dialect == "postgresql"

    def __repr__(self) -> str:
        return f"LeaseStore({self.store.safe_url!r})"

    # ---- shards ----------------------------------------------------------------------------------
    def heartbeat(self, shard_id: str, node_id: str, capacity: int, load: int, *, now: datetime | None = None) -> None:
        """Record that shard ``shard_id`` on ``node_id`` is alive with ``load`` of ``capacity`` streams."""
        if capacity < 0 or load < 0:
            raise ValueError(f"heartbeat of {shard_id!r}: expected capacity >= 0 and load >= 0, got {capacity} and {load}")
        now = now or utcnow()
        insert = pg_insert if self._pg else sqlite_insert
        stmt = insert(ShardRecord).values(shard_id=shard_id, node_id=node_id, capacity=capacity, load=load,
                                          heartbeat_at=now, started_at=now)
        stmt = stmt.on_conflict_do_update(index_elements=["shard_id"], set_={
            "node_id": stmt.excluded.node_id, "capacity": stmt.excluded.capacity, "load": stmt.excluded.load,
            "heartbeat_at": stmt.excluded.heartbeat_at})
        with self.store.session() as s:
            s.execute(stmt)

    def live_shards(self, ttl_s: float, *, now: datetime | None = None) -> list[ShardRecordPublic]:
        """Shards whose last heartbeat is at most ``ttl_s`` old, by shard id."""
        now = now or utcnow()
        with self.store.session() as s:
            rows = s.exec(select(ShardRecord).where(ShardRecord.heartbeat_at >= now - timedelta(seconds=ttl_s))
                          .order_by(ShardRecord.shard_id)).all()
            return [ShardRecordPublic.model_validate(r.model_dump()) for r in rows]

    def remove_shard(self, shard_id: str) -> None:
        """Forget a shard's heartbeat (on shutdown). Its leases are released separately or expire."""
        with self.store.session() as s:
            s.execute(delete(ShardRecord).where(ShardRecord.shard_id == shard_id))

    # ---- leases ----------------------------------------------------------------------------------
    def claimable(self, limit: int, *, now: datetime | None = None) -> list[str]:
        """Ids of registered streams (not deleted, not disabled) nobody holds: no lease yet, released, or expired before
        ``now``; oldest registration first."""
        now = now or utcnow()
        with self.store.session() as s:
            q = (select(Stream.id).outerjoin(StreamLease, StreamLease.stream_id == Stream.id)
                 .where(Stream.deleted_at.is_(None), Stream.enabled.is_(True),
                        or_(StreamLease.stream_id.is_(None), StreamLease.owner.is_(None),
                            StreamLease.expires_at.is_(None), StreamLease.expires_at < now))
                 .order_by(Stream.created_at, Stream.id).limit(limit))
            return [str(i) for i in s.exec(q).all()]

    def claim(self, stream_id: str, owner: str, node_id: str, ttl_s: float, *, now: datetime | None = None) -> Fence | None:
        """Take the lease on ``stream_id`` for ``ttl_s`` seconds; None when the stream is unknown, deleted, or
        held by another owner. A new owner gets the next token; the current owner gets its fence back with the
        expiry extended. Of several concurrent claimers exactly one wins. A disabled stream is not claimed."""
        _positive("ttl_s", ttl_s)
        now = now or utcnow()
        until = now + timedelta(seconds=ttl_s)
        with self.store.session() as s:
            sq = select(Stream.id).where(Stream.id == stream_id, Stream.deleted_at.is_(None), Stream.enabled.is_(True))
            lq = select(StreamLease).where(StreamLease.stream_id == stream_id)
            if self._pg:  # stream row first, then the lease row: the order delete_stream takes them in
                sq, lq = sq.with_for_update(), lq.with_for_update()
            if s.exec(sq).first() is None:
                return None
            row = s.exec(lq).first()
            if row is None:
                row = StreamLease(stream_id=stream_id, owner=owner, node_id=node_id, token=1, expires_at=until, updated_at=now)
            elif row.owner == owner and row.expires_at is not None and row.expires_at >= now:
                row.node_id, row.expires_at, row.updated_at = node_id, until, now
            elif row.owner is None or row.expires_at is None or row.expires_at < now:
                row.owner, row.node_id, row.token, row.expires_at, row.updated_at = owner, node_id, row.token + 1, until, now
            else:
                return None
            s.add(row)
            s.flush()
            return Fence(stream_id, owner, int(row.token))

    def renew(self, owner: str, fences: list[Fence], ttl_s: float, *, now: datetime | None = None) -> set[str]:
        """Extend the leases ``owner`` still holds (same owner and token, not expired) to ``now + ttl_s``, in
        one statement; return their stream ids. A stream missing from the answer is lost: stop it."""
        _positive("ttl_s", ttl_s)
        now = now or utcnow()
        pairs = [(f.stream_id, f.token) for f in fences if f.owner == owner]
        if not pairs:
            return set()
        stmt = (update(StreamLease)
                .where(StreamLease.owner == owner, StreamLease.expires_at >= now,
                       tuple_(StreamLease.stream_id, StreamLease.token).in_(pairs))
                .values(expires_at=now + timedelta(seconds=ttl_s), updated_at=now)
                .returning(StreamLease.stream_id)
                .execution_options(synchronize_session=False))
        with self.store.session() as s:
            return {str(r[0]) for r in s.execute(stmt).all()}

    def release(self, fence: Fence, *, state: dict[str, Any] | None = None, now: datetime | None = None) -> bool:
        """Hand the stream back: owner, node and expiry cleared, token kept, ``state`` saved when given.
        False (and nothing changed) when the fence is stale: the stream has another owner or token."""
        now = now or utcnow()
        values: dict[str, Any] = {"owner": None, "node_id": None, "expires_at": None, "updated_at": now}
        if state is not None:
            values["state"] = state
        stmt = (update(StreamLease)
                .where(StreamLease.stream_id == fence.stream_id, StreamLease.owner == fence.owner,
                       StreamLease.token == fence.token)
                .values(values).execution_options(synchronize_session=False))
        with self.store.session() as s:
            return s.execute(stmt).rowcount == 1

    def save_state(self, fence: Fence, state: dict[str, Any], *, now: datetime | None = None) -> None:
        """Save the stream's rule state and resume position; raises :class:`StaleLeaseError` (saving nothing)
        unless ``fence`` is current and unexpired at ``now``."""
        now = now or utcnow()
        with self.store.session() as s:
            check_fence(s, fence, dialect=self.store.dialect, now=now)
            s.execute(update(StreamLease).where(StreamLease.stream_id == fence.stream_id)
                      .values(state=state, updated_at=now).execution_options(synchronize_session=False))

    def restore_state(self, stream_id: str, token: int, state: dict[str, Any], *, now: datetime | None = None) -> bool:
        """Put back a state journaled under ``token`` while the database was down, only if the lease still carries
        that token and nobody holds it unexpired (the stream has not moved on); True when it was put back."""
        now = now or utcnow()
        with self.store.session() as s:
            res = s.execute(update(StreamLease).where(
                StreamLease.stream_id == stream_id, StreamLease.token == token,
                or_(StreamLease.owner.is_(None), StreamLease.expires_at.is_(None), StreamLease.expires_at < now))
                .values(state=state, updated_at=now).execution_options(synchronize_session=False))
            return res.rowcount == 1

    def load_state(self, stream_id: str) -> dict[str, Any] | None:
        """The state the stream's last owner saved (None when none was)."""
        with self.store.session() as s:
            return s.exec(select(StreamLease.state).where(StreamLease.stream_id == stream_id)).first()

    def lease(self, stream_id: str) -> StreamLeasePublic | None:
        with self.store.session() as s:
            row = s.get(StreamLease, stream_id)
            return None if row is None else StreamLeasePublic.from_row(row)

    def leases(self) -> list[StreamLeasePublic]:
        """Every lease row (held, free or expired), by stream id."""
        with self.store.session() as s:
            rows = s.exec(select(StreamLease).order_by(StreamLease.stream_id)).all()
            return [StreamLeasePublic.from_row(r) for r in rows]

    def held_by(self, owner: str) -> list[Fence]:
        """Fences of the leases whose owner is ``owner``, expired ones included (:meth:`renew` tells which
        are still held), by stream id."""
        with self.store.session() as s:
            rows = s.exec(select(StreamLease.stream_id, StreamLease.token).where(StreamLease.owner == owner)
                          .order_by(StreamLease.stream_id)).all()
            return [Fence(str(sid), owner, int(tok)) for sid, tok in rows]
