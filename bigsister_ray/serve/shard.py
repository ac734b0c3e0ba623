"""The StreamShard deployment: decodes, windows and applies the alert rules of the streams it holds leases on.

Each replica is one shard. For every stream it owns (:mod:`bigsister_ray.serve.ownership`), a ``StreamRunner``
decodes the source, scaled once to the checkpoint's ClipSpec near the source; a ``WindowAssembler`` cuts windows
here; the windows of all its streams go to the Classifier together (``WindowBatcher``); the scores feed the
stream's ``RuleEngine`` here, and incident events go into the database with the stream's fencing token, then to
the notification outbox, which every shard's sweeper delivers (each alert once).

After every scored chunk the stream's rule state (k-of-n history, open incident, cooldown) and its resume
position are saved with its lease, BEFORE the chunk's incident events: a stream that moves to another shard
(node lost, shard killed, shards added) continues its open incident under the same key, and its cooldown
holds. A write with a stale token is refused by the database and stops the stream here.

Frames leave the shard's process only as windows (to the Classifier) and evidence clips (MP4 files written by
:class:`~bigsister_ray.serve.evidence.EvidenceRecorder`, fenced like the events that go to the database).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from bigsister_ray.alerts.rules import RuleEngine, WindowScore
from bigsister_ray.config import Settings
from bigsister_ray.serve.journal import EventJournal, replay_orphans
from bigsister_ray.serve.metrics import DecoderMetrics, WindowerMetrics, export_stream_metrics
from bigsister_ray.serve.owned import OwnedStream, is_file_url, stream_overrides
from bigsister_ray.serve.ownership import LeaseKeeper, desired_shards
from bigsister_ray.video.stream import StreamRunner, live_stream_threads
from bigsister_ray.video.windows import WindowAssembler

__all__ = ["StreamShard"]

log = logging.getLogger("ray.serve")

GUARD_PERIOD_S = 0.1  #: How often the guard checks the lease deadline (seconds).
LOCK_WAIT_S = 0.5  #: How long a lease round waits for a stream busy with its own events before it skips it.


@serve.deployment(name="StreamShard")
class StreamShard:
    """One shard: the streams it leases, decoded, windowed and alerted on here. Scaled by stream count."""

    def __init__(self, settings: Settings | dict[str, Any], checkpoint: str, classifier, max_batch_size: int = 16) -> None:
        import ray

        from bigsister_ray.alerts.notifiers import make_notifier
        from bigsister_ray.incidents.leases import LeaseStore
        from bigsister_ray.incidents.service import IncidentService
        from bigsister_ray.incidents.store import IncidentStore
        from bigsister_ray.models.checkpoint import read_checkpoint_meta
        from bigsister_ray.security.urls import UrlPolicy
        from bigsister_ray.serve.batcher import WindowBatcher
        from bigsister_ray.serve.evidence import EvidenceRecorder

        settings = Settings.model_validate(settings) if isinstance(settings, dict) else settings
        self.settings = settings
        meta = read_checkpoint_meta(Path(checkpoint))
        self.spec, self.labels = meta.clip, list(meta.labels)
        try:
            self.shard_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a Serve replica (the class used directly): a random id
            self.shard_id = uuid.uuid4().hex[:8]
        self.shard_id = f"{self.shard_id}-{os.getpid()}"
        self.node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
        self._store = IncidentStore.from_settings(settings)
        self._store.create_tables()
        self._leases = LeaseStore(self._store)
        self._service = IncidentService(self._store, make_notifier(settings), settings)
        self._service.start_sweeper()  # every shard delivers the outbox; rows are claimed, so each alert goes once
        self._clips = EvidenceRecorder.from_settings(settings, self._store, self.spec)  # clips queued for the alert's thread
        self._engine = RuleEngine(meta.labels, settings.alerts, meta.thresholds)
        self._engine_lock = threading.Lock()
        self._classifier = classifier
        self._url_policy = UrlPolicy.from_config(settings.auth, settings.serve.port)
        self._batcher = WindowBatcher(self._send, max_batch_size=max_batch_size, name=f"shard-{self.shard_id}")
        self._owned: dict[str, OwnedStream] = {}
        #: (stream, fencing token) -> wall time of the first and last chunk this shard took in under that token
        self._decoded: dict[tuple[str, int], list[float]] = {}
        self._lock = threading.Lock()
        self._dmetrics, self._wmetrics = DecoderMetrics(), WindowerMetrics()
        self._exported: dict[str, tuple[int, int]] = {}  # stream -> (reconnects, dropped frames) already counted
        sh = settings.serve.shards
        self._keeper = LeaseKeeper(
            self._leases, lambda: len(self._store.list_streams()), shard_id=self.shard_id, node_id=self.node_id,
            capacity=settings.serve.streams.per_shard, ttl_s=sh.lease_ttl_s, moves_per_interval=sh.moves_per_interval,
            start=self._start_stream, stop=self._stop_stream, regained=self._regain)
        self._desired = sh.min_shards
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._stall_until = 0.0
        self._last_tick_ok = time.monotonic()
        self._tick_error: str | None = None
        self._journal = EventJournal(sh.journal_dir, self.shard_id)
        self._replay_orphans()  # a shard that died here during a database outage left events: written before claiming
        self._ticker = threading.Thread(target=self._lease_loop, name=f"shard-{self.shard_id}-leases", daemon=True)
        self._guard = threading.Thread(target=self._guard_loop, name=f"shard-{self.shard_id}-guard", daemon=True)
        self._ticker.start()
        self._guard.start()
        log.info("StreamShard %s on node %s: capacity %d streams, lease TTL %.1f s", self.shard_id, self.node_id,
                 settings.serve.streams.per_shard, sh.lease_ttl_s)

    # ---- the Classifier ----------------------------------------------------------------------------
    def _send(self, stacked: np.ndarray) -> Any:
        return self._classifier.classify_many.remote(stacked).result(timeout_s=120.0)

    # ---- leases: start and stop ----------------------------------------------------------------------
    def _start_stream(self, fence: Any, state: dict | None) -> None:
        """Claimed ``fence.stream_id``: load its registration and saved state, start decoding where it left off."""
        sid = fence.stream_id
        rec = self._store.get_stream(sid)
        url = self._store.get_stream_url(sid)
        if rec is None or url is None:
            raise RuntimeError(f"stream {sid} is not registered any more")
        overrides = stream_overrides(rec)
        state = state or {}
        owned = OwnedStream(fence=fence, url=url, realtime=bool((rec.options or {}).get("realtime", True)), name=rec.name,
                       location=rec.location, overrides=overrides, finished=bool(state.get("finished")))
        resume = state.get("resume") or {}
        owned.last_ts, owned.last_wall = resume.get("last_ts"), resume.get("last_wall")
        owned.windows = int(state.get("windows", 0))
        with self._engine_lock:
            try:
                self._engine.import_state(sid, state.get("rules"))
            except ValueError as err:  # a state from another version: the stream starts its rules afresh
                log.error("StreamShard: %s; starting its rules afresh", err)
                self._engine.reset(sid)
            keep = self._engine.open_keys(sid)
        self._service.end_dangling(sid, keep_keys=keep)  # incidents a lost state left open are ended, not kept forever
        with self._lock:
            self._owned[sid] = owned
        if not owned.finished:
            try:
                self._run(owned)
            except BaseException:
                with self._lock:
                    self._owned.pop(sid, None)
                raise
        log.info("StreamShard %s: now owns stream %s (token %d)%s", self.shard_id, sid, fence.token,
                 f", resuming at {owned.last_ts:.1f} s" if owned.last_ts is not None else "")

    def _run(self, owned: OwnedStream) -> None:
        sid = owned.fence.stream_id
        start_at = 0.0
        if owned.last_ts is not None:  # stream time continues across a move (a file resumes where it was)
            start_at = owned.last_ts + self.spec.stride_s
            if owned.realtime and owned.last_wall is not None and not is_file_url(owned.url):
                start_at = owned.last_ts + max(0.0, time.time() - owned.last_wall)
        if owned.runner is not None:  # one runner per stream, ever: a restart first stops the one before
            owned.runner.stop(0.0)
        owned.assembler = WindowAssembler(self.spec)
        owned.fenced = False
        owned.runner = StreamRunner(sid, owned.url, self.spec, self.settings.serve.streams, self._on_frames,
                                    realtime=owned.realtime, on_end=self._on_end, start_at_s=start_at)
        owned.runner.url_policy = self._url_policy  # every (re)connection is checked against the deployment's policy
        owned.runner.start()

    def _regain(self, fence: Any) -> None:
        """Claimed back a stream whose lapsed lease nobody took: carry on under the new token (restarted after the round)."""
        owned = self._owned.get(fence.stream_id)
        if owned is not None:
            owned.fence = fence
            log.warning("StreamShard %s: lease of stream %s had lapsed; claimed back (token %d)", self.shard_id,
                        fence.stream_id, fence.token)

    def _stop_stream(self, stream_id: str, reason: str) -> dict | None:
        """Stop decoding ``stream_id`` (lease lost or handed over); return its state for whoever takes it next."""
        with self._lock:
            owned = self._owned.pop(stream_id, None)
        if owned is None:
            return None
        owned.fenced = True
        if owned.runner is not None:
            owned.runner.stop(5.0)
        self._clips.finish(stream_id)
        log.info("StreamShard %s: stopped stream %s: %s", self.shard_id, stream_id, reason)
        with owned.lock:
            state = self._state(owned)
        with self._engine_lock:
            self._engine.reset(stream_id)
        return state

    def _state(self, owned: OwnedStream) -> dict[str, Any]:
        with self._engine_lock:
            rules = self._engine.export_state(owned.fence.stream_id)
        return owned.saved_state(rules)

    # ---- frames to events (runner threads) ----------------------------------------------------------------
    def _on_frames(self, stream_id: str, frames: np.ndarray, timestamps: list[float]) -> None:
        from bigsister_ray.errors import StreamError

        owned = self._owned.get(stream_id)
        if owned is None or owned.fenced or self._keeper.expired():
            raise StreamError(f"stream {stream_id}: this shard's lease lapsed; the chunk is dropped (another shard takes over)")
        decoded_at = time.time()
        self._clips.push(stream_id, frames, timestamps)
        with owned.lock:
            span = self._decoded.setdefault((stream_id, owned.fence.token), [decoded_at, decoded_at])
            span[1] = decoded_at
            self._dmetrics.frames_decoded.inc(len(frames), tags={"stream": stream_id})
            windows = owned.assembler.push(frames, timestamps, decoded_at)
        # The Classifier is waited for without the stream's lock: the lease loop saves every stream's state each
        # round, and a busy Classifier must not hold that round (and the renewal after it) back. Chunks of one
        # stream arrive in order from its one consumer thread, so nothing else scores this stream meanwhile.
        scored = self._classify(owned, windows) if windows else []
        with owned.lock:
            if owned.fenced:
                return  # stopped or handed over while the Classifier worked: the new owner resumes before this chunk
            # The resume position moves with the rules, so a state saved meanwhile resumes before this chunk.
            if timestamps:
                owned.last_ts, owned.last_wall = float(timestamps[-1]), decoded_at
            if scored:
                self._apply(owned, scored)

    def _classify(self, owned: OwnedStream, windows: list) -> list[tuple[Any, WindowScore]]:
        sid = owned.fence.stream_id
        futures = [self._batcher.submit(w.frames) for w in windows]
        scored = []
        for w, fut in zip(windows, futures):
            try:
                probs = fut.result(timeout=180.0)
            except Exception as err:  # counted and logged; the stream goes on with its next windows
                owned.classify_errors += 1
                self._wmetrics.classify_errors.inc(tags={"stream": sid})
                log.warning("stream %s: window %.1f-%.1f s not classified: %r", sid, w.start_s, w.end_s, err)
                continue
            now = time.time()
            if w.ready_at is not None:
                self._wmetrics.frame_to_score.observe(max(0.0, now - w.ready_at))
            at = datetime.fromtimestamp(w.ready_at if w.ready_at is not None else now, tz=timezone.utc)
            scored.append((w, WindowScore(w.start_s, w.end_s, {lb: float(p) for lb, p in zip(self.labels, probs)}, at=at)))
        return scored

    def _apply(self, owned: OwnedStream, scored: list[tuple[Any, WindowScore]]) -> None:
        """Scored windows into the stream's rules, and the events they make into the database (``owned.lock`` held)."""
        sid = owned.fence.stream_id
        owned.windows += len(scored)
        if owned.runner is not None:
            owned.runner.note_windows_classified(len(scored))
        self._wmetrics.windows_classified.inc(len(scored), tags={"stream": sid})
        events = []
        with self._engine_lock:
            for w, ws in scored:
                for ev in self._engine.update(sid, ws, owned.overrides or None):
                    events.append((ev, w.frames[len(w.frames) // 2]))
        self._persist(owned, events)

    def _persist(self, owned: OwnedStream, events: list[tuple[Any, np.ndarray | None]]) -> None:
        """Save the rule state, then write the events (fenced). Events the database refuses wait, in order, in memory
        and in the shard's journal on disk, and are written with the next chunk or lease round."""
        from bigsister_ray.alerts.snapshot import render_snapshot
        from bigsister_ray.incidents.leases import StaleLeaseError

        for ev, frame in events:
            jpeg = None
            if frame is not None and ev.kind in ("opened", "updated"):
                jpeg = render_snapshot(frame, label=ev.label, score=ev.peak_score, camera=owned.name, when=ev.at)
            owned.pending.append([ev, jpeg, False])
        if not events and not owned.pending:
            return  # nothing happened: the state is saved with the next renewal
        try:
            self._leases.save_state(owned.fence, self._state(owned))
            while owned.pending:
                ev, jpeg, _ = owned.pending[0]
                iid = self._service.handle(ev, stream_name=owned.name, location=owned.location, snapshot_jpeg=jpeg, fence=owned.fence)
                if ev.kind == "opened" and iid is not None:  # its evidence clip: the frames around the peak
                    self._clips.start(owned.fence, iid, ev.peak_start_s, ev.peak_end_s)
                owned.pending.pop(0)
        except StaleLeaseError as err:
            log.error("stream %s: %s; stopping it here", owned.fence.stream_id, err)
            owned.fenced = True
            owned.pending.clear()
            if owned.runner is not None:
                owned.runner.stop(0.0)
        except Exception as err:  # database down: the events wait, in order, in memory and on disk
            self._journal_pending(owned)
            log.error("stream %s: %d incident event(s) not written yet (journaled): %r", owned.fence.stream_id,
                      len(owned.pending), err)
            return
        self._clear_journal_if_done()

    def _journal_pending(self, owned: OwnedStream) -> None:
        state = None
        for item in owned.pending:
            if item[2]:
                continue
            if state is None:
                state = self._state(owned)
            self._journal.append(stream_id=owned.fence.stream_id, token=owned.fence.token, event=item[0],
                                 snapshot_jpeg=item[1], stream_name=owned.name, location=owned.location, state=state)
            item[2] = True

    def _clear_journal_if_done(self) -> None:
        with self._lock:
            waiting = any(o.pending for o in self._owned.values())
        if not waiting:
            self._journal.clear()

    def _replay_orphans(self) -> None:
        """Write the events journaled by shards that died on this node (see :mod:`bigsister_ray.serve.journal`)."""
        live = {sh.shard_id for sh in self._leases.live_shards(self._keeper.ttl_s)} | {self.shard_id}
        replay_orphans(self._journal, live, self._service, self._leases)

    def _on_end(self, stream_id: str) -> None:
        """A file source ended: close what is open on it and remember it finished (a move does not replay it)."""
        owned = self._owned.get(stream_id)
        if owned is None or owned.fenced:
            return
        with owned.lock:
            with self._engine_lock:
                events = [(ev, None) for ev in self._engine.flush(stream_id)]
                self._engine.reset(stream_id)
            owned.finished = True
            self._persist(owned, events)
            self._clips.finish(stream_id, last_picture=True)
            if not events:
                self._leases.save_state(owned.fence, self._state(owned))

    # ---- the lease loop and the guard --------------------------------------------------------------------
    def _lease_loop(self) -> None:
        while not self._stop.is_set():
            if time.monotonic() < self._stall_until:  # a drill: renewals held back
                self._stop.wait(min(0.1, self._stall_until - time.monotonic()))
                continue
            try:
                report = self._keeper.tick()
                self._last_tick_ok, self._tick_error = time.monotonic(), None
                self._after_tick(report)
            except Exception as err:  # database unreachable: held streams stop at the lease deadline (guard)
                self._tick_error = f"{type(err).__name__}: {err}"[:500]
                log.error("StreamShard %s: lease round failed: %s", self.shard_id, self._tick_error)
            self._wake.wait(self._keeper.interval_s)
            self._wake.clear()

    def _after_tick(self, report: Any) -> None:
        try:
            self._replay_orphans()
        except Exception as err:  # the files stay; the next round tries again
            log.error("StreamShard %s: journaled events of a dead shard not replayed yet: %r", self.shard_id, err)

        sh = self.settings.serve.shards
        self._desired = desired_shards(report.streams, self.settings.serve.streams.per_shard, sh.min_shards, sh.max_shards)
        with self._lock:
            owned = list(self._owned.values())
        try:
            recs = {r.id: r for r in self._store.list_streams()} if owned else {}
        except Exception as err:  # the streams keep their rules until the database answers
            log.warning("StreamShard %s: registrations not re-read: %r", self.shard_id, err)
            recs = {}
        for o in owned:
            rec = recs.get(o.fence.stream_id)
            if rec is not None:  # PATCH /streams/{id}: name, location and rules apply from this round
                o.name, o.location, o.overrides = rec.name, rec.location, stream_overrides(rec)
            if o.fenced and not o.finished and self._keeper.fence(o.fence.stream_id) is not None:
                log.info("StreamShard %s: lease of stream %s renewed after a stall; decoding again", self.shard_id,
                         o.fence.stream_id)
                self._run(o)
            # Events that waited for the database, then the status other shards and the Ingress read. A stream busy
            # writing its own events is skipped this round rather than waited for: the next renewal comes first.
            if not o.lock.acquire(timeout=LOCK_WAIT_S):
                continue
            try:
                if o.pending:
                    self._persist(o, [])
                state = self._state(o)
            except Exception as err:  # a stale fence is handled by the next renewal
                log.warning("StreamShard %s: events of stream %s not written: %r", self.shard_id, o.fence.stream_id, err)
                continue
            finally:
                o.lock.release()
            try:
                self._leases.save_state(o.fence, state)
            except Exception as err:  # a stale fence is handled by the next renewal
                log.warning("StreamShard %s: status of stream %s not saved: %r", self.shard_id, o.fence.stream_id, err)
        export_stream_metrics(self._dmetrics, self.statuses(), self._exported)
        self._clips.flush_due()  # clips of cameras that went quiet are written with what they have
        self._clips.write_latest_frames()  # each camera's picture in the console

    def _guard_loop(self) -> None:
        """Stops every stream the moment this shard's lease deadline passes, whatever the lease loop is doing."""
        while not self._stop.wait(GUARD_PERIOD_S):
            if not self._keeper.expired():
                continue
            with self._lock:
                owned = [o for o in self._owned.values() if not o.fenced and o.runner is not None]
            for o in owned:
                o.fenced = True
                o.runner.stop(0.0)
                log.error("StreamShard %s: lease of stream %s not renewed in time; stopped decoding it", self.shard_id,
                          o.fence.stream_id)

    # ---- the API the Ingress and operators use -----------------------------------------------------------
    def poke(self) -> str:
        """Run a lease round now (a stream was registered or deleted). Returns this shard's id."""
        self._wake.set()
        return self.shard_id

    def statuses(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            items = list(self._owned.items())
        return {sid: o.live_status() for sid, o in items}

    def info(self) -> dict[str, Any]:
        """This shard: id, node, capacity, the streams it holds (with their tokens) and its lease health."""
        fences = self._keeper.fences()
        decoded = [[sid, token, first, last] for (sid, token), (first, last) in list(self._decoded.items())]
        return {"shard_id": self.shard_id, "node_id": self.node_id, "capacity": self._keeper.capacity,
                "streams": {sid: f.token for sid, f in fences.items()}, "decoded": decoded,
                "lease_ok": not self._keeper.expired(), "lease_error": self._tick_error,
                "desired_shards": self._desired, "classify_retries": self._batcher.retries}

    async def health(self) -> dict[str, Any]:
        return await asyncio.to_thread(self._health)

    def _health(self) -> dict[str, Any]:
        """For ``/readyz``: the incident service's health as this shard sees it, events waiting for the database, leases."""
        health = self._service.health()
        with self._lock:
            buffered = sum(len(o.pending) for o in self._owned.values())
        health["buffer"] = {"buffered": buffered, "error": self._tick_error}
        health["shard"] = {"shard_id": self.shard_id, "node_id": self.node_id, "lease_ok": not self._keeper.expired(),
                           "lease_error": self._tick_error}
        if buffered:
            health["ok"] = False
        return health

    def stream_threads(self) -> dict[str, int]:
        """Live decoder threads per stream id in this replica (a stream it gave up must have none)."""
        return live_stream_threads()

    def stall_renewals(self, seconds: float, shard_id: str | None = None) -> str | None:
        """Drill: hold this shard's lease renewals back for ``seconds`` (as a stalled or partitioned node would).
        With ``shard_id``, only that shard obeys (a handle call reaches any replica: call again until one answers
        with its id); the others answer None."""
        if shard_id is not None and shard_id != self.shard_id:
            return None
        self._stall_until = time.monotonic() + float(seconds)
        return self.shard_id

    def record_autoscaling_stats(self) -> dict[str, float]:
        """What the autoscaling policy reads: the shards the registered streams need (see ownership.shard_count_policy)."""
        return {"desired_shards": float(self._desired)}

    def check_health(self) -> None:
        """Unhealthy when the lease loop or the guard died, or no lease round finished for two TTLs."""
        if not (self._ticker.is_alive() and self._guard.is_alive() and self._batcher.alive()):
            raise RuntimeError("StreamShard: a lease, guard or classify thread is not running")
        stale = time.monotonic() - self._last_tick_ok
        if stale > 2 * self._keeper.ttl_s and time.monotonic() >= self._stall_until:
            raise RuntimeError(f"StreamShard: no lease round succeeded for {stale:.0f} s ({self._tick_error})")

    def shutdown(self) -> None:
        """Hand every stream over (state saved, lease freed) and stop (replica shutdown or scale-down)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._ticker.join(timeout=5.0)
        self._batcher.close()  # stream threads waiting for scores stop waiting, so each stream stops at once
        self._clips.close()
        self._keeper.release_all()
        self._service.stop()

    async def __del__(self) -> None:
        """Serve's replica shutdown: hand every stream over without blocking the replica's event loop."""
        if hasattr(self, "_stop"):
            await asyncio.to_thread(self.shutdown)
