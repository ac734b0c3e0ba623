"""Fencing tokens: a write on behalf of a stream's owner carries a :class:`Fence`, checked in the write's own
transaction against the stream's lease row, so a shard that lost its lease cannot write after the new owner.

A fence is current when the lease row has the fence's owner and token and has not expired
(``expires_at >= now``). Times come from the caller's clock: shard nodes need synchronised clocks (NTP), and
lease TTLs must leave a margin well above the clock skew between nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from bigsister_ray.incidents.errors import StaleLeaseError
from bigsister_ray.incidents.models import StreamLease

__all__ = ["Fence", "StaleLeaseError", "stale_reason", "check_fence"]


@dataclass(frozen=True)
class Fence:
    """Proof of ownership of one stream: the shard id that claimed it and the lease's token at that claim."""

    stream_id: str
    owner: str
    token: int


def stale_reason(row: StreamLease | None, fence: Fence, now: datetime) -> str | None:
    """Why ``fence`` is not current against the lease ``row`` (None when it is)."""
    if row is None:
        current = "the stream has no lease"
    elif row.owner is None:
        current = f"the lease is free (token {row.token})"
    elif row.owner != fence.owner or row.token != fence.token:
        current = f"shard {row.owner!r} holds it with token {row.token}"
    elif row.expires_at is None or row.expires_at < now:
        current = f"the lease expired at {row.expires_at.isoformat() if row.expires_at else 'an unknown time'} (now {now.isoformat()})"
    else:
        return None
    return (f"stream {fence.stream_id!r}: shard {fence.owner!r} wrote with fencing token {fence.token}, but {current}; "
            "nothing was written: stop working on this stream (claim it again to resume)")


def check_fence(session: Session, fence: Fence, *, dialect: str, now: datetime) -> None:
    """Raise :class:`StaleLeaseError` unless ``fence`` is current; on PostgreSQL the lease row stays locked
    (``SELECT ... FOR UPDATE``) until ``session`` commits, so the stream cannot change hands mid-write."""
    q = select(StreamLease).where(StreamLease.stream_id == fence.stream_id)
    if dialect == "postgresql":
        q = q.with_for_update()
    reason = stale_reason(session.exec(q).first(), fence, now)
    if reason is not None:
        raise StaleLeaseError(reason)
