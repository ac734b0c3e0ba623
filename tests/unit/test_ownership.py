"""Which shard holds which stream: LeaseKeeper rounds over a real SQLite file, with injected clocks.

Each keeper stands for one StreamShard; ``start``/``stop`` record what its shard would decode. Time is a shared
fake clock (wall time for the database, monotonic time for the keepers' own deadlines) moved by the test.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bigsister_ray.incidents.leases import LeaseStore
from bigsister_ray.incidents.models import StreamCreate
from bigsister_ray.incidents.store import IncidentStore
from bigsister_ray.serve.ownership import SAFETY, LeaseKeeper, desired_shards, fair_share

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
TTL = 9.0


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def mono(self) -> float:
        return self.t

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.t)


class Shard:
    """What a StreamShard does with its keeper's decisions: the streams it decodes, and when each started/stopped."""

    def __init__(self, name: str, store: IncidentStore, clock: Clock, capacity: int = 10, moves: int = 2,
                 regain: bool = False) -> None:
        self.decoding: dict[str, float] = {}
        self.regained: list = []
        self.history: list[tuple[str, str, float]] = []  # (stream, "start"|"stop", time)
        self.states: dict[str, dict | None] = {}
        self.keeper = LeaseKeeper(LeaseStore(store), lambda: len(store.list_streams()), shard_id=name, node_id=f"node-{name}",
                                  capacity=capacity, ttl_s=TTL, moves_per_interval=moves, start=self._start,
                                  stop=self._stop, regained=self.regained.append if regain else None,
                                  monotonic=clock.mono, now=clock.now)
        self.clock = clock

    def _start(self, fence, state) -> None:
        self.decoding[fence.stream_id] = self.clock.t
        self.states[fence.stream_id] = state
        self.history.append((fence.stream_id, "start", self.clock.t))

    def _stop(self, stream_id: str, reason: str) -> dict:
        self.decoding.pop(stream_id, None)
        self.history.append((stream_id, "stop", self.clock.t))
        return {"rules": {"fight": {"open": {"key": f"{stream_id}:fight:k"}}}, "from": self.keeper.shard_id}

    def guard(self) -> None:
        """The shard's guard: everything stops once its own lease deadline has passed."""
        if self.keeper.expired():
            for sid in list(self.decoding):
                self._stop(sid, "deadline passed")


@pytest.fixture
def store(tmp_path):
    s = IncidentStore(f"sqlite:///{tmp_path / 'own.db'}")
    s.create_tables()
    yield s
    s.dispose()


def _register(store: IncidentStore, n: int) -> list[str]:
    return [store.add_stream(StreamCreate(name=f"cam {i}", url=f"cam{i}.mp4")).id for i in range(n)]


def test_fair_share_and_shard_count():
    assert fair_share(9, 3, 5) == 3 and fair_share(9, 2, 4) == 4 and fair_share(0, 3, 5) == 0
    assert desired_shards(9, 5, 3, 8) == 3 and desired_shards(40, 5, 1, 4) == 4 and desired_shards(0, 16, 1, 8) == 1


def test_streams_spread_evenly_and_each_has_one_owner(store):
    clock = Clock()
    ids = _register(store, 9)
    shards = [Shard(n, store, clock) for n in "abc"]
    shards[0].keeper.tick()  # the first shard up takes what it can; the others join, and the streams spread
    assert len(shards[0].decoding) == 9
    for _ in range(4):
        clock.t += TTL / 3
        for sh in shards:
            sh.keeper.tick()
    owned = [set(sh.decoding) for sh in shards]
    assert [len(o) for o in owned] == [3, 3, 3], owned
    assert set().union(*owned) == set(ids) and sum(len(o) for o in owned) == 9


