"""The clip index: positives around spans, negatives outside them, dedupe, task labels, and the group split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from bigsister_ray.clip import ClipSpec
from bigsister_ray.config import Settings
from bigsister_ray.data.index import assign_splits, build_index, build_index_report, dedupe_videos, merge_spans
from bigsister_ray.data.records import Span, VideoRecord
from bigsister_ray.errors import DataError

SPEC = ClipSpec(frames=8, fps=4.0, size=32, stride=4)  # 2 s clips, 1 s stride


def _settings(**data) -> Settings:
    base = {"clips_per_event": 3, "negatives_per_video": 2, "negative_margin_s": 1.0}
    base.update(data)
    return Settings(clip=SPEC, data=base)


def _video(path="/d/12-1_cam01_fight01.mp4", label="fight", group="12-1", duration=60.0, spans=(), size="100"):
    return VideoRecord(path=path, label=label, group=group, source="aihub", fps=30.0, num_frames=int(duration * 30),
                       duration_s=duration, spans=list(spans), meta={"size_bytes": size})


def _overlaps(a0, a1, b0, b1):
    return a0 < b1 and b0 < a1


def test_positives_follow_actions_and_negatives_keep_the_margin():
    spans = [Span(kind="event", name="fight", start_s=5, end_s=50),
             Span(kind="action", name="kicking", start_s=20, end_s=24),
             Span(kind="action", name="punching", start_s=23, end_s=26)]
    clips = build_index([_video(spans=spans)], _settings())
    pos = [c for c in clips if c.kind == "positive"]
    neg = [c for c in clips if c.kind == "negative"]
    assert len(pos) == 3 and all(c.label == "fight" for c in pos)
    # around the merged action span 20-26, not the whole 5-50 event
    assert all(19 <= (c.start_s + c.end_s) / 2 <= 27 for c in pos)
    assert all(c.end_s - c.start_s == pytest.approx(SPEC.duration_s) for c in pos)
    assert len(neg) == 2 and all(c.label == "normal" for c in neg)
    for c in neg:  # outside every span widened by the 1 s margin, inside the video
        assert 0 <= c.start_s and c.end_s <= 60
        assert not _overlaps(c.start_s, c.end_s, 4, 51)
    assert len({c.clip_id for c in clips}) == len(clips)


def test_event_used_without_actions_or_when_use_actions_is_off():
    spans = [Span(kind="event", name="fight", start_s=10, end_s=30), Span(kind="action", name="kicking", start_s=12, end_s=13)]
    clips = build_index([_video(spans=spans)], _settings(use_actions=False, negatives_per_video=0))
    centres = sorted((c.start_s + c.end_s) / 2 for c in clips)
    assert len(centres) == 3 and centres[0] < 15 and centres[-1] > 24  # spread over the event


def test_short_span_gives_one_clip_not_copies():
    spans = [Span(kind="event", name="swoon", start_s=30.0, end_s=30.2)]
    clips = build_index([_video(label="fight", spans=spans)], _settings(negatives_per_video=0))
    assert len(clips) == 1 and clips[0].start_s == pytest.approx(29.1)


def test_no_negatives_without_room_or_without_normal():
    spans = [Span(kind="event", name="fight", start_s=1, end_s=9)]
    clips = build_index([_video(duration=10.0, spans=spans)], _settings())
    assert [c.kind for c in clips].count("negative") == 0
    no_normal = Settings(clip=SPEC, task={"labels": ["fight", "assault"]})
    clips = build_index([_video(spans=[Span(kind="event", name="fight", start_s=1, end_s=3)])], no_normal)
    assert {c.kind for c in clips} == {"positive"}


def test_whole_clip_for_videos_without_spans_and_task_mapping():
    videos = [_video(path="/d/a.mp4", label="normal", group="a", duration=3.0),
              _video(path="/d/b.mp4", label="robbery", group="b", duration=3.0),
              _video(path="/d/c.mp4", label="swoon", group="c", duration=3.0)]
    settings = Settings(clip=SPEC, task={"mapping": {"robbery": "assault"}})
    report = build_index_report(videos, settings)
    assert sorted((c.video, c.label, c.kind, c.end_s) for c in report.clips) == [
        ("/d/a.mp4", "normal", "whole", 3.0), ("/d/b.mp4", "assault", "whole", 3.0)]
    assert report.dropped_by_task == ["/d/c.mp4"]
    labels = settings.task.to_task().labels
    assert all(labels[c.label_idx] == c.label for c in report.clips)
    with pytest.raises(DataError, match="robbery.*not in the task.*task.mapping"):
        build_index(videos, Settings(clip=SPEC, task={"unknown": "error"}))


def test_clips_per_video_spreads_windows_over_videos_without_spans():
    videos = [_video(path=f"/d/{name}.mp4", label="fight", group="g", duration=d)
              for name, d in (("long", 10.0), ("mid", 4.7), ("short", 2.5), ("tiny", 1.5))]
    one = build_index(videos, Settings(clip=SPEC))  # default: the centre clip of each video
    assert sorted((c.video, c.start_s, c.end_s) for c in one) == [
        ("/d/long.mp4", 0.0, 10.0), ("/d/mid.mp4", 0.0, 4.7), ("/d/short.mp4", 0.0, 2.5), ("/d/tiny.mp4", 0.0, 1.5)]
    clips = build_index(videos, Settings(clip=SPEC, data={"clips_per_video": 3}))
    by_video: dict[str, list[tuple[float, float]]] = {}
    for c in clips:
        by_video.setdefault(c.video, []).append((c.start_s, c.end_s))
    # 2 s windows from the start to the end, at least a stride (1 s) apart; no room for a second: the centre clip
    assert sorted(by_video["/d/long.mp4"]) == [(0.0, 2.0), (4.0, 6.0), (8.0, 10.0)]
    assert sorted(by_video["/d/mid.mp4"]) == [(0.0, 2.0), (1.35, 3.35), (2.7, 4.7)]
    assert by_video["/d/short.mp4"] == [(0.0, 2.5)] and by_video["/d/tiny.mp4"] == [(0.0, 1.5)]
    assert len({c.clip_id for c in clips}) == len(clips) == 8
    assert {c.kind for c in clips} == {"whole"} and len({c.split for c in clips}) == 1
    many = build_index(videos[1:2], Settings(clip=SPEC, data={"clips_per_video": 50}))
    assert [(c.start_s, c.end_s) for c in many] == [(0.0, 2.0), (1.35, 3.35), (2.7, 4.7)]  # 4.7 s: room for 3


def test_dedupe_by_stem_and_size():
    a = _video(path="/d/inside_croki_01/s/12-1_cam01_fight01.mp4", size="100")
    b = _video(path="/d/insidedoor_02/s/12-1_cam01_fight01.mp4", size="100")  # byte-identical copy
    c = _video(path="/d/outsidedoor_03/s/12-1_cam01_fight01.mp4", size="101")  # same stem, other content
    kept, dups = dedupe_videos([b, c, a])
    assert sorted(v.path for v in kept) == sorted([a.path, c.path])
    assert dups == [(b.path, a.path)]
    assert len(build_index_report([a, b], _settings()).duplicates) == 1


def test_merge_spans_margin():
    assert merge_spans([(5, 6), (1, 2), (2.5, 3)], margin=0.5) == [(0.5, 3.5), (4.5, 6.5)]


def test_assign_splits_balances_weights_and_is_deterministic():
    groups = [f"g{i}" for i in range(40)]
    weights = {g: 1 + (i % 5) for i, g in enumerate(groups)}
    first = assign_splits(groups, (0.7, 0.15, 0.15), seed=3, weights=weights)
    assert first == assign_splits(list(reversed(groups)), (0.7, 0.15, 0.15), seed=3, weights=weights)
    total = sum(weights.values())
    share = {s: sum(w for g, w in weights.items() if first[g] == s) / total for s in ("train", "val", "test")}
    assert share["train"] == pytest.approx(0.7, abs=0.05) and share["val"] == pytest.approx(0.15, abs=0.05)
    assert set(assign_splits(groups, (1.0, 0.0, 0.0)).values()) == {"train"}
    with pytest.raises(ValueError, match="summing to 1"):
        assign_splits(groups, (0.5, 0.2, 0.2))


video_specs = st.lists(
    st.tuples(
        st.sampled_from([f"take{i}" for i in range(12)]),  # group
        st.sampled_from(["fight", "assault", "normal", "swoon"]),
        st.floats(min_value=1.0, max_value=120.0),  # duration
        st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), max_size=3),  # spans as fractions of the video
    ),
    min_size=1,
    max_size=30,
)


@hsettings(max_examples=60, deadline=None)
@given(video_specs, st.integers(0, 5), st.sampled_from([(0.7, 0.15, 0.15), (0.5, 0.5, 0.0), (0.34, 0.33, 0.33)]))
def test_split_never_puts_a_group_in_two_splits(specs, seed, fractions):
    videos = []
    for i, (group, label, duration, fracs) in enumerate(specs):
        spans = [Span(kind="event", name=label, start_s=min(a, b) * duration, end_s=max(a, b) * duration) for a, b in fracs]
        videos.append(_video(path=f"/d/{group}/v{i}.mp4", label=label, group=group, duration=duration, spans=spans, size=str(i)))
    settings = Settings(clip=SPEC, data={"split": fractions, "split_seed": seed, "negatives_per_video": 1})
    report = build_index_report(videos, settings)
    seen: dict[str, str] = {}
    for clip in report.clips:
        assert seen.setdefault(clip.group, clip.split) == clip.split, f"group {clip.group} in two splits"
        assert clip.split in ("train", "val", "test")
        assert fractions[("train", "val", "test").index(clip.split)] > 0
        assert 0 <= clip.start_s <= clip.end_s
    assert set(seen) <= set(report.splits)
    assert len({c.clip_id for c in report.clips}) == len(report.clips)
