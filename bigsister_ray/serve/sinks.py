"""Where the AlertManager's incident events go: the :class:`EventSink` interface and its implementations.

* :class:`MemorySink` logs every event and keeps the most recent ones in memory (``GET /events``-style
  inspection, tests, and a service with no database).
* :class:`IncidentServiceSink` hands events to :class:`bigsister_ray.incidents.service.IncidentService`, which
  persists the incident first and notifies second (Slack, webhook or console). While the database cannot be
  written, events are kept in order in a bounded buffer and written (then notified) when it answers again:
  on the next event and every ``retry_s`` by a background thread.

The AlertManager calls every sink for every event; one sink failing is logged and never stops the others.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import asdict
from typing import Any, Protocol, runtime_checkable

__all__ = ["EventSink", "MemorySink", "IncidentServiceSink", "event_to_dict"]

log = logging.getLogger("ray.serve")


@runtime_checkable
class EventSink(Protocol):
    """Receives incident events (``bigsister_ray.alerts.rules.IncidentEvent``) in order per stream."""

    def handle(self, event: Any, *, stream_name: str, location: str | None, snapshot_jpeg: bytes | None) -> int | None:
        """Deliver one event; return the incident id when the sink stores incidents."""
        ...

    def close(self) -> None:
        """Release resources (threads, connections)."""
        ...


def event_to_dict(event: Any) -> dict[str, Any]:
    """JSON-ready form of an IncidentEvent (datetimes as ISO strings)."""
    d = asdict(event)
    for key in ("at", "started_at"):
        if d.get(key) is not None:
            d[key] = d[key].isoformat()
    d["timeline"] = [list(p) for p in d.get("timeline", [])]
    return d


class MemorySink:
    """Logs each event and keeps the last ``maxlen`` of them (oldest forgotten first)."""

    def __init__(self, maxlen: int = 1000) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=maxlen)

    def handle(self, event: Any, *, stream_name: str, location: str | None, snapshot_jpeg: bytes | None) -> int | None:
        d = event_to_dict(event)
        d["stream_name"] = stream_name
        d["location"] = location
        d["snapshot_bytes"] = len(snapshot_jpeg) if snapshot_jpeg else 0
        self.events.append(d)
        log.warning("incident %s: stream %s (%s) %s severity=%s %.1f-%.1f s peak=%.2f", event.kind, stream_name,
                    event.stream_id, event.label, event.severity, event.start_s, event.end_s, event.peak_score)
        return None

    def close(self) -> None:
        return None


class IncidentServiceSink:
    """Persist first, notify second: delegates to ``IncidentService.handle`` (and runs its retry sweeper).

    A database error does not lose the event: it is buffered (at most ``max_buffer`` events, in arrival order)
    and retried in order, so an incident's ``opened`` is always written before its ``closed``.
    """

    def __init__(self, service: Any, start_sweeper: bool = True, max_buffer: int = 10_000, retry_s: float = 2.0) -> None:
        self.service = service
        self.max_buffer = max_buffer
        self.retry_s = retry_s
        self._buffer: deque[tuple[Any, dict[str, Any]]] = deque()
        self._lock = threading.Lock()
        self._dropped = 0
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._retrier: threading.Thread | None = None
        if start_sweeper:
            service.start_sweeper()
            self._retrier = threading.Thread(target=self._retry_loop, name="incident-buffer", daemon=True)
            self._retrier.start()

    def handle(self, event: Any, *, stream_name: str, location: str | None, snapshot_jpeg: bytes | None) -> int | None:
        from bigsister_ray.incidents.store import IncidentStoreError

        kwargs = {"stream_name": stream_name, "location": location, "snapshot_jpeg": snapshot_jpeg}
        with self._lock:
            self._buffer.append((event, kwargs))
            while len(self._buffer) > self.max_buffer:  # bounded memory: the oldest "updated" goes first
                self._drop_one()
            try:
                return self._drain_locked()
            except IncidentStoreError as err:
                self._last_error = str(err)
                log.error("incident store unavailable, %d event(s) buffered for retry: %s", len(self._buffer), err)
                return None

    def _drop_one(self) -> None:
        for i, (ev, _) in enumerate(self._buffer):
            if getattr(ev, "kind", None) == "updated":
                del self._buffer[i]
                self._dropped += 1
                return
        self._buffer.popleft()
        self._dropped += 1
        log.error("incident buffer full (%d): dropped the oldest event", self.max_buffer)

    def _drain_locked(self) -> int | None:
        """Write buffered events in order; raises IncidentStoreError (keeping the rest) when the store fails."""
        from bigsister_ray.incidents.store import IncidentStoreError

        last = None
        while self._buffer:
            event, kwargs = self._buffer[0]
            try:
                last = self.service.handle(event, **kwargs)
            except IncidentStoreError:
                raise  # kept at the head of the buffer, retried in order
            except Exception:  # not the database's fault: retrying would block every later event; logged by the caller
                self._buffer.popleft()
                raise
            self._buffer.popleft()
        self._last_error = None
        return last

    def retry(self) -> int:
        """Try to write the buffered events now; returns how many are still buffered."""
        from bigsister_ray.incidents.store import IncidentStoreError

        with self._lock:
            if self._buffer:
                try:
                    self._drain_locked()
                    log.warning("incident store answers again: buffered events written")
                except IncidentStoreError as err:
                    self._last_error = str(err)
            return len(self._buffer)

    def _retry_loop(self) -> None:
        while not self._stop.wait(self.retry_s):
            self.retry()

    def buffered(self) -> dict[str, Any]:
        """Events waiting for the database, events dropped because the buffer was full, the last store error."""
        with self._lock:
            return {"buffered": len(self._buffer), "dropped": self._dropped, "error": self._last_error}

    def close(self) -> None:
        self._stop.set()
        if self._retrier is not None:
            self._retrier.join(5.0)
        self.retry()
        self.service.stop()
