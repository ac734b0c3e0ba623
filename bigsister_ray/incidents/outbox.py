"""The notification outbox: one :class:`~bigsister_ray.incidents.models.IncidentDelivery` row per incident and
kind of message (``alert``; ``close``, the reply when it ends; ``clip``, the evidence clip in the thread).

A delivery moves ``pending -> sent | failed`` (``skipped`` for a reply with nothing to reply to). A sender
*claims* a due delivery by setting a lease (owner and expiry) in a conditional ``UPDATE``, sends, and
*finishes* it only if it still holds the lease; a sender that dies leaves the lease to expire. Many senders
can sweep at once: :meth:`DeliveryOutbox.claim_due` hands each a disjoint batch (PostgreSQL:
``SELECT ... FOR UPDATE SKIP LOCKED``; SQLite: one writer at a time), so every message is sent by one sender.
Replies (``close``, ``clip``) are due only once the alert is sent: they go into its thread.

:class:`DeliveryOutbox` is a part of :class:`~bigsister_ray.incidents.store.IncidentStore` (it uses the store's
``session()`` and ``dialect``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable, ContextManager, Literal

from sqlalchemy import exists, func, or_, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, select

from bigsister_ray.incidents.errors import IncidentNotFoundError
from bigsister_ray.incidents.models import AlertStatus, Incident, IncidentDelivery, utcnow

__all__ = ["DeliveryKind", "DeliveryOutbox", "DELIVERY_KINDS", "REPLIES"]

DeliveryKind = Literal["alert", "close", "clip", "update"]
DELIVERY_KINDS: tuple[str, ...] = ("alert", "close", "clip", "update")
#: Kinds that need the alert's message (a reply in its thread, or ``update``: the message edited to show the
#: review status after an operator action): due once the alert is sent, skipped when it failed.
REPLIES: tuple[str, ...] = ("close", "clip", "update")
NOTHING_TO_REPLY_TO = "the alert itself failed: nothing to reply to"

D = IncidentDelivery


def _check_kind(kind: str) -> None:
    if kind not in DELIVERY_KINDS:
        raise ValueError(f"delivery kind: expected one of {list(DELIVERY_KINDS)}, got {kind!r}")


class DeliveryOutbox:
    """Deliveries of incidents: enqueue, due, claim, claim_due, unclaim, finish, and the counts health reports."""

    dialect: str  # both provided by IncidentStore
    session: Callable[[], ContextManager[Session]]

    @staticmethod
    def _due_conds(kind: str, now: datetime) -> list[Any]:
        _check_kind(kind)
        conds = [D.kind == kind, D.status == AlertStatus.pending.value,
                 or_(D.next_attempt_at.is_(None), D.next_attempt_at <= now),
                 or_(D.lease_until.is_(None), D.lease_until < now)]
        if kind in REPLIES:
            alert = aliased(IncidentDelivery)
            conds.append(exists().where(alert.incident_id == D.incident_id, alert.kind == "alert",
                                        alert.status == AlertStatus.sent.value))
        return conds

    # ---- queueing --------------------------------------------------------------------------------
    @staticmethod
    def _enqueue(s: Session, incident_id: int, kind: str, now: datetime, *, reason: str | None = None,
                 again: bool = False) -> IncidentDelivery:
        """Within ``s``: make the ``kind`` delivery of an incident pending and due now (a reply is skipped when its
        alert failed). An existing delivery that is pending or sent is left as it is (``again``: a sent one is due
        once more, as an ``update`` is after each action); a failed one is queued again."""
        row = s.get(IncidentDelivery, (incident_id, kind))
        keep = (AlertStatus.pending.value,) if again else (AlertStatus.pending.value, AlertStatus.sent.value)
        if row is not None and row.status in keep:
            return row
        if row is None:
            row = IncidentDelivery(incident_id=incident_id, kind=kind)
        row.status, row.reason, row.next_attempt_at, row.updated_at = AlertStatus.pending.value, reason, now, now
        row.lease_owner = row.lease_until = None
        if kind in REPLIES:
            alert = s.get(IncidentDelivery, (incident_id, "alert"))
            if alert is not None and alert.status == AlertStatus.failed.value:
                row.status, row.reason, row.next_attempt_at = AlertStatus.skipped.value, NOTHING_TO_REPLY_TO, None
        s.add(row)
        return row

    def enqueue_delivery(self, incident_id: int, kind: DeliveryKind, *, now: datetime | None = None) -> str:
        """Queue a message for an incident (e.g. ``"clip"`` once its evidence clip is recorded); return its status.

        Due at once (a reply once the alert is sent); ``skipped`` when it is a reply and the alert failed. Queuing
        a delivery that is pending or sent again changes nothing. Raises IncidentNotFoundError for an unknown id.
        """
        _check_kind(kind)
        now = now or utcnow()
        with self.session() as s:
            if s.get(Incident, incident_id) is None:
                raise IncidentNotFoundError(f"no incident {incident_id}")
            return self._enqueue(s, incident_id, kind, now).status

    def delivery(self, kind: DeliveryKind, incident_id: int) -> IncidentDelivery | None:
        """The ``kind`` delivery of an incident (a detached row), or None when none is queued."""
        _check_kind(kind)
        with self.session() as s:
            row = s.get(IncidentDelivery, (incident_id, kind))
            if row is not None:
                s.expunge(row)
            return row

    # ---- claiming --------------------------------------------------------------------------------
    def due(self, kind: DeliveryKind, now: datetime | None = None, limit: int = 100) -> list[int]:
        """Ids whose ``kind`` delivery is pending, due and not leased, oldest first.

        A reply (close, clip) is due only once its alert was sent (it replies in the alert's thread).
        """
        now = now or utcnow()
        with self.session() as s:
            return [int(i) for i in s.exec(select(D.incident_id).where(*self._due_conds(kind, now))
                                           .order_by(D.incident_id).limit(limit)).all()]

    def claim(self, kind: DeliveryKind, incident_id: int, owner: str, lease_s: float, now: datetime | None = None) -> bool:
        """Take the lease on one pending delivery; True for exactly one claimer until the lease expires."""
        now = now or utcnow()
        with self.session() as s:
            res = s.execute(update(D).where(D.incident_id == incident_id, *self._due_conds(kind, now))
                            .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_s))
                            .execution_options(synchronize_session=False))
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
        conds = self._due_conds(kind, now)
        q = select(D.incident_id, D.lease_owner).where(*conds).order_by(D.incident_id).limit(limit)
        if self.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True, of=D)
        with self.session() as s:
            found = {int(i): holder for i, holder in s.execute(q).all()}
            if not found:
                return {}
            stmt = (update(D).where(D.incident_id.in_(list(found)), *conds)
                    .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_s))
                    .returning(D.incident_id).execution_options(synchronize_session=False))
            claimed = {int(i) for i in s.execute(stmt).scalars().all()}
            return {i: holder for i, holder in found.items() if i in claimed}

    def unclaim(self, kind: DeliveryKind, incident_id: int, owner: str, *, previous_owner: str | None = None,
                now: datetime | None = None) -> bool:
        """Give back a claimed delivery unsent (due again at once); ``previous_owner`` from :meth:`claim_due` is
        put back (already expired), so the next sender still checks whether an interrupted send went out."""
        _check_kind(kind)
        now = now or utcnow()
        with self.session() as s:
            res = s.execute(update(D).where(D.incident_id == incident_id, D.kind == kind, D.lease_owner == owner)
                            .values(lease_owner=previous_owner, lease_until=now if previous_owner is not None else None)
                            .execution_options(synchronize_session=False))
            return res.rowcount == 1

    def lease_holder(self, kind: DeliveryKind, incident_id: int) -> str | None:
        """Who holds (or held, if it died without finishing) the lease on this delivery; None when released."""
        _check_kind(kind)
        with self.session() as s:
            return s.execute(select(D.lease_owner).where(D.incident_id == incident_id, D.kind == kind)).scalar_one_or_none()

    def known_channel(self, notifier: str) -> str | None:
        """A channel id a message of ``notifier`` (``name:channel``) was delivered to, if any."""
        with self.session() as s:
            return s.execute(select(Incident.slack_channel).where(Incident.notifier == notifier, Incident.slack_channel.is_not(None))
                             .order_by(Incident.id.desc()).limit(1)).scalar_one_or_none()

    def slack_ref(self, incident_id: int) -> tuple[str, str] | None:
        """``(channel, ts)`` of the incident's sent alert (to update it in place); None when none was sent.
        Raises IncidentNotFoundError for an unknown id."""
        with self.session() as s:
            row = s.execute(select(Incident.slack_channel, Incident.slack_ts).where(Incident.id == incident_id)).first()
            if row is None:
                raise IncidentNotFoundError(f"no incident {incident_id}")
            return (row[0], row[1]) if row[0] and row[1] else None

    # ---- finishing -------------------------------------------------------------------------------
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
        next sender must first check whether an interrupted send went out. An alert's ``channel``, ``ts`` and
        ``notifier`` are kept on the incident (the thread its replies go to). A failed alert skips the replies
        waiting for it.
        """
        _check_kind(kind)
        now = now or utcnow()
        values: dict[str, Any] = {
            "status": status.value,
            "reason": reason,
            "lease_owner": hold_as,
            "lease_until": next_attempt_at if hold_as is not None else None,
            "next_attempt_at": next_attempt_at,
            "updated_at": now,
        }
        if count_attempt:
            values["attempts"] = D.attempts + 1
        if status == AlertStatus.sent:
            values["sent_at"] = now
        with self.session() as s:
            res = s.execute(update(D).where(D.incident_id == incident_id, D.kind == kind, D.lease_owner == owner)
                            .values(values).execution_options(synchronize_session=False))
            if res.rowcount != 1:
                return False
            incident: dict[str, Any] = {"updated_at": now}
            if kind == "alert":
                incident.update({k: v for k, v in (("slack_channel", channel), ("slack_ts", ts), ("notifier", notifier))
                                 if v is not None})
                if status == AlertStatus.failed:
                    s.execute(update(D).where(D.incident_id == incident_id, D.kind.in_(REPLIES),
                                              D.status == AlertStatus.pending.value)
                              .values(status=AlertStatus.skipped.value, reason=NOTHING_TO_REPLY_TO, updated_at=now)
                              .execution_options(synchronize_session=False))
            s.execute(update(Incident).where(Incident.id == incident_id).values(incident)
                      .execution_options(synchronize_session=False))
            return True

    # ---- health ----------------------------------------------------------------------------------
    def sent_since(self, since: datetime, notifier: str | None = None) -> int:
        """Messages (alerts and replies) sent since ``since`` through ``notifier`` (``name:channel``) when given."""
        q = select(func.count()).select_from(D).where(D.sent_at >= since)
        if notifier is not None:
            q = q.join(Incident, Incident.id == D.incident_id).where(Incident.notifier == notifier)
        with self.session() as s:
            return int(s.execute(q).scalar_one())

    def delivery_counts(self) -> dict[str, int]:
        """How many alerts are in each delivery state."""
        with self.session() as s:
            rows = s.execute(select(D.status, func.count()).where(D.kind == "alert").group_by(D.status)).all()
            return {str(k): int(v) for k, v in rows}

    def last_failure(self) -> tuple[int, str | None] | None:
        """The most recent incident whose alert failed for good: (id, reason)."""
        with self.session() as s:
            row = s.execute(select(D.incident_id, D.reason).where(D.kind == "alert", D.status == AlertStatus.failed.value)
                            .order_by(D.updated_at.desc()).limit(1)).first()
            return None if row is None else (int(row[0]), row[1])
