"""The operator's side of the store: actions with their audit trail, evidence clip paths, media retention
queries and reviewed verdicts.

:class:`ReviewStore` is a part of :class:`~bigsister_ray.incidents.store.IncidentStore` (it uses the store's
``session()``, ``dialect`` and ``_public``), as :class:`~bigsister_ray.incidents.outbox.DeliveryOutbox` is.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath
from typing import Callable, ContextManager

from sqlalchemy import exists, or_, update
from sqlmodel import Session, select

from bigsister_ray.incidents.errors import IncidentNotFoundError, InvalidTransitionError
from bigsister_ray.incidents.fencing import Fence, check_fence
from bigsister_ray.incidents.models import (
    ACTIONS,
    TRANSITIONS,
    AlertStatus,
    Incident,
    IncidentAction,
    IncidentActionPublic,
    IncidentDelivery,
    IncidentPublic,
    utcnow,
)

__all__ = ["ReviewStore", "check_media_path"]


class ReviewStore:
    """Operator actions and the audit trail, evidence clips, retention queries, verdicts."""

    dialect: str  # provided by IncidentStore
    session: Callable[[], ContextManager[Session]]
    _public: Callable[..., list[IncidentPublic]]

    # ---- operator actions: the audit trail ----------------------------------------------------
    def act(self, incident_id: int, action: str, *, actor: str, note: str | None = None,
            now: datetime | None = None) -> IncidentPublic:
        """Apply an operator's ``action`` (``ack``, ``false_alarm``, ``resolve``) and record who did it.

        The status moves as :meth:`set_status` allows (raises :class:`InvalidTransitionError` otherwise,
        :class:`IncidentNotFoundError` for an unknown id); the audit row is written in the same transaction, so
        the trail has exactly the actions that took effect. ``actor`` names who acted: an API key's name,
        ``console:<key name>``, ``slack:<user id> (<name>)``.
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown incident action {action!r}, expected one of {sorted(ACTIONS)}")
        actor = (actor or "").strip()
        if not actor:
            raise ValueError("actor: expected who acted (an API key's name, console:<name>, slack:<user>), got nothing")
        target = ACTIONS[action]
        now = now or utcnow()
        with self.session() as s:
            q = select(Incident).where(Incident.id == incident_id)
            if self.dialect == "postgresql":
                q = q.with_for_update()
            row = s.exec(q).first()
            if row is None:
                raise IncidentNotFoundError(f"no incident {incident_id}")
            before = row.status
            if target not in TRANSITIONS.get(before, frozenset()):
                raise InvalidTransitionError(incident_id, before, target)
            res = s.execute(update(Incident).where(Incident.id == incident_id, Incident.status == before)
                            .values(status=target, status_changed_at=now, updated_at=now))
            if res.rowcount != 1:  # SQLite holds the write lock, PostgreSQL the row lock: only a bug gets here
                raise InvalidTransitionError(incident_id, before, target)
            self._enqueue(s, incident_id, "update", now, again=True)  # the alert's message shows the new status
            s.add(IncidentAction(incident_id=incident_id, action=action, from_status=before, to_status=target,
                                 actor=actor[:200], note=note, at=now))
            s.flush()
            s.refresh(row)
            return self._public(s, [row])[0]

    def audit_trail(self, incident_id: int) -> list[IncidentActionPublic]:
        """The operator actions on an incident, oldest first; raises IncidentNotFoundError for an unknown id."""
        with self.session() as s:
            if s.get(Incident, incident_id) is None:
                raise IncidentNotFoundError(f"no incident {incident_id}")
            rows = s.exec(select(IncidentAction).where(IncidentAction.incident_id == incident_id)
                          .order_by(IncidentAction.at, IncidentAction.id)).all()
            return [IncidentActionPublic.model_validate(r.model_dump()) for r in rows]

    # ---- evidence clips --------------------------------------------------------------------------
    def set_clip(self, incident_id: int, path: str | None, *, fence: Fence | None = None,
                 now: datetime | None = None) -> None:
        """Record the incident's evidence clip: ``path`` relative to ``incidents.media_dir`` (None: no clip).

        ``fence``: the writer's lease on the incident's stream, checked in the same transaction like
        :meth:`record_event` (StaleLeaseError, nothing written, when it is not current at ``now``).
        Raises IncidentNotFoundError for an unknown id (or one on another stream than ``fence``), ValueError for
        an absolute path or one that leaves the media folder."""
        if path is not None:
            path = check_media_path(path)
        now = now or utcnow()
        conds = [Incident.id == incident_id] + ([Incident.stream_id == fence.stream_id] if fence is not None else [])
        with self.session() as s:
            if fence is not None:
                check_fence(s, fence, dialect=self.dialect, now=now)
            res = s.execute(update(Incident).where(*conds).values(clip_path=path, updated_at=now))
            if res.rowcount != 1:
                raise IncidentNotFoundError(f"no incident {incident_id}")

    def get_clip_path(self, incident_id: int) -> str | None:
        """The clip's path relative to ``incidents.media_dir``; None when it has none (IncidentNotFoundError if unknown)."""
        with self.session() as s:
            row = s.execute(select(Incident.id, Incident.clip_path).where(Incident.id == incident_id)).first()
            if row is None:
                raise IncidentNotFoundError(f"no incident {incident_id}")
            return row[1]

    # ---- retention --------------------------------------------------------------------------------
    def media_before(self, cutoff: datetime, limit: int = 500) -> list[tuple[int, str | None]]:
        """Incidents that started before ``cutoff`` and still hold media: ``(id, clip path or None)``, oldest first.

        An incident whose alert is still pending keeps its media until the alert (which carries it) is out."""
        with self.session() as s:
            rows = s.execute(select(Incident.id, Incident.clip_path)
                             .where(Incident.started_at < cutoff,
                                    ~exists().where(IncidentDelivery.incident_id == Incident.id, IncidentDelivery.kind == "alert",
                                                    IncidentDelivery.status == AlertStatus.pending.value),
                                    or_(Incident.snapshot.is_not(None), Incident.clip_path.is_not(None)))
                             .order_by(Incident.started_at, Incident.id).limit(limit)).all()
            return [(int(i), c) for i, c in rows]

    def drop_media(self, incident_id: int, clip_path: str | None) -> None:
        """Forget the incident's snapshot and, if it still is ``clip_path``, its clip (a clip set since stays)."""
        with self.session() as s:
            s.execute(update(Incident).where(Incident.id == incident_id).values(snapshot=None))
            if clip_path is not None:
                s.execute(update(Incident).where(Incident.id == incident_id, Incident.clip_path == clip_path)
                          .values(clip_path=None))

    # ---- operator verdicts --------------------------------------------------------------------------
    def verdicts(self, *, since: datetime | None = None) -> list[tuple[IncidentPublic, str | None]]:
        """Reviewed incidents (acknowledged, resolved, false alarm) with their clip paths, oldest first; ``since``
        keeps those whose status changed at or after it."""
        conds = [Incident.status.in_([ACTIONS["ack"], ACTIONS["resolve"], ACTIONS["false_alarm"]])]
        if since is not None:
            conds.append(Incident.status_changed_at >= since)
        with self.session() as s:
            rows = s.exec(select(Incident).where(*conds).order_by(Incident.started_at, Incident.id)).all()
            return list(zip(self._public(s, rows, with_timeline=False), [r.clip_path for r in rows]))


def check_media_path(path: str) -> str:
    """``path`` if it is a relative path that stays inside the media folder (``a/b.mp4``); ValueError otherwise."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path or "\x00" in path:
        raise ValueError(f"clip path: expected a path relative to incidents.media_dir such as '12/clip.mp4', got {path!r}")
    return str(p)
