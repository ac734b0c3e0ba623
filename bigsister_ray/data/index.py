"""The clip index: which seconds of which video make each clip, with its label and its split.

:func:`build_index` turns the readers' :class:`VideoRecord` s into :class:`ClipRecord` s:

1. **Duplicates removed**: the AI Hub download holds some sessions byte-identical in two zip groups; videos with
   the same file stem and size are one video (the first path in sorted order is kept).
2. **Labels resolved** through the task (``task.labels``, ``task.mapping``, ``task.unknown``); videos of a class
   the task drops are left out (and counted).
3. **Positives** are cut around the annotated behaviour: the action ranges where the video has them and
   ``data.use_actions`` is on (AI Hub event intervals are unreliable), else the event spans. Up to
   ``data.clips_per_event`` clips are spread evenly over the (merged) spans, no closer than one window stride,
   so a 0.2 s event gives one clip rather than four copies of it.
4. **Negatives** (``normal``, when the task has it) are mined outside every span widened by
   ``data.negative_margin_s``, only where a whole clip fits: up to ``data.negatives_per_video`` per video.
5. A video without spans is **whole**: its centre clip, or up to ``data.clips_per_video`` clips spread evenly over
   it, no closer than one window stride (folder datasets, manifests without times; a fight in a 5 s video is not
   always in its centre 2 s).
6. **Split by group** (:func:`assign_splits`): every clip of a group lands in the same split, so one AI Hub take
   (``<scene>-<take>``, filmed by 2-3 cameras in 2-3 seasons) or one source video is never on both sides.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from bigsister_ray.clip import ClipSpec
from bigsister_ray.data.records import ClipRecord, Span, VideoRecord
from bigsister_ray.errors import DataError
from bigsister_ray.labels import NORMAL, Task, UnknownLabelError

__all__ = [
    "IndexResult",
    "build_index",
    "build_index_report",
    "assign_splits",
    "dedupe_videos",
    "merge_spans",
    "positive_windows",
    "negative_windows",
    "whole_windows",
    "index_fingerprint",
]

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class IndexResult:
    """The index and what was left out of it on purpose."""

    clips: list[ClipRecord]
    splits: dict[str, str] = field(default_factory=dict)  # group -> split
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (dropped path, kept path)
    dropped_by_task: list[str] = field(default_factory=list)  # paths whose class the task drops
    videos: int = 0  # videos that contributed clips


# --------------------------------------------------------------------------------------------- split
def assign_splits(
    groups: Iterable[str],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    weights: Mapping[str, float] | None = None,
    strata: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Assign every group to exactly one of ``train``/``val``/``test``.

    Groups are shuffled with ``seed``, then (largest first when ``weights``, e.g. clips per group, are given)
    each goes to the split furthest below its target share of the total weight. With ``strata`` (group ->
    class, e.g. the behaviour a take shows), this runs per class and every split with a non-zero fraction first
    receives one of the class's smaller groups (train, then val, then test, as far as the class has groups), so
    no class is missing from validation or test only because its takes happened to fall elsewhere.
    Deterministic for the same groups, fractions, seed and strata; a split with fraction 0 gets nothing.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"expected three non-negative split fractions summing to 1, got {tuple(fractions)}")
    unique = sorted(set(groups))
    if strata is None:
        return _assign_greedy(unique, fractions, seed, weights, cover=False)
    by_stratum: dict[str, list[str]] = {}
    for g in unique:
        by_stratum.setdefault(strata.get(g, ""), []).append(g)
    out: dict[str, str] = {}
    for name in sorted(by_stratum):
        out.update(_assign_greedy(by_stratum[name], fractions, seed ^ zlib.crc32(name.encode()), weights, cover=True))
    return out


def _assign_greedy(unique: list[str], fractions: Sequence[float], seed: int,
                   weights: Mapping[str, float] | None, cover: bool) -> dict[str, str]:
    rng = random.Random(seed)
    unique = list(unique)
    rng.shuffle(unique)
    w = {g: float(weights.get(g, 1.0)) if weights is not None else 1.0 for g in unique}
    order = sorted(unique, key=lambda g: -w[g]) if weights is not None else unique  # stable: ties keep shuffle order
    total = sum(w.values()) or 1.0
    filled = [0.0, 0.0, 0.0]
    out: dict[str, str] = {}
    candidates = [i for i in range(3) if fractions[i] > 0]
    if cover and candidates:
        # Train keeps the largest group; the smaller splits each get one of the smallest (as far as groups go).
        pool = list(order)
        for i in candidates[: len(pool)]:
            g = pool.pop(0) if i == candidates[0] else pool.pop()
            filled[i] += w[g]
            out[g] = SPLIT_NAMES[i]
        order = pool
    for g in order:
        best = max(candidates, key=lambda i: (fractions[i] * total - filled[i], fractions[i], -i))
        filled[best] += w[g]
        out[g] = SPLIT_NAMES[best]
    return out


# ------------------------------------------------------------------------------------------ spans
def merge_spans(spans: Iterable[tuple[float, float]], margin: float = 0.0) -> list[tuple[float, float]]:
    """Union of intervals (each widened by ``margin`` on both sides, clipped at 0), sorted."""
    items = sorted((max(0.0, a - margin), b + margin) for a, b in spans)
    merged: list[tuple[float, float]] = []
    for a, b in items:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _spread(intervals: list[tuple[float, float]], n: int) -> list[float]:
    """``n`` points spread evenly over the total length of ``intervals`` (mid-points of n equal parts)."""
    total = sum(b - a for a, b in intervals)
    if n <= 0 or not intervals:
        return []
    if total <= 0:
        return [intervals[i % len(intervals)][0] for i in range(min(n, len(intervals)))]
    points = []
    for k in range(n):
        target = (k + 0.5) / n * total
        for a, b in intervals:
            if target <= (b - a) or (a, b) == intervals[-1]:
                points.append(min(a + target, b))
                break
            target -= b - a
    return points


def _window(centre: float, spec: ClipSpec, duration: float | None) -> tuple[float, float]:
    d = spec.duration_s
    start = centre - d / 2
    if duration is not None and duration > 0:
        start = min(start, max(0.0, duration - d))
    start = max(0.0, start)
    end = start + d if duration is None else min(start + d, max(duration, start))
    return round(start, 6), round(end, 6)


def positive_windows(video: VideoRecord, spec: ClipSpec, per_event: int, use_actions: bool = True) -> list[tuple[float, float]]:
    """Clip windows ``(start_s, end_s)`` around the annotated behaviour of ``video`` (see the module docstring)."""
    actions = [s for s in video.spans if s.kind == "action"]
    events = [s for s in video.spans if s.kind == "event"]
    chosen: list[Span] = actions if (use_actions and actions) else events
    if not chosen:
        return []
    targets = merge_spans((s.start_s, s.end_s) for s in chosen)
    length = sum(b - a for a, b in targets)
    n = min(per_event, max(1, math.ceil(length / spec.stride_s)))
    return [_window(c, spec, video.known_duration_s) for c in _spread(targets, n)]


def negative_windows(video: VideoRecord, spec: ClipSpec, count: int, margin_s: float) -> list[tuple[float, float]]:
    """Clip windows wholly outside every span of ``video`` widened by ``margin_s`` (none when the duration is unknown)."""
    duration = video.known_duration_s
    if count <= 0 or duration is None or not video.spans:
        return []
    d = spec.duration_s
    blocked = merge_spans(((s.start_s, s.end_s) for s in video.spans), margin_s)
    gaps, cursor = [], 0.0
    for a, b in blocked:
        if a > cursor:
            gaps.append((cursor, min(a, duration)))
        cursor = max(cursor, b)
    if cursor < duration:
        gaps.append((cursor, duration))
    centres = [(a + d / 2, b - d / 2) for a, b in gaps if b - a >= d - 1e-9]
    if not centres:
        return []
    fits = sum(max(1, int((b - a + d) // d)) for a, b in centres)
    return [_window(c, spec, duration) for c in _spread(centres, min(count, fits))]


def whole_windows(video: VideoRecord, spec: ClipSpec, per_video: int) -> list[tuple[float, float]]:
    """Clip windows ``(start_s, end_s)`` of a video without spans: ``(0, duration)`` (the centre clip) when one
    fits, else up to ``per_video`` windows of the clip's length from the start to the end, a stride or more apart."""
    duration = video.known_duration_s or 0.0
    room = duration - spec.duration_s
    n = min(per_video, 1 + int(math.floor(room / spec.stride_s + 1e-9))) if room > 0 else 1
    if n <= 1:
        return [(0.0, round(duration, 6))]
    return [(round(k * room / (n - 1), 6), round(k * room / (n - 1) + spec.duration_s, 6)) for k in range(n)]


