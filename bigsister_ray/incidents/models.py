"""SQLModel tables and schemas for streams and incidents, the documented way.

For each resource: a ``*Base`` with the shared fields, the ``table=True`` model, and ``*Create`` /
``*Public`` / ``*Update`` schemas (sqlmodel ``docs_src/tutorial/fastapi/app_testing``)::

    Stream     a registered camera: name, url (stored, never shown: ``StreamPublic.url`` is redacted),
               location, options (per-camera alert rules), enabled, last known state, created_at,
               deleted_at (soft delete)
    Incident   one detected behaviour on one stream: class, severity, start/end, peak, score timeline,
               snapshot JPEG, evidence clip (a file under ``incidents.media_dir``), review status, and where its
               alert was sent (channel, message ts)
    IncidentDelivery one message owed for an incident (kind alert, close or clip): the delivery outbox
    IncidentAction one operator action on an incident (ack, false alarm, resolve): who, when, with what note
    StreamLease    which shard owns a stream: owner, node, fencing token, expiry, and the state its owner saved
    ShardRecord    a live stream shard: node, capacity, load, last heartbeat

Review status moves only along :data:`TRANSITIONS`. Delivery state (:class:`IncidentDelivery`, one row per
incident and kind): ``pending -> sent | failed | skipped``.
Times are stored in UTC and always come back timezone-aware (:class:`UTCDateTime`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from sqlalchemy import JSON, Boolean, Column, DateTime, ForeignKey, Integer, LargeBinary, String, TypeDecorator, true
from sqlmodel import Field, SQLModel

from bigsister_ray.redact import redact_url as _redact_url

__all__ = [
    "IncidentStatus",
    "AlertStatus",
    "TRANSITIONS",
    "UTCDateTime",
    "utcnow",
    "redact_url",
    "StreamBase",
    "Stream",
    "StreamCreate",
    "StreamPublic",
    "StreamUpdate",
    "IncidentBase",
    "Incident",
    "IncidentCreate",
    "IncidentPublic",
    "IncidentUpdate",
    "IncidentAction",
    "IncidentDelivery",
    "IncidentActionPublic",
    "ACTIONS",
    "StreamLease",
    "StreamLeasePublic",
    "ShardRecord",
    "ShardRecordPublic",
]


class IncidentStatus(str, Enum):
    """Review status of an incident."""

    open = "open"
    acknowledged = "acknowledged"
    false_alarm = "false_alarm"
    resolved = "resolved"


class AlertStatus(str, Enum):
    """Delivery state of an alert (or of the close reply; ``skipped`` when there is no message to reply to)."""

    pending = "pending"
    sent = "sent"
    failed = "failed"
    skipped = "skipped"


#: Allowed review transitions; anything else is refused (HTTP 409). A verdict can be taken back (reopened): a
#: mistaken "false alarm" would otherwise go into the site's training data as "normal" (export-feedback).
TRANSITIONS: dict[str, frozenset[str]] = {
    "open": frozenset({"acknowledged", "false_alarm", "resolved"}),
    "acknowledged": frozenset({"false_alarm", "resolved"}),
    "false_alarm": frozenset({"open"}),
    "resolved": frozenset({"open"}),
}

#: Operator actions and the review status each moves an incident to.
ACTIONS: dict[str, str] = {
    "ack": IncidentStatus.acknowledged.value,
    "false_alarm": IncidentStatus.false_alarm.value,
    "resolve": IncidentStatus.resolved.value,
    "reopen": IncidentStatus.open.value,
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A datetime column stored in UTC (naive in SQLite, ``timestamptz`` in PostgreSQL), read back aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def redact_url(url: str) -> str:
    """``url`` with credentials removed (the rules of :func:`bigsister_ray.redact.redact_url`)."""
    return _redact_url(url)


def _uuid() -> str:
    return uuid.uuid4().hex


# ---- streams ------------------------------------------------------------------------------------
class StreamBase(SQLModel):
    name: str = Field(min_length=1, max_length=200, description="Camera name shown in alerts.")
    location: str | None = Field(default=None, max_length=500, description="Where the camera is (shown in alerts).")
    options: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False),
                                    description="Per-stream options, e.g. alert rule overrides per class.")


class Stream(StreamBase, table=True):
    id: str = Field(default_factory=_uuid, primary_key=True, max_length=64)
    url: str = Field(sa_column=Column(String, nullable=False))
    enabled: bool = Field(default=True, sa_column=Column(Boolean, nullable=False, server_default=true()),
                          description="A disabled stream stays registered but no shard runs it.")
    state: str | None = Field(default=None, max_length=32)
    last_error: str | None = None
    last_frame_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    deleted_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, index=True))


class StreamCreate(StreamBase):
    url: str = Field(min_length=1, max_length=4096, description="rtsp://, http(s):// or a local file under the media root.")
    id: str | None = Field(default=None, max_length=64, description="Optional id (default: a new uuid).")


class StreamPublic(StreamBase):
    id: str
    url: str = Field(description="The source URL with credentials redacted.")
    enabled: bool = True
    state: str | None = None
    last_error: str | None = None
    last_frame_at: datetime | None = None
    created_at: datetime
    updated_at: datetime | None = None
    deleted_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Stream) -> "StreamPublic":
        data = row.model_dump()
        data["url"] = redact_url(row.url)
        return cls.model_validate(data)


class StreamUpdate(SQLModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    location: str | None = None
    options: dict[str, Any] | None = None
    enabled: bool | None = None
    state: str | None = None
    last_error: str | None = None
    last_frame_at: datetime | None = None


# ---- incidents ----------------------------------------------------------------------------------
class IncidentBase(SQLModel):
    stream_id: str = Field(index=True, max_length=64)
    stream_name: str = Field(default="", max_length=200, description="Camera name when the incident opened.")
    location: str | None = Field(default=None, max_length=500)
    label: str = Field(index=True, max_length=64, description="The behaviour class.")
    severity: str = Field(default="low", max_length=16)
    started_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))
    ended_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    start_s: float = Field(description="Stream seconds of the first window.")
    end_s: float
    peak_score: float
    peak_start_s: float
    peak_end_s: float


class Incident(IncidentBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    event_key: str = Field(sa_column=Column(String(200), unique=True, nullable=False),
                           description="RuleEngine key: one row per detected incident, however often it is reported.")
    timeline: list[list[float]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    snapshot: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    clip_path: str | None = Field(default=None, max_length=500,
                                  description="The evidence clip, relative to incidents.media_dir; None when there is none.")
    status: str = Field(default=IncidentStatus.open.value, index=True, max_length=16)
    status_changed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    # where the alert went (its deliveries are IncidentDelivery rows)
    notifier: str | None = Field(default=None, max_length=100, description="name:channel of the notifier that sent it.")
    slack_channel: str | None = Field(default=None, max_length=64)
    slack_ts: str | None = Field(default=None, max_length=64)


class IncidentCreate(IncidentBase):
    event_key: str = Field(min_length=1, max_length=200)
    timeline: list[list[float]] = Field(default_factory=list)
    snapshot: bytes | None = None


class IncidentPublic(IncidentBase):
    id: int
    status: str
    status_changed_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    has_snapshot: bool = False
    has_clip: bool = False
    alert_status: str
    alert_reason: str | None = None
    alert_attempts: int = 0
    alert_next_attempt_at: datetime | None = None
    alert_sent_at: datetime | None = None
    notifier: str | None = None
    slack_channel: str | None = None
    slack_ts: str | None = None
    close_status: str | None = None
    close_reason: str | None = None
    timeline: list[list[float]] | None = Field(default=None, description="(window start_s, score) pairs; only on the detail view.")

    @classmethod
    def from_row(cls, row: Incident, deliveries: "dict[str, IncidentDelivery] | None" = None, *,
                 with_timeline: bool = True) -> "IncidentPublic":
        """``deliveries``: the incident's delivery rows by kind (its alert and close reply fill the alert_* and
        close_* fields)."""
        data = row.model_dump(exclude={"snapshot", "timeline", "event_key", "clip_path"})
        alert, close = (deliveries or {}).get("alert"), (deliveries or {}).get("close")
        data.update(alert_status=alert.status if alert else AlertStatus.pending.value,
                    alert_reason=alert.reason if alert else None, alert_attempts=alert.attempts if alert else 0,
                    alert_next_attempt_at=alert.next_attempt_at if alert else None,
                    alert_sent_at=alert.sent_at if alert else None,
                    close_status=close.status if close else None, close_reason=close.reason if close else None)
        data["has_snapshot"] = row.snapshot is not None
        data["has_clip"] = row.clip_path is not None
        data["timeline"] = [list(p) for p in row.timeline] if with_timeline else None
        return cls.model_validate(data)


class IncidentUpdate(SQLModel):
    """Fields a later event of the same incident may change."""

    end_s: float | None = None
    ended_at: datetime | None = None
    peak_score: float | None = None
    peak_start_s: float | None = None
    peak_end_s: float | None = None
    timeline: list[list[float]] | None = None
    snapshot: bytes | None = None
    severity: str | None = None


class IncidentAction(SQLModel, table=True):
    """One operator action on an incident, written in the transaction that changed its status (the audit trail)."""

    __tablename__ = "incident_actions"

    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(sa_column=Column(Integer, ForeignKey("incident.id", ondelete="CASCADE"), nullable=False, index=True))
    action: str = Field(max_length=32, description="ack, false_alarm or resolve.")
    from_status: str = Field(max_length=16, description="Review status before the action.")
    to_status: str = Field(max_length=16, description="Review status after the action.")
    actor: str = Field(max_length=200, description="Who acted: an API key's name, console:<key name>, slack:<user id> (<name>).")
    note: str | None = Field(default=None, max_length=2000)
    at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class IncidentActionPublic(SQLModel):
    incident_id: int
    action: str
    from_status: str
    to_status: str
    actor: str
    note: str | None = None
    at: datetime


class IncidentDelivery(SQLModel, table=True):
    """One message the outbox owes for an incident: its alert, the close reply, the evidence clip in the thread.

    Delivery state: ``pending -> sent | failed``, or ``skipped`` when there is nothing to reply to (the alert
    failed). A sender holds a lease (``lease_owner`` until ``lease_until``) while it sends
    (:mod:`bigsister_ray.incidents.outbox`).
    """

    __tablename__ = "incident_deliveries"

    incident_id: int = Field(sa_column=Column(Integer, ForeignKey("incident.id", ondelete="CASCADE"), primary_key=True))
    kind: str = Field(primary_key=True, max_length=16, description="alert, close or clip.")
    status: str = Field(default=AlertStatus.pending.value, max_length=16, index=True)
    reason: str | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, index=True))
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    sent_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, index=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))


# ---- stream leases and shards -------------------------------------------------------------------
class StreamLease(SQLModel, table=True):
    """Who owns a stream. One row per stream that was ever claimed; ``owner`` is None while it is free.

    ``token`` grows by one on every claim by a new owner and is never reused, so a write fenced with an older
    token is refused after the stream moved (see :mod:`bigsister_ray.incidents.leases`).
    """

    __tablename__ = "stream_leases"

    stream_id: str = Field(primary_key=True, max_length=64, description="The Stream id.")
    owner: str | None = Field(default=None, max_length=200, description="Shard id holding the lease; None when free.")
    node_id: str | None = Field(default=None, max_length=200, description="Ray node id of the owner.")
    token: int = Field(default=0, description="Fencing token: +1 on every claim, never reused.")
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, index=True))
    state: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON(none_as_null=True)),
                                         description="Alert-rule state and resume position, saved by the owner.")
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))


class StreamLeasePublic(SQLModel):
    stream_id: str
    owner: str | None = None
    node_id: str | None = None
    token: int
    expires_at: datetime | None = None
    updated_at: datetime
    status: dict | None = None  # the stream's status as its owner last saved it (``state["status"]``)
    finished: bool = False  # a file stream that reached its end (``state["finished"]``)

    @classmethod
    def from_row(cls, row: "StreamLease") -> "StreamLeasePublic":
        state = row.state or {}
        return cls.model_validate({**row.model_dump(exclude={"state"}), "status": state.get("status"),
                                   "finished": bool(state.get("finished"))})


class ShardRecord(SQLModel, table=True):
    """A stream shard's heartbeat: where it runs and how many streams it has and can take."""

    __tablename__ = "stream_shards"

    shard_id: str = Field(primary_key=True, max_length=200)
    node_id: str = Field(max_length=200)
    capacity: int = Field(description="Streams the shard can hold.")
    load: int = Field(description="Streams the shard holds now.")
    heartbeat_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))
    started_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class ShardRecordPublic(SQLModel):
    shard_id: str
    node_id: str
    capacity: int
    load: int
    heartbeat_at: datetime
    started_at: datetime
