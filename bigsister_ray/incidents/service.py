"""The incident service: persist first, notify second, never lose an alert, never send one twice.

``handle(event)`` writes the incident (or merges a later event into it) and only then tries to deliver.
Each delivery (the alert; later, in its thread, the close reply and the evidence clip once recorded and queued
with :meth:`~bigsister_ray.incidents.outbox.DeliveryOutbox.enqueue_delivery`; the alert edited to show its review
status after each operator action, ``update``) moves ``pending -> sent | failed``:

* it is *claimed* with a lease (this service's owner id and an expiry), so several services or sweepers on
  one database never send the same alert twice; a sweep claims batches of due deliveries at once
  (PostgreSQL: ``FOR UPDATE SKIP LOCKED``), so many senders share the work instead of racing for each row;
* a retryable failure (rate limit, 5xx, Slack unreachable) leaves it ``pending`` with ``next_attempt_at``
  after an exponential backoff (or Slack's Retry-After); the sweeper picks it up then, also after a restart;
* a failure no retry can fix (``invalid_auth``, ``channel_not_found``, ``not_in_channel``) marks it ``failed``
  with the reason, and :meth:`IncidentService.health` reports it for ``/readyz``;
* at most ``alerts.max_messages_per_minute`` messages per notifier channel per minute (counted in the
  database, so across replicas): more are deferred, not dropped.

A sender that dies after Slack accepted a message but before its ``ts`` was recorded leaves its lease
unreleased. Whoever takes the delivery over after the lease expires first asks the notifier
(``find_sent``: Slack messages carry metadata with the incident id, found in the channel history or the
thread) and records the message it finds instead of sending again. Only when that lookup is impossible
(an incoming webhook; no ``channels:history`` scope) is the message sent again: a possible duplicate rather than a
loss, and the delivery's ``reason`` says so (:data:`MAYBE_TWICE`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any, Callable, Collection

from bigsister_ray.alerts.notifiers import AmbiguousDeliveryError, Delivery, IncidentAlert, Notifier
from bigsister_ray.alerts.rules import IncidentEvent
from bigsister_ray.config import Settings
from bigsister_ray.errors import AlertDeliveryError
from bigsister_ray.incidents.fencing import Fence
from bigsister_ray.incidents.models import AlertStatus, IncidentCreate, utcnow
from bigsister_ray.incidents.outbox import DELIVERY_KINDS
from bigsister_ray.incidents.retention import RetentionReport, media_file, sweep_media
from bigsister_ray.incidents.store import DeliveryKind, IncidentStore, IncidentStoreError, StaleLeaseError

__all__ = ["IncidentService"]

log = logging.getLogger(__name__)

#: Lease owner left on a delivery whose earlier send was interrupted and not yet checked.
INTERRUPTED = "interrupted-send"
#: A sent delivery's reason when an earlier attempt was interrupted and the notifier could not say whether it went out.
MAYBE_TWICE = "sent again after an interrupted attempt the notifier cannot check: it may have gone out twice"
#: Deliveries one sweep leases at a time. Each waits for at most the sends before it in its batch, so
#: ``alerts.lease_s`` must cover that many sends (by default it covers one send with all its retries).
SWEEP_BATCH = 4


class IncidentService:
    """Stores incidents from :class:`~bigsister_ray.alerts.rules.RuleEngine` events and delivers their alerts.

    ``settings`` is the root ``Settings`` (uses ``alerts`` and ``serve.public_url``). ``clock`` returns aware
    UTC datetimes (tests may pass their own). Call :meth:`start_sweeper` in long-running processes; without it,
    :meth:`handle` delivers inline and :meth:`sweep_once` retries.
    """

    def __init__(
        self,
        store: IncidentStore,
        notifier: Notifier,
        settings: Settings,
        *,
        owner: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.alerts = settings.alerts
        self.media = settings.incidents
        self.public_url = settings.serve.public_url
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.notifier_key = f"{notifier.name}:{notifier.channel or '-'}"
        self._clock = clock or utcnow
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one delivery at a time in this process
        self._state_lock = threading.Lock()
        self._last_error: dict[str, Any] | None = None
        self._last_success_at: datetime | None = None
        self._db_error: str | None = None
        self._next_retention_at: datetime | None = None

    def __repr__(self) -> str:
        return f"IncidentService(store={self.store!r}, notifier={self.notifier!r}, owner={self.owner!r})"

    # ---- events ----------------------------------------------------------------------------------
    def handle(
        self,
        event: IncidentEvent,
        *,
        stream_name: str,
        location: str | None = None,
        snapshot_jpeg: bytes | None = None,
        fence: Fence | None = None,
    ) -> int | None:
        """Persist ``event`` (opened/updated/closed), then deliver what is due. Returns the incident id.

        Raises IncidentStoreError when the database cannot take the incident (nothing was sent then), and its
        subclass StaleLeaseError when ``fence`` (the caller's lease on the stream) is no longer current: the
        stream has moved to another shard, nothing was written, and retrying cannot succeed.
        Delivery problems never raise: they are recorded on the incident and retried.
        """
        if event.kind not in ("opened", "updated", "closed"):
            raise ValueError(f"incident event kind must be opened, updated or closed, got {event.kind!r}")
        started_at = event.started_at or event.at
        key = event.key or f"{event.stream_id}:{event.label}:{event.start_s:.3f}:{started_at.isoformat()}"
        closed = event.kind == "closed"
        data = IncidentCreate(
            event_key=key,
            stream_id=event.stream_id,
            stream_name=stream_name,
            location=location,
            label=event.label,
            severity=event.severity,
            started_at=started_at,
            ended_at=started_at + timedelta(seconds=max(0.0, event.end_s - event.start_s)) if closed else None,
            start_s=event.start_s,
            end_s=event.end_s,
            peak_score=event.peak_score,
            peak_start_s=event.peak_start_s,
            peak_end_s=event.peak_end_s,
            timeline=[[float(t), float(s)] for t, s in event.timeline],
            snapshot=snapshot_jpeg,
        )
        try:
            incident_id = self.store.record_event(data, closed=closed, now=self._clock(), fence=fence)
        except StaleLeaseError:
            raise  # the database is fine: the caller lost the stream
        except IncidentStoreError as err:
            self._set_db_error(str(err))
            raise
        self._set_db_error(None)
        if event.kind == "updated":
            return incident_id
        if self.sweeper_running:
            self._wake.set()
        else:
            self.deliver(incident_id)
        return incident_id

    def end_dangling(self, stream_id: str | None = None, *, keep_keys: Collection[str] = ()) -> list[int]:
        """End incidents a previous rule engine left open (call when a fresh RuleEngine starts: it knows none).

        ``keep_keys``: event keys the new engine carries on (restored rule state): those stay open.
        Their close replies are queued like any other; returns the ids.
        """
        ids = self.store.end_dangling(stream_id=stream_id, now=self._clock(), keep_keys=keep_keys)
        if ids:
            log.warning("ended %d incident(s) left open by a previous rule engine: %s", len(ids), ids)
            if self.sweeper_running:
                self._wake.set()
            else:
                for incident_id in ids:
                    self.deliver(incident_id)
        return ids

    # ---- delivery --------------------------------------------------------------------------------
    def deliver(self, incident_id: int) -> int:
        """Try the deliveries of one incident that are due (alert, then its replies); return how many were tried."""
        tried = 0
        for kind in DELIVERY_KINDS:
            if self._attempt(kind, incident_id):
                tried += 1
        return tried

    def sweep_once(self, limit: int = 100) -> int:
        """Retry due pending deliveries (up to ``limit`` of each kind) once; return how many were tried.

        Deliveries are leased in batches of :data:`SWEEP_BATCH` with :meth:`IncidentStore.claim_due`, so
        several services sweeping one database each send a disjoint share, every delivery once.
        """
        tried = 0
        for kind in DELIVERY_KINDS:
            left = limit
            while left > 0:
                claimed = self.store.claim_due(kind, self.owner, self.alerts.lease_s, limit=min(SWEEP_BATCH, left),
                                               now=self._clock())
                if not claimed:
                    break
                left -= len(claimed)
                for incident_id, previous in claimed.items():
                    if self._stop.is_set() and self.sweeper_running:  # stopping: hand the rest back, due at once
                        self.store.unclaim(kind, incident_id, self.owner, previous_owner=previous, now=self._clock())
                    elif self._deliver_claimed(kind, incident_id, self._clock(), interrupted=previous is not None):
                        tried += 1
                if self._stop.is_set() and self.sweeper_running:
                    return tried
        return tried

    def _backoff(self, attempts: int, retry_after_s: float | None) -> float:
        wait = self.alerts.retry_backoff_initial_s * (2 ** min(max(attempts - 1, 0), 20))
        wait = min(wait, self.alerts.retry_backoff_max_s)
        if retry_after_s is not None:
            wait = max(wait, float(retry_after_s))
        return wait

    def _attempt(self, kind: DeliveryKind, incident_id: int) -> bool:
        now = self._clock()
        # a lease nobody released means a sender died mid-send: the message may be out already
        interrupted = self.store.lease_holder(kind, incident_id) is not None
        if not self.store.claim(kind, incident_id, self.owner, self.alerts.lease_s, now=now):
            return False
        return self._deliver_claimed(kind, incident_id, now, interrupted=interrupted)

    def _deliver_claimed(self, kind: DeliveryKind, incident_id: int, now: datetime, *, interrupted: bool) -> bool:
        with self._lock:
            try:
                return self._send_claimed(kind, incident_id, now, interrupted=interrupted)
            except IncidentStoreError as err:  # the lease expires and another attempt follows
                self._set_db_error(str(err))
                log.warning("incident %s: cannot record the %s delivery: %s", incident_id, kind, err)
                return True

    def _already_sent(self, kind: DeliveryKind, alert: IncidentAlert, row: Any) -> tuple[Delivery | None, bool]:
        """After an interrupted send, ask the notifier whether the message is out (Slack: channel history).

        Returns the message found (None: not out) and whether the notifier could tell at all.
        """
        find = getattr(self.notifier, "find_sent", None)
        if find is None:
            return None, False
        if kind in ("clip", "update"):
            return None, False  # no lookup for uploads and edits: sent again (an edit repeats itself, an upload may twice)
        if kind == "close":
            ref = Delivery(self.notifier.name, channel=row.slack_channel, ts=row.slack_ts)
        else:
            ref = Delivery(self.notifier.name, channel=self.store.known_channel(self.notifier_key))
        try:
            return find(alert, kind, ref), True
        except AlertDeliveryError as err:
            if err.retryable:
                raise
            log.warning("incident %s: cannot check whether the interrupted %s went out (%s); sending it (a duplicate is "
                        "possible, a loss is not)", alert.incident_id, kind, err)
            return None, False

    def _send_claimed(self, kind: DeliveryKind, incident_id: int, now: datetime, *, interrupted: bool = False) -> bool:
        row = self.store.get_incident_row(incident_id)
        if row is None:  # deleted under us
            return False
        since = now - timedelta(seconds=60)
        if self.store.sent_since(since, self.notifier_key) >= self.alerts.max_messages_per_minute:
            wait = max(1.0, 60.0 / self.alerts.max_messages_per_minute)
            self.store.finish(kind, incident_id, self.owner, status=AlertStatus.pending, count_attempt=False,
                              reason=f"deferred: {self.alerts.max_messages_per_minute} messages per minute reached on {self.notifier_key}",
                              next_attempt_at=now + timedelta(seconds=wait), now=now,
                              hold_as=INTERRUPTED if interrupted else None)
            return False
        trail = self.store.audit_trail(incident_id) if kind == "update" else []
        alert = IncidentAlert.from_row(row, self.public_url, trail[-1] if trail else None)  # who set the status
        owed = self.store.delivery(kind, incident_id)
        attempts = (owed.attempts if owed is not None else 0) + 1
        clip = None
        if kind == "clip":
            try:
                clip = media_file(self.media.media_dir, row.clip_path) if row.clip_path else None
            except ValueError as err:
                log.error("incident %s: %s", incident_id, err)
            if clip is None or not clip.is_file():
                self.store.finish(kind, incident_id, self.owner, status=AlertStatus.skipped, count_attempt=False,
                                  reason="no evidence clip file to send", now=now)
                return False
        try:
            found, checked = self._already_sent(kind, alert, row) if interrupted else (None, True)
        except AlertDeliveryError as err:  # retryable: we still do not know, so the next attempt must ask again
            self._record_failure(err, incident_id)
            wait = self._backoff(attempts, err.retry_after_s)
            self.store.finish(kind, incident_id, self.owner, status=AlertStatus.pending, reason=f"{err.reason}: {err}",
                              next_attempt_at=self._clock() + timedelta(seconds=wait), hold_as=INTERRUPTED)
            return True
        try:
            if found is not None:
                log.warning("incident %s: the interrupted %s had gone out (ts %s): recorded, not sent again", incident_id, kind, found.ts)
                attach = getattr(self.notifier, "attach_snapshot", None)
                delivery = attach(alert, found) if kind == "alert" and attach is not None else found
            elif kind == "alert":
                delivery = self.notifier.send_incident(alert)
            elif kind == "clip":
                delivery = self.notifier.send_clip(alert, Delivery(self.notifier.name, channel=row.slack_channel,
                                                                   ts=row.slack_ts), clip)
            elif kind == "update":
                delivery = self.notifier.update_message(alert, Delivery(self.notifier.name, channel=row.slack_channel,
                                                                        ts=row.slack_ts))
            else:
                delivery = self.notifier.send_close(alert, Delivery(self.notifier.name, channel=row.slack_channel, ts=row.slack_ts))
        except AlertDeliveryError as err:
            self._record_failure(err, incident_id)
            if err.retryable:
                wait = self._backoff(attempts, err.retry_after_s)
                # the message may be out: the next attempt checks before it sends
                hold = INTERRUPTED if isinstance(err, AmbiguousDeliveryError) else None
                self.store.finish(kind, incident_id, self.owner, status=AlertStatus.pending, reason=f"{err.reason}: {err}",
                                  next_attempt_at=self._clock() + timedelta(seconds=wait), hold_as=hold)
                log.warning("incident %s: %s not delivered (attempt %d), retrying in %.1f s: %s", incident_id, kind, attempts, wait, err)
            else:
                self.store.finish(kind, incident_id, self.owner, status=AlertStatus.failed, reason=f"{err.reason}: {err}")
                log.error("incident %s: %s failed for good: %s", incident_id, kind, err)
            return True
        except Exception as err:  # a bug in a notifier: keep the alert pending (checked before resending), say so loudly
            log.exception("incident %s: notifier %s raised unexpectedly", incident_id, self.notifier.name)
            self._record_failure(AlertDeliveryError(str(err), retryable=True, reason=type(err).__name__), incident_id)
            self.store.finish(kind, incident_id, self.owner, status=AlertStatus.pending, reason=f"{type(err).__name__}: {err}",
                              next_attempt_at=self._clock() + timedelta(seconds=self._backoff(attempts, None)), hold_as=INTERRUPTED)
            return True
        reason = delivery.note if checked else "; ".join(filter(None, (delivery.note, MAYBE_TWICE)))
        ok = self.store.finish(kind, incident_id, self.owner, status=AlertStatus.sent, reason=reason,
                               channel=delivery.channel, ts=delivery.ts, notifier=self.notifier_key, now=self._clock())
        if not ok:
            log.warning("incident %s: %s was sent but the lease had expired (lease_s=%s too short?)", incident_id, kind, self.alerts.lease_s)
        with self._state_lock:
            self._last_success_at = self._clock()
            if self._last_error is not None and self._last_error.get("retryable", True):
                self._last_error = None
        return True

    def _record_failure(self, err: AlertDeliveryError, incident_id: int) -> None:
        with self._state_lock:
            self._last_error = {"reason": err.reason, "message": str(err), "retryable": err.retryable,
                                "incident_id": incident_id, "at": self._clock().isoformat()}

    def _set_db_error(self, message: str | None) -> None:
        with self._state_lock:
            self._db_error = message

    # ---- sweeper ---------------------------------------------------------------------------------
    @property
    def sweeper_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start_sweeper(self, interval_s: float | None = None) -> None:
        """Start the background thread that retries due deliveries every ``interval_s`` (alerts.sweep_interval_s)."""
        if self.sweeper_running:
            return
        interval = interval_s if interval_s is not None else self.alerts.sweep_interval_s
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.sweep_once()
                    self.sweep_media_if_due()
                    self._set_db_error(None)
                except IncidentStoreError as err:
                    self._set_db_error(str(err))
                    log.warning("alert sweeper: database unavailable: %s", err)
                self._wake.wait(interval)
                self._wake.clear()

        self._thread = threading.Thread(target=loop, name=f"alert-sweeper-{self.owner}", daemon=True)
        self._thread.start()

    def sweep_media_if_due(self) -> RetentionReport | None:
        """Run the media retention sweep (:mod:`~bigsister_ray.incidents.retention`) when
        ``incidents.retention_sweep_interval_s`` has passed on this service's clock since the last one (the first
        call runs it); None when it was not due. The sweeper calls this after every delivery sweep."""
        now = self._clock()
        if self._next_retention_at is not None and now < self._next_retention_at:
            return None
        self._next_retention_at = now + timedelta(seconds=self.media.retention_sweep_interval_s)
        return sweep_media(self.store, self.media.media_dir, self.media.media_retention_days, now=now)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the sweeper (pending alerts stay pending in the database for the next service)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # ---- health ----------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """For ``/readyz`` detail: database reachable, notifier state, failed alerts and their last reason."""
        db_ok = self.store.ping()
        counts: dict[str, int] = {}
        last_failed = None
        if db_ok:
            try:
                counts = self.store.delivery_counts()
                failure = self.store.last_failure()
                if failure is not None:
                    last_failed = {"incident_id": failure[0], "reason": failure[1]}
            except IncidentStoreError as err:
                db_ok = False
                self._set_db_error(str(err))
        with self._state_lock:
            last_error = dict(self._last_error) if self._last_error else None
            last_success = self._last_success_at.isoformat() if self._last_success_at else None
            db_error = self._db_error
        notifier_ok = last_error is None or bool(last_error.get("retryable"))
        return {
            "ok": db_ok and notifier_ok,
            "database": {"ok": db_ok, "url": self.store.safe_url, "error": None if db_ok else (db_error or "unreachable")},
            "notifier": {"name": self.notifier.name, "channel": self.notifier.channel, "ok": notifier_ok,
                         "last_error": last_error, "last_success_at": last_success},
            "alerts": {"pending": counts.get("pending", 0), "sent": counts.get("sent", 0), "failed": counts.get("failed", 0),
                       "last_failed": last_failed},
            "sweeper": {"running": self.sweeper_running},
        }
