"""The plots of ``bigsister eda``: one PNG per question, drawn with matplotlib's Agg backend.

Each ``plot_*`` function takes the records the readers and the clip index produced and a PNG path, writes the
figure there (a placeholder figure saying why when there is nothing to draw) and returns the path.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from bigsister_ray.data.prepared import SPLITS
from bigsister_ray.data.records import ClipRecord, VideoRecord

__all__ = [
    "SPLIT_COLORS",
    "EVENT_COVERAGE_WARN",
    "event_coverage",
    "labels_in_order",
    "plot_class_counts",
    "plot_durations",
    "plot_event_coverage",
    "plot_resolutions",
    "plot_fps",
    "plot_video_lengths",
    "plot_clips_per_group",
]

SPLIT_COLORS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}
_KIND_COLORS = {"event": "#C44E52", "action": "#4C72B0"}

#: An event covering more than this fraction of its video says little about where the behaviour is.
EVENT_COVERAGE_WARN = 0.8



def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "axes.titlesize": 13, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _empty(path: Path, title: str, message: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="#666666")
    return _save(fig, path)


def labels_in_order(labels: Iterable[str], order: Sequence[str] = ()) -> list[str]:
    present = set(labels)
    first = [x for x in order if x in present]
    return first + sorted(present - set(first))


def plot_class_counts(clips: Sequence[ClipRecord], path: Path, order: Sequence[str] = ()) -> Path:
    """Horizontal stacked bars: clips per class, split into train / val / test, with the counts written on."""
    title = "Clips per class and split"
    if not clips:
        return _empty(path, title, "no clips in the index")
    plt = _pyplot()
    labels = labels_in_order((c.label for c in clips), order)
    counts = Counter((c.label, c.split) for c in clips)
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(labels) + 1.6))
    left = [0] * len(labels)
    for split in SPLITS:
        values = [counts.get((lab, split), 0) for lab in labels]
        bars = ax.barh(labels, values, left=left, color=SPLIT_COLORS[split], label=split)
        for bar, v in zip(bars, values):
            if v:
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_y() + bar.get_height() / 2, str(v),
                        ha="center", va="center", color="white", fontsize=9, fontweight="bold")
        left = [a + b for a, b in zip(left, values)]
    for y, total in enumerate(left):
        ax.text(total, y, f"  {total}", va="center", fontsize=10)
    ax.invert_yaxis()
    ax.set_xlabel("clips")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False, ncols=3)
    ax.set_title(title, pad=28)
    ax.set_xlim(0, max(left) * 1.15 + 1)
    return _save(fig, path)


def _spans_by(videos: Sequence[VideoRecord], kind: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for v in videos:
        for s in v.spans:
            if s.kind == kind:
                out[v.label].append(s.duration_s)
    return out


def plot_durations(videos: Sequence[VideoRecord], path: Path, order: Sequence[str] = ()) -> Path:
    """Small multiples, one panel per class: histograms of event and action durations (seconds)."""
    title = "Annotated durations per class"
    events, actions = _spans_by(videos, "event"), _spans_by(videos, "action")
    labels = labels_in_order(list(events) + list(actions), order)
    if not labels:
        return _empty(path, title, "no annotated events or actions (whole-clip dataset)")
    plt = _pyplot()
    cols = min(3, len(labels))
    rows = math.ceil(len(labels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.9 * rows), squeeze=False)
    for ax, label in zip(axes.flat, labels):
        data = [x for x in events.get(label, []) + actions.get(label, [])]
        hi = max(data) if data else 1.0
        bins = [hi * i / 20 for i in range(21)] if hi > 0 else 10
        for kind, series in (("event", events.get(label, [])), ("action", actions.get(label, []))):
            if series:
                ax.hist(series, bins=bins, alpha=0.65, color=_KIND_COLORS[kind],
                        label=f"{kind}s (n={len(series)}, median {statistics.median(series):.1f} s)")
        ax.set_title(label)
        ax.set_xlabel("seconds")
        ax.set_ylabel("count")
        ax.legend(fontsize=8, frameon=False)
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=14)
    return _save(fig, path)


def event_coverage(video: VideoRecord) -> float | None:
    duration = video.known_duration_s
    events = [s for s in video.spans if s.kind == "event"]
    if not duration or not events:
        return None
    return min(1.0, sum(s.duration_s for s in events) / duration)


def plot_event_coverage(videos: Sequence[VideoRecord], path: Path, order: Sequence[str] = ()) -> Path:
    """Per class, a strip of dots: the fraction of each video its event covers (near 1 = uninformative)."""
    title = "How much of its video each event covers"
    per_class: dict[str, list[float]] = defaultdict(list)
    for v in videos:
        c = event_coverage(v)
        if c is not None:
            per_class[v.label].append(c)
    if not per_class:
        return _empty(path, title, "no events with a known video length")
    plt = _pyplot()
    labels = labels_in_order(per_class, order)
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(labels) + 1.6))
    ax.axvspan(EVENT_COVERAGE_WARN, 1.0, color="#C44E52", alpha=0.12, label=f"> {EVENT_COVERAGE_WARN:.0%}: event says little")
    for y, label in enumerate(labels):
        xs = per_class[label]
        jitter = [((i * 0.618) % 1 - 0.5) * 0.35 for i in range(len(xs))]
        ax.scatter(xs, [y + j for j in jitter], s=18, alpha=0.7, color="#4C72B0")
        ax.text(1.02, y, f"median {statistics.median(xs):.0%}", va="center", fontsize=9)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlim(0, 1.0)
    ax.invert_yaxis()
    ax.set_xlabel("event duration / video duration")
    ax.set_title(title)
    ax.legend(loc="lower left", frameon=False, fontsize=9)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:.0%}"))
    return _save(fig, path)


def plot_resolutions(videos: Sequence[VideoRecord], path: Path, order: Sequence[str] = ()) -> Path:
    """Videos per resolution: stacked bars by class for a few distinct sizes, a width x height scatter for many."""
    sizes = Counter((v.width, v.height, v.label) for v in videos if v.width and v.height)
    if not sizes:
        return _empty(path, "Resolutions", "no video sizes known")
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    labels = labels_in_order({lab for _, _, lab in sizes}, order)
    totals = Counter((v.width, v.height) for v in videos if v.width and v.height)
    if len(totals) <= 12:
        keys = sorted(totals, key=lambda wh: (-totals[wh], wh))
        names = [f"{w}x{h}" for w, h in keys]
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(keys) + 1.8))
        left = [0] * len(keys)
        for k, label in enumerate(labels):
            values = [sizes.get((w, h, label), 0) for w, h in keys]
            ax.barh(names, values, left=left, color=cmap(k % 10), label=label)
            left = [a + b for a, b in zip(left, values)]
        for y, total in enumerate(left):
            ax.text(total, y, f"  {total}", va="center", fontsize=10)
        ax.invert_yaxis()
        ax.set_xlabel("videos")
        ax.set_xlim(0, max(left) * 1.15 + 1)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False, ncols=min(6, len(labels)), fontsize=9)
        ax.set_title("Resolutions (videos per width x height)", pad=30)
        return _save(fig, path)
    fig, ax = plt.subplots(figsize=(7, 5))
    for k, label in enumerate(labels):
        pts = [(w, h, n) for (w, h, lab), n in sizes.items() if lab == label]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=[30 + 25 * math.sqrt(p[2]) for p in pts],
                   alpha=0.55, color=cmap(k % 10), label=label, edgecolors="white")
    for (w, h), n in totals.most_common(6):
        ax.annotate(f"{w}x{h}: {n}", (w, h), textcoords="offset points", xytext=(8, 6), fontsize=9)
    ax.set_xlim(0, max(w for w, _ in totals) * 1.15)
    ax.set_ylim(0, max(h for _, h in totals) * 1.15)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("Resolutions (dot area = videos)")
    ax.legend(frameon=False, fontsize=9, loc="best")
    return _save(fig, path)


def plot_fps(videos: Sequence[VideoRecord], path: Path) -> Path:
    """Bars: videos per frame rate (rounded to 0.01)."""
    title = "Frame rates"
    counts = Counter(round(v.fps, 2) for v in videos if v.fps)
    if not counts:
        return _empty(path, title, "no frame rates known")
    plt = _pyplot()
    keys = sorted(counts)
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(keys) + 2), 3.6))
    bars = ax.bar([f"{k:g}" for k in keys], [counts[k] for k in keys], color="#8172B2", width=0.5)
    ax.bar_label(bars, padding=2)
    ax.set_xlabel("frames per second")
    ax.set_ylabel("videos")
    ax.set_title(title)
    return _save(fig, path)


def plot_video_lengths(videos: Sequence[VideoRecord], path: Path) -> Path:
    """Histogram of video durations (seconds), with the median marked."""
    title = "Video lengths"
    lengths = [d for v in videos if (d := v.known_duration_s)]
    if not lengths:
        return _empty(path, title, "no video lengths known")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.hist(lengths, bins=min(40, max(5, len(lengths) // 3)), color="#64B5CD")
    med = statistics.median(lengths)
    ax.axvline(med, color="#333333", linestyle="--")
    ax.text(med, ax.get_ylim()[1] * 0.92, f" median {med:.1f} s", fontsize=9)
    ax.set_xlabel("seconds")
    ax.set_ylabel("videos")
    ax.set_title(title)
    return _save(fig, path)


def plot_clips_per_group(clips: Sequence[ClipRecord], path: Path) -> Path:
    """Histogram of clips per group, coloured by the group's split: one big group can dominate a split."""
    title = "Clips per group (a group is never split)"
    if not clips:
        return _empty(path, title, "no clips in the index")
    plt = _pyplot()
    per_group = Counter(c.group for c in clips)
    split_of = {c.group: c.split for c in clips}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    hi = max(per_group.values())
    bins = [x - 0.5 for x in range(1, hi + 2)] if hi <= 40 else 30
    series = [[n for g, n in per_group.items() if split_of[g] == s] for s in SPLITS]
    ax.hist(series, bins=bins, stacked=True, color=[SPLIT_COLORS[s] for s in SPLITS],
            label=[f"{s} ({len(x)} groups)" for s, x in zip(SPLITS, series)])
    ax.set_xlabel("clips in the group")
    ax.set_ylabel("groups")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=9)
    return _save(fig, path)
