"""Look at the data before training: ``bigsister eda`` writes ``report.md`` with PNG plots and warnings.

The report answers, with pictures first and tables second:

* how many clips of each class land in each split (and how many videos and groups are behind them),
* how long the annotated events and actions are, per class, and how much of its video an event covers,
* which resolutions, frame rates and video lengths the dataset holds,
* how many clips each group (AI Hub take, source video) contributes,
* and what looks wrong: classes with too few groups to reach every split, a class missing from a split,
  events that cover most of their video, very short events, zero or negative frame counts in headers,
  inputs that could not be read, duplicates removed, strong class imbalance.

It uses the same readers and the same clip index as ``bigsister prepare`` (:func:`read_source`,
:func:`build_index_report`), which read annotations and headers only: no video is decoded and Ray is not
started, so the report is cheap even for the whole AI Hub download. The plots are drawn by
:mod:`bigsister_ray.data.eda_plots`.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from bigsister_ray.data.eda_plots import (
    EVENT_COVERAGE_WARN,
    event_coverage,
    labels_in_order,
    plot_class_counts,
    plot_clips_per_group,
    plot_durations,
    plot_event_coverage,
    plot_fps,
    plot_resolutions,
    plot_video_lengths,
)
from bigsister_ray.data.prepared import SPLITS
from bigsister_ray.data.records import InputError, VideoRecord

if TYPE_CHECKING:
    from bigsister_ray.config import Settings
    from bigsister_ray.data.index import IndexResult

__all__ = [
    "EdaReport",
    "run_eda",
    "write_report",
    "find_warnings",
]

#: Events shorter than this (seconds) are suspicious (AI Hub has a 0.2 s swoon).
SHORT_EVENT_S = 0.5
#: A class needs at least this many groups to appear in train, val and test.
MIN_GROUPS = 3


@dataclass
class EdaReport:
    """What :func:`write_report` wrote: the report, its plots and its warnings."""

    report: Path
    plots: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    videos: int = 0
    clips: int = 0
    errors: int = 0

    def __str__(self) -> str:
        return (f"EDA report: {self.report} ({self.videos} videos, {self.clips} clips, {self.errors} inputs skipped, "
                f"{len(self.plots)} plots, {len(self.warnings)} warnings)")


# ------------------------------------------------------------------------------------------------ warnings


def _examples(items: Sequence[str], k: int = 3) -> str:
    shown = ", ".join(f"`{Path(x).name}`" for x in items[:k])
    return shown + (f" and {len(items) - k} more" if len(items) > k else "")


def find_warnings(videos: Sequence[VideoRecord], errors: Sequence[InputError], index: "IndexResult",
                  settings: "Settings") -> list[str]:
    """Every problem the report should point out, one markdown sentence each (what, how many, an example, what to do)."""
    warnings: list[str] = []
    clips = index.clips
    fractions = dict(zip(SPLITS, settings.data.split))
    wanted = [s for s in SPLITS if fractions[s] > 0]

    groups_by_class: dict[str, set[str]] = defaultdict(set)
    splits_by_class: dict[str, set[str]] = defaultdict(set)
    for c in clips:
        if c.kind != "negative":
            groups_by_class[c.label].add(c.group)
        splits_by_class[c.label].add(c.split)
    for label, groups in sorted(groups_by_class.items()):
        if len(groups) < MIN_GROUPS:
            warnings.append(f"**{label}** comes from only {len(groups)} group(s); at least {MIN_GROUPS} are needed "
                            "for it to appear in train, val and test. Add takes/source videos of this class.")
    for label, splits in sorted(splits_by_class.items()):
        missing = [s for s in wanted if s not in splits]
        if missing:
            why = ("the model cannot learn it" if "train" in missing else "") + \
                  ("; " if "train" in missing and len(missing) > 1 else "") + \
                  (f"its {'/'.join(m for m in missing if m != 'train')} metrics are undefined"
                   if any(m != "train" for m in missing) else "")
            warnings.append(f"**{label}** has no clips in {', '.join(missing)}: {why}. "
                            "More groups of this class, or another `data.split_seed`, fix it.")
    label_counts = Counter(c.label for c in clips)
    if len(label_counts) >= 2:
        (top, hi), (low, lo) = label_counts.most_common(1)[0], min(label_counts.items(), key=lambda kv: kv[1])
        if lo and hi / lo > 5:
            warnings.append(f"Class imbalance: **{top}** has {hi} clips, **{low}** only {lo} ({hi / lo:.0f}x). "
                            "`train.balance: weighted_loss` compensates in the loss; check per-class recall.")
    task_labels = settings.task.to_task().labels
    absent = [x for x in task_labels if x not in label_counts]
    if absent:
        warnings.append(f"Task classes with no clips at all: {', '.join(absent)}. The model will never predict them.")

    wide = [v.path for v in videos if (c := event_coverage(v)) is not None and c > EVENT_COVERAGE_WARN]
    if wide:
        by_class = Counter(v.label for v in videos if v.path in set(wide))
        warnings.append(f"{len(wide)} event(s) cover more than {EVENT_COVERAGE_WARN:.0%} of their video "
                        f"({', '.join(f'{k}: {n}' for k, n in sorted(by_class.items()))}), e.g. {_examples(wide)}. "
                        "Keep `data.use_actions: true` so positives come from action ranges.")
    short = [v.path for v in videos for s in v.spans if s.kind == "event" and s.duration_s < SHORT_EVENT_S]
    if short:
        warnings.append(f"{len(short)} event(s) shorter than {SHORT_EVENT_S} s, e.g. {_examples(short)}: "
                        "one clip is centred on each.")
    bad_frames = []  # readers turn a header's 0 or negative frame count into None (unknown)
    for v in videos:
        raw = v.meta.get("frames")
        try:
            bad = v.num_frames is None or v.num_frames <= 0 or (raw is not None and int(float(raw)) <= 0)
        except ValueError:
            bad = True
        if bad:
            bad_frames.append(v.path)
    if bad_frames:
        warnings.append(f"{len(bad_frames)} video(s) have no usable frame count (missing, zero or negative in the "
                        f"header), e.g. {_examples(bad_frames)}; their length comes from the duration or the file instead.")
    spec = settings.clip
    short_videos = [v.path for v in videos if (d := v.known_duration_s) is not None and d < spec.duration_s]
    if short_videos:
        warnings.append(f"{len(short_videos)} video(s) are shorter than one clip ({spec.duration_s:g} s), e.g. "
                        f"{_examples(short_videos)}: their frames are looped to fill the clip.")
    unknown_len = [v.path for v in videos if v.known_duration_s is None]
    if unknown_len:
        warnings.append(f"{len(unknown_len)} video(s) of unknown length, e.g. {_examples(unknown_len)}: "
                        "no normal clips can be mined from them.")
    outside = []
    for v in videos:
        events = [s for s in v.spans if s.kind == "event"]
        actions = [s for s in v.spans if s.kind == "action"]
        if events and actions:
            lo, hi = min(s.start_s for s in events), max(s.end_s for s in events)
            if any(a.end_s < lo - 1.0 or a.start_s > hi + 1.0 for a in actions):
                outside.append(v.path)
    if outside:
        warnings.append(f"{len(outside)} video(s) have action ranges more than 1 s outside their event, "
                        f"e.g. {_examples(outside)}.")
    if errors:
        stages = Counter(e.stage for e in errors)
        warnings.append(f"{len(errors)} input(s) skipped ({', '.join(f'{k}: {n}' for k, n in sorted(stages.items()))}); "
                        "see the table below.")
    if index.duplicates:
        warnings.append(f"{len(index.duplicates)} duplicate video(s) removed (same file stem and size), e.g. "
                        f"`{index.duplicates[0][0]}` = `{index.duplicates[0][1]}`.")
    if index.dropped_by_task:
        warnings.append(f"{len(index.dropped_by_task)} video(s) of classes outside the task were left out "
                        "(map them with `task.mapping` to use them).")
    return warnings


# ------------------------------------------------------------------------------------------------ the report


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(x).replace("|", "\\|") for x in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(videos: Sequence[VideoRecord], errors: Sequence[InputError], index: "IndexResult", out: Path,
                 settings: "Settings", *, title: str = "Dataset report") -> EdaReport:
    """Write ``out/report.md`` and ``out/plots/*.png`` from already-read records and their index."""
    out = Path(out)
    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    order = settings.task.to_task().labels
    clips = index.clips
    plots = {
        "class_counts": plot_class_counts(clips, plots_dir / "class_counts.png", order),
        "durations": plot_durations(videos, plots_dir / "durations.png", order),
        "event_coverage": plot_event_coverage(videos, plots_dir / "event_coverage.png", order),
        "resolutions": plot_resolutions(videos, plots_dir / "resolutions.png", order),
        "fps": plot_fps(videos, plots_dir / "fps.png"),
        "video_lengths": plot_video_lengths(videos, plots_dir / "video_lengths.png"),
        "clips_per_group": plot_clips_per_group(clips, plots_dir / "clips_per_group.png"),
    }
    warnings = find_warnings(videos, errors, index, settings)

    def img(name: str, alt: str) -> str:
        return f"![{alt}](plots/{plots[name].name})"

    groups = {c.group for c in clips}
    split_groups = Counter(index.splits.get(g, "?") for g in groups)
    split_clips = Counter(c.split for c in clips)
    spec = settings.clip
    md: list[str] = [f"# {title}", ""]
    md += [
        f"{len(videos)} videos read, {len(errors)} inputs skipped; the index holds **{len(clips)} clips** from "
        f"{index.videos} videos in {len(groups)} groups "
        f"(train {split_clips['train']} / val {split_clips['val']} / test {split_clips['test']} clips; "
        f"{split_groups['train']} / {split_groups['val']} / {split_groups['test']} groups).",
        "",
        f"Clip: {spec.frames} frames at {spec.fps:g} fps ({spec.duration_s:g} s), {spec.size} px. "
        f"Task: {', '.join(order)}. Split {'/'.join(f'{x:g}' for x in settings.data.split)} by group, "
        f"seed {settings.data.split_seed}.",
        "",
        "## Warnings",
        "",
    ]
    md += [f"- {w}" for w in warnings] if warnings else ["None: every check passed."]
    md += ["", "## Classes per split", "", img("class_counts", "clips per class and split"), ""]
    rows = []
    for label in labels_in_order((c.label for c in clips), order):
        mine = [c for c in clips if c.label == label]
        kinds = Counter(c.kind for c in mine)
        rows.append([label] + [sum(1 for c in mine if c.split == s) for s in SPLITS] +
                    [len({c.video for c in mine}), len({c.group for c in mine}),
                     ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))])
    md += [_table(["class", "train", "val", "test", "videos", "groups", "kinds"], rows), ""]
    md += ["## Event and action durations", "", img("durations", "durations per class"), "",
           img("event_coverage", "event coverage"), ""]
    rows = []
    for label in labels_in_order((v.label for v in videos), order):
        ev = [s.duration_s for v in videos if v.label == label for s in v.spans if s.kind == "event"]
        ac = [s.duration_s for v in videos if v.label == label for s in v.spans if s.kind == "action"]
        fmt = lambda xs: f"{len(xs)}: {min(xs):.1f} / {statistics.median(xs):.1f} / {max(xs):.1f}" if xs else "-"  # noqa: E731
        rows.append([label, sum(1 for v in videos if v.label == label), fmt(ev), fmt(ac)])
    md += [_table(["class", "videos", "events: n: min / median / max s", "actions: n: min / median / max s"], rows), ""]
    md += ["## Videos: resolution, frame rate, length", "", img("resolutions", "resolutions"), "",
           img("fps", "frame rates"), "", img("video_lengths", "video lengths"), ""]
    md += ["## Groups", "", img("clips_per_group", "clips per group"), ""]
    per_group = Counter(c.group for c in clips)
    if per_group:
        big = per_group.most_common(5)
        md += ["Largest groups: " + ", ".join(f"`{g}` ({n} clips, {index.splits.get(g, '?')})" for g, n in big) + ".", ""]
    if errors:
        md += ["## Skipped inputs", "", _table(["stage", "path", "reason"],
                                               [(e.stage, f"`{e.path}`", e.reason) for e in errors[:200]])]
        if len(errors) > 200:
            md += ["", f"... and {len(errors) - 200} more."]
        md += [""]
    report = out / "report.md"
    report.write_text("\n".join(md), encoding="utf-8")
    return EdaReport(report=report, plots=list(plots.values()), warnings=warnings, videos=len(videos),
                     clips=len(clips), errors=len(errors))


def run_eda(source: str, root: Path, out: Path, settings: "Settings | None" = None) -> EdaReport:
    """Read ``root`` as ``source`` (aihub, folders, manifest), build the clip index and write the report to ``out``.

    Raises :class:`bigsister_ray.errors.DataError` when the root is unusable; bad single inputs are listed in
    the report instead.
    """
    from bigsister_ray.data.index import build_index_report
    from bigsister_ray.data.readers import read_source

    if settings is None:
        from bigsister_ray.config import Settings

        settings = Settings()
    videos, errors = read_source(source, Path(root), settings)  # type: ignore[arg-type]
    index = build_index_report(videos, settings)
    return write_report(videos, errors, index, Path(out), settings, title=f"Dataset report: {source} `{root}`")