# ------------------------------------------------------------------------------------------- dedupe
def _size_of(video: VideoRecord) -> int | None:
    if "size_bytes" in video.meta:
        try:
            return int(video.meta["size_bytes"])
        except ValueError:
            pass
    try:
        return os.stat(video.path).st_size
    except OSError:
        return None


def dedupe_videos(videos: Iterable[VideoRecord]) -> tuple[list[VideoRecord], list[tuple[str, str]]]:
    """Drop videos whose file stem and size repeat an earlier one (paths sorted). Returns (kept, [(dropped, kept)])."""
    kept: dict[tuple[str, int | str], VideoRecord] = {}
    dups: list[tuple[str, str]] = []
    for video in sorted(videos, key=lambda v: v.path):
        size = _size_of(video)
        key = (Path(video.path).stem, size if size is not None else video.path)
        if key in kept:
            dups.append((video.path, kept[key].path))
        else:
            kept[key] = video
    return list(kept.values()), dups


# -------------------------------------------------------------------------------------------- index
def _clip_id(video: VideoRecord, kind: str, k: int) -> str:
    digest = hashlib.sha1(video.path.encode("utf-8")).hexdigest()[:8]
    return f"{Path(video.path).stem}-{digest}-{kind[0]}{k:02d}"


def build_index_report(videos: Sequence[VideoRecord], settings) -> IndexResult:
    """:func:`build_index` plus what it left out (duplicates, classes the task drops) and the group split."""
    task: Task = settings.task.to_task()
    spec: ClipSpec = settings.clip
    data = settings.data
    unique, dups = dedupe_videos(videos)
    try:
        normal = task.resolve(NORMAL) if NORMAL in task.labels or any(src == NORMAL for src, _ in task.mapping) else None
    except UnknownLabelError:
        normal = None
    planned: list[tuple[VideoRecord, str, str, float, float]] = []  # video, label, kind, start, end
    dropped: list[str] = []
    for video in unique:
        try:
            label = task.resolve(video.label)
        except UnknownLabelError as err:
            raise DataError(f"{video.path}: {err} (set task.unknown: drop, or map the class with task.mapping)") from err
        if not video.spans:
            if label is None:
                dropped.append(video.path)
                continue
            planned.extend((video, label, "whole", start, end) for start, end in whole_windows(video, spec, data.clips_per_video))
            continue
        if label is not None:
            for start, end in positive_windows(video, spec, data.clips_per_event, data.use_actions):
                planned.append((video, label, "positive", start, end))
        else:
            dropped.append(video.path)
        if normal is not None:
            for start, end in negative_windows(video, spec, data.negatives_per_video, data.negative_margin_s):
                planned.append((video, normal, "negative", start, end))
    weights: dict[str, float] = {}
    for video, *_ in planned:
        weights[video.group] = weights.get(video.group, 0.0) + 1.0
    # Stratify the split by the behaviour each group shows (its most common non-normal class).
    shown: dict[str, dict[str, int]] = {}
    for video, label, kind, *_ in planned:
        if kind != "negative":
            counts = shown.setdefault(video.group, {})
            counts[label] = counts.get(label, 0) + 1
    strata = {g: max(sorted(c), key=lambda x: (x != NORMAL, c[x])) if c else NORMAL for g, c in shown.items()}
    splits = assign_splits(weights.keys(), data.split, data.split_seed, weights=weights, strata=strata)
    clips: list[ClipRecord] = []
    counters: dict[tuple[str, str], int] = {}
    for video, label, kind, start, end in planned:
        k = counters.get((video.path, kind), 0)
        counters[(video.path, kind)] = k + 1
        clips.append(ClipRecord(
            clip_id=_clip_id(video, kind, k), video=video.path, label=label, label_idx=task.index(label),
            group=video.group, split=splits[video.group], start_s=start, end_s=end, kind=kind,
        ))
    return IndexResult(clips=clips, splits=splits, duplicates=dups, dropped_by_task=dropped,
                       videos=len({c.video for c in clips}))


def build_index(videos: Sequence[VideoRecord], settings) -> list[ClipRecord]:
    """The clip index of ``videos`` under ``settings`` (task, clip spec, data section). See the module docstring."""
    return build_index_report(videos, settings).clips


def index_fingerprint(clips: Iterable[ClipRecord], spec: ClipSpec) -> str:
    """sha256 over the ClipSpec and every clip record (order-sensitive): names one exact dataset."""
    h = hashlib.sha256(spec.model_dump_json().encode("utf-8"))
    for clip in clips:
        h.update(b"\n")
        h.update(clip.model_dump_json().encode("utf-8"))
    return h.hexdigest()
