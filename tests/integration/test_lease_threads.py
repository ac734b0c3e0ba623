"""Stream leases under concurrent claimers on threads: exactly one claimer wins each stream."""

from __future__ import annotations

import threading

from bigsister_ray.incidents.leases import Fence

from tests.unit.test_leases import TTL, at, cams, leases, store  # noqa: F401 (shared fixtures)


def _race(n: int, fn) -> list:
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = fn(i)
        except BaseException as err:  # collected and asserted by the caller
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and not any(t.is_alive() for t in threads)
    return results


def test_concurrent_claimers_exactly_one_wins_each_stream(leases, store):
    streams = [f"cam-{i}" for i in range(8)]
    cams(store, *streams)
    shards = 6

    def claim_all(i: int) -> list[Fence]:
        order = streams[i % len(streams):] + streams[:i % len(streams)]  # each shard starts somewhere else
        return [f for f in (leases.claim(s, f"shard-{i}", f"node-{i}", TTL, now=at(0)) for s in order) if f is not None]

    won = [f for fences in _race(shards, claim_all) for f in fences]
    assert sorted(f.stream_id for f in won) == streams  # every stream claimed exactly once
    assert all(f.token == 1 for f in won)
    for f in won:
        assert leases.lease(f.stream_id).owner == f.owner

    # every lease expires: the takeover race also has exactly one winner per stream, each with the next token
    won = [f for fences in _race(shards, lambda i: [f for f in (leases.claim(s, f"new-{i}", "n", TTL, now=at(31))
                                                                for s in streams) if f is not None]) for f in fences]
    assert sorted(f.stream_id for f in won) == streams and all(f.token == 2 for f in won)