def test_a_stalled_shard_stops_before_another_can_claim_its_streams(store):
    clock = Clock()
    ids = _register(store, 4)
    a, b = Shard("a", store, clock, capacity=4), Shard("b", store, clock, capacity=4)
    a.keeper.tick()
    assert set(a.decoding) == set(ids)
    b.keeper.tick()  # positive control: b claims nothing while a's leases are valid
    assert not b.decoding
    # a's renewals stall: only b runs its rounds; a's guard runs as a shard's guard does.
    claimed_at = None
    while clock.t < 3 * TTL and claimed_at is None:
        clock.t += 0.25
        a.guard()
        report = b.keeper.tick()
        if report.claimed:
            claimed_at = clock.t
            assert not a.decoding, f"b claimed at {clock.t} s while a still decoded {a.decoding}"
    assert claimed_at is not None and claimed_at > TTL, claimed_at
    a_stopped = max(t for _, what, t in a.history if what == "stop")
    assert a_stopped <= (1 - SAFETY) * TTL + 0.25 < claimed_at
    # No stream was ever decoded by both: every start of b comes after a's last stop.
    assert min(t for _, what, t in b.history if what == "start") > a_stopped
    # a comes back: its renewal is refused (the tokens moved), it does not start the streams again.
    a.keeper.tick()
    assert not a.decoding and not a.keeper.fences()


def test_added_shards_take_streams_in_bounded_steps_with_their_state(store):
    clock = Clock()
    ids = _register(store, 8)
    a = Shard("a", store, clock, capacity=10, moves=2)
    a.keeper.tick()
    assert len(a.decoding) == 8
    b = Shard("b", store, clock, capacity=10)
    b.keeper.tick()  # heartbeat; nothing is free yet
    assert not b.decoding
    sizes = []
    for _ in range(4):
        clock.t += TTL / 3
        report = a.keeper.tick()
        assert len(report.handed_over) <= 2, report
        b.keeper.tick()
        sizes.append((len(a.decoding), len(b.decoding)))
    assert sizes[0] == (6, 2) and sizes[-1] == (4, 4), sizes
    moved = next(iter(b.decoding))
    assert b.states[moved]["from"] == "a" and b.states[moved]["rules"]["fight"]["open"]["key"] == f"{moved}:fight:k"
    assert set(a.decoding) | set(b.decoding) == set(ids) and not set(a.decoding) & set(b.decoding)


def test_deleting_a_stream_frees_its_lease_and_its_shards_capacity(store):
    clock = Clock()
    ids = _register(store, 3)
    a = Shard("a", store, clock, capacity=2)
    a.keeper.tick()
    assert len(a.decoding) == 2
    waiting = (set(ids) - set(a.decoding)).pop()
    gone = next(iter(a.decoding))
    assert store.delete_stream(gone, now=clock.now())
    assert LeaseStore(store).lease(gone) is None or LeaseStore(store).lease(gone).owner is None
    clock.t += TTL / 3
    report = a.keeper.tick()
    assert report.lost == [gone] and gone not in a.decoding
    assert waiting in a.decoding, "the freed capacity went to the stream that was waiting"


def test_a_lapsed_lease_nobody_took_is_claimed_back_with_a_new_token_and_a_taken_one_is_not(store):
    clock = Clock()
    ids = _register(store, 2)
    a = Shard("a", store, clock, capacity=1, regain=True)
    a.keeper.tick()
    mine = next(iter(a.decoding))
    token = a.keeper.fence(mine).token
    clock.t += 2 * TTL  # a stalled past its TTL; nobody else is there to take the stream
    report = a.keeper.tick()
    assert report.regained == [mine] and not report.lost and mine in a.decoding, report
    assert a.keeper.fence(mine).token == token + 1 and [f.stream_id for f in a.regained] == [mine]
    # Now another shard takes it while a stalls again: a must stop it, not claim it back.
    b = Shard("b", store, clock, capacity=2)
    clock.t += 2 * TTL
    b.keeper.tick()
    assert mine in b.decoding
    report = a.keeper.tick()
    assert report.lost == [mine] and mine not in a.decoding and len(a.regained) == 1, report
    assert set(ids) == set(b.decoding) | set(a.decoding)
