"""The AlertManager deployment: applies the alert rules to each stream's scored windows, emits incident events.

Scored windows arrive from the Windower in stream order. One :class:`~bigsister_ray.alerts.rules.RuleEngine`
(k-of-n, hysteresis, cooldown; thresholds calibrated in the checkpoint) turns them into ``opened`` /
``updated`` / ``closed`` events, which go to every :class:`~bigsister_ray.serve.sinks.EventSink`: the
in-memory log always, and the incident service (persist first, notify second) when a database is configured.
Each stream's rule overrides (``options["alerts"]`` of its registration) apply to its windows.

There is ONE AlertManager replica per database: when it starts, its rule engine knows no open incident, so it
ends the incidents a previous (killed) replica left open (``IncidentService.end_dangling``); their close
replies are delivered like any other. While the database cannot be written, events wait in the incident
sink's buffer (:class:`~bigsister_ray.serve.sinks.IncidentServiceSink`) and are written when it answers.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ray import serve

from bigsister_ray.serve.sinks import EventSink, IncidentServiceSink, MemorySink, event_to_dict

__all__ = ["AlertManager", "make_incident_sink"]

log = logging.getLogger("ray.serve")


def make_incident_sink(settings: Any, store: Any) -> EventSink:
    """The incident service's sink: persist, then notify with the configured notifier (Slack, webhook, console)."""
    from bigsister_ray.alerts.notifiers import make_notifier
    from bigsister_ray.incidents.service import IncidentService

    service = IncidentService(store, make_notifier(settings), settings)
    return IncidentServiceSink(service)


