"""The group split is stratified by class: every class with three or more groups is in train, val and test."""

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from bigsister_ray.data.index import assign_splits


@settings(max_examples=60, deadline=None)
@given(
    per_class=st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=6),
    seed=st.integers(min_value=0, max_value=10_000),
    weighted=st.booleans(),
)
def test_every_class_reaches_every_split_it_can(per_class, seed, weighted):
    groups = [f"{c}-{i}" for c, n in enumerate(per_class) for i in range(n)]
    strata = {g: g.split("-")[0] for g in groups}
    weights = {g: 1.0 + (hash(g) % 5) for g in groups} if weighted else None
    out = assign_splits(groups, (0.7, 0.15, 0.15), seed=seed, weights=weights, strata=strata)
    assert set(out) == set(groups)  # every group exactly once
    seen = defaultdict(set)
    for g, split in out.items():
        seen[strata[g]].add(split)
    for c, n in enumerate(per_class):
        expected = {"train", "val", "test"} if n >= 3 else ({"train", "val"} if n == 2 else {"train"})
        assert seen[str(c)] == expected, (n, out)
    assert out == assign_splits(list(reversed(groups)), (0.7, 0.15, 0.15), seed=seed, weights=weights, strata=strata)


def test_unstratified_split_can_lose_a_class():
    """Why strata matter: without them, a class's three takes can all land in train (this seed does)."""
    groups = [f"{c}-{i}" for c in "abcdef" for i in range(3)]
    strata = {g: g[0] for g in groups}
    plain = assign_splits(groups, (0.7, 0.15, 0.15), seed=0)
    lost = [c for c in "abcdef" if {plain[g] for g in groups if g[0] == c} != {"train", "val", "test"}]
    assert lost, "expected the plain split to miss some class in some split"
    stratified = assign_splits(groups, (0.7, 0.15, 0.15), seed=0, strata=strata)
    assert all({stratified[g] for g in groups if g[0] == c} == {"train", "val", "test"} for c in "abcdef")
