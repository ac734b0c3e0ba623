"""Incident events that the database could not take, kept durably on the shard's node until it can.

While the database refuses writes, a StreamShard keeps each stream's incident events in order in memory and
ALSO appends them, with the stream's rule state, to its journal file (``<serve.shards.journal_dir>/<shard>.jsonl``,
one JSON record per line, flushed and fsynced, folder 0700, file 0600). When the events are written, the file is
removed. A shard that dies during an outage leaves its file behind: the next shard to start on that node (Serve
starts a replacement replica) replays it in order before it claims any stream. Events are merged by their key,
so replaying one that did reach the database changes nothing; the saved rule state is put back only while the
stream's lease still carries the token it was journaled under, so the stream's next owner continues the
incident instead of opening another.

A node that is lost with its disk loses its journal: that is the limit of a node-local journal, stated in
docs/security.md.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

__all__ = ["EventJournal", "event_from_dict", "replay_orphans"]

log = logging.getLogger("ray.serve")


def _event_to_dict(event: Any) -> dict[str, Any]:
    d = asdict(event)
    for key in ("at", "started_at"):
        if d.get(key) is not None:
            d[key] = d[key].isoformat()
    d["timeline"] = [list(p) for p in d.get("timeline", [])]
    return d


def event_from_dict(d: dict[str, Any]) -> Any:
    """The :class:`~bigsister_ray.alerts.rules.IncidentEvent` a journal record holds."""
    from bigsister_ray.alerts.rules import IncidentEvent

    fields = dict(d)
    fields["at"] = datetime.fromisoformat(fields["at"])
    if fields.get("started_at") is not None:
        fields["started_at"] = datetime.fromisoformat(fields["started_at"])
    fields["timeline"] = [(float(t), float(s)) for t, s in fields.get("timeline", [])]
    return IncidentEvent(**fields)


class EventJournal:
    """One shard's journal file. Thread-safe; every append is on disk when it returns."""

    def __init__(self, folder: str | Path, shard_id: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        self.path = self.folder / f"{shard_id}.jsonl"
        self._lock = threading.Lock()

    def append(self, *, stream_id: str, token: int, event: Any, snapshot_jpeg: bytes | None, stream_name: str,
               location: str | None, state: dict[str, Any] | None) -> None:
        record = {"stream_id": stream_id, "token": token, "event": _event_to_dict(event), "stream_name": stream_name,
                  "location": location, "state": state,
                  "snapshot": base64.b64encode(snapshot_jpeg).decode() if snapshot_jpeg else None}
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def clear(self) -> None:
        """Everything journaled reached the database: forget it."""
        with self._lock:
            self.path.unlink(missing_ok=True)

    def orphans(self, live_shards: set[str]) -> list[Path]:
        """Journal files in the folder left by shards that are not live (dead replicas on this node)."""
        return sorted(p for p in self.folder.glob("*.jsonl") if p.stem not in live_shards and p != self.path)

    @staticmethod
    def records(path: Path) -> Iterator[dict[str, Any]]:
        """The records of a journal file in order; a torn last line (the process died mid-write) is skipped."""
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    log.warning("journal %s: line %d is incomplete (written while the process died); skipped", path,
                                number)

    @staticmethod
    def snapshot(record: dict[str, Any]) -> bytes | None:
        return base64.b64decode(record["snapshot"]) if record.get("snapshot") else None


def replay_orphans(journal: EventJournal, live_shards: set[str], service: Any, leases: Any) -> int:
    """Write the events of every orphaned journal in ``journal``'s folder, in order, unfenced (merged by key),
    then put back each stream's last journaled rule state where its lease still carries the journaled token;
    remove each file once replayed. Returns how many events were replayed. Raises what the database raises
    (the files stay for the next try)."""
    total = 0
    for path in journal.orphans(live_shards):
        last_state: dict[str, tuple[int, dict]] = {}
        count = 0
        for rec in EventJournal.records(path):
            service.handle(event_from_dict(rec["event"]), stream_name=rec["stream_name"], location=rec.get("location"),
                           snapshot_jpeg=EventJournal.snapshot(rec))
            if rec.get("state") is not None:
                last_state[rec["stream_id"]] = (int(rec["token"]), rec["state"])
            count += 1
        for sid, (token, state) in last_state.items():
            leases.restore_state(sid, token, state)
        path.unlink(missing_ok=True)
        log.warning("replayed %d incident event(s) journaled by shard %s during a database outage", count, path.stem)
        total += count
    return total
