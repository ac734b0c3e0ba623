"""The notification outbox: the alert and close-reply deliveries kept on each ``Incident`` row.

A delivery moves ``pending -> sent | failed`` (``skipped`` for a close reply with nothing to reply to). A sender
*claims* a due delivery by setting a lease (owner and expiry) in a conditional ``UPDATE``, sends, and
*finishes* it only if it still holds the lease; a sender that dies leaves the lease to expire. Many senders
can sweep at once: :meth:`DeliveryOutbox.claim_due` hands each a disjoint batch (PostgreSQL:
``SELECT ... FOR UPDATE SKIP LOCKED``; SQLite: one writer at a time), so every alert is sent by one sender.

:class:`DeliveryOutbox` is a part of :class:`~bigsister_ray.incidents.store.IncidentStore` (it uses the store's
``session()`` and ``dialect``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable, ContextManager, Literal

from sqlalchemy import func, or_, update
from sqlmodel import Session, select

from bigsister_ray.incidents.models import AlertStatus, Incident, utcnow

__all__ = ["DeliveryKind", "DeliveryOutbox"]

DeliveryKind = Literal["alert", "close"]


class DeliveryOutbox:
    """Delivery state of incidents: due, claim, claim_due, unclaim, finish, and the counts health reports."""

    dialect: str  # both provided by IncidentStore
    session: Callable[[], ContextManager[Session]]

    @staticmethod
    def _cols(kind: DeliveryKind):
        p = "alert" if kind == "alert" else "close"
        return (getattr(Incident, f"{p}_status"), getattr(Incident, f"{p}_next_attempt_at"),
                getattr(Incident, f"{p}_lease_owner"), getattr(Incident, f"{p}_lease_until"), p)

    def _due_conds(self, kind: DeliveryKind, now: datetime) -> list[Any]:
        status, next_at, _owner, until, _ = self._cols(kind)
        conds = [status == AlertStatus.pending.value,
                 or_(next_at.is_(None), next_at <= now),
                 or_(until.is_(None), until < now)]
        if kind == "close":
            conds.append(Incident.alert_status == AlertStatus.sent.value)
        return conds

    def due(self, kind: DeliveryKind, now: datetime | None = None, limit: int = 100) -> list[int]:
        """Ids whose ``kind`` delivery is pending, due and not leased, oldest first.

        A close reply is due only once its alert was sent (it replies in the alert's thread).
        """
        now = now or utcnow()
        with self.session() as s:
            return [int(i) for i in s.exec(select(Incident.id).where(*self._due_conds(kind, now))
                                           .order_by(Incident.id).limit(limit)).all()]

    def claim(self, kind: DeliveryKind, incident_id: int, owner: str, lease_s: float, now: datetime | None = None) -> bool:
        """Take the lease on one pending delivery; True for exactly one claimer until the lease expires."""
        now = now or utcnow()
        p = self._cols(kind)[4]
        with self.session() as s:
            res = s.execute(update(Incident).where(Incident.id == incident_id, *self._due_conds(kind, now)).values(
                {f"{p}_lease_owner": owner, f"{p}_lease_until": now + timedelta(seconds=lease_s)}))
            return res.rowcount == 1

    def claim_due(self, kind: DeliveryKind, owner: str, lease_s: float, limit: int = 100,
                  now: datetime | None = None) -> dict[int, str | None]:
        """Lease up to ``limit`` due ``kind`` deliveries to ``owner`` in one transaction, oldest first.

        Returns ``{incident id: lease owner it had before}`` in due order; a previous owner (a sender that died
        mid-send, or the interrupted-send marker) means the message may be out already. Concurrent senders
        get disjoint sets: on PostgreSQL the due rows are locked with ``FOR UPDATE SKIP LOCKED`` (another
        sender's rows are skipped, not waited for); on SQLite the transaction holds the write lock and the
        ``UPDATE`` repeats the due conditions.
        """
        if limit < 1:
            return {}
        now = now or utcnow()
        _status, _next, lease_owner, _until, p = self._cols(kind)
        conds = self._due_conds(kind, now)
        q = select(Incident.id, lease_owner).where(*conds).order_by(Incident.id).limit(limit)
        if self.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        with self.session() as s:
            found = {int(i): holder for i, holder in s.execute(q).all()}
            if not found:
                return {}
            stmt = (update(Incident).where(Incident.id.in_(list(found)), *conds)
                    .values({f"{p}_lease_owner": owner, f"{p}_lease_until": now + timedelta(seconds=lease_s)})
                    .returning(Incident.id).execution_options(synchronize_session=False))
            claimed = {int(i) for i in s.execute(stmt).scalars().all()}
            return {i: holder for i, holder in found.items() if i in claimed}

    def unclaim(self, kind: DeliveryKind, incident_id: int, owner: str, *, previous_owner: str | None = None,
                now: datetime | None = None) -> bool:
        """Give back a claimed delivery unsent (due again at once); ``previous_owner`` from :meth:`claim_due` is
        put back (already expired), so the next sender still checks whether an interrupted send went out."""
        now = now or utcnow()
        _status, _next, lease_owner, _until, p = self._cols(kind)
        with self.session() as s:
            res = s.execute(update(Incident).where(Incident.id == incident_id, lease_owner == owner).values(
                {f"{p}_lease_owner": previous_owner, f"{p}_lease_until": now if previous_owner is not None else None}))
            return res.rowcount == 1

    def lease_holder(self, kind: DeliveryKind, incident_id: int) -> str | None:
        """Who holds (or held, if it died without finishing) the lease on this delivery; None when released."""
        _status, _next, lease_owner, _until, _ = self._cols(kind)
        with self.session() as s:
            return s.execute(select(lease_owner).where(Incident.id == incident_id)).scalar_one_or_none()

    def known_channel(self, notifier: str) -> str | None:
        """A channel id a message of ``notifier`` (``name:channel``) was delivered to, if any."""
        with self.session() as s:
            return s.execute(select(Incident.slack_channel).where(Incident.notifier == notifier, Incident.slack_channel.is_not(None))
                             .order_by(Incident.id.desc()).limit(1)).scalar_one_or_none()

    def finish(
        self,
        kind: DeliveryKind,
        incident_id: int,
        owner: str,
        *,
        status: AlertStatus,
        reason: str | None = None,
        next_attempt_at: datetime | None = None,
        channel: str | None = None,
        ts: str | None = None,
        notifier: str | None = None,
        count_attempt: bool = True,
        hold_as: str | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Record the outcome of a claimed delivery and release the lease (only if ``owner`` still holds it).

        ``hold_as`` leaves that name as the lease owner (expiring at ``next_attempt_at``): a marker that the
        next sender must first check whether an interrupted send went out.
        """
        now = now or utcnow()
        _status, _next, lease_owner, _until, p = self._cols(kind)
        values: dict[str, Any] = {
            f"{p}_status": status.value,
            f"{p}_reason": reason,
            f"{p}_lease_owner": hold_as,
            f"{p}_lease_until": next_attempt_at if hold_as is not None else None,
            f"{p}_next_attempt_at": next_attempt_at,
            "updated_at": now,
        }
        if count_attempt:
            values[f"{p}_attempts"] = getattr(Incident, f"{p}_attempts") + 1
        if status == AlertStatus.sent:
            values[f"{p}_sent_at"] = now
        if kind == "alert":
            if channel is not None:
                values["slack_channel"] = channel
            if ts is not None:
                values["slack_ts"] = ts
            if notifier is not None:
                values["notifier"] = notifier
        with self.session() as s:
            res = s.execute(update(Incident).where(Incident.id == incident_id, lease_owner == owner).values(values))
            if kind == "alert" and status == AlertStatus.failed and res.rowcount == 1:
                # nothing to reply to: a close reply that was waiting is skipped
                s.execute(update(Incident).where(Incident.id == incident_id, Incident.close_status == AlertStatus.pending.value)
                       .values(close_status=AlertStatus.skipped.value, close_reason="the alert itself failed: nothing to reply to"))
            return res.rowcount == 1

    def sent_since(self, since: datetime, notifier: str | None = None) -> int:
        """Messages (alerts and close replies) sent since ``since`` through ``notifier`` (``name:channel``) when given."""
        with self.session() as s:
            conds_a = [Incident.alert_sent_at >= since]
            conds_c = [Incident.close_sent_at >= since]
            if notifier is not None:
                conds_a.append(Incident.notifier == notifier)
                conds_c.append(Incident.notifier == notifier)
            a = s.execute(select(func.count()).select_from(Incident).where(*conds_a)).scalar_one()
            c = s.execute(select(func.count()).select_from(Incident).where(*conds_c)).scalar_one()
            return int(a) + int(c)

    def delivery_counts(self) -> dict[str, int]:
        """How many alerts are in each delivery state."""
        with self.session() as s:
            rows = s.execute(select(Incident.alert_status, func.count()).group_by(Incident.alert_status)).all()
            return {str(k): int(v) for k, v in rows}

    def last_failure(self) -> tuple[int, str | None] | None:
        """The most recent incident whose alert failed for good: (id, reason)."""
        with self.session() as s:
            row = s.execute(select(Incident.id, Incident.alert_reason).where(Incident.alert_status == AlertStatus.failed.value)
                         .order_by(Incident.updated_at.desc()).limit(1)).first()
            return None if row is None else (int(row[0]), row[1])
