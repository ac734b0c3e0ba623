"""Where the AlertManager's incident events go: the :class:`EventSink` interface and its implementations.

* :class:`MemorySink` logs every event and keeps the most recent ones in memory (``GET /events``-style
  inspection, tests, and a service with no database).
* :class:`IncidentServiceSink` hands events to :class:`bigsister_ray.incidents.service.IncidentService`, which
  persists the incident first and notifies second (Slack, webhook or console).

The AlertManager calls every sink for every event; one sink failing is logged and never stops the others.
"""

from __future__ import annotations

import logging
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
    """Persist first, notify second: delegates to ``IncidentService.handle`` (and runs its retry sweeper)."""

    def __init__(self, service: Any, start_sweeper: bool = True) -> None:
        self.service = service
        if start_sweeper:
            service.start_sweeper()

    def handle(self, event: Any, *, stream_name: str, location: str | None, snapshot_jpeg: bytes | None) -> int | None:
        return self.service.handle(event, stream_name=stream_name, location=location, snapshot_jpeg=snapshot_jpeg)

    def close(self) -> None:
        self.service.stop()