@serve.deployment(name="AlertManager")
class AlertManager:
    """Alert rules per stream; events to the sinks. One replica (the rules keep per-stream state)."""

    def __init__(self, settings: Any, checkpoint: str, use_incidents: bool = True) -> None:
        from bigsister_ray.alerts.rules import RuleEngine
        from bigsister_ray.config import Settings
        from bigsister_ray.models.checkpoint import read_checkpoint_meta

        settings = Settings.model_validate(settings) if isinstance(settings, dict) else settings
        self.settings = settings
        meta = read_checkpoint_meta(Path(checkpoint))
        self.labels = list(meta.labels)
        self.engine = RuleEngine(meta.labels, settings.alerts, meta.thresholds)
        self.memory = MemorySink()
        self.sinks: list[EventSink] = [self.memory]
        self._store = None
        if use_incidents:
            from bigsister_ray.incidents.store import IncidentStore

            self._store = IncidentStore(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
            self._store.create_tables()
            sink = make_incident_sink(settings, self._store)
            self.sinks.append(sink)
            try:
                sink.service.end_dangling()
            except Exception as err:  # the database may be down at start: those incidents are ended by the next start
                log.error("AlertManager: could not end incidents left open by a previous replica: %r", err)
        self._names: dict[str, tuple[str, str | None]] = {}
        self._overrides: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()

    def _stream_meta(self, stream_id: str) -> tuple[str, str | None]:
        if stream_id in self._names:
            return self._names[stream_id]
        from bigsister_ray.alerts.rules import overrides_from_options

        name, location, overrides = stream_id, None, {}
        if self._store is not None:
            rec = self._store.get_stream(stream_id)
            if rec is not None:
                name, location = rec.name, rec.location
                try:
                    overrides = overrides_from_options(rec.options, where=f"stream {stream_id} options")
                except Exception as err:  # a bad override is reported; the stream keeps the default rules
                    log.error("AlertManager: %s", err)
        self._names[stream_id] = (name, location)
        self._overrides[stream_id] = overrides
        return name, location

    def _stream_overrides(self, stream_id: str) -> dict[str, Any]:
        if stream_id not in self._overrides:
            try:
                self._stream_meta(stream_id)
            except Exception as err:  # database down: default rules now, the stream's own next time
                log.error("AlertManager: cannot read stream %s options: %r", stream_id, err)
                return {}
        return self._overrides[stream_id]

    async def observe(self, stream_id: str, windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Feed ``stream_id``'s scored windows (``start_s, end_s, scores, at, snapshot``); return the events."""
        async with self._lock:
            return await self._observe(stream_id, windows)

    async def observe_many(self, batch: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
        """:meth:`observe` for several streams in one request (the Windower gathers what its streams scored while
        the previous request was out: one request per round trip instead of one per window, so the single
        AlertManager replica keeps up with many cameras). Entries are applied in order; one that fails does not
        stop the others. Returns ``{"events": [...]}`` or ``{"error": "..."}`` per entry."""
        out: list[dict[str, Any]] = []
        async with self._lock:
            for stream_id, windows in batch:
                try:
                    out.append({"events": await self._observe(stream_id, windows)})
                except Exception as err:
                    log.error("AlertManager: %d scored windows of stream %s not applied: %r", len(windows), stream_id, err)
                    out.append({"error": repr(err)})
        return out

    async def _observe(self, stream_id: str, windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from bigsister_ray.alerts.rules import WindowScore

        out = []
        overrides = self._overrides.get(stream_id)
        if overrides is None:  # the database is read once per stream (again after a failed read)
            overrides = await asyncio.to_thread(self._stream_overrides, stream_id)
        for w in windows:
            at = datetime.fromtimestamp(w["at"], tz=timezone.utc) if w.get("at") is not None else None
            ws = WindowScore(start_s=float(w["start_s"]), end_s=float(w["end_s"]), scores=w["scores"], at=at)
            for event in self.engine.update(stream_id, ws, overrides or None):
                await self._emit(event, w.get("snapshot"))
                out.append(event_to_dict(event))
        return out

    async def _emit(self, event: Any, snapshot: Any) -> None:
        try:
            name, location = await asyncio.to_thread(self._stream_meta, event.stream_id)
        except Exception as err:  # database down: the event still goes to the sinks (buffered there), named by id
            log.error("AlertManager: cannot read stream %s's name: %r", event.stream_id, err)
            name, location = event.stream_id, None
        jpeg = None
        if snapshot is not None and event.kind in ("opened", "updated"):  # the store keeps the peak's picture
            from bigsister_ray.alerts.snapshot import render_snapshot

            jpeg = render_snapshot(snapshot, label=event.label, score=event.peak_score, camera=name, when=event.at)
        for sink in self.sinks:
            try:
                await asyncio.to_thread(sink.handle, event, stream_name=name, location=location, snapshot_jpeg=jpeg)
            except Exception as err:  # one sink failing (database, Slack) never stops the others; logged with the event
                log.error("AlertManager: sink %s failed on %s %s of stream %s: %r", type(sink).__name__, event.kind,
                          event.label, event.stream_id, err)

    async def flush(self, stream_id: str) -> list[dict[str, Any]]:
        """Close ``stream_id``'s open incidents (stream deleted) and forget its state."""
        async with self._lock:
            events = self.engine.flush(stream_id)
            for event in events:
                await self._emit(event, None)
            self.engine.reset(stream_id)
            self._names.pop(stream_id, None)
            self._overrides.pop(stream_id, None)
        return [event_to_dict(e) for e in events]

    def health(self) -> dict[str, Any]:
        """The incident service's health (database, notifier, failed alerts), or memory-only."""
        for sink in self.sinks:
            if isinstance(sink, IncidentServiceSink):
                health = sink.service.health()
                buf = sink.buffered()
                health["buffer"] = buf
                if buf["buffered"]:
                    health["ok"] = False
                    health["database"] = {**health.get("database", {}), "ok": False,
                                          "error": f"{buf['buffered']} incident event(s) waiting to be written: {buf['error']}"}
                return health
        return {"ok": True, "incidents": "memory only"}

    def events(self, stream_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent events kept in memory, newest last."""
        evs = [e for e in self.memory.events if stream_id is None or e["stream_id"] == stream_id]
        return evs[-limit:]

    def __del__(self) -> None:
        for sink in getattr(self, "sinks", []):
            sink.close()
