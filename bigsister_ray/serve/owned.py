"""What a StreamShard keeps for each stream it holds a lease on, and how that is saved with the lease."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from bigsister_ray.alerts.rules import overrides_from_options
from bigsister_ray.video.stream import status_dict

__all__ = ["OwnedStream", "is_file_url", "stream_overrides"]

log = logging.getLogger("ray.serve")


@dataclass
class OwnedStream:
    """One stream a shard holds: its lease's fence, registration, runner, window assembler and progress.

    ``lock`` orders the stream's own work (frames into windows, scores into rules, events into the database)
    against the shard's lease round, which saves :meth:`saved_state` with the lease.
    """

    fence: Any
    url: str
    realtime: bool
    name: str
    location: str | None
    overrides: dict[str, Any]
    runner: Any = None
    assembler: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: list[list[Any]] = field(default_factory=list)  # [event, jpeg, journaled] the database did not take yet
    last_ts: float | None = None
    last_wall: float | None = None
    finished: bool = False
    fenced: bool = False
    windows: int = 0
    classify_errors: int = 0

    def _runner_status(self) -> dict[str, Any]:
        if self.runner is None:
            return {"state": "stopped", "finished": self.finished}
        return status_dict(self.runner.status())

    def live_status(self) -> dict[str, Any]:
        """The stream's status as this shard sees it now (a fenced stream is stopped here)."""
        st = self._runner_status()
        if self.fenced and not self.finished:
            st["state"] = "stopped"
        st["windows_classified"] = self.windows
        return st

    def saved_state(self, rules: dict | None) -> dict[str, Any]:
        """What is saved with the lease: the rule state, the resume position and the status the API shows."""
        status = self._runner_status()
        status["windows_classified"] = self.windows
        status["classify_errors"] = self.classify_errors
        return {"rules": rules, "resume": {"last_ts": self.last_ts, "last_wall": self.last_wall},
                "finished": self.finished, "windows": self.windows, "status": status,
                "saved_at": datetime.now(timezone.utc).isoformat()}


def stream_overrides(rec: Any) -> dict[str, Any]:
    """The stream's own alert rules from its registration; a bad one is reported and the defaults apply."""
    try:
        return overrides_from_options(rec.options, where=f"stream {rec.id} options")
    except Exception as err:  # a bad override is reported; the stream keeps the default rules
        log.error("StreamShard: %s", err)
        return {}


def is_file_url(url: str) -> bool:
    return "://" not in url or url.startswith("file://")
