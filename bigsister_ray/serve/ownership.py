"""Which shard watches which stream: leases with fencing tokens, renewed, claimed and handed over by :class:`LeaseKeeper`.

Every stream is owned by exactly one StreamShard at a time, through its row in ``stream_leases``
(:class:`bigsister_ray.incidents.leases.LeaseStore`). Each shard runs :meth:`LeaseKeeper.tick` every
``lease_ttl_s / 3``:

1. **Renew** every lease it holds in one statement. A lease that lapsed while nobody took it (renewals stalled,
   or the database was down for longer than the TTL) is claimed back with a new token, the stream's state and
   waiting events kept. A lease it no longer holds (deleted stream, or taken after it lapsed) stops its stream.
2. **Heartbeat**: its row in ``stream_shards`` (node, capacity, load), which the other shards read.
3. **Claim** free streams (new registrations, and orphans whose owner stopped renewing) up to its fair share,
   ``min(capacity, ceil(streams / live shards))``. A claim bumps the stream's fencing token; the state its last
   owner saved (alert rules, open incident, resume position) comes with it.
4. **Hand over** at most ``moves_per_interval`` streams when it holds more than its fair share and another shard
   holds less (a shard was added): the stream is stopped, its state saved, its lease freed, and the shard with
   room claims it on its next tick.

**A shard stops before another starts.** The keeper's local deadline (:attr:`LeaseKeeper.valid_until`, on the
monotonic clock) is the start of the last successful renewal plus ``(1 - SAFETY) x ttl``: earlier than the
expiry the database saw, by a margin for clock skew and for stopping. The shard's guard stops every stream
once that deadline passes (renewals stalled, database unreachable, node partitioned), and refuses their windows
from then on; another shard can only claim them once the database's expiry has passed. Every incident write
carries the fencing token and the database refuses a stale one, so even a shard that missed all of this
cannot write over the new owner.

Failover bound: a stream of a dead shard is claimed within ``ttl + ttl / 3`` (its lease expires, then the next
tick of a shard with room) and plays again once its source connects.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

__all__ = ["LeaseKeeper", "TickReport", "SAFETY", "fair_share", "desired_shards", "shard_count_policy"]

log = logging.getLogger("ray.serve")

#: Part of the TTL kept as a margin between a shard's own deadline and the expiry other shards see.
SAFETY = 0.25
#: A stream that this shard claimed but could not start is left to other shards for this long.
FAILED_START_PAUSE_S = 30.0


def fair_share(streams: int, shards: int, capacity: int) -> int:
    """Streams one shard should hold: an even split of ``streams`` over ``shards``, at most ``capacity``."""
    return min(capacity, math.ceil(streams / max(1, shards)))


def desired_shards(streams: int, per_shard: int, min_shards: int, max_shards: int) -> int:
    """Shards needed for ``streams`` at ``per_shard`` each, within the configured bounds."""
    return max(min_shards, min(max_shards, math.ceil(streams / max(1, per_shard))))


def shard_count_policy(ctx: Any) -> tuple[int, dict[str, Any]]:
    """Serve autoscaling policy of the StreamShard deployment: as many replicas as the registered streams need.

    Each replica reports ``desired_shards`` (its reading of ``ceil(streams / per_shard)`` within bounds) through
    ``record_autoscaling_stats``; the highest report wins. Before any report, the current count is kept. Serve
    applies ``min_replicas``/``max_replicas`` and the up/down-scale delays on top.
    """
    reports = (ctx.aggregated_metrics or {}).get("desired_shards") or {}
    if not reports:
        return ctx.current_num_replicas, {}
    return int(max(reports.values())), {}


@dataclass
class TickReport:
    """What one :meth:`LeaseKeeper.tick` did (stream ids)."""

    renewed: list[str] = field(default_factory=list)
    regained: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    claimed: list[str] = field(default_factory=list)
    handed_over: list[str] = field(default_factory=list)
    streams: int = 0
    shards: int = 0
    target: int = 0


class LeaseKeeper:
    """One shard's leases. ``start(fence, state)`` starts a stream it claimed (``state``: what the last owner
    saved, or None); ``stop(stream_id, reason)`` stops one and returns its state to save (or None).

    Not thread-safe: one thread calls :meth:`tick`; :meth:`fences` and :attr:`valid_until` may be read anywhere.
    """

    def __init__(self, leases: Any, count_streams: Callable[[], int], *, shard_id: str, node_id: str, capacity: int,
                 ttl_s: float, moves_per_interval: int, start: Callable[[Any, dict | None], None],
                 stop: Callable[[str, str], dict | None], regained: Callable[[Any], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic, now: Callable[[], datetime] | None = None) -> None:
        from bigsister_ray.incidents.models import utcnow

        self._leases = leases
        self._count_streams = count_streams
        self.shard_id, self.node_id, self.capacity = shard_id, node_id, capacity
        self.ttl_s, self.moves_per_interval = ttl_s, moves_per_interval
        self._start, self._stop = start, stop
        self._regained = regained
        self._mono = monotonic
        self._now = now or utcnow
        self._held: dict[str, Any] = {}
        self._failed: dict[str, float] = {}  # stream -> monotonic time before which this shard does not claim it again
        self.valid_until = -math.inf  # monotonic deadline of every held lease, as this shard sees it

    @property
    def interval_s(self) -> float:
        return self.ttl_s / 3.0

    def fences(self) -> dict[str, Any]:
        """The fences of the streams held now (a copy)."""
        return dict(self._held)

    def fence(self, stream_id: str) -> Any | None:
        return self._held.get(stream_id)

    def expired(self) -> bool:
        return self._mono() >= self.valid_until

    def tick(self) -> TickReport:
        """One round: renew, heartbeat, claim, hand over. Raises IncidentStoreError when the database fails
        (the held leases then run out at :attr:`valid_until`)."""
        report = TickReport()
        began, now = self._mono(), self._now()
        if self._held:
            kept = self._leases.renew(self.shard_id, list(self._held.values()), self.ttl_s, now=now)
            for sid in list(self._held):
                if sid in kept:
                    report.renewed.append(sid)
                    continue
                # Lapsed (a stall or an outage longer than the TTL) but nobody took it: claim it back with a new
                # token and keep its state and waiting events. Taken or deleted: stop it.
                fence = self._leases.claim(sid, self.shard_id, self.node_id, self.ttl_s, now=now) if self._regained else None
                if fence is not None:
                    self._held[sid] = fence
                    self._regained(fence)
                    report.regained.append(sid)
                    continue
                report.lost.append(sid)
                del self._held[sid]
                self._stop(sid, "its lease is no longer this shard's (stream deleted, or the lease lapsed)")
        self.valid_until = began + (1.0 - SAFETY) * self.ttl_s
        self._leases.heartbeat(self.shard_id, self.node_id, self.capacity, len(self._held), now=now)
        shards = self._leases.live_shards(self.ttl_s, now=now)
        report.streams, report.shards = self._count_streams(), max(1, len(shards))
        report.target = target = fair_share(report.streams, report.shards, self.capacity)
        want = target - len(self._held)
        if want > 0:
            mono = self._mono()
            self._failed = {sid: t for sid, t in self._failed.items() if t > mono}
            for sid in self._leases.claimable(limit=want * 4 + 4 + len(self._failed), now=now):
                if sid not in self._failed and self._claim(sid, now):
                    report.claimed.append(sid)
                    want -= 1
                    if want == 0:
                        break
        elif want < 0 and any(s.shard_id != self.shard_id and s.load < fair_share(report.streams, report.shards, s.capacity)
                              for s in shards):
            for sid in sorted(self._held)[: min(-want, self.moves_per_interval)]:
                self._hand_over(sid, now)
                report.handed_over.append(sid)
        return report

    def release(self, stream_id: str) -> None:
        """Stop ``stream_id`` and free its lease with its state saved (shutdown, or a stream that must move)."""
        if stream_id in self._held:
            self._hand_over(stream_id, self._now())

    def release_all(self) -> None:
        for sid in list(self._held):
            try:
                self.release(sid)
            except Exception as err:  # the database may be gone at shutdown: the lease then lapses by itself
                log.warning("shard %s: could not release stream %s: %r", self.shard_id, sid, err)
        try:
            self._leases.remove_shard(self.shard_id)
        except Exception as err:  # its heartbeat then goes stale by itself
            log.warning("shard %s: could not remove its heartbeat row: %r", self.shard_id, err)

    def drop(self, stream_id: str) -> None:
        """Forget a held stream without touching its lease (its runner already stopped for good)."""
        self._held.pop(stream_id, None)

    # ---- internals -------------------------------------------------------------------------------
    def _claim(self, stream_id: str, now: datetime) -> bool:
        fence = self._leases.claim(stream_id, self.shard_id, self.node_id, self.ttl_s, now=now)
        if fence is None:
            return False
        self._held[stream_id] = fence
        try:
            state = self._leases.load_state(stream_id)
            self._start(fence, state)
        except Exception as err:  # a stream that cannot start is handed back, not held while doing nothing
            log.error("shard %s: stream %s claimed but not started (handed back; not claimed here again for %.0f s): %r",
                      self.shard_id, stream_id, FAILED_START_PAUSE_S, err)
            del self._held[stream_id]
            self._failed[stream_id] = self._mono() + FAILED_START_PAUSE_S
            self._leases.release(fence, now=now)
            return False
        return True

    def _hand_over(self, stream_id: str, now: datetime) -> None:
        fence = self._held.pop(stream_id)
        state = self._stop(stream_id, "handed over to another shard")
        self._leases.release(fence, state=state, now=now)
